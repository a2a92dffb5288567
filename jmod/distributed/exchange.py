"""Small host values passed among processes (bytes, barriers), over JAX's own collectives.

Sharded checkpoints use these to agree on a write's id, collect the other
processes' checksums and wait for every data file before the index. With
one process they return at once.

Example:
    >>> from jmod.distributed import exchange
    >>> exchange.allgather_bytes(b"mine")
    [b'mine']
"""

import jax
import numpy as np
from jax.experimental import multihost_utils


def barrier(name):
    """Returns once every process has reached `barrier(name)` (the same name everywhere)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def allgather_bytes(data):
    """Every process's `data` (bytes), as a list in process order."""
    data = bytes(data)
    if jax.process_count() == 1:
        return [data]
    lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32))
    lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
    padded = np.zeros(max(max(lengths), 1), np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [rows[i, :n].tobytes() for i, n in enumerate(lengths)]


def broadcast_bytes(data):
    """Process 0's `data` (bytes), on every process (others may pass anything)."""
    if jax.process_count() == 1:
        return bytes(data)
    return allgather_bytes(data if jax.process_index() == 0 else b"")[0]
