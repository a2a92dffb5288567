"""The errors `jmod.distributed` raises.

Example:
    >>> from jmod.distributed import DistributedError, ShardingError
    >>> issubclass(DistributedError, RuntimeError), issubclass(ShardingError, ValueError)
    (True, True)
"""

from jmod.errors import JmodError, VariableError


class DistributedError(JmodError, RuntimeError):
    """Processes could not form a cluster: a peer never arrived, or init came too late."""


class ShardingError(VariableError):
    """A partition spec, mesh or batch does not fit the value it lays out."""
