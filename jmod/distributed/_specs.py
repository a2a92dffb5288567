"""Partition specs as pure values: normalizing and checking them against shapes.

A spec names, for each leading dimension of a value, the mesh axis (or
tuple of axes) it is split along, or None to keep it whole. Trailing
dimensions the spec does not mention are not split.

Example:
    >>> from jmod.distributed._specs import as_partition_spec, check_spec
    >>> as_partition_spec((None, "model"))
    P(None, 'model')
    >>> check_spec(as_partition_spec((None, "model")), (4, 8), {"model": 2})
"""

import math

from jax.sharding import PartitionSpec

from jmod.distributed._errors import ShardingError


def _axes(entry):
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def as_partition_spec(spec, label="sharding"):
    """`None`, an axis name, a tuple/list of entries, or a PartitionSpec -> PartitionSpec.

    `None` means replicated (`PartitionSpec()`); a string `"data"` splits the
    first dimension along that axis.
    """
    if spec is None:
        return PartitionSpec()
    if isinstance(spec, PartitionSpec):
        return spec
    if isinstance(spec, str):
        return PartitionSpec(spec)
    if isinstance(spec, (tuple, list)):
        entries = []
        for entry in spec:
            ok = entry is None or isinstance(entry, str)
            ok = ok or (isinstance(entry, (tuple, list)) and all(isinstance(a, str) for a in entry))
            if not ok:
                raise ShardingError(
                    f"{label}: a sharding entry is a mesh axis name, a tuple of "
                    f"names or None, got {entry!r} in {tuple(spec)!r}"
                )
            entries.append(tuple(entry) if isinstance(entry, list) else entry)
        return PartitionSpec(*entries)
    raise ShardingError(
        f"{label}: sharding must be a tuple of mesh axis names / None, a "
        f"PartitionSpec or a jax.sharding.Sharding, got {type(spec).__name__} {spec!r}"
    )


def check_spec(spec, shape, axis_sizes, label="sharding"):
    """Raises `ShardingError` unless `spec` can lay out a value of `shape`.

    `axis_sizes` maps each mesh axis name to its size. Every named axis must
    exist and be used once, and each split dimension must divide evenly.
    `label` starts the error message (`"variable 'kernel'"`).
    """
    shape = tuple(shape)
    if len(spec) > len(shape):
        raise ShardingError(
            f"{label}: sharding {tuple(spec)!r} has {len(spec)} entries, the value "
            f"has {len(shape)} dimensions (shape {shape})"
        )
    used = set()
    for dim, entry in enumerate(spec):
        axes = _axes(entry)
        for axis in axes:
            if axis not in axis_sizes:
                raise ShardingError(
                    f"{label}: sharding {tuple(spec)!r} names mesh axis {axis!r}, "
                    f"the mesh has axes {tuple(axis_sizes)}"
                )
            if axis in used:
                raise ShardingError(
                    f"{label}: sharding {tuple(spec)!r} uses mesh axis {axis!r} twice"
                )
            used.add(axis)
        parts = math.prod(axis_sizes[a] for a in axes)
        if shape[dim] % parts:
            raise ShardingError(
                f"{label}: dimension {dim} of shape {shape} has size {shape[dim]}, "
                f"not divisible by the {parts} devices along {axes if len(axes) > 1 else axes[0]!r}"
            )
