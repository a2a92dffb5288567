"""Beyond one device: meshes, sharded variables, data and model parallelism, many processes.

Everything runs on JAX's own engine: `jax.distributed` joins processes,
`jax.sharding` lays variables and batches out on a device mesh, and
`jax.jit` partitions the computation (SPMD) and inserts the collectives.

Example:
    >>> with jmod.distributed.mesh({"data": 1}):
    ...     w = jmod.Variable(jnp.ones((4, 2)), sharding=(None, "data"))
    ...     x = jmod.distributed.distribute_batch(jnp.ones((8, 4)))
    >>> (x @ w).shape
    (8, 2)
"""

from jmod.distributed._errors import DistributedError, ShardingError
from jmod.distributed.batch import distribute_batch
from jmod.distributed.layout import LayoutMap, shard_module
from jmod.distributed.mesh import current_mesh, make_mesh, mesh, sharding_for
from jmod.distributed.runtime import initialize, process_count, process_index, shutdown

__all__ = [
    "DistributedError",
    "LayoutMap",
    "ShardingError",
    "current_mesh",
    "distribute_batch",
    "initialize",
    "make_mesh",
    "mesh",
    "process_count",
    "process_index",
    "shard_module",
    "sharding_for",
    "shutdown",
]
