"""The bridge to pure functions: `functional_call` runs a module on a given state."""

import jax

from jmod import _tracing
from jmod.errors import ModuleError
from jmod.module import rollback, snapshot


def functional_call(module, state, *args, **kwargs):
    """Runs `module(*args, **kwargs)` with its variables set to `state`; mutates nothing.

    Returns `(output, new_state)`, where `new_state` holds the values the call
    left in the variables (updated batch statistics, advanced generator keys).
    Pure, so it composes with `jax.grad`, `jax.vmap`, `jax.lax.scan` and
    `jax.jit`.

    Example:
        >>> class Scale(jmod.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.k = jmod.Variable(2.0)
        ...     def __call__(self, x):
        ...         return self.k * x
        >>> m = Scale()
        >>> out, _ = jmod.functional_call(m, {"k": 3.0}, 2.0)
        >>> float(out), float(m.k)
        (6.0, 2.0)

    Args:
        module: the module to run (called as `module(*args, **kwargs)`); pass
            `method=` as a keyword to call another method by name.
        state: a dict path -> array such as `module.state()` gives.
    """
    method = kwargs.pop("method", None)
    named = module.named_variables()
    paths = {p for p, _ in named}
    unknown = sorted(set(state) - paths)
    missing = sorted(paths - set(state))
    if unknown or missing:
        raise ModuleError(
            f"functional_call on {module.name!r}: state does not match the module's "
            f"variables; missing {missing or 'none'}, unexpected {unknown or 'none'}"
        )
    originals = [(v, v._value) for _, v in named]
    snap = snapshot([module, *module.submodules])
    created = []
    _tracing.creation_listeners.append(created.append)
    outer = _tracing.ctx
    recorder = _tracing.Recorder({id(v) for _, v in named})
    _tracing.enter(recorder)
    ok = False
    try:
        for path, var in named:
            var.assign(state[path])
        fn = getattr(module, method) if method else module
        out = fn(*args, **kwargs)
        new_state = dict(module.state())
        ok = not any(isinstance(v._value, jax.core.Tracer) for v in created)
    finally:
        _tracing.leave(recorder)
        _tracing.creation_listeners.remove(created.append)
        unknown_to_outer = None
        for var, old in recorder.touched.values():
            # Variables the module does not own (the global generator) keep
            # their new values, unless a JAX transformation left tracers there
            # or an enclosing jmod.jit must first take them as inputs.
            if outer is not None and id(var) not in outer.known:
                var._value = old
                unknown_to_outer = var
            elif outer is None and isinstance(var._value, jax.core.Tracer):
                var._value = old
        for var, value in originals:
            var._value = value
        if not ok:
            rollback(snap)
    if unknown_to_outer is not None:
        outer.touch(unknown_to_outer)  # the enclosing jmod.jit retraces with it
    if created and not ok:
        raise ModuleError(
            f"functional_call on {module.name!r}: the module created variables under a JAX "
            "transformation; build it first (call it once, eagerly or with jmod.jit)"
        )
    return out, new_state
