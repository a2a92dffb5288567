"""The checkpoint byte format (jmod/checkpoint/_format.py), without any Module."""

import os
import signal
import subprocess
import sys
import textwrap
import zlib

import hypothesis.strategies as st
import ml_dtypes
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from jmod.checkpoint import _format, _read
from jmod.errors import CheckpointError

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ckpt_v1", "ckpt-1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture_values():
    """The values tests/fixtures/ckpt_v1 was written from (format version 1, chunk_bytes=8).

    Those files are never regenerated: they are what a version-1 writer made.
    """
    return {
        "model/dense/w": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "model/dense/b": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
        "model/q": np.arange(-8, 8, dtype=ml_dtypes.int4),
        "model/mask": np.array([True, False, True]),
        "model/c": np.array(1 - 2j, dtype=np.complex64),
        "model/empty": np.zeros((0, 4), dtype=np.int64),
        "save_counter": np.array(1, dtype=np.int32),
    }


def assert_bit_equal(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def random_array(rng, dtype, shape):
    """Arbitrary bit patterns (NaN payloads, -0.0, ...) for float types, valid values otherwise."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dtype.name.startswith(("int", "uint")) and dtype.itemsize == 1 and dtype.kind == "V":
        info = ml_dtypes.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max) + 1, n).astype(dtype).reshape(shape)
    if dtype.kind == "V" and dtype.name.startswith(("float4", "float6")):
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


@pytest.fixture
def ckpt(tmp_path):
    values = {"a/w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(5.0)}
    path = str(tmp_path / "ckpt")
    _format.write_checkpoint(path, values)
    return path, values


def data_file(path):
    return _format.data_path(path, 0, 1)


def flip_byte(filename, offset):
    with open(filename, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


# ---------------------------------------------------------------- round trips


def test_write_makes_exactly_an_index_and_one_data_file(tmp_path):
    _format.write_checkpoint(str(tmp_path / "my_checkpoint"), {"w": np.ones(3)})
    assert sorted(os.listdir(tmp_path)) == [
        "my_checkpoint.data-00000-of-00001",
        "my_checkpoint.index",
    ]


@pytest.mark.parametrize("dtype", sorted(_format.DTYPES))
def test_every_dtype_round_trips_bit_exactly(tmp_path, dtype):
    rng = np.random.default_rng(0)
    values = {f"v{nd}": random_array(rng, _format.DTYPES[dtype], (3,) * nd) for nd in range(4)}
    _format.write_checkpoint(str(tmp_path / "c"), values)
    got = _read.read_arrays(str(tmp_path / "c"))
    for key, want in values.items():
        assert_bit_equal(got[key], want)


def test_zero_sized_and_high_rank_arrays_round_trip(tmp_path):
    values = {
        "empty": np.zeros((0, 5), np.float32),
        "rank7": np.arange(2**7, dtype=np.int16).reshape((2,) * 7),
        "scalar": np.float64(-0.0),
    }
    _format.write_checkpoint(str(tmp_path / "c"), values)
    got = _read.read_arrays(str(tmp_path / "c"))
    for key, want in values.items():
        assert_bit_equal(got[key], np.asarray(want))


def test_non_contiguous_input_is_written_in_logical_order(tmp_path):
    x = np.arange(12.0).reshape(3, 4).T
    _format.write_checkpoint(str(tmp_path / "c"), {"x": x})
    np.testing.assert_array_equal(_read.read_arrays(str(tmp_path / "c"))["x"], x)


def test_values_are_64_byte_aligned_on_disk_and_in_memory(tmp_path):
    values = {f"v{i}": np.ones(i + 1, np.int8) for i in range(5)}
    _format.write_checkpoint(str(tmp_path / "c"), values)
    index = _format.read_index(str(tmp_path / "c"))
    assert all(e.offset % 64 == 0 for e in index.entries.values())
    got = _read.read_arrays(str(tmp_path / "c"), index)
    assert all(a.ctypes.data % 64 == 0 for a in got.values())


def test_read_buffers_are_adopted_by_jax_without_a_copy_on_cpu(tmp_path):
    import jax

    _format.write_checkpoint(str(tmp_path / "c"), {"x": np.arange(1000, dtype=np.float32)})
    got = _read.read_arrays(str(tmp_path / "c"))["x"]
    on_device = jax.device_put(got)
    if jax.default_backend() == "cpu":
        assert on_device.unsafe_buffer_pointer() == got.ctypes.data
    np.testing.assert_array_equal(np.asarray(on_device), np.arange(1000, dtype=np.float32))


def test_unknown_dtype_and_bad_keys_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="obj.*cannot be stored"):
        _format.write_checkpoint(str(tmp_path / "c"), {"obj": np.array([None])})
    with pytest.raises(CheckpointError, match="non-empty strings"):
        _format.write_checkpoint(str(tmp_path / "c"), {"": np.ones(1)})
    assert os.listdir(tmp_path) == []


def test_checked_in_version_1_files_still_load():
    index = _format.read_index(FIXTURE)
    assert index.version == 1
    got = _read.read_arrays(FIXTURE, index)
    want = fixture_values()
    assert sorted(got) == sorted(want)
    for key in want:
        assert_bit_equal(got[key], want[key])


# ---------------------------------------------------------------- chunks and large values


def test_values_span_many_chunks_each_with_its_own_checksum(tmp_path, monkeypatch):
    monkeypatch.setattr(_format, "CHUNK_BYTES", 100)
    x = np.arange(1000, dtype=np.float32)  # 4000 bytes: 40 chunks
    path = str(tmp_path / "c")
    _format.write_checkpoint(path, {"x": x})
    entry = _format.read_index(path).entries["x"]
    data = x.tobytes()
    assert list(entry.crc32) == [zlib.crc32(data[i : i + 100]) for i in range(0, 4000, 100)]
    np.testing.assert_array_equal(_read.read_arrays(path)["x"], x)
    flip_byte(data_file(path), entry.offset + 3999)
    with pytest.raises(CheckpointError, match="checksum mismatch in chunk 39"):
        _read.read_arrays(path)


def test_short_os_writes_and_reads_are_completed(tmp_path, monkeypatch):
    real_write, real_preadv = os.write, os.preadv
    monkeypatch.setattr(os, "write", lambda fd, b: real_write(fd, memoryview(b)[:7]))
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: real_preadv(fd, [bufs[0][:5]], off))
    x = np.arange(100, dtype=np.int32)
    _format.write_checkpoint(str(tmp_path / "c"), {"x": x})
    np.testing.assert_array_equal(_read.read_arrays(str(tmp_path / "c"))["x"], x)


def test_index_holds_offsets_and_lengths_beyond_4_gib():
    big = 5 << 30
    entry = _format.Entry("big", "uint8", (big,), 0, (6 << 30) + 64, big, (1, 2, 3, 4, 5))
    index = _format.Index(1, b"u" * 16, 1, 1 << 30, {"big": entry})
    assert _format.decode_index(_format.encode_index(index)) == index


def test_an_index_pointing_past_the_end_of_the_data_is_refused_before_reading(ckpt):
    path, _ = ckpt
    index = _format.read_index(path)
    huge = _format.Entry("huge", "uint8", (1 << 40,), 0, 64, 1 << 40, (0,) * 256)
    forged = _format.Index(1, index.uid, 1, 1 << 32, {"huge": huge})
    with open(_format.index_path(path), "wb") as f:
        f.write(_format.encode_index(forged))
    with pytest.raises(CheckpointError, match=r"ckpt\.data-00000-of-00001.*past the end"):
        _read.read_arrays(path)


# ---------------------------------------------------------------- lazy reads


def test_reading_some_keys_does_not_touch_the_others(ckpt):
    path, values = ckpt
    entry = _format.read_index(path).entries["a/w"]
    flip_byte(data_file(path), entry.offset)  # damage a/w only
    got = _read.read_arrays(path, keys=["b"])
    assert list(got) == ["b"]
    np.testing.assert_array_equal(got["b"], values["b"])


def test_reading_a_key_the_checkpoint_lacks_names_it(ckpt):
    with pytest.raises(CheckpointError, match="nope: not in checkpoint"):
        _read.read_arrays(ckpt[0], keys=["nope"])


# ---------------------------------------------------------------- shards and files


def test_sharded_write_balances_values_over_numbered_files(tmp_path):
    values = {f"v{i}": np.full(100 * (i + 1), i, np.int32) for i in range(6)}
    path = str(tmp_path / "c")
    _format.write_checkpoint(path, values, num_shards=3)
    assert sorted(os.listdir(tmp_path)) == [f"c.data-0000{k}-of-00003" for k in range(3)] + [
        "c.index"
    ]
    sizes = [os.path.getsize(_format.data_path(path, k, 3)) for k in range(3)]
    assert max(sizes) - min(sizes) <= 700 * 4
    got = _read.read_arrays(path)
    for key, want in values.items():
        np.testing.assert_array_equal(got[key], want)


def test_rewriting_with_fewer_shards_removes_the_old_data_files(tmp_path):
    path = str(tmp_path / "c")
    _format.write_checkpoint(path, {"a": np.ones(3), "b": np.ones(4)}, num_shards=2)
    _format.write_checkpoint(path, {"a": np.zeros(3)})
    assert sorted(os.listdir(tmp_path)) == ["c.data-00000-of-00001", "c.index"]
    np.testing.assert_array_equal(_read.read_arrays(path)["a"], np.zeros(3))


def test_delete_checkpoint_removes_every_file_and_only_those(tmp_path):
    _format.write_checkpoint(str(tmp_path / "c-1"), {"a": np.ones(3)}, num_shards=2)
    _format.write_checkpoint(str(tmp_path / "c-10"), {"a": np.ones(3)})
    _format.delete_checkpoint(str(tmp_path / "c-1"))
    assert not _format.checkpoint_exists(str(tmp_path / "c-1"))
    assert sorted(os.listdir(tmp_path)) == ["c-10.data-00000-of-00001", "c-10.index"]


# ---------------------------------------------------------------- corrupt and foreign files


def test_missing_checkpoint_names_the_index_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"does_not_exist\.index does not exist"):
        _format.read_index(str(tmp_path / "does_not_exist"))


def test_a_future_format_version_is_refused_with_a_clear_message(ckpt):
    path, _ = ckpt
    envelope = msgpack.unpackb(open(_format.index_path(path), "rb").read())
    envelope["version"] = 3  # 2 is the sharded format, readable since jmod.distributed
    with open(_format.index_path(path), "wb") as f:
        f.write(msgpack.packb(envelope))
    with pytest.raises(CheckpointError, match="format version 3, newer than.*upgrade jmod"):
        _format.read_index(path)


def test_garbage_index_names_the_file(ckpt):
    path, _ = ckpt
    with open(_format.index_path(path), "wb") as f:
        f.write(b"\x00garbage, not msgpack" * 10)
    with pytest.raises(CheckpointError, match=r"ckpt\.index: corrupt checkpoint"):
        _format.read_index(path)


def test_truncated_index_names_the_file(ckpt):
    path, _ = ckpt
    filename = _format.index_path(path)
    os.truncate(filename, os.path.getsize(filename) // 2)
    with pytest.raises(CheckpointError, match=r"ckpt\.index: corrupt checkpoint"):
        _format.read_index(path)


def test_a_flipped_byte_anywhere_in_the_index_is_caught(ckpt):
    path, _ = ckpt
    filename = _format.index_path(path)
    original = open(filename, "rb").read()
    for offset in range(len(original)):
        with open(filename, "wb") as f:
            f.write(original[:offset] + bytes([original[offset] ^ 0x01]) + original[offset + 1 :])
        with pytest.raises(CheckpointError, match=r"ckpt\.index"):
            _format.read_index(path)


def test_flipped_data_bytes_fail_the_checksum(ckpt):
    path, _ = ckpt
    entry = _format.read_index(path).entries["b"]
    flip_byte(data_file(path), entry.offset + 9)
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001.*b: checksum mismatch"):
        _read.read_arrays(path)


def test_truncated_data_file_names_it(ckpt):
    path, _ = ckpt
    os.truncate(data_file(path), os.path.getsize(data_file(path)) // 2)
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001.*truncated"):
        _read.read_arrays(path)


def test_missing_data_file_names_it(ckpt):
    path, _ = ckpt
    os.unlink(data_file(path))
    with pytest.raises(CheckpointError, match=r"ckpt\.data-00000-of-00001: data file missing"):
        _read.read_arrays(path)


def test_a_data_file_from_another_write_is_refused(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _format.write_checkpoint(a, {"x": np.ones(4)})
    _format.write_checkpoint(b, {"x": np.zeros(4)})
    os.replace(data_file(b), data_file(a))
    with pytest.raises(CheckpointError, match="another write"):
        _read.read_arrays(a)


def test_an_oversized_index_is_refused_without_reading_it(ckpt, monkeypatch):
    monkeypatch.setattr(_format, "MAX_INDEX_BYTES", 16)
    with pytest.raises(CheckpointError, match="more than 16"):
        _format.read_index(ckpt[0])


# ---------------------------------------------------------------- fuzzing the reader

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_an_index_only_raise_checkpoint_error(data):
    with pytest.raises(CheckpointError):
        _format.decode_index(data)


@FUZZ
@given(msgpack_values)
def test_random_msgpack_envelopes_only_raise_checkpoint_error(value):
    with pytest.raises(CheckpointError):
        _format.decode_index(msgpack.packb(value))


entry_fields = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["float32", "int4", "object", "<f4", 3]),
        "shape": st.lists(st.integers(-2, 2**40), max_size=3) | msgpack_values,
        "file": st.integers(-1, 3) | msgpack_values,
        "offset": st.integers(-1, 2**64 - 1),
        "length": st.integers(-1, 2**64 - 1) | msgpack_values,
        "crc32": st.lists(st.integers(-1, 2**33), max_size=3) | msgpack_values,
    },
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "uid": st.binary(min_size=15, max_size=17),
            "num_shards": st.integers(-1, 3) | msgpack_values,
            "chunk_bytes": st.integers(-1, 64) | msgpack_values,
            "variables": st.dictionaries(st.text(max_size=4), entry_fields, max_size=3)
            | msgpack_values,
        },
    )
)
def test_malformed_index_bodies_raise_checkpoint_error_or_decode_consistently(body):
    try:
        index = _format.decode_index_body(msgpack.packb(body))
    except CheckpointError:
        return
    for entry in index.entries.values():  # what was accepted is self-consistent
        itemsize = _format.DTYPES[entry.dtype].itemsize
        assert entry.length == int(np.prod(entry.shape, dtype=object)) * itemsize
        assert len(entry.crc32) == -(-entry.length // index.chunk_bytes)
        assert 0 <= entry.file < index.num_shards and entry.offset >= 64


@FUZZ
@given(
    which=st.sampled_from(["index", "data"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.none() | st.integers(0, 10**6),
)
def test_mutated_checkpoints_raise_checkpoint_error_or_read_the_exact_values(
    tmp_path_factory, which, edits, cut
):
    path = str(tmp_path_factory.mktemp("fuzz") / "c")
    values = {"w": np.arange(40, dtype=np.float32).reshape(5, 8), "s": np.int64(7)}
    _format.write_checkpoint(path, values, chunk_bytes=48)
    filename = _format.index_path(path) if which == "index" else data_file(path)
    data = bytearray(open(filename, "rb").read())
    for offset, value in edits:
        data[offset % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    with open(filename, "wb") as f:
        f.write(data)
    try:
        got = _read.read_arrays(path)
    except CheckpointError as err:
        assert os.path.basename(filename) in str(err)
        return
    for key, want in values.items():
        assert_bit_equal(got[key], np.asarray(want))


# ---------------------------------------------------------------- crash safety

_KILLER = textwrap.dedent(
    """
    import os, signal, sys, numpy as np
    from jmod.checkpoint import _format
    path, mode = sys.argv[1], sys.argv[2]
    real_write, real_replace = os.write, os.replace
    def write_then_die(fd, data):
        n = real_write(fd, memoryview(data)[:1000])
        if n and os.fstat(fd).st_size > 20000:  # well into the new data file
            os.kill(os.getpid(), signal.SIGKILL)
        return n
    def replace_then_die(src, dst):
        real_replace(src, dst)
        if dst.endswith("-of-00001"):  # new data in place, old index not yet replaced
            os.kill(os.getpid(), signal.SIGKILL)
    if mode == "write":
        os.write = write_then_die
    else:
        os.replace = replace_then_die
    _format.write_checkpoint(path, {"w": np.zeros(100_000, np.float32)})
    """
)


def run_killed(path, mode):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, path, mode], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_a_kill_mid_write_leaves_the_previous_checkpoint_and_no_new_one(tmp_path):
    old = str(tmp_path / "ckpt-1")
    _format.write_checkpoint(old, {"w": np.ones(100_000, np.float32)})
    run_killed(str(tmp_path / "ckpt-2"), "write")
    assert not _format.checkpoint_exists(str(tmp_path / "ckpt-2"))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _format.read_index(str(tmp_path / "ckpt-2"))
    np.testing.assert_array_equal(_read.read_arrays(old)["w"], np.ones(100_000))
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith("ckpt-2")]
    assert leftovers and all(".tmp-" in n for n in leftovers)


@pytest.mark.parametrize("mode", ["write", "replace"])
def test_a_kill_while_overwriting_leaves_the_old_values_loadable(tmp_path, mode):
    path = str(tmp_path / "ckpt")
    _format.write_checkpoint(path, {"w": np.ones(100_000, np.float32)})
    run_killed(path, mode)
    np.testing.assert_array_equal(_read.read_arrays(path)["w"], np.ones(100_000))
    _format.write_checkpoint(path, {"w": np.full(3, 2.0)})  # the next write cleans up
    np.testing.assert_array_equal(_read.read_arrays(path)["w"], np.full(3, 2.0))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index"]


def test_a_failed_write_removes_its_temporaries_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt")
    _format.write_checkpoint(path, {"w": np.ones(3)})

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        _format.write_checkpoint(path, {"w": np.zeros(3)})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index"]
    np.testing.assert_array_equal(_read.read_arrays(path)["w"], np.ones(3))
