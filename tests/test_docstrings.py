"""The foundation's docstring examples run and pass (other packages test their own)."""

import pytest

from jmod import (
    _scope,
    bridge,
    compile,
    errors,
    gradients,
    initializers,
    module,
    optimizer,
    random,
    signature,
    variables,
)
from jmod.layers import layer, policy
from tests.layer_checks import run_docstring_examples


@pytest.mark.parametrize(
    "mod",
    [_scope, bridge, compile, errors, gradients, initializers, module, optimizer, random,
     signature, variables, layer, policy],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(mod):
    run_docstring_examples(mod)
