"""Reading a checkpoint's values: whole values streamed in file order, sharded ones by block.

`iter_arrays` opens and checks every data file it needs before yielding
anything, then reads whole values one after another while a second thread
checks the previous one's CRC-32s; values stored as blocks (format version 2)
come last, assembled by `_sharded.BoxReader` from the same open files.

Example:
    >>> import numpy as np, tempfile, os
    >>> from jmod.checkpoint import _format, _read
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> _format.write_checkpoint(path, {"w": np.eye(2, dtype=np.float32), "b": np.ones(2)})
    >>> _read.read_arrays(path, keys=["w"])["w"].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterable, Iterator

import numpy as np

from jmod.checkpoint import _format, _io, _sharded
from jmod.errors import CheckpointError


def read_arrays(
    path: str | os.PathLike,
    index: _format.Index | None = None,
    keys: Iterable[str] | None = None,
    *,
    verify: bool = True,
) -> dict[str, np.ndarray]:
    """Read values of the checkpoint at `path` into fresh aligned NumPy arrays.

    Only the requested `keys` (default: all) are read, each by seeking to its
    byte range; see `iter_arrays`.
    """
    index = _format.read_index(path) if index is None else index
    wanted = list(index.entries) if keys is None else list(keys)
    out = dict(iter_arrays(path, index, wanted, verify=verify))
    return {key: out[key] for key in wanted}


def iter_arrays(
    path: str | os.PathLike,
    index: _format.Index | None = None,
    keys: Iterable[str] | None = None,
    *,
    verify: bool = True,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, array) for the requested keys in file order, each once its checksums pass.

    Every data file is opened and checked (header, uid, sizes) before the
    first value is yielded, so a missing, foreign or truncated file fails
    before anything is used. Checksums run on a second thread while the next
    value is read; a consumer that assigns each value as it comes holds only
    two of them in memory at a time. Sharded values come last, each
    assembled from its blocks.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from jmod.checkpoint import _format, _read
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> _format.write_checkpoint(path, {"a": np.zeros(3), "b": np.ones(2)})
        >>> [(key, value.tolist()) for key, value in _read.iter_arrays(path)]
        [('a', [0.0, 0.0, 0.0]), ('b', [1.0, 1.0])]
    """
    path = os.fspath(path)
    index = _format.read_index(path) if index is None else index
    wanted = list(index.entries) if keys is None else list(keys)
    whole, blocks, sharded = _by_file(path, index, wanted)
    opened = []
    files = {}
    try:
        for shard in sorted(whole.keys() | blocks.keys()):
            entries = sorted(whole.get(shard, []), key=lambda e: e.offset)
            fd, filename = _format.open_data_file(
                path, index, shard, entries + blocks.get(shard, [])
            )
            opened.append((fd, filename, entries))
            files[shard] = (fd, filename)
        with concurrent.futures.ThreadPoolExecutor(1) as checker:
            for fd, filename, entries in opened:
                yield from _stream(fd, filename, entries, index.chunk_bytes, verify and checker)
        if sharded:
            reader = _sharded.BoxReader(path, index, verify=verify, files=files)
            for e in sharded:
                yield e.key, reader.read(e.key)
    finally:
        for fd, _, _ in opened:
            os.close(fd)


def _by_file(path, index: _format.Index, wanted: list[str]):
    """Whole entries by data file, blocks of sharded entries by data file, sharded entries."""
    whole: dict[int, list[_format.Entry]] = {}
    blocks: dict[int, list[_format.Entry]] = {}
    sharded = []
    for key in wanted:
        if key not in index.entries:
            raise CheckpointError(f"{key}: not in checkpoint {_format.index_path(path)}")
        e = index.entries[key]
        if e.pieces:
            sharded.append(e)
            for p in e.pieces:
                blocks.setdefault(p.file, []).append(p)
        else:
            whole.setdefault(e.file, []).append(e)
    return whole, blocks, sharded


def _stream(fd: int, filename: str, entries: list[_format.Entry], chunk_bytes: int, checker):
    """(key, array) for `entries` of one file; each is yielded after the next one is read."""
    previous = None
    for e in entries:
        pending: list = []
        buf = _read_entry(fd, e, chunk_bytes, filename, checker, pending)
        if previous is not None:
            yield _verified(*previous, chunk_bytes, filename)
        previous = (e, buf, pending)
    if previous is not None:
        yield _verified(*previous, chunk_bytes, filename)


def _read_entry(
    fd: int, e: _format.Entry, chunk_bytes: int, filename: str, checker, pending
) -> np.ndarray:
    buf = _io.aligned_empty(e.length)
    view = memoryview(buf)  # type: ignore[arg-type]  # numpy stubs: ndarray is a buffer
    for i, start in enumerate(range(0, e.length, chunk_bytes)):
        chunk = view[start : start + chunk_bytes]
        _io.pread_exactly(fd, chunk, e.offset + start, filename, e.key)
        if checker:
            pending.append((i, checker.submit(_io.crc32, chunk)))
    return buf.view(_format.DTYPES[e.dtype]).reshape(e.shape)


def _verified(e: _format.Entry, buf: np.ndarray, pending, chunk_bytes: int, filename: str):
    for i, future in pending:
        _io.check_chunk(filename, e.key, i, e.offset + i * chunk_bytes, e.crc32[i], future.result())
    return e.key, buf
