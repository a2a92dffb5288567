"""The active device mesh: `mesh(...)`, `current_mesh()`, and how values are laid out on it.

Inside `with jmod.distributed.mesh({"data": 4}):` every `jmod.Variable`
created is placed on the mesh: split by its `sharding=` spec, replicated
when it has none. Computation then follows the data: `jmod.jit` hands the
variables to `jax.jit`, whose SPMD partitioner inserts the collectives.
The mesh's axes are `Auto` (jit propagates layouts); `jmod.jit` keeps each
variable's layout when it writes the variable back.
"""

import contextlib
import contextvars
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jmod import _tracing
from jmod.distributed._errors import ShardingError
from jmod.distributed._specs import as_partition_spec, check_spec

# The active mesh, per thread and asyncio task (a context variable).
_active = contextvars.ContextVar("jmod_mesh", default=None)


def current_mesh():
    """The mesh of the innermost active `mesh(...)` context, or None.

    Example:
        >>> jmod.distributed.current_mesh() is None
        True
        >>> with jmod.distributed.mesh({"data": 1}) as m:
        ...     jmod.distributed.current_mesh() is m
        True
    """
    return _active.get()


def make_mesh(axes, devices=None):
    """A `jax.sharding.Mesh` from `{axis name: size}` (one size may be -1: the rest).

    The axes are `AxisType.Auto`, so `jax.jit` propagates layouts itself.
    Devices default to all devices of all processes, in `jax.devices()`
    order; a mesh smaller than that uses the first ones.

    Example:
        >>> m = jmod.distributed.make_mesh({"data": -1})
        >>> m.axis_names, m.size == len(jax.devices())
        (('data',), True)
    """
    if not isinstance(axes, dict) or not axes:
        raise ShardingError(
            f"a mesh is a non-empty dict {{axis name: size}} or a jax.sharding.Mesh, got {axes!r}"
        )
    devices = list(jax.devices() if devices is None else devices)
    names, sizes = list(axes), list(axes.values())
    for name, size in axes.items():
        if not isinstance(name, str) or not isinstance(size, int) or (size < 1 and size != -1):
            raise ShardingError(
                f"mesh {axes!r}: each axis is a name with a size >= 1 (or -1), "
                f"got {name!r}: {size!r}"
            )
    if sizes.count(-1) > 1:
        raise ShardingError(f"mesh {axes!r}: only one axis may have size -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ShardingError(
                f"mesh {axes!r}: {len(devices)} devices do not divide into axes of sizes {known}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    need = math.prod(sizes)
    if need > len(devices):
        raise ShardingError(
            f"mesh {axes!r} needs {need} devices, there are {len(devices)} "
            f"({devices[0].platform if devices else 'none'}); on CPU, simulate more with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax"
        )
    grid = np.array(devices[:need], dtype=object).reshape(sizes)
    return Mesh(grid, tuple(names), axis_types=(AxisType.Auto,) * len(names))


@contextlib.contextmanager
def mesh(axes, devices=None):
    """Activates a device mesh: variables created inside are laid out on it.

    `Variable(value, sharding=(None, "model"))` splits the value's second
    dimension along mesh axis `"model"`; a variable without a sharding is
    replicated on every device of the mesh. Contexts nest; leaving one
    restores the previous mesh.

    Example:
        >>> with jmod.distributed.mesh({"data": 1}) as m:
        ...     v = jmod.Variable(jnp.ones((2, 4)), sharding=(None, "data"))
        >>> v.sharding.spec
        P(None, 'data')

    Args:
        axes: `{axis name: size}` (see `make_mesh`) or a `jax.sharding.Mesh`.
        devices: the devices for a dict mesh (default: `jax.devices()`).
    """
    m = axes if isinstance(axes, Mesh) else make_mesh(axes, devices)
    mesh_token = _active.set(m)
    place_token = _tracing.placement.set(lambda value, spec, name: place(value, spec, name, m))
    try:
        yield m
    finally:
        _tracing.placement.reset(place_token)
        _active.reset(mesh_token)


def sharding_for(spec, shape, mesh=None, label="sharding"):
    """The `NamedSharding` for a partition spec on `mesh` (default: the active one), checked.

    Example:
        >>> with jmod.distributed.mesh({"data": 1}):
        ...     jmod.distributed.sharding_for(("data",), (4, 2)).spec
        P('data',)
    """
    m = mesh if mesh is not None else current_mesh()
    if m is None:
        raise ShardingError(f"{label}: a partition spec needs a mesh (jmod.distributed.mesh(...))")
    spec = as_partition_spec(spec, label)
    check_spec(spec, shape, dict(m.shape), label)
    return NamedSharding(m, spec)


def put(value, sharding):
    """Lays `value` out with `sharding`: a transfer for arrays, a constraint for tracers."""
    if isinstance(value, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(value, sharding)
    return jax.device_put(value, sharding)


def _already_on(value, m):
    if isinstance(value, jax.core.Tracer):
        return False
    sharding = getattr(value, "sharding", None)
    return isinstance(sharding, NamedSharding) and sharding.mesh == m


def place(value, spec, name, mesh):
    """The placement hook `jmod.Variable` calls while a mesh is active.

    A `jax.sharding.Sharding` is used as given; a partition spec is checked
    against the value's shape and the mesh; no spec means replicated, except
    for a value already laid out on this mesh (optimizer slots made with
    `zeros_like` of a split parameter), which keeps its layout.
    """
    if isinstance(spec, jax.sharding.Sharding):
        return put(value, spec)
    if spec is None and _already_on(value, mesh):
        return value
    label = f"variable {name!r}" if name else "variable"
    return put(value, sharding_for(spec, value.shape, mesh, label))


def replicated(mesh=None):
    """The fully replicated `NamedSharding` of `mesh` (default: the active one)."""
    m = mesh if mesh is not None else current_mesh()
    return NamedSharding(m, PartitionSpec())
