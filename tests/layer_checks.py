"""Checks shared by the built-in layer tests (config round trips, docstring examples)."""

import contextlib
import doctest
import json

import jax
import jax.numpy as jnp
import numpy as np

import jmod


def config_round_trip(layer):
    """Rebuilds `layer` from its config sent through JSON; asserts the configs are equal."""
    config = layer.get_config()
    text = json.dumps(config)  # JSON-serializable, or this raises
    clone = type(layer).from_config(json.loads(text))
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    return clone


def run_docstring_examples(module):
    """Runs the `>>>` examples of `module`'s docstrings; asserts at least one ran and all pass."""
    globs = {"jmod": jmod, "jnp": jnp, "jax": jax, "np": np}
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in finder.find(module, module.__name__, globs=globs) if t.examples]
    assert tests, f"{module.__name__} has no examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring examples of {module.__name__} failed"


@contextlib.contextmanager
def dtype_policy(name):
    """Sets the global dtype policy inside the block."""
    previous = jmod.layers.dtype_policy()
    jmod.layers.set_dtype_policy(name)
    try:
        yield
    finally:
        jmod.layers.set_dtype_policy(previous)


def call_jitted(layer, *args, **kwargs):
    """`layer(*args, **kwargs)` through `jmod.jit` (a fresh compiled function)."""
    fn = jmod.jit(lambda layer, *a, **k: layer(*a, **k))
    return fn(layer, *args, **kwargs)


def numpy_initializer(seed=0, scale=0.5):
    """An initializer callable drawing NumPy normals.

    XLA compiles jax.random's sampler once per weight shape (about a second
    each on a busy CPU), so tests that need many shapes of random weights
    use this instead; layers accept any `(shape, dtype) -> array` callable.
    """
    rng = np.random.default_rng(seed)

    def init(shape, dtype=np.float32):
        return (scale * rng.normal(size=shape)).astype(dtype)

    return init
