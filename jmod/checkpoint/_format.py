"""The checkpoint file format: pure functions over paths, bytes and NumPy arrays.

A checkpoint at `PATH` is one index file and N data files:

    PATH.index                    msgpack envelope (see below)
    PATH.data-00000-of-00001      64-byte header, then each value's raw bytes

The index file is a msgpack map that never changes shape between versions:

    {"format": "jmod.checkpoint", "version": 1, "index": <bin>, "crc32": <int>}

`index` is itself a msgpack map, checksummed by `crc32`:

    {"uid": <16 bytes>, "num_shards": N, "chunk_bytes": C,
     "variables": {key: {"dtype": "float32", "shape": [3, 3], "file": 0,
                         "offset": 64, "length": 36, "crc32": [<one per chunk>]}}}

Each value is stored C-contiguous, little-endian, at a 64-byte-aligned offset
so it can be read into an aligned buffer and handed to JAX without a copy.
Its bytes are checksummed in chunks of `chunk_bytes` (one CRC-32 each), which
is also the unit of every read and write system call: values of any size,
above 4 GiB included, stream through memory one chunk at a time. The data
file header repeats the checkpoint's `uid`, so a data file from another write
is never read against this index. Sub-byte types (int4, float4_e2m1fn, ...)
are stored one value per byte, as NumPy holds them.

Writes go to temporary names that are renamed into place, data files first
and the index last: a checkpoint exists exactly when its `.index` does.

This module holds the index (its encoding and validation), the file names
and the one-process write. The bytes below it (header, read and write
loops, checksums, fsync) are `_io`; reading values back is `_read`; values
stored as blocks are `_sharded`. Imports go one way:
`_io` <- `_format` <- `_sharded` <- `_read`.

Example:
    >>> import numpy as np, tempfile, os
    >>> from jmod.checkpoint import _format
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> _format.write_checkpoint(path, {"w": np.eye(2, dtype=np.float32)})
    >>> index = _format.read_index(path)
    >>> index.entries["w"].shape, index.entries["w"].offset
    ((2, 2), 64)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import secrets
import sys
from collections.abc import Mapping
from typing import TypeGuard

import ml_dtypes
import msgpack
import numpy as np

from jmod.checkpoint import _io
from jmod.checkpoint._io import corrupt
from jmod.errors import CheckpointError

FORMAT_NAME = "jmod.checkpoint"
FORMAT_VERSION = 1
# Version 2 adds sharded values (an entry lists its blocks: see `Entry.pieces`);
# it is written only by checkpoints that hold one, so others stay version 1.
SHARDED_VERSION = 2
READABLE_VERSIONS = (1, 2)

# Where the first value of a data file may start (values begin 64-byte aligned).
DATA_HEADER_BYTES = _io.DATA_HEADER_BYTES

# The unit of checksums and of each read/write call. Module-level so tests can
# lower it and exercise the many-chunk path (the one arrays above 4 GiB take)
# on a few kilobytes. Readers take the size recorded in the index, not this.
CHUNK_BYTES = 16 << 20

# An index larger than this is refused before it is read: a garbage or hostile
# file must not make the reader allocate without bound.
MAX_INDEX_BYTES = 256 << 20
MAX_NDIM = 64

_NUMPY_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
)  # fmt: skip
_ML_DTYPES = (
    "bfloat16", "int1", "int2", "int4", "uint1", "uint2", "uint4",
    "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "float8_e3m4", "float8_e4m3",
    "float8_e4m3b11fnuz", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
    "float8_e5m2fnuz", "float8_e8m0fnu",
)  # fmt: skip

# The dtype codes the format knows, by name. A name outside this table is
# refused: `np.dtype(name)` would also accept "object", which no file may ask for.
DTYPES: dict[str, np.dtype] = {name: np.dtype(name) for name in _NUMPY_DTYPES}
DTYPES.update(
    {name: np.dtype(getattr(ml_dtypes, name)) for name in _ML_DTYPES if hasattr(ml_dtypes, name)}
)

if sys.byteorder != "little":  # pragma: no cover - every platform JAX ships for is little-endian
    raise ImportError("jmod checkpoints need a little-endian machine")


@dataclasses.dataclass(frozen=True)
class Entry:
    """Where one value lives: its dtype name, shape, data file, byte range and checksums.

    A sharded value (format version 2) is stored as blocks, possibly in
    several data files: its `pieces` are one `Entry` per block (the block's
    shape, file and bytes) with `start`, where the block begins in the whole
    value; the sharded entry's own `file` is -1 and its `length` the whole
    value's bytes.
    """

    key: str
    dtype: str
    shape: tuple[int, ...]
    file: int
    offset: int
    length: int
    crc32: tuple[int, ...]
    pieces: tuple = ()
    start: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Index:
    """A decoded index file: the entries by key, plus what ties them to their data files."""

    version: int
    uid: bytes
    num_shards: int
    chunk_bytes: int
    entries: dict[str, Entry]


# ---------------------------------------------------------------- file names


def index_path(path: str) -> str:
    """The index file of the checkpoint at `path`: `path + ".index"`."""
    return f"{path}.index"


def data_path(path: str, shard: int, num_shards: int) -> str:
    """A data file of the checkpoint at `path`, e.g. `path.data-00000-of-00001`."""
    return f"{path}.data-{shard:05d}-of-{num_shards:05d}"


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """Whether a committed checkpoint is at `path` (its index is written last)."""
    return os.path.isfile(index_path(os.fspath(path)))


# ---------------------------------------------------------------- dtypes


def dtype_name(dtype) -> str:
    """The format's code for a NumPy/JAX dtype; `CheckpointError` if it has none."""
    dtype = np.dtype(dtype)
    name = dtype.name
    if DTYPES.get(name) != dtype:
        raise CheckpointError(
            f"dtype {dtype!r} cannot be stored in a checkpoint; "
            f"known dtypes: {', '.join(sorted(DTYPES))}"
        )
    return name


# ---------------------------------------------------------------- index encoding


def encode_index(index: Index) -> bytes:
    """The bytes of an index file for `index` (the envelope around the checksummed body)."""
    variables: dict[str, object] = {}
    for key in sorted(index.entries):
        e = index.entries[key]
        if e.pieces:
            variables[key] = {
                "dtype": e.dtype,
                "shape": list(e.shape),
                "shards": [
                    {
                        "start": list(p.start),
                        "shape": list(p.shape),
                        "file": p.file,
                        "offset": p.offset,
                        "length": p.length,
                        "crc32": list(p.crc32),
                    }
                    for p in e.pieces
                ],
            }
            continue
        variables[key] = {
            "dtype": e.dtype,
            "shape": list(e.shape),
            "file": e.file,
            "offset": e.offset,
            "length": e.length,
            "crc32": list(e.crc32),
        }
    body = msgpack.packb(
        {
            "uid": index.uid,
            "num_shards": index.num_shards,
            "chunk_bytes": index.chunk_bytes,
            "variables": variables,
        },
        use_bin_type=True,
    )
    envelope = {
        "format": FORMAT_NAME,
        "version": index.version,
        "index": body,
        "crc32": _io.crc32(body),
    }
    return msgpack.packb(envelope, use_bin_type=True)


def decode_index(data: bytes, filename: str = "<index>") -> Index:
    """Parse and validate index-file bytes; any defect is a `CheckpointError` naming `filename`.

    Nothing in the file is executed or trusted: msgpack is read with limits
    derived from the input size, every field is type- and range-checked, and
    the body's CRC-32 must match.
    """
    envelope = _unpack(data, filename, "index file")
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT_NAME:
        raise corrupt(filename, "not a jmod checkpoint index (no 'jmod.checkpoint' header)")
    version = envelope.get("version")
    if not _is_int(version) or version < 1:
        raise corrupt(filename, f"format version {version!r} is not a positive integer")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{filename}: written in checkpoint format version {version}, newer than this "
            f"jmod reads (versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade jmod"
        )
    body, crc = envelope.get("index"), envelope.get("crc32")
    if not isinstance(body, bytes) or not _is_int(crc):
        raise corrupt(filename, "the index envelope lacks its 'index' bytes or 'crc32'")
    if _io.crc32(body) != crc:
        raise corrupt(
            filename, f"index checksum mismatch: stored {crc}, computed {_io.crc32(body)}"
        )
    return _decode_body_v1(_unpack(body, filename, "index body"), filename, version)


def decode_index_body(body: bytes, filename: str = "<index>") -> Index:
    """Validate a version-1 index body alone (no envelope, no checksum): for tests and tools."""
    return _decode_body_v1(_unpack(body, filename, "index body"), filename)


def _decode_body_v1(raw, filename: str, version: int = 1) -> Index:
    if not isinstance(raw, dict):
        raise corrupt(filename, f"the index body is a {type(raw).__name__}, expected a map")
    uid, num_shards, chunk_bytes = raw.get("uid"), raw.get("num_shards"), raw.get("chunk_bytes")
    if not isinstance(uid, bytes) or len(uid) != 16:
        raise corrupt(filename, "the index has no 16-byte 'uid'")
    if not _is_int(num_shards) or not 1 <= num_shards <= 99999:
        raise corrupt(filename, f"'num_shards' is {num_shards!r}, expected 1..99999")
    if not _is_int(chunk_bytes) or chunk_bytes < 1:
        raise corrupt(filename, f"'chunk_bytes' is {chunk_bytes!r}, expected a positive integer")
    variables = raw.get("variables")
    if not isinstance(variables, dict):
        raise corrupt(filename, "the index has no 'variables' map")
    entries = {}
    for key, value in variables.items():
        if version >= SHARDED_VERSION and isinstance(value, dict) and "shards" in value:
            entries[key] = _decode_sharded(key, value, filename, num_shards, chunk_bytes)
        else:
            entries[key] = _decode_entry(key, value, filename, num_shards, chunk_bytes)
    _check_disjoint(entries, filename)
    return Index(version, uid, num_shards, chunk_bytes, entries)


def _check_disjoint(entries: Mapping[str, Entry], filename: str) -> None:
    """Refuses byte ranges that overlap in a data file: each stored byte backs one value.

    With overlaps allowed, a small file could describe values many times its
    size (4096 blocks pointing at the same MiB make a 4 GiB value). Disjoint
    ranges, each checked to lie inside its data file before anything is
    read, bound every allocation by the size of the files on disk.
    """
    spans = sorted(
        (
            p.file,
            p.offset,
            p.offset + p.length,
            p.key if not p.start else f"{p.key} {list(p.start)}",
        )
        for e in entries.values()
        for p in (e.pieces or (e,))
        if p.length
    )
    for (file, _, end, first), (file2, begin, _, second) in zip(spans, spans[1:]):
        if file == file2 and begin < end:
            raise corrupt(
                filename,
                f"{second}: its bytes from {begin} overlap those of {first} (up to {end}) "
                f"in data file {file}; each stored byte must belong to one value",
            )


def _decode_sharded(key, raw, filename: str, num_shards: int, chunk_bytes: int) -> Entry:
    """A version-2 entry stored as blocks; they must tile the value as a grid, each once."""
    whole = _decode_entry(
        key,
        {**raw, "file": 0, "offset": DATA_HEADER_BYTES, "length": 0, "crc32": []},
        filename,
        1,
        chunk_bytes,
        check_bytes=False,
    )
    shards = raw["shards"]
    if not isinstance(shards, list) or not shards:
        raise corrupt(filename, f"{key}: 'shards' is not a non-empty list")
    pieces = []
    for i, piece in enumerate(shards):
        label = f"{key} (shard {i})"
        if not isinstance(piece, dict):
            raise corrupt(filename, f"{label}: entry is a {type(piece).__name__}, expected a map")
        p = _decode_entry(label, {**piece, "dtype": whole.dtype}, filename, num_shards, chunk_bytes)
        start = piece.get("start")
        if (
            not isinstance(start, list)
            or len(start) != len(whole.shape)
            or len(p.shape) != len(whole.shape)
            or not all(
                _is_int(b) and 0 <= b and b + n <= d for b, n, d in zip(start, p.shape, whole.shape)
            )
        ):
            raise corrupt(
                filename,
                f"{label}: block at {start!r} of shape {list(p.shape)} is not inside "
                f"{list(whole.shape)}",
            )
        pieces.append(dataclasses.replace(p, key=key, start=tuple(start)))
    _check_tiling(key, whole.shape, pieces, filename)
    length = math.prod(whole.shape) * DTYPES[whole.dtype].itemsize
    return dataclasses.replace(whole, file=-1, offset=0, length=length, pieces=tuple(pieces))


def _check_tiling(key, shape, pieces, filename: str) -> None:
    # Blocks of a jax sharding form a grid: per dimension, the blocks' ranges
    # partition the axis, and every combination of ranges appears exactly once.
    ranges = []
    for dim, size in enumerate(shape):
        spans = sorted({(p.start[dim], p.shape[dim]) for p in pieces})
        at = 0
        for begin, n in spans:
            if begin != at or (n == 0 and size != 0):
                raise corrupt(
                    filename, f"{key}: its blocks do not tile dimension {dim} of {list(shape)}"
                )
            at = begin + n
        if at != size:
            raise corrupt(
                filename, f"{key}: its blocks do not tile dimension {dim} of {list(shape)}"
            )
        ranges.append(len(spans))
    starts = {p.start for p in pieces}
    if len(starts) != len(pieces) or len(pieces) != math.prod(ranges):
        raise corrupt(filename, f"{key}: its blocks do not tile {list(shape)} exactly once")


def _decode_entry(
    key, raw, filename: str, num_shards: int, chunk_bytes: int, check_bytes: bool = True
) -> Entry:
    if not isinstance(key, str) or not key:
        raise corrupt(filename, f"variable key {key!r} is not a non-empty string")
    if not isinstance(raw, dict):
        raise corrupt(filename, f"{key}: entry is a {type(raw).__name__}, expected a map")
    dtype, shape = raw.get("dtype"), raw.get("shape")
    file, offset, length, crcs = (raw.get(f) for f in ("file", "offset", "length", "crc32"))
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise corrupt(filename, f"{key}: unknown dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(_is_int(d) and d >= 0 for d in shape)
    ):
        raise corrupt(filename, f"{key}: shape {shape!r} is not a list of non-negative integers")
    if not check_bytes:
        return Entry(key, dtype, tuple(shape), -1, 0, 0, ())
    if not _is_int(file) or not 0 <= file < num_shards:
        raise corrupt(filename, f"{key}: data file number {file!r} is not in 0..{num_shards - 1}")
    if not _is_int(offset) or offset < DATA_HEADER_BYTES:
        raise corrupt(filename, f"{key}: offset {offset!r} is inside the data file header")
    expected_length = math.prod(shape) * DTYPES[dtype].itemsize
    if not _is_int(length) or length != expected_length:
        raise corrupt(
            filename, f"{key}: length {length!r}, expected {expected_length} for {dtype}{shape}"
        )
    n_chunks = -(-length // chunk_bytes)
    if (
        not isinstance(crcs, list)
        or len(crcs) != n_chunks
        or not all(_is_int(c) and 0 <= c < 2**32 for c in crcs)
    ):
        raise corrupt(filename, f"{key}: expected {n_chunks} CRC-32 checksums")
    return Entry(key, dtype, tuple(shape), file, offset, length, tuple(crcs))


def _unpack(data: bytes, filename: str, what: str):
    try:
        # Containers and strings are limited by the input size (msgpack's
        # defaults), so a short file cannot announce a huge allocation; ext
        # types come back as inert ExtType values, which validation refuses.
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as err:
        raise corrupt(filename, f"the {what} is not valid msgpack ({err})") from None


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


# ---------------------------------------------------------------- reading the index


def read_index(path: str | os.PathLike) -> Index:
    """Read and validate the index of the checkpoint at `path` (no data file is opened)."""
    filename = index_path(os.fspath(path))
    try:
        with open(filename, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_INDEX_BYTES:
                raise corrupt(filename, f"index is {size} bytes, more than {MAX_INDEX_BYTES}")
            data = f.read(MAX_INDEX_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {os.fspath(path)!r}: {filename} does not exist"
        ) from None
    except IsADirectoryError:
        raise CheckpointError(
            f"no checkpoint at {os.fspath(path)!r}: {filename} is a directory"
        ) from None
    return decode_index(data, filename)


def open_data_file(path: str, index: Index, shard: int, entries) -> tuple[int, str]:
    """An open descriptor of data file `shard` of the checkpoint at `path`, and its name.

    Its header must match `index` (format version, shard number and count,
    uid), and every entry or block in `entries` must lie inside it, so
    nothing is allocated for a value the file cannot hold. After an
    overwrite killed between its renames, the data that belongs to `index`
    is found under its `.prev-<uid>` name.
    """
    filename = data_path(path, shard, index.num_shards)
    try:
        fd = _io.open_for_reading(filename)
    except FileNotFoundError:
        raise CheckpointError(
            f"{filename}: data file missing (the index {index_path(path)} refers to it)"
        ) from None
    try:
        header = _io.pread(fd, DATA_HEADER_BYTES, 0, filename)
        previous = _io.previous_name(filename, index.uid)
        if (
            header.startswith(_io.DATA_MAGIC)
            and _io.unpack_data_header(header)[4] != index.uid
            and os.path.exists(previous)
        ):
            fd, old_fd = _io.open_for_reading(previous), fd
            os.close(old_fd)
            filename = previous
            header = _io.pread(fd, DATA_HEADER_BYTES, 0, filename)
        _check_data_header(header, index, shard, filename)
        size = os.fstat(fd).st_size
        for e in entries:
            if e.offset + e.length > size:
                raise corrupt(
                    filename,
                    f"{e.key}: bytes {e.offset}..{e.offset + e.length} lie past the end of "
                    f"the file ({size} bytes); truncated?",
                )
        _io.advise_sequential(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, filename


def _check_data_header(header: bytes, index: Index, shard: int, filename: str) -> None:
    magic, version, got_shard, got_shards, uid = _io.unpack_data_header(header)
    if magic != _io.DATA_MAGIC:
        raise corrupt(filename, "not a jmod checkpoint data file (bad magic)")
    if (version, got_shard, got_shards) != (index.version, shard, index.num_shards):
        raise corrupt(
            filename,
            f"header says version {version}, shard {got_shard} of {got_shards}; "
            f"the index expects version {index.version}, shard {shard} of {index.num_shards}",
        )
    if uid != index.uid:
        raise corrupt(filename, "data file belongs to another write than its index (uid mismatch)")


# ---------------------------------------------------------------- writing


def write_checkpoint(
    path: str | os.PathLike,
    arrays: Mapping[str, object],
    *,
    num_shards: int = 1,
    chunk_bytes: int | None = None,
) -> None:
    """Write `arrays` (key -> array-like) as a checkpoint at `path`, atomically.

    Values are streamed from their own memory to the data files, one chunk
    per system call; no second copy of the model is built. CRC-32s are
    computed on a second thread while the bytes are written. Everything goes
    to temporary names first; the data files are fsynced and renamed into
    place, then the index: a crash at any point leaves either the previous
    files at `path` or the new ones, never a half-written file under a
    checkpoint name.
    """
    path = os.fspath(path)
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    if not _is_int(num_shards) or not 1 <= num_shards <= 99999:
        raise ValueError(f"num_shards must be in 1..99999, got {num_shards!r}")
    plan = _plan(arrays, num_shards)
    uid = secrets.token_bytes(16)
    suffix = f".tmp-{uid.hex()[:12]}"
    finals = [data_path(path, s, num_shards) for s in range(num_shards)] + [index_path(path)]
    temps = [f + suffix for f in finals]
    crcs: dict[str, concurrent.futures.Future] = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as summer:
            for shard in range(num_shards):
                header = _io.pack_data_header(FORMAT_VERSION, shard, num_shards, uid)
                items = [p for p in plan if p[3] == shard]
                _write_shard(temps[shard], header, items, arrays, chunk_bytes, summer, crcs)
            entries = {
                key: Entry(key, dtype, shape, shard, offset, length, tuple(crcs[key].result()))
                for key, dtype, shape, shard, offset, length in plan
            }
        index = Index(FORMAT_VERSION, uid, num_shards, chunk_bytes, entries)
        _io.write_file(temps[-1], encode_index(index))
        _commit(path, temps, finals)
    finally:
        for temp in temps:
            if os.path.exists(temp):
                os.unlink(temp)


def _commit(path: str, temps: list[str], finals: list[str]) -> None:
    """Rename the fsynced temporaries into place: data files first, the index last.

    Each old data file is first kept under its `.prev-<uid>` name
    (`_io.keep_previous`), so a kill between the renames leaves the old
    checkpoint loadable.
    """
    for final in finals[:-1]:
        _io.keep_previous(final)
    for temp, final in zip(temps, finals, strict=True):
        os.replace(temp, final)
    _io.fsync_directory(os.path.dirname(path) or ".")
    remove_leftovers(path, finals)


def remove_leftovers(path: str, keep) -> None:
    """Deletes the files of checkpoint `path` a committed write no longer needs.

    Those are `.prev-<uid>` links, data files of an older shard count and
    the temporaries of writes killed earlier: every `path.data-*` and
    `path.index.tmp-*` whose name is not in `keep`.
    """
    directory, base = os.path.split(path)
    directory = directory or "."
    keep = {os.path.basename(f) for f in keep}
    for name in os.listdir(directory):
        if name.startswith((base + ".data-", base + ".index.tmp-")) and name not in keep:
            _io.unlink_quietly(os.path.join(directory, name))


def _plan(arrays: Mapping[str, object], num_shards: int):
    """(key, dtype name, shape, shard, offset, length) for each value: the file layout."""
    sizes = []
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"checkpoint keys must be non-empty strings, got {key!r}")
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            value = np.asarray(value)
        shape = tuple(int(d) for d in value.shape)
        try:
            name = dtype_name(value.dtype)
        except CheckpointError as err:
            raise CheckpointError(f"{key}: {err}") from None
        sizes.append((key, name, shape, math.prod(shape) * DTYPES[name].itemsize))
    # Largest first onto the emptiest shard keeps shards balanced by bytes.
    shard_of, fill = {}, [0] * num_shards
    for key, _, _, length in sorted(sizes, key=lambda s: -s[3]):
        shard = fill.index(min(fill))
        shard_of[key], fill[shard] = shard, fill[shard] + length
    ends = [DATA_HEADER_BYTES] * num_shards
    plan = []
    for key, name, shape, length in sizes:
        shard = shard_of[key]
        offset = _io.align(ends[shard])
        ends[shard] = offset + length
        plan.append((key, name, shape, shard, offset, length))
    return plan


def _write_shard(filename, header, items, arrays, chunk_bytes, summer, crcs) -> None:
    fd = _io.create(filename)
    try:
        position = _io.write_all(fd, header)
        for key, dtype, shape, _, offset, _ in items:
            data = _io.byte_view(arrays[key], DTYPES[dtype], shape, key)
            crcs[key] = summer.submit(_io.chunk_crcs, data, chunk_bytes)
            position = _io.write_at(fd, position, offset, data, chunk_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def delete_checkpoint(path: str | os.PathLike) -> None:
    """Remove the checkpoint at `path`: its index first, so it stops existing at once."""
    path = os.fspath(path)
    _io.unlink_quietly(index_path(path))
    directory, base = os.path.split(path)
    for name in os.listdir(directory or "."):
        if name.startswith(base + ".data-"):
            _io.unlink_quietly(os.path.join(directory, name))
