"""`LayoutMap` (variable path regex -> partition spec) and `shard_module`."""

import re

from jmod import _tracing
from jmod.distributed._errors import ShardingError
from jmod.distributed.mesh import current_mesh, put, sharding_for


class LayoutMap:
    """Partition specs for variables chosen by path, for models you did not write.

    Keys are regular expressions searched in variable paths (`dense_1/kernel`,
    `layers/0/kernel`); values are partition specs. Looking a path up
    returns the spec of the key equal to the path, else of the one key
    that matches it, else None (replicated); two matching keys are an error,
    as in Keras' `LayoutMap`.

    Example:
        >>> layout = jmod.distributed.LayoutMap({r"kernel$": (None, "model")})
        >>> layout["dense_1/kernel"], layout["dense_1/bias"]
        ((None, 'model'), None)

    Args:
        rules: a dict (or list of pairs) regex -> spec; more with `layout[key] = spec`.
    """

    def __init__(self, rules=None):
        self._rules = {}
        items = rules.items() if isinstance(rules, dict) else (rules or ())
        for key, spec in items:
            self[key] = spec

    def __setitem__(self, key, spec):
        if not isinstance(key, str):
            raise ShardingError(f"LayoutMap keys are path regexes (str), got {key!r}")
        try:
            re.compile(key)
        except re.error as e:
            raise ShardingError(f"LayoutMap key {key!r} is not a regular expression: {e}") from e
        self._rules[key] = spec

    def __getitem__(self, path):
        if path in self._rules:
            return self._rules[path]
        found = [key for key in self._rules if re.search(key, path)]
        if len(found) > 1:
            raise ShardingError(
                f"variable {path!r} matches several LayoutMap keys {found}; make them "
                "exclusive or add the exact path as a key"
            )
        return self._rules[found[0]] if found else None

    def __len__(self):
        return len(self._rules)

    def __iter__(self):
        return iter(self._rules)

    def items(self):
        return self._rules.items()

    def __repr__(self):
        return f"LayoutMap({self._rules!r})"


def shard_module(module, layout_map, mesh=None):
    """Lays out a module's existing variables on the mesh by path, per `layout_map`.

    Each variable is moved to the spec its path looks up (replicated where
    none matches); values are unchanged. Compiled `jmod.jit` functions pick
    up the new layouts on their next call. Returns `{path: spec}` applied.

    Example:
        >>> model = jmod.layers.Dense(4)
        >>> _ = model(jnp.ones((2, 3)))
        >>> with jmod.distributed.mesh({"model": 1}):
        ...     specs = jmod.distributed.shard_module(model, {r"kernel": (None, "model")})
        >>> model.kernel.sharding.spec
        P(None, 'model')

    Args:
        module: a `jmod.Module` (a model, an optimizer: its slots follow
            the same paths under `slots/...`).
        layout_map: a `LayoutMap`, or a dict regex -> spec.
        mesh: the mesh (default: the active one).
    """
    if not isinstance(layout_map, LayoutMap):
        layout_map = LayoutMap(layout_map)
    m = mesh if mesh is not None else current_mesh()
    if m is None:
        raise ShardingError("shard_module needs a mesh: pass mesh= or use jmod.distributed.mesh")
    applied = {}
    for path, var in module.named_variables():
        spec = layout_map[path]
        target = sharding_for(spec, var.shape, m, f"variable {path!r}")
        var.assign(put(var.value, target))
        applied[path] = spec
    # Compiled functions bake layouts into their traces: make them re-plan.
    _tracing.bump()
    return applied
