"""jmod.summary: event files TensorBoard reads (scalars, histograms, text, images)."""

import glob
import io
import os
import struct
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorboard")

from PIL import Image  # noqa: E402  (installed with tensorboard)
from tensorboard.compat.proto import event_pb2, graph_pb2  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

import jmod  # noqa: E402
import jmod.summary as summary  # noqa: E402

# -- an independent reader: TFRecord framing with a bitwise CRC-32C -------------


def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path, check_crc=True):
    with open(path, "rb") as f:
        data = f.read()
    records, pos = [], 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        payload = data[pos + 12 : pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        if check_crc:
            assert header_crc == _masked(_crc32c(header))
            assert payload_crc == _masked(_crc32c(payload))
        records.append(payload)
        pos += 16 + length
    return records


def read_events(logdir, check_crc=False):
    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    assert len(files) == 1, files
    return [event_pb2.Event.FromString(r) for r in read_records(files[0], check_crc)]


def values(logdir, tag):
    """(step, summary value) pairs written under `tag`."""
    return [
        (event.step, value)
        for event in read_events(logdir)
        for value in event.summary.value
        if value.tag == tag
    ]


# -- the file ------------------------------------------------------------------


def test_event_file_is_framed_records_with_masked_crc32c(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.scalar("loss", 0.5, step=1)
    writer.close()
    events = read_events(tmp_path, check_crc=True)
    assert events[0].file_version == "brain.Event:2"
    assert [e.step for e in events[1:]] == [1]


def test_event_file_name_follows_tensorflow_2(tmp_path):
    summary.create_file_writer(tmp_path / "run").close()
    (name,) = os.listdir(tmp_path / "run")
    assert name.startswith("events.out.tfevents.") and name.endswith(".v2")


def test_flush_makes_summaries_readable_before_close(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.scalar("loss", 1.5, step=3)
    writer.flush()
    assert [(s, v.tensor.float_val[0]) for s, v in values(tmp_path, "loss")] == [(3, 1.5)]
    writer.close()


# -- scalars ---------------------------------------------------------------------


def test_scalars_round_trip_as_float32_with_their_steps(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    for step, loss in enumerate([2.0, 1.25, 0.1]):
        assert writer.scalar("loss", jnp.asarray(loss), step=step)
    writer.close()
    got = [(s, tensor_util.make_ndarray(v.tensor)) for s, v in values(tmp_path, "loss")]
    assert [s for s, _ in got] == [0, 1, 2]
    np.testing.assert_array_equal([a for _, a in got], np.float32([2.0, 1.25, 0.1]))
    assert got[0][1].dtype == np.float32
    (first,) = values(tmp_path, "loss")[:1]
    assert first[1].metadata.plugin_data.plugin_name == "scalars"


def test_scalar_accepts_a_variable_and_ints(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.scalar("v", jmod.Variable(4.0), step=jmod.Variable(7, dtype=jnp.int32))
    writer.scalar("n", 3, step=np.int64(8))
    writer.close()
    ((step, value),) = values(tmp_path, "v")
    assert step == 7 and value.tensor.float_val[0] == 4.0
    assert values(tmp_path, "n")[0][0] == 8


def test_scalar_refuses_arrays_naming_the_tag(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    with pytest.raises(summary.SummaryError, match=r"'loss'.*shape \(2,\)"):
        writer.scalar("loss", [1.0, 2.0], step=0)
    with pytest.raises(ValueError):
        writer.scalar("loss", "high", step=0)
    writer.close()


def test_description_is_stored_in_the_metadata(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.scalar("loss", 1.0, step=0, description="training **loss**")
    writer.close()
    ((_, value),) = values(tmp_path, "loss")
    assert value.metadata.summary_description == "training **loss**"


# -- the default writer and step -------------------------------------------------


def test_module_level_scalar_writes_to_the_default_writer(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    with writer.as_default():
        assert summary.get_default_writer() is writer
        assert summary.scalar("acc", 0.75, step=5) is True
    assert summary.get_default_writer() is None
    writer.close()
    assert [(s, v.tensor.float_val[0]) for s, v in values(tmp_path, "acc")] == [(5, 0.75)]


def test_without_a_default_writer_summaries_return_false():
    assert summary.get_default_writer() is None
    assert summary.scalar("loss", 1.0, step=0) is False
    assert summary.histogram("w", [1.0], step=0) is False
    assert summary.text("t", "x", step=0) is False
    assert summary.image("i", np.zeros((1, 2, 2, 1)), step=0) is False


def test_as_default_step_is_used_and_restored(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    step = jmod.Variable(10, dtype=jnp.int32)
    with writer.as_default(step=step):
        summary.scalar("a", 1.0)
        step.assign(11)  # read at each write, like optimizer.iterations in TF
        summary.scalar("a", 2.0)
        with writer.as_default(step=99):
            summary.scalar("b", 3.0)
        summary.scalar("c", 4.0)
    assert summary.get_step() is None
    writer.close()
    assert [s for s, _ in values(tmp_path, "a")] == [10, 11]
    assert [s for s, _ in values(tmp_path, "b")] == [99]
    assert [s for s, _ in values(tmp_path, "c")] == [11]


def test_missing_step_is_an_error_saying_how_to_set_one(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    with pytest.raises(summary.SummaryError, match=r"'loss'.*no step.*as_default\(step"):
        writer.scalar("loss", 1.0)
    with pytest.raises(summary.SummaryError, match="integer"):
        writer.scalar("loss", 1.0, step=1.5)
    writer.close()


def test_default_writer_is_per_thread(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    seen = []
    with writer.as_default():
        thread = threading.Thread(target=lambda: seen.append(summary.get_default_writer()))
        thread.start()
        thread.join()
    writer.close()
    assert seen == [None]


def test_writing_to_a_closed_writer_names_its_logdir(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.close()
    writer.close()  # idempotent
    assert writer.closed
    with pytest.raises(summary.SummaryError, match="closed") as info:
        writer.scalar("loss", 1.0, step=0)
    assert str(tmp_path) in str(info.value)


def test_traced_variables_are_refused_inside_jmod_jit(tmp_path):
    writer = summary.create_file_writer(tmp_path)

    class Counter(jmod.Module):
        def __init__(self):
            super().__init__()
            self.n = jmod.Variable(0.0)

        @jmod.jit
        def __call__(self):
            writer.scalar("n", self.n, step=0)
            return self.n

    with pytest.raises(jmod.TraceError, match=r"'n'.*jit-compiled"):
        Counter()()
    writer.close()


def test_without_tensorboard_summaries_say_what_to_install():
    code = (
        "import sys; sys.modules['tensorboard'] = None\n"
        "import jmod, jmod.profiler, jmod.summary\n"
        "try:\n"
        "    jmod.summary.create_file_writer\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert "needs the tensorboard package" in out.stdout, out.stderr


def test_traced_values_are_refused_with_a_trace_error(tmp_path):
    writer = summary.create_file_writer(tmp_path)

    @jax.jit
    def f(x):
        writer.scalar("inside", x, step=0)
        return x

    with pytest.raises(jmod.TraceError, match=r"'inside'.*traced value"):
        f(jnp.float32(1.0))
    writer.close()


# -- histograms, text, images, graphs --------------------------------------------


def test_histogram_counts_match_numpy(tmp_path):
    data = np.random.default_rng(0).normal(size=1000)
    writer = summary.create_file_writer(tmp_path)
    writer.histogram("w", jnp.asarray(data, dtype=jnp.float32), step=0, buckets=12)
    writer.close()
    ((_, value),) = values(tmp_path, "w")
    assert value.metadata.plugin_data.plugin_name == "histograms"
    buckets = tensor_util.make_ndarray(value.tensor)
    counts, edges = np.histogram(data.astype(np.float32).astype(np.float64), bins=12)
    np.testing.assert_array_equal(buckets[:, 2], counts)
    np.testing.assert_allclose(buckets[:, 0], edges[:-1], rtol=1e-6)
    np.testing.assert_allclose(buckets[:, 1], edges[1:], rtol=1e-6)


def test_histogram_defaults_to_30_buckets_and_takes_bfloat16(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.histogram("w", jnp.arange(60, dtype=jnp.bfloat16), step=0)
    writer.close()
    buckets = tensor_util.make_ndarray(values(tmp_path, "w")[0][1].tensor)
    assert buckets.shape == (30, 3) and buckets[:, 2].sum() == 60


def test_text_round_trips_unicode(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    writer.text("notes", "héllo **world**", step=2)
    writer.close()
    ((step, value),) = values(tmp_path, "notes")
    assert step == 2 and value.metadata.plugin_data.plugin_name == "text"
    assert value.tensor.string_val == ["héllo **world**".encode()]


def test_text_refuses_numbers(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    with pytest.raises(summary.SummaryError, match="text expects str"):
        writer.text("notes", 3.0, step=0)
    writer.close()


def test_images_are_pngs_scaled_like_tensorflow(tmp_path):
    images = np.zeros((4, 2, 3, 3), np.float32)
    images[0, 0, 0] = [1.0, 0.5, 0.0]
    images[0, 1, 2] = [2.0, -1.0, 0.25]  # clipped to [0, 1]
    writer = summary.create_file_writer(tmp_path)
    writer.image("imgs", images, step=1, max_outputs=2)
    writer.close()
    ((_, value),) = values(tmp_path, "imgs")
    assert value.metadata.plugin_data.plugin_name == "images"
    width, height, *pngs = value.tensor.string_val
    assert (width, height) == (b"3", b"2") and len(pngs) == 2
    decoded = np.asarray(Image.open(io.BytesIO(pngs[0])))
    assert decoded.shape == (2, 3, 3) and decoded.dtype == np.uint8
    # TensorFlow's convert_image_dtype: floor(x * 255.5), saturated.
    np.testing.assert_array_equal(decoded[0, 0], [255, 127, 0])
    np.testing.assert_array_equal(decoded[1, 2], [255, 0, 63])


def test_grayscale_uint8_images_keep_their_values(tmp_path):
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1) * 7
    writer = summary.create_file_writer(tmp_path)
    writer.image("gray", images, step=0)
    writer.close()
    pngs = values(tmp_path, "gray")[0][1].tensor.string_val[2:]
    for png, image in zip(pngs, images, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image[..., 0])


def test_image_shape_errors_name_the_tag_and_shape(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    with pytest.raises(summary.SummaryError, match=r"'img'.*\[k, h, w, c\].*\(8, 8\)"):
        writer.image("img", np.zeros((8, 8)), step=0)
    with pytest.raises(summary.SummaryError, match="c in 1..4"):
        writer.image("img", np.zeros((1, 8, 8, 5)), step=0)
    writer.close()


def test_graph_writes_a_run_level_graph_def(tmp_path):
    graph_def = graph_pb2.GraphDef()
    graph_def.node.add(name="model/dense/MatMul", op="MatMul")
    writer = summary.create_file_writer(tmp_path)
    with writer.as_default():
        assert summary.graph(graph_def)
    writer.close()
    (event,) = [e for e in read_events(tmp_path) if e.HasField("graph_def")]
    assert graph_pb2.GraphDef.FromString(event.graph_def) == graph_def


def test_two_writers_write_two_runs(tmp_path):
    train = summary.create_file_writer(tmp_path / "train")
    valid = summary.create_file_writer(tmp_path / "validation")
    train.scalar("loss", 1.0, step=0)
    valid.scalar("loss", 2.0, step=0)
    train.close()
    valid.close()
    assert values(tmp_path / "train", "loss")[0][1].tensor.float_val == [1.0]
    assert values(tmp_path / "validation", "loss")[0][1].tensor.float_val == [2.0]
