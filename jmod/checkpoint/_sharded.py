"""Sharded values in checkpoints: blocks written by the processes holding them, read by box.

A value laid out over several devices (a `jax.Array` with a multi-device
sharding) is stored as its distinct blocks, each once. With N processes,
process k writes `PATH.data-0000k-of-0000N` holding the blocks it was
chosen to write (a holder of each block, balancing bytes: every process
computes the same choice from the shardings, so nothing but checksums
needs exchanging). Process 0 then writes the index (format version 2),
which records each value's global shape and each block's start, shape
and place. Values on one device are stored whole, as in version 1.

Reading takes boxes: `BoxReader.read(key, box)` reads only the blocks that
overlap the box, and of each only the rows (along its first axis) inside
it, at the granularity of the checksum chunks. A restore onto any mesh asks
each process for the boxes of its own devices.

Example:
    >>> import os, tempfile
    >>> from jmod.checkpoint import _format, _sharded
    >>> path = os.path.join(tempfile.mkdtemp(), "c")
    >>> _format.write_checkpoint(path, {"w": np.arange(6.0).reshape(3, 2)})
    >>> _sharded.BoxReader(path).read("w", ((1, 0), (2, 1))).tolist()
    [[2.0], [4.0]]
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import secrets

import jax
import msgpack
import numpy as np

from jmod.checkpoint import _format, _io
from jmod.distributed import _slices, exchange
from jmod.errors import CheckpointError

# ---------------------------------------------------------------- which values are sharded


def is_sharded(value) -> bool:
    """Whether `value` is a `jax.Array` split into several blocks or spread over processes."""
    if not isinstance(value, jax.Array) or isinstance(value, jax.core.Tracer):
        return False
    sharding = value.sharding
    if not value.is_fully_addressable:
        return True
    if len(sharding.device_set) == 1 or value.is_fully_replicated:
        return False
    return len(_slices.blocks(sharding, value.shape)) > 1


def needs_sharded_write(values) -> bool:
    """Whether `values` must go through `write` (several processes, or a sharded value)."""
    return jax.process_count() > 1 or any(
        isinstance(v, Held) or is_sharded(v) for v in values.values()
    )


class Held:
    """Host copies of the blocks of one value this process holds (for background writes)."""

    def __init__(self, value):
        self.dtype = np.dtype(value.dtype)
        self.shape = tuple(value.shape)
        self.sharding = value.sharding
        self.data = {}
        for shard in value.addressable_shards:
            box = _slices.box_of(shard.index, self.shape)
            if box not in self.data:
                self.data[box] = np.array(shard.data, copy=True)


def snapshot(values):
    """Host copies of `values` as they are now; sharded ones keep their blocks apart."""
    out = {}
    for key, value in values.items():
        if is_sharded(value):
            out[key] = Held(value)
        elif isinstance(value, jax.Array):
            out[key] = np.array(value, copy=True)
        else:
            out[key] = np.asarray(value)
    return out


# ---------------------------------------------------------------- the write plan


def _blocks_of(value, num_processes):
    """(dtype name, global shape, blocks) of one value."""
    if isinstance(value, Held):
        return value.dtype, value.shape, _slices.blocks(value.sharding, value.shape)
    if isinstance(value, jax.Array) and is_sharded(value):
        shape = tuple(value.shape)
        return np.dtype(value.dtype), shape, _slices.blocks(value.sharding, shape)
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        value = np.asarray(value)
    shape = tuple(int(d) for d in value.shape)
    # A value on one device (or a host value) is the same on every process.
    whole = _slices.Block((0,) * len(shape), shape, tuple(range(num_processes)))
    return np.dtype(value.dtype), shape, [whole]


def plan(values, num_processes):
    """Every block of every value, with its writer, file offset and length; the same everywhere.

    Returns `(items, version)`: items are dicts with key, dtype, shape
    (global), block, writer, offset, length, in key order; `version` is the
    index format version the write needs (2 if any value has several blocks).
    """
    items, sharded = [], False
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"checkpoint keys must be non-empty strings, got {key!r}")
        dtype, shape, blocks = _blocks_of(value, num_processes)
        try:
            name = _format.dtype_name(dtype)
        except CheckpointError as err:
            raise CheckpointError(f"{key}: {err}") from None
        sharded = sharded or len(blocks) > 1
        for block in blocks:
            length = block.size * _format.DTYPES[name].itemsize
            items.append(
                {"key": key, "dtype": name, "shape": shape, "block": block, "length": length}
            )
    writers = _slices.assign_writers(
        [i["block"] for i in items], num_processes, [i["length"] for i in items]
    )
    ends = [_format.DATA_HEADER_BYTES] * num_processes
    for item, writer in zip(items, writers):
        item["writer"] = writer
        item["offset"] = _io.align(ends[writer])
        ends[writer] = item["offset"] + item["length"]
    version = _format.SHARDED_VERSION if sharded else _format.FORMAT_VERSION
    return items, version


def _block_data(value, block):
    """The bytes-backing array of one block of `value`, held by this process."""
    if isinstance(value, Held):
        return value.data[block.box]
    if isinstance(value, jax.Array) and is_sharded(value):
        for shard in value.addressable_shards:
            if _slices.box_of(shard.index, value.shape) == block.box:
                return np.asarray(shard.data)
        raise CheckpointError(f"block {block.box} is not held by process {jax.process_index()}")
    return np.asarray(value)


# ---------------------------------------------------------------- writing


def write(path, values, chunk_bytes=None):
    """Writes `values` (key -> array) as the checkpoint `path` from every process, atomically.

    Every process must call it with the same keys and shardings. Each writes
    its own data file; process 0 writes the index once all data files are
    in place. A failure on any process is raised on every process.
    """
    path = os.fspath(path)
    chunk_bytes = _format.CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    count, me = jax.process_count(), jax.process_index()
    items, version = plan(values, count)
    uid = exchange.broadcast_bytes(secrets.token_bytes(16))
    tag = uid.hex()
    final = _format.data_path(path, me, count)
    temp = f"{final}.tmp-{tag[:12]}"
    crcs, error = {}, None
    try:
        mine = [(i, item) for i, item in enumerate(items) if item["writer"] == me]
        crcs = _write_file(temp, version, me, count, uid, mine, values, chunk_bytes)
    except Exception as err:  # reported to every process below, then raised everywhere
        error = f"{type(err).__name__}: {err}"
    reports = [
        msgpack.unpackb(r, strict_map_key=False)
        for r in exchange.allgather_bytes(msgpack.packb({"error": error, "crcs": crcs}))
    ]
    failed = [(k, r["error"]) for k, r in enumerate(reports) if r["error"]]
    if failed:
        _io.unlink_quietly(temp)
        k, message = failed[0]
        raise CheckpointError(f"{path}: process {k} could not write its data file: {message}")
    _replace_data_file(temp, final)
    exchange.barrier(f"jmod.checkpoint data {tag}")
    error = None
    if me == 0:
        try:
            all_crcs = {}
            for r in reports:
                all_crcs.update(r["crcs"])
            _write_index(path, version, count, uid, chunk_bytes, items, all_crcs)
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
    error = exchange.broadcast_bytes(msgpack.packb(error))
    error = msgpack.unpackb(error)
    if error:
        raise CheckpointError(f"{path}: process 0 could not write the index: {error}")


def _write_file(temp, version, me, count, uid, mine, values, chunk_bytes):
    crcs = {}
    fd = _io.create(temp)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as summer:
            futures = {}
            position = _io.write_all(fd, _io.pack_data_header(version, me, count, uid))
            for i, item in mine:
                data = _block_data(values[item["key"]], item["block"])
                dtype = _format.DTYPES[item["dtype"]]
                view = _io.byte_view(data, dtype, item["block"].shape, item["key"])
                futures[i] = summer.submit(_io.chunk_crcs, view, chunk_bytes)
                position = _io.write_at(fd, position, item["offset"], view, chunk_bytes)
            crcs = {i: future.result() for i, future in futures.items()}
        os.fsync(fd)
    finally:
        os.close(fd)
    return crcs


def _replace_data_file(temp, final):
    # As in _format's commit: a reader of the old index finds the old data
    # under its `.prev-<uid>` name until the new index is in place.
    _io.keep_previous(final)
    os.replace(temp, final)


def _write_index(path, version, count, uid, chunk_bytes, items, crcs):
    entries, by_key = {}, {}
    for i, item in enumerate(items):
        by_key.setdefault(item["key"], []).append((i, item))
    for key, parts in by_key.items():
        dtype, shape = parts[0][1]["dtype"], parts[0][1]["shape"]
        pieces = tuple(
            _format.Entry(
                key,
                dtype,
                item["block"].shape,
                item["writer"],
                item["offset"],
                item["length"],
                tuple(crcs[i]),
                start=item["block"].start,
            )
            for i, item in parts
        )
        if len(pieces) == 1:
            p = pieces[0]
            entries[key] = _format.Entry(key, dtype, shape, p.file, p.offset, p.length, p.crc32)
        else:
            length = math.prod(shape) * _format.DTYPES[dtype].itemsize
            entries[key] = _format.Entry(key, dtype, shape, -1, 0, length, (), pieces=pieces)
    index = _format.Index(version, uid, count, chunk_bytes, entries)
    final = _format.index_path(path)
    temp = f"{final}.tmp-{uid.hex()[:12]}"
    try:
        _io.write_file(temp, _format.encode_index(index))
        os.replace(temp, final)
    finally:
        _io.unlink_quietly(temp)
    _io.fsync_directory(os.path.dirname(path) or ".")
    _format.remove_leftovers(path, [_format.data_path(path, k, count) for k in range(count)])


# ---------------------------------------------------------------- reading boxes


class BoxReader:
    """Reads boxes of the values of one checkpoint, opening each data file once, when needed.

    Args:
        path: the checkpoint.
        index: its decoded index (read from `path` if None).
        verify: check the CRC-32 of every chunk read.
        files: data files already opened and checked, `{number: (fd, filename)}`
            (the caller closes those); others are opened here and closed by `close()`.
    """

    def __init__(self, path, index=None, verify=True, files=None):
        self.path = os.fspath(path)
        self.index = _format.read_index(self.path) if index is None else index
        self.verify = verify
        self._given = dict(files or {})
        self._owned = {}
        self.bytes_read = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        owned, self._owned = self._owned, {}
        for fd, _ in owned.values():
            os.close(fd)

    def _file(self, number):
        if number in self._given:
            return self._given[number]
        if number not in self._owned:
            pieces = [
                p
                for e in self.index.entries.values()
                for p in (e.pieces or (e,))
                if p.file == number
            ]
            self._owned[number] = _format.open_data_file(self.path, self.index, number, pieces)
        return self._owned[number]

    def read(self, key, box=None):
        """The box `(start, shape)` of value `key` (default: all of it) as a NumPy array."""
        e = self.index.entries.get(key)
        if e is None:
            raise CheckpointError(f"{key}: not in checkpoint {_format.index_path(self.path)}")
        whole = ((0,) * len(e.shape), tuple(e.shape))
        box = whole if box is None else (tuple(box[0]), tuple(box[1]))
        if _slices.intersect(box, whole) != box and math.prod(box[1]):
            raise CheckpointError(f"{key}: box {box} is outside the value's shape {e.shape}")
        dtype = _format.DTYPES[e.dtype]
        pieces = e.pieces or (e,)
        for p in pieces:
            # Opening checks that every block lies inside its file: nothing is
            # allocated for a value its files cannot hold.
            self._file(p.file)
        if len(pieces) == 1 and box == whole:
            return self._rows(pieces[0], 0, e.shape[0] if e.shape else 1)
        out = _io.aligned_empty(math.prod(box[1]) * dtype.itemsize).view(dtype).reshape(box[1])
        if not out.size:
            return out
        for p in pieces:
            pbox = (p.start or (0,) * len(e.shape), tuple(p.shape))
            overlap = _slices.intersect(pbox, box)
            if overlap is None:
                continue
            inside = _slices.relative(overlap, pbox)
            if p.shape:
                rows = self._rows(p, inside[0].start, inside[0].stop - inside[0].start)
                part = rows[(slice(None), *inside[1:])]
            else:
                part = self._rows(p, 0, 1)
            out[_slices.relative(overlap, box)] = part
        return out

    def _rows(self, p, first, count):
        """Rows `first .. first+count` (first axis) of stored block `p`, checked chunk by chunk."""
        chunk = self.index.chunk_bytes
        per_row = p.length // p.shape[0] if p.shape and p.shape[0] else p.length
        lo, hi = first * per_row, (first + count) * per_row
        if not p.shape:
            lo, hi = 0, p.length
        c0, c1 = lo // chunk, -(-hi // chunk)
        begin, end = c0 * chunk, min(c1 * chunk, p.length)
        fd, filename = self._file(p.file)
        buf = _io.aligned_empty(end - begin)
        view = memoryview(buf)
        _io.pread_exactly(fd, view, p.offset + begin, filename, p.key)
        self.bytes_read += end - begin
        if self.verify:
            for i in range(c0, c1):
                got = _io.crc32(view[(i - c0) * chunk : (i - c0 + 1) * chunk])
                _io.check_chunk(filename, p.key, i, p.offset + i * chunk, p.crc32[i], got)
        data = buf[lo - begin : hi - begin].view(_format.DTYPES[p.dtype])
        return data.reshape((count, *p.shape[1:]) if p.shape else ())


# ---------------------------------------------------------------- restoring onto a layout


def is_multi_device(sharding) -> bool:
    """Whether `sharding` (a variable's; None if it has none yet) spans devices or processes."""
    if sharding is None:
        return False
    return not sharding.is_fully_addressable or len(sharding.device_set) > 1


def read_onto(reader, key, like):
    """Value `key` as a `jax.Array` with the shape and sharding of `like` (an array, a variable).

    Each process reads only the boxes its own devices hold, each once.
    """
    shape, cache = tuple(like.shape), {}

    def box(index):
        b = _slices.box_of(index, shape)
        if b not in cache:
            cache[b] = reader.read(key, b)
        return cache[b]

    return jax.make_array_from_callback(shape, like.sharding, box)
