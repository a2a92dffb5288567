"""Sharded checkpoints: blocks by box, format version 2, restore onto another mesh.

The reader and the index checks run here (one device); writes of values
split over 8 simulated devices, and restores onto 4, 1 and 8 devices and
other layouts, run in fresh processes (`session`). The two-process write is
in tests/test_distributed.py.
"""

import dataclasses

import msgpack
import numpy as np
import pytest

from jmod.checkpoint import _format, _io, _sharded
from jmod.errors import CheckpointError
from tests.layer_checks import run_docstring_examples
from tests.test_distributed import session

# ---------------------------------------------------------------- boxes of stored values


@pytest.fixture
def stored(tmp_path):
    """A version-1 checkpoint whose (12, 5) float32 value spans 15 checksum chunks of 16 bytes."""
    value = np.arange(60, dtype=np.float32).reshape(12, 5)
    path = str(tmp_path / "c")
    _format.write_checkpoint(path, {"w": value, "s": np.float32(3)}, chunk_bytes=16)
    return path, value


@pytest.mark.parametrize(
    "box",
    [
        ((0, 0), (12, 5)),
        ((3, 1), (4, 3)),
        ((11, 4), (1, 1)),
        ((5, 0), (0, 5)),
    ],
)
def test_a_box_read_equals_the_numpy_slice(stored, box):
    path, value = stored
    (r, c), (h, w) = box
    with _sharded.BoxReader(path) as reader:
        np.testing.assert_array_equal(reader.read("w", box), value[r : r + h, c : c + w])
        assert reader.read("s").item() == 3.0


def test_a_box_read_reads_only_the_chunks_of_its_rows(stored):
    path, _ = stored
    with _sharded.BoxReader(path) as reader:
        reader.read("w", ((4, 0), (2, 5)))  # rows 4..5: bytes 80..120, chunks 5..7
        assert reader.bytes_read == 48


def test_a_corrupt_chunk_outside_the_box_is_not_read_inside_it_is_an_error(stored):
    path, value = stored
    entry = _format.read_index(path).entries["w"]
    with open(_format.data_path(path, 0, 1), "r+b") as f:
        f.seek(entry.offset + 200)  # row 10
        f.write(b"\xff\xff\xff\xff")
    with _sharded.BoxReader(path) as reader:
        np.testing.assert_array_equal(reader.read("w", ((0, 0), (8, 5))), value[:8])
        with pytest.raises(CheckpointError, match=r"w: checksum mismatch in chunk 12"):
            reader.read("w", ((9, 0), (2, 5)))


def test_a_box_outside_the_value_is_refused(stored):
    path, _ = stored
    with _sharded.BoxReader(path) as reader, pytest.raises(CheckpointError, match="outside"):
        reader.read("w", ((10, 0), (4, 5)))


def test_docstring_examples():
    run_docstring_examples(_sharded)


# ---------------------------------------------------------------- the version-2 index


def sharded_index(pieces, shape=(4, 6)):
    entry = _format.Entry(
        "w",
        "float32",
        shape,
        -1,
        0,
        int(np.prod(shape)) * 4,
        (),
        pieces=tuple(
            _format.Entry(
                "w", "float32", size, file, offset, int(np.prod(size)) * 4, (0,), start=at
            )
            for at, size, file, offset in pieces
        ),
    )
    return _format.Index(2, b"u" * 16, 2, 1 << 20, {"w": entry})


GRID = [((0, 0), (2, 6), 0, 64), ((2, 0), (2, 6), 1, 64)]


def test_a_sharded_index_round_trips_through_its_bytes():
    index = sharded_index(GRID)
    back = _format.decode_index(_format.encode_index(index))
    assert back == index
    raw = msgpack.unpackb(msgpack.unpackb(_format.encode_index(index))["index"])
    assert raw["variables"]["w"]["shards"][1] == {
        "start": [2, 0],
        "shape": [2, 6],
        "file": 1,
        "offset": 64,
        "length": 48,
        "crc32": [0],
    }


@pytest.mark.parametrize(
    "pieces, message",
    [
        ([((0, 0), (2, 6), 0, 64)], "do not tile dimension 0"),
        ([((0, 0), (3, 6), 0, 64), ((2, 0), (2, 6), 1, 64)], "do not tile dimension 0"),
        ([((0, 0), (2, 6), 0, 64), ((2, 0), (2, 6), 1, 64), ((2, 0), (2, 6), 0, 128)], "once"),
        ([((0, 0), (2, 6), 0, 64), ((3, 0), (2, 6), 1, 64)], r"shard 1\): block at \[3, 0\]"),
        ([((0, 0), (2, 6), 0, 64), ((2, 0), (2, 6), 2, 64)], r"shard 1\): data file number 2"),
    ],
)
def test_blocks_that_do_not_tile_the_value_exactly_once_are_corrupt(pieces, message):
    with pytest.raises(CheckpointError, match=f"corrupt checkpoint: w.*{message}"):
        _format.decode_index(_format.encode_index(sharded_index(pieces)))


@pytest.mark.parametrize(
    "pieces",
    [
        [((0, 0), (2, 6), 0, 64), ((2, 0), (2, 6), 0, 64)],  # both blocks on the same bytes
        [((0, 0), (2, 6), 0, 64), ((2, 0), (2, 6), 0, 100)],  # the second starts inside the first
    ],
)
def test_blocks_sharing_bytes_of_a_data_file_are_corrupt(pieces):
    # Tiling alone is not enough: blocks that reuse bytes let a small file claim a huge value.
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint: w \[2, 0\]: its bytes from"):
        _format.decode_index(_format.encode_index(sharded_index(pieces)))


def test_whole_values_sharing_bytes_are_corrupt():
    entries = {k: _format.Entry(k, "float32", (4,), 0, 64, 16, (0,)) for k in ("a", "b")}
    index = _format.Index(1, b"u" * 16, 1, 1 << 20, entries)
    with pytest.raises(CheckpointError, match="b: its bytes from 64 overlap those of a"):
        _format.decode_index(_format.encode_index(index))


def test_a_block_past_the_end_of_its_file_fails_before_the_value_is_allocated(stored, monkeypatch):
    path, _ = stored
    index = _format.read_index(path)
    w = index.entries["w"]
    big = dataclasses.replace(w, shape=(1 << 20, 5), length=(1 << 20) * 20)
    blocks = (
        dataclasses.replace(w, start=(0, 0)),
        dataclasses.replace(big, start=(12, 0), offset=w.offset + w.length + 64, crc32=(0,)),
    )
    whole = dataclasses.replace(w, shape=(12 + (1 << 20), 5), file=-1, pieces=blocks)
    index = dataclasses.replace(index, entries={"w": whole})
    allocated = []
    real = _io.aligned_empty
    monkeypatch.setattr(_io, "aligned_empty", lambda n: allocated.append(n) or real(n))
    with _sharded.BoxReader(path, index) as reader:
        with pytest.raises(CheckpointError, match=r"w: bytes .* lie past the end of the file"):
            reader.read("w")
    assert allocated == []


def test_a_version_1_index_ignores_what_looks_like_blocks():
    raw = _format.encode_index(sharded_index(GRID))
    envelope = msgpack.unpackb(raw)
    envelope["version"] = 1
    with pytest.raises(CheckpointError, match="w: data file number None"):
        _format.decode_index(msgpack.packb(envelope))


# ---------------------------------------------------------------- several devices

VALUES = """
import os
from jmod.checkpoint import _format
W = np.arange(64.0, dtype=np.float32).reshape(16, 4)
K = (np.arange(32.0, dtype=np.float32).reshape(4, 8) / 7).astype(jnp.bfloat16)
B = np.array([1.0, 2.0, 3.0, 4.0], np.float32)

def model(w_spec=None, k_spec=None, zeros=False):
    m = jmod.Module()
    m.w = jmod.Variable(np.zeros_like(W) if zeros else W, sharding=w_spec)
    m.k = jmod.Variable(np.zeros_like(K) if zeros else K, sharding=k_spec)
    m.b = jmod.Variable(np.zeros_like(B) if zeros else B)
    return m

def report(m):
    return {
        n: {
            "value": np.asarray(getattr(m, n).value.astype(jnp.float32)).tolist(),
            "devices": len(getattr(m, n).sharding.device_set),
            "spec": str(tuple(getattr(getattr(m, n).sharding, "spec", ("single",)))),
            "blocks": shard_shapes(getattr(m, n)),
        }
        for n in "wkb"
    }
"""

W = np.arange(64.0).reshape(16, 4)
K = np.asarray(np.arange(32.0).reshape(4, 8) / 7, dtype="bfloat16").astype(np.float64)
B = np.array([1.0, 2.0, 3.0, 4.0])


def assert_values(report):
    np.testing.assert_array_equal(report["w"]["value"], W)
    np.testing.assert_array_equal(report["k"]["value"], K)
    np.testing.assert_array_equal(report["b"]["value"], B)


def test_restore_reshards_8_to_4_to_1_and_back_to_8_and_across_layouts(tmp_path):
    out = session(
        VALUES
        + f"""
d = {str(tmp_path)!r}
with jd.mesh({{"data": 8}}):
    jmod.Checkpoint(model=model(("data", None), (None, "data"))).write(d + "/from8")
index = _format.read_index(d + "/from8")
layout = {{
    "version": index.version, "files": sorted(os.listdir(d)),
    "w": [[list(p.start), list(p.shape)] for p in index.entries["model/w"].pieces],
    "b": len(index.entries["model/b"].pieces),
}}
with jd.mesh(jd.make_mesh({{"data": 4}}, devices=jax.devices()[:4])):
    on4 = model(("data", None), (None, "data"), zeros=True)
    jmod.Checkpoint(model=on4).restore(d + "/from8").assert_consumed()
    jmod.Checkpoint(model=on4).write(d + "/from4")
on1 = model(zeros=True)
jmod.Checkpoint(model=on1).restore(d + "/from4").assert_consumed()
jmod.Checkpoint(model=on1).write(d + "/from1")
with jd.mesh({{"data": 8}}):
    back = model(("data", None), (None, "data"), zeros=True)
    jmod.Checkpoint(model=back).restore(d + "/from1").assert_consumed()
with jd.mesh({{"data": 2, "model": 4}}):
    across = model((None, "model"), ("data", "model"), zeros=True)
    jmod.Checkpoint(model=across).restore(d + "/from8").assert_consumed()
print(json.dumps({{
    "layout": layout, "on4": report(on4), "on1": report(on1), "back": report(back),
    "across": report(across), "from1_version": _format.read_index(d + "/from1").version,
    "listed": jmod.checkpoint.list_variables(d + "/from8"),
    "loaded": np.asarray(jmod.checkpoint.load_variable(d + "/from8", "model/w")).tolist(),
}}))
""",
        devices=8,
    )
    layout = out["layout"]
    assert layout["version"] == 2 and layout["b"] == 0
    assert layout["files"] == ["from8.data-00000-of-00001", "from8.index"]
    assert layout["w"] == [[[2 * i, 0], [2, 4]] for i in range(8)]
    for name, devices, w_blocks in [("on4", 4, [[4, 4]]), ("back", 8, [[2, 4]])]:
        assert_values(out[name])
        assert out[name]["w"]["devices"] == devices and out[name]["w"]["blocks"] == w_blocks
        assert out[name]["w"]["spec"] == "('data', None)"
        assert out[name]["b"]["spec"] == "()"
    assert_values(out["on1"])
    assert out["on1"]["w"]["devices"] == 1 and out["from1_version"] == 1
    assert_values(out["across"])
    assert out["across"]["w"]["spec"] == "(None, 'model')"
    assert out["across"]["k"]["blocks"] == [[2, 2]]
    assert out["listed"] == [["model/b", [4]], ["model/k", [4, 8]], ["model/w", [16, 4]]]
    np.testing.assert_array_equal(out["loaded"], W)


def test_background_write_and_manager_keep_sharded_values_as_they_were(tmp_path):
    out = session(
        VALUES
        + f"""
d = {str(tmp_path)!r}
with jd.mesh({{"data": 8}}):
    m = model(("data", None), (None, "data"))
    ckpt = jmod.Checkpoint(model=m)
    handle = ckpt.write(d + "/async", blocking=False)
    m.w.assign(m.w.value * 0 - 1)  # after the snapshot: not in the file
    handle.wait()
    manager = jmod.CheckpointManager(ckpt, d + "/managed", max_to_keep=1)
    first = manager.save()
    m.w.assign(m.w.value * 0 + 5)
    second = manager.save()
    restored = model(("data", None), (None, "data"), zeros=True)
    jmod.Checkpoint(model=restored).restore(manager.latest_checkpoint)
print(json.dumps({{
    "async": np.asarray(jmod.checkpoint.load_variable(d + "/async", "model/w")).tolist(),
    "managed": sorted(os.listdir(d + "/managed")),
    "latest": report(restored)["w"],
    "version": _format.read_index(second).version,
}}))
""",
        devices=8,
    )
    np.testing.assert_array_equal(out["async"], W)
    assert out["managed"] == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    np.testing.assert_array_equal(out["latest"]["value"], np.full((16, 4), 5.0))
    assert out["latest"]["blocks"] == [[2, 4]] and out["version"] == 2


def test_a_corrupt_block_fails_the_restore_naming_the_variable(tmp_path):
    out = session(
        VALUES
        + f"""
d = {str(tmp_path)!r}
with jd.mesh({{"data": 8}}):
    jmod.Checkpoint(model=model(("data", None), (None, "data"))).write(d + "/c")
    last = _format.read_index(d + "/c").entries["model/w"].pieces[-1]
    with open(_format.data_path(d + "/c", 0, 1), "r+b") as f:
        f.seek(last.offset)
        f.write(b"garbage!")
    target = model(("data", None), (None, "data"), zeros=True)
    try:
        jmod.Checkpoint(model=target).restore(d + "/c")
        error = None
    except jmod.CheckpointError as e:
        error = str(e)
print(json.dumps({{"error": error}}))
""",
        devices=8,
    )
    assert "c.data-00000-of-00001: corrupt checkpoint: model/w: checksum mismatch" in out["error"]
    assert "values were already assigned" in out["error"]
