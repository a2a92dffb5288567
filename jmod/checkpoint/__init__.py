"""Checkpoints: a module's variables saved by path, restored by path.

`Checkpoint` writes and restores, `CheckpointManager` keeps a directory of
numbered checkpoints, and `list_variables` / `load_variable` read a
checkpoint without any Python object to restore into. The byte format is
described in `jmod.checkpoint._format`.

Example:
    >>> import os, tempfile
    >>> model = jmod.Module()
    >>> model.w = jmod.Variable([[1.0, 2.0]])
    >>> path = jmod.Checkpoint(model=model).write(os.path.join(tempfile.mkdtemp(), "ckpt"))
    >>> jmod.checkpoint.list_variables(path)
    [('model/w', (1, 2))]
    >>> jmod.checkpoint.load_variable(path, "model/w").tolist()
    [[1.0, 2.0]]
"""

import os

import numpy as np

from jmod.checkpoint import _format, _read
from jmod.checkpoint.checkpoint import Checkpoint, CheckpointLoadStatus, WriteHandle
from jmod.checkpoint.manager import CheckpointManager, latest_checkpoint

__all__ = [
    "Checkpoint",
    "CheckpointLoadStatus",
    "CheckpointManager",
    "WriteHandle",
    "latest_checkpoint",
    "list_variables",
    "load_variable",
    "render_checkpoint",
]


def list_variables(path: str | os.PathLike) -> list[tuple[str, tuple[int, ...]]]:
    """The (key, shape) of every value in the checkpoint at `path`, sorted by key.

    Only the index file is read.
    """
    return [(key, entry.shape) for key, entry in sorted(_format.read_index(path).entries.items())]


def load_variable(path: str | os.PathLike, key: str) -> np.ndarray:
    """The value stored under `key` in the checkpoint at `path`, as a NumPy array.

    Only that value's bytes are read (a seek to its offset), and checked
    against its checksums.
    """
    return _read.read_arrays(path, keys=[key])[key]


def render_checkpoint(path):
    """A checkpoint's keys grouped by path, with shapes and dtypes, for notebooks.

    Renders as foldable HTML in Jupyter (treescope) and as short text
    elsewhere; reads only the index.
    """
    from jmod._render import render_checkpoint as render

    return render(path)
