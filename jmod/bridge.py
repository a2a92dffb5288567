"""The bridge to pure functions: `functional_call` runs a module on a given state."""

from collections.abc import Mapping
from typing import Any

import jax

from jmod import _scope
from jmod.errors import ModuleError
from jmod.module import rollback, snapshot


def functional_call(
    module: Any, state: Mapping[str, Any], *args: Any, **kwargs: Any
) -> tuple[Any, dict[str, jax.Array]]:
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
    bound = []
    for path, var in named:
        try:
            bound.append((var, var._checked(state[path])))
        except ValueError as e:
            raise ModuleError(f"functional_call on {module.name!r}, variable {path}: {e}") from e
    snap = snapshot([module, *module.submodules])
    ok = False
    try:
        with _scope.Scope(bound) as scope:
            fn = getattr(module, method) if method else module
            out = fn(*args, **kwargs)
            new_state = {p: v.value for p, v in module.named_variables()}
        ok = not any(isinstance(scope.values[id(v)], jax.core.Tracer) for v in scope.created)
    finally:
        if not ok:
            rollback(snap)
    if scope.created and not ok:
        raise ModuleError(
            f"functional_call on {module.name!r}: the module created variables under a JAX "
            "transformation; build it first (call it once, eagerly or with jmod.jit)"
        )
    # Variables the module does not own (the global generator) keep their new
    # values: in the enclosing computation, or for real outside any, unless a
    # JAX transformation around this call left its tracers there.
    owned = {id(v) for _, v in named}
    outer = _scope.current()
    for var, value in scope.assignments():
        if id(var) in owned or (outer is None and isinstance(value, jax.core.Tracer)):
            continue
        _scope.write(var, value)
    return out, new_state
