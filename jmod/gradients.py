"""Gradients of functions over modules, keyed by variable path."""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jmod import _scope
from jmod.errors import ModuleError
from jmod.module import Module
from jmod.variables import Variable


def _named(target):
    if isinstance(target, Variable):
        return [(target.name or "variable", target)]
    if isinstance(target, Module):
        return target.named_variables()
    raise ModuleError(
        f"jmod.grad differentiates with respect to a Module or Variable argument, "
        f"got {type(target).__name__}"
    )


def value_and_grad(
    fn: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> Callable[..., tuple[Any, Any]]:
    """Wraps `fn` to return `(value, grads)`, grads keyed by trainable variable path.

    The argument at `argnums` is a module (or variable); its trainable
    variables are differentiated. Non-trainable variables assigned inside
    (batch statistics) keep their new values; frozen variables
    (`trainable=False`) get no gradient.

    Example:
        >>> m = jmod.Module()
        >>> m.w = jmod.Variable(3.0)
        >>> loss, grads = jmod.value_and_grad(lambda m, x: (m.w * x) ** 2)(m, 2.0)
        >>> float(loss), float(grads["w"])
        (36.0, 24.0)

    Args:
        fn: a function returning a scalar (or `(scalar, aux)` with `has_aux`).
        argnums: the position of the module to differentiate.
        has_aux: whether `fn` returns auxiliary data.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if argnums >= len(args):
            raise ModuleError(
                f"jmod.value_and_grad: argnums={argnums} but only {len(args)} positional "
                "arguments were given"
            )
        named = _named(args[argnums])
        trainable = [v for _, v in named if v.trainable]
        # Filled by the traced pass: what the computation assigned and created.
        effects = {}

        def pure(values):
            # The differentiated variables see `values`; everything else reads
            # through to the enclosing computation (or the real values).
            with _scope.Scope(zip(trainable, values)) as scope:
                result = fn(*args, **kwargs)
            value, aux = result if has_aux else (result, None)
            differentiated = {id(v) for v in trainable}
            writes = [(v, x) for v, x in scope.assignments() if id(v) not in differentiated]
            effects["vars"] = [v for v, _ in writes]
            effects["created"] = list(scope.created)
            return value, (aux, [x for _, x in writes])

        outer = _scope.current()
        read = outer.read if outer is not None else (lambda v: v._v)
        (value, (aux, updates)), grads = jax.value_and_grad(pure, has_aux=True)(
            [read(v) for v in trainable]
        )
        created = effects["created"]
        created_ids = {id(v) for v in created}
        if created_ids and any(id(v) in created_ids for _, v in _named(args[argnums])):
            # A deferred build ran inside: the new variables exist now (with
            # their initial values), so differentiate again to give them
            # gradients too; the first pass's assignments are dropped (a batch
            # norm statistic must not be updated twice).
            return wrapped(*args, **kwargs)
        for var, new in zip(effects["vars"], updates):
            _scope.write(var, new)
        grads = dict(zip([p for p, v in named if v.trainable], grads))
        return ((value, aux), grads) if has_aux else (value, grads)

    return wrapped


def grad(
    fn: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Like `value_and_grad`, returning only the gradients (and aux with `has_aux`).

    Example:
        >>> m = jmod.Module()
        >>> m.w = jmod.Variable(3.0)
        >>> float(jmod.grad(lambda m: m.w ** 2)(m)["w"])
        6.0
    """
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        value, grads = vg(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    return wrapped
