"""`distribute_batch`: split a batch along the mesh's data axis."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jmod.distributed._errors import ShardingError
from jmod.distributed.mesh import current_mesh, put


def distribute_batch(batch, axis="data", batch_dim=0):
    """Splits the batch dimension of every array in `batch` along mesh axis `axis`.

    Without an active mesh the batch is returned unchanged, so training
    loops can call it unconditionally. Inside `jax.jit` it constrains the
    layout instead of moving data. Scalars are replicated. With several
    processes each passes its own part of the batch (its rows): the global
    batch is their concatenation in process order, as in Keras.

    Example:
        >>> with jmod.distributed.mesh({"data": 1}):
        ...     x = jmod.distributed.distribute_batch(jnp.ones((8, 3)))
        >>> x.sharding.spec
        P('data',)

    Args:
        batch: an array, or a pytree (tuple, dict) of arrays.
        axis: the mesh axis that splits the batch.
        batch_dim: which dimension is the batch (1 for arrays stacked as
            `(steps, batch, ...)`); arrays with fewer dimensions are replicated.
    """
    m = current_mesh()
    if m is None:
        return batch
    if axis not in m.shape:
        raise ShardingError(
            f"distribute_batch: the mesh has axes {tuple(m.axis_names)}, no {axis!r} axis to "
            "split the batch along"
        )
    split = NamedSharding(m, PartitionSpec(*[None] * batch_dim, axis))
    whole = NamedSharding(m, PartitionSpec())
    multi = jax.process_count() > 1
    parts = m.shape[axis]

    def one(path, x):
        if isinstance(x, jax.core.Tracer):
            return put(x, split if x.ndim > batch_dim else whole)
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        if x.ndim <= batch_dim:
            return jax.device_put(x, whole)
        if multi:
            # Each process holds its rows; JAX assembles the global array.
            return jax.make_array_from_process_local_data(split, np.asarray(x))
        rows = x.shape[batch_dim]
        if rows % parts:
            raise ShardingError(
                f"distribute_batch: batch{jax.tree_util.keystr(path)} has {rows} rows "
                f"(shape {tuple(x.shape)}), not divisible by the {parts} devices along mesh "
                f"axis {axis!r}"
            )
        return jax.device_put(x, split)

    return jax.tree_util.tree_map_with_path(one, batch)
