"""Gradients of functions over modules, keyed by variable path."""

import functools

import jax

from jmod import _tracing
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


def value_and_grad(fn, argnums=0, has_aux=False):
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
        trainable = [(p, v) for p, v in named if v.trainable]
        others = [v for _, v in named if not v.trainable]
        for a in args:
            if isinstance(a, Module) and a is not args[argnums]:
                others.extend(v for _, v in a.named_variables())
        created = []  # (variable, its value at creation)

        def pure(values):
            saved = [(v, v._value) for _, v in trainable] + [(v, v._value) for v in others]
            for (_, v), x in zip(trainable, values):
                v._value = x
            try:
                result = fn(*args, **kwargs)
                value, aux = result if has_aux else (result, None)
                updates = [v._value for v in others]
            finally:
                for v, old in saved:
                    v._value = old
            return value, (aux, updates)

        def on_create(var):
            created.append((var, var._value))

        _tracing.creation_listeners.append(on_create)
        try:
            (value, (aux, updates)), grads = jax.value_and_grad(pure, has_aux=True)(
                [v._value for _, v in trainable]
            )
        finally:
            _tracing.creation_listeners.remove(on_create)
        if created:
            built = {id(v) for _, v in _named(args[argnums])}
            if any(id(v) in built for v, _ in created):
                # A deferred build ran inside: the new variables exist now, so
                # differentiate again to give them gradients too, starting
                # from their initial values (a batch-norm statistic updated
                # by the first pass must not be updated twice).
                for var, initial in created:
                    var._value = initial
                return wrapped(*args, **kwargs)
        for v, new in zip(others, updates):
            v._value = new
        grads = {p: g for (p, _), g in zip(trainable, grads)}
        return ((value, aux), grads) if has_aux else (value, grads)

    return wrapped


def grad(fn, argnums=0, has_aux=False):
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
