"""Whole-model archives: `model.save("model.jmod")`, `load_model`, and what loading refuses."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import jmod
import jmod.losses
import jmod.models
import jmod.saving
from jmod import layers
from jmod.models import Input, Model, Sequential, archive, load_model
from tests.guide_layers import MySequentialModel, functional_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_fresh(script, *args):
    """Runs `script` in a new Python process (repo on the path); returns its stdout."""
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _rewrite(src, dst, change):
    """Copies the zip `src` to `dst`, passing its {name: bytes} through `change`."""
    with zipfile.ZipFile(src) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    entries = change(entries)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return dst


@pytest.fixture(scope="module")
def saved_guide_model(tmp_path_factory):
    model = functional_model()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("archive") / "guide.jmod")
    model.save(path)
    return path, model, x


def test_archive_holds_config_weights_and_metadata(saved_guide_model):
    path, model, _ = saved_guide_model
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        metadata = json.loads(zf.read("metadata.json"))
        config = json.loads(zf.read("config.json"))
    assert names == [
        "config.json",
        "metadata.json",
        "model.weights.data-00000-of-00001",
        "model.weights.index",
    ]
    assert metadata["format"] == "jmod.model" and metadata["jmod_version"] == jmod.__version__
    assert metadata["date_saved"][:2] == "20"
    assert config["model"]["class_name"] == "Model"
    assert [entry["class_name"] for entry in config["model"]["config"]["layers"]] == [
        "InputLayer",
        "FlexibleDense",
        "FlexibleDense",
    ]


def test_weights_inside_are_a_jmod_checkpoint(saved_guide_model, tmp_path):
    path, model, _ = saved_guide_model
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path)
    keys = [k for k, _ in jmod.checkpoint.list_variables(str(tmp_path / "model.weights"))]
    assert keys == ["model/" + p for p, _ in sorted(model.named_variables())]
    first = model.layers[1]
    np.testing.assert_array_equal(
        jmod.checkpoint.load_variable(
            str(tmp_path / "model.weights"), f"model/layers/{first.name}/w"
        ),
        first.w.value,
    )


def test_functional_model_loads_with_identical_outputs(saved_guide_model):
    path, model, x = saved_guide_model
    loaded = load_model(path)
    assert type(loaded) is Model and loaded.name == model.name
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded(x), model(x))


def test_guide_subclassed_model_round_trips(tmp_path):
    model = MySequentialModel(name="the_model")
    x = jnp.array([[2.0, 2.0, 2.0]])
    want = model(x)
    path = model.save(str(tmp_path / "exname_of_file.jmod"))
    reconstructed_model = load_model(path)
    assert type(reconstructed_model) is MySequentialModel
    assert reconstructed_model.built  # rebuilt from the saved input spec
    np.testing.assert_array_equal(reconstructed_model(x), want)


def test_subclassed_model_inside_functional_model_round_trips(tmp_path):
    x = Input(shape=[3])
    model = Model(x, MySequentialModel()(x))  # its __init__ drops the saved name
    data = np.ones((2, 3), np.float32)
    loaded = load_model(model.save(str(tmp_path / "nested.jmod")))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded(data), model(data))


def test_unbuilt_subclassed_model_gets_values_on_first_call(tmp_path):
    model = MySequentialModel()
    path = model.save(str(tmp_path / "empty.jmod"))
    loaded = load_model(path)
    assert not loaded.built and loaded.variables == ()


def test_sequential_with_batch_norm_keeps_moving_statistics(tmp_path):
    model = Sequential([Input(shape=[2]), layers.BatchNormalization(), layers.Dense(1)])
    model(np.array([[1.0, 2.0], [3.0, 6.0]], np.float32), training=True)
    path = model.save(str(tmp_path / "bn.jmod"))
    loaded = load_model(path)
    bn = loaded.layers[0]
    np.testing.assert_array_equal(bn.moving_mean.value, model.layers[0].moving_mean.value)
    assert float(bn.moving_mean.value[0]) != 0.0
    x = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_save_refuses_to_overwrite_when_asked(tmp_path):
    model = Sequential([Input(shape=[2]), layers.Dense(1)])
    path = model.save(str(tmp_path / "m.jmod"))
    with pytest.raises(jmod.SerializationError, match="exists"):
        model.save(path, overwrite=False)


def test_unregistered_class_in_fresh_process_is_refused_by_name(saved_guide_model):
    path, _, _ = saved_guide_model
    out = _run_fresh(
        """
        import sys
        import jmod, jmod.models
        try:
            jmod.models.load_model(sys.argv[1])
        except jmod.SerializationError as e:
            print("refused:", e)
        print("guide imported:", "tests.guide_layers" in sys.modules)
        """,
        path,
    )
    assert "refused:" in out and "'Custom>FlexibleDense'" in out
    assert "nothing is imported" in out
    assert "guide imported: False" in out


def test_registered_class_in_fresh_process_loads_same_outputs(saved_guide_model, tmp_path):
    path, model, x = saved_guide_model
    np.save(tmp_path / "x.npy", x)
    out = _run_fresh(
        """
        import sys
        import numpy as np
        import jmod.models
        import tests.guide_layers  # defines and registers FlexibleDense, as a user would
        model = jmod.models.load_model(sys.argv[1])
        np.save(sys.argv[3], np.asarray(model(np.load(sys.argv[2]))))
        """,
        path,
        str(tmp_path / "x.npy"),
        str(tmp_path / "y.npy"),
    )
    assert out == ""
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model(x))


# -- what loading refuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    "entry", ["../escape.txt", "/tmp/jmod_absolute.txt", "weights/../../escape.txt", "C:\\x.txt"]
)
def test_unsafe_entry_names_are_refused(saved_guide_model, tmp_path, entry):
    path, _, _ = saved_guide_model
    bad = _rewrite(path, tmp_path / "bad.jmod", lambda e: {**e, entry: b"payload"})
    with pytest.raises(jmod.SerializationError, match="refusing zip entry"):
        load_model(bad)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_unknown_classes_are_all_listed_and_nothing_is_built(saved_guide_model, tmp_path):
    path, _, _ = saved_guide_model

    def rename(entries):
        config = json.loads(entries["config.json"])
        for entry in config["model"]["config"]["layers"][1:]:
            entry["class_name"] = "os.system"
            entry["registered_name"] = f"evil>{entry['name']}"
        return {**entries, "config.json": json.dumps(config).encode()}

    bad = _rewrite(path, tmp_path / "evil.jmod", rename)
    with pytest.raises(jmod.SerializationError) as info:
        load_model(bad)
    names = sorted(f"evil>{layer.name}" for layer in functional_model().layers[1:])
    message = str(info.value)
    assert "'evil>flexible_dense" in message and message.count("'evil>") == len(names)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: b"not a zip at all", id="garbage"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:100] + bytes(50) + data[150:], id="zeroed-header"),
    ],
)
def test_corrupt_file_is_a_serialization_error(saved_guide_model, tmp_path, corrupt):
    path, _, _ = saved_guide_model
    with open(path, "rb") as f:
        data = f.read()
    bad = tmp_path / "corrupt.jmod"
    bad.write_bytes(corrupt(data))
    with pytest.raises(jmod.SerializationError):
        load_model(bad)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: {k: v for k, v in e.items() if k != "metadata.json"}, "no metadata.json"),
        (lambda e: {**e, "config.json": b"{not json"}, "not valid JSON"),
        (lambda e: {**e, "metadata.json": b'{"format": "keras"}'}, "not a jmod model archive"),
        (
            lambda e: {**e, "metadata.json": b'{"format": "jmod.model", "format_version": 99}'},
            "newer",
        ),
        (lambda e: {k: v for k, v in e.items() if "weights" not in k}, "no model.weights"),
        (
            lambda e: {
                **e,
                "model.weights.data-00000-of-00001": bytes(
                    len(e["model.weights.data-00000-of-00001"])
                ),
            },
            "cannot load the model",
        ),
        (
            lambda e: {
                **e,
                "config.json": b'{"model": {"class_name": "Model", "registered_name": null, '
                b'"config": {"layers": [], "input_layers": [], "output_layers": []}}}',
            },
            "at least one",
        ),
    ],
    ids=[
        "no-metadata",
        "bad-json",
        "other-format",
        "future-version",
        "no-weights",
        "bad-weights",
        "bad-config",
    ],
)
def test_damaged_entries_are_a_serialization_error(saved_guide_model, tmp_path, change, message):
    path, _, _ = saved_guide_model
    bad = _rewrite(path, tmp_path / "damaged.jmod", change)
    with pytest.raises(jmod.SerializationError, match=message):
        load_model(bad)


# -- zip bombs and fuzzing ----------------------------------------------------------------

DATA = "model.weights.data-00000-of-00001"


def _bomb(src, dst, extra):
    """`src` with `extra` zero bytes appended to its weights data, deflated (a few KiB each MiB)."""
    with zipfile.ZipFile(src) as zf, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename == DATA:
                with out.open(DATA, "w", force_zip64=True) as f:
                    f.write(data)
                    chunk = bytes(1 << 20)
                    for start in range(0, extra, len(chunk)):
                        f.write(chunk[: extra - start])
            else:
                out.writestr(info, data)
    return dst


def test_a_weights_entry_inflating_past_its_index_is_refused_before_extraction(
    saved_guide_model, tmp_path, monkeypatch
):
    path, _, _ = saved_guide_model
    bomb = _bomb(path, tmp_path / "bomb.jmod", 64 << 20)
    assert os.path.getsize(bomb) < 1 << 20  # 64 MiB of zeros deflate to ~64 KiB
    written = []
    real = archive._copy_entry
    monkeypatch.setattr(
        archive, "_copy_entry", lambda *a: written.append(a[2].filename) or real(*a)
    )
    with pytest.raises(jmod.SerializationError) as info:
        load_model(bomb)
    message = str(info.value)
    assert message.startswith(f"{bomb}: refusing entry {DATA!r}: it declares ")
    with zipfile.ZipFile(path) as zf:
        needed = zf.getinfo(DATA).file_size  # what the index accounts for: the original size
    assert f"{needed + (64 << 20):,} bytes" in message and f"accounts for {needed:,}" in message
    assert written == ["model.weights.index", DATA]  # refused on its declared size


def test_an_entry_that_inflates_past_its_declared_size_is_refused(saved_guide_model, tmp_path):
    # A lying zip directory: zipfile stops at the declared size, the CRC then fails.
    path, _, _ = saved_guide_model
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    bad = tmp_path / "lying.jmod"
    with zipfile.ZipFile(bad, "w") as out:
        for name, data in entries.items():
            out.writestr(name, data + (bytes(4096) if name == DATA else b""))
    raw = bytearray(bad.read_bytes())
    # Shrink the declared size in the central directory entry of the data file.
    at = raw.rindex(b"PK\x01\x02", 0, raw.rindex(DATA.encode()))
    size = int.from_bytes(raw[at + 24 : at + 28], "little")
    raw[at + 24 : at + 28] = (size - 4096).to_bytes(4, "little")
    bad.write_bytes(bytes(raw))
    with pytest.raises(jmod.SerializationError, match=DATA):
        load_model(bad)


def test_extraction_stops_at_the_total_limit(saved_guide_model, monkeypatch):
    path, _, _ = saved_guide_model
    monkeypatch.setattr(archive, "MAX_EXTRACTED_BYTES", 100)
    with pytest.raises(
        jmod.SerializationError, match=r"refusing entry .model.weights.index.*limit of 100 bytes"
    ):
        load_model(path)


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    model = Sequential([Input(shape=[2]), layers.Dense(2)])
    path = str(tmp_path_factory.mktemp("fuzz") / "small.jmod")
    model.save(path)
    with open(path, "rb") as f:
        return f.read(), model


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_archives_raise_serialization_error_or_load_the_same_model(
    small_archive, tmp_path, data
):
    raw, model = small_archive
    mutated = bytearray(raw)
    how = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if how == "flip":
        for at in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            mutated[at] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del mutated[data.draw(st.integers(0, len(raw) - 1)) :]
    else:
        at = data.draw(st.integers(0, len(raw) - 1))
        mutated[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    bad = tmp_path / "fuzz.jmod"
    bad.write_bytes(bytes(mutated))
    try:
        loaded = load_model(bad)
    except jmod.SerializationError:
        return
    x = np.ones((1, 2), np.float32)  # what loads is the model that was saved
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


# -- every built-in layer, saved and reloaded in a fresh process ---------------------


def _cases():
    L = layers
    f = "float32"
    return {
        "Dense": (lambda: L.Dense(3, activation="relu"), [(4,)], f),
        "Activation": (lambda: L.Activation("tanh"), [(4,)], f),
        "Dropout": (lambda: L.Dropout(0.5), [(4,)], f),
        "BatchNormalization": (lambda: L.BatchNormalization(), [(4,)], f),
        "LayerNormalization": (lambda: L.LayerNormalization(), [(4,)], f),
        "Embedding": (lambda: L.Embedding(10, 3), [(5,)], "int32"),
        "Conv1D": (lambda: L.Conv1D(2, 3), [(8, 3)], f),
        "Conv2D": (lambda: L.Conv2D(2, 3, padding="same"), [(6, 6, 3)], f),
        "MaxPooling1D": (lambda: L.MaxPooling1D(), [(6, 3)], f),
        "AveragePooling1D": (lambda: L.AveragePooling1D(), [(6, 3)], f),
        "GlobalAveragePooling1D": (lambda: L.GlobalAveragePooling1D(), [(6, 3)], f),
        "GlobalMaxPooling1D": (lambda: L.GlobalMaxPooling1D(), [(6, 3)], f),
        "MaxPooling2D": (lambda: L.MaxPooling2D(), [(6, 6, 3)], f),
        "AveragePooling2D": (lambda: L.AveragePooling2D(), [(6, 6, 3)], f),
        "GlobalAveragePooling2D": (lambda: L.GlobalAveragePooling2D(), [(6, 6, 3)], f),
        "GlobalMaxPooling2D": (lambda: L.GlobalMaxPooling2D(), [(6, 6, 3)], f),
        "Flatten": (lambda: L.Flatten(), [(6, 3)], f),
        "Reshape": (lambda: L.Reshape((3, 2)), [(6,)], f),
        "Concatenate": (lambda: L.Concatenate(), [(4,), (2,)], f),
        "Add": (lambda: L.Add(), [(4,), (4,)], f),
        "Subtract": (lambda: L.Subtract(), [(4,), (4,)], f),
        "Multiply": (lambda: L.Multiply(), [(4,), (4,)], f),
        "Average": (lambda: L.Average(), [(4,), (4,)], f),
        "Maximum": (lambda: L.Maximum(), [(4,), (4,)], f),
        "Minimum": (lambda: L.Minimum(), [(4,), (4,)], f),
        "MultiHeadAttention": (
            lambda: L.MultiHeadAttention(num_heads=2, key_dim=2),
            [(3, 4), (5, 4)],
            f,
        ),
        "Conv1DTranspose": (lambda: L.Conv1DTranspose(2, 3, strides=2), [(5, 3)], f),
        "Conv2DTranspose": (lambda: L.Conv2DTranspose(2, 3, padding="same"), [(4, 4, 3)], f),
        "Conv3D": (lambda: L.Conv3D(2, 2), [(4, 4, 4, 2)], f),
        "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), [(5, 5, 2)], f),
        "SeparableConv2D": (lambda: L.SeparableConv2D(3, 3), [(5, 5, 2)], f),
        "MaxPooling3D": (lambda: L.MaxPooling3D(), [(4, 4, 4, 2)], f),
        "AveragePooling3D": (lambda: L.AveragePooling3D(), [(4, 4, 4, 2)], f),
        "GlobalMaxPooling3D": (lambda: L.GlobalMaxPooling3D(), [(4, 4, 4, 2)], f),
        "GlobalAveragePooling3D": (lambda: L.GlobalAveragePooling3D(), [(4, 4, 4, 2)], f),
        "Cropping1D": (lambda: L.Cropping1D((1, 2)), [(6, 3)], f),
        "Cropping2D": (lambda: L.Cropping2D(((1, 0), (0, 2))), [(5, 5, 2)], f),
        "ZeroPadding1D": (lambda: L.ZeroPadding1D(2), [(4, 3)], f),
        "ZeroPadding2D": (lambda: L.ZeroPadding2D((1, 2)), [(4, 4, 2)], f),
        "UpSampling1D": (lambda: L.UpSampling1D(2), [(4, 3)], f),
        "UpSampling2D": (lambda: L.UpSampling2D(2), [(3, 3, 2)], f),
        "Permute": (lambda: L.Permute((2, 1)), [(4, 3)], f),
        "RepeatVector": (lambda: L.RepeatVector(3), [(4,)], f),
        "Rescaling": (lambda: L.Rescaling(0.5, offset=1.0), [(4,)], f),
        "ReLU": (lambda: L.ReLU(max_value=1.0), [(4,)], f),
        "LeakyReLU": (lambda: L.LeakyReLU(0.2), [(4,)], f),
        "ELU": (lambda: L.ELU(), [(4,)], f),
        "PReLU": (lambda: L.PReLU(), [(4,)], f),
        "Softmax": (lambda: L.Softmax(), [(4,)], f),
        "GroupNormalization": (lambda: L.GroupNormalization(groups=2), [(3, 4)], f),
        "RMSNormalization": (lambda: L.RMSNormalization(), [(4,)], f),
        "UnitNormalization": (lambda: L.UnitNormalization(), [(4,)], f),
        "EinsumDense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=3), [(4,)], f),
        "SimpleRNN": (lambda: L.SimpleRNN(3), [(5, 2)], f),
        "GRU": (lambda: L.GRU(3, return_sequences=True), [(5, 2)], f),
        "LSTM": (lambda: L.LSTM(3), [(5, 2)], f),
        "RNN": (lambda: L.RNN(L.LSTMCell(3)), [(5, 2)], f),
        "TimeDistributed": (lambda: L.TimeDistributed(L.Dense(2)), [(5, 3)], f),
        "Bidirectional": (lambda: L.Bidirectional(L.GRU(2)), [(5, 3)], f),
        "Repeat": (lambda: L.Repeat(lambda: L.Dense(4), 2), [(4,)], f),
    }


# Cells run inside an RNN layer (the "RNN" case saves one), not on their own.
_INSIDE_OTHERS = {"SimpleRNNCell", "GRUCell", "LSTMCell"}


def test_every_builtin_layer_has_a_round_trip_case():
    builtins = {
        name
        for name in layers.__all__
        if isinstance(getattr(layers, name), type)
        and issubclass(getattr(layers, name), layers.Layer)
        and name != "Layer"
    } - _INSIDE_OTHERS
    assert builtins <= set(_cases()), sorted(builtins - set(_cases()))


FRESH_LOADER = """
    import json, sys
    import numpy as np
    import jmod, jmod.models
    directory, names = sys.argv[1], json.loads(sys.argv[2])
    run = jmod.jit(lambda m, x: m(x))
    report = {}
    for name in names:
        model = jmod.models.load_model(f"{directory}/{name}.jmod")
        data = np.load(f"{directory}/{name}.npz")
        xs = [data[f"x{i}"] for i in range(len(data.files) - 1)]
        got = np.asarray(run(model, xs if len(xs) > 1 else xs[0]))
        layer = model.layers[-1]
        report[name] = {
            "max_diff": float(np.max(np.abs(got - data["y"]))),
            "class": type(layer).__name__,
            "config": jmod.saving.serialize(layer)["config"],
        }
    print(json.dumps(report))
"""


def test_every_builtin_layer_reloads_in_a_fresh_process(tmp_path):
    jmod.random.set_seed(0)
    rng = np.random.default_rng(0)
    expected = {}
    for name, (make, shapes, dtype) in _cases().items():
        inputs = [Input(shape=s, dtype=dtype) for s in shapes]
        layer = make()
        if name == "MultiHeadAttention":
            out = layer(inputs[0], inputs[1])
        else:
            out = layer(inputs if len(inputs) > 1 else inputs[0])
        model = Model(inputs if len(inputs) > 1 else inputs[0], out, name=f"m_{name.lower()}")
        if dtype == "int32":
            xs = [rng.integers(0, 10, (2, *s)).astype(dtype) for s in shapes]
        else:
            xs = [rng.normal(size=(2, *s)).astype(dtype) for s in shapes]
        x = xs if len(xs) > 1 else xs[0]
        if name == "BatchNormalization":
            model(x, training=True)  # moving statistics away from their initial values
        y = np.asarray(model(x))
        np.savez(tmp_path / f"{name}.npz", y=y, **{f"x{i}": v for i, v in enumerate(xs)})
        model.save(str(tmp_path / f"{name}.jmod"))
        expected[name] = jmod.saving.serialize(layer)["config"]
    report = json.loads(_run_fresh(FRESH_LOADER, str(tmp_path), json.dumps(list(expected))))
    assert set(report) == set(expected)
    for name, got in report.items():
        assert got["class"] == name
        assert got["config"] == expected[name], name
        assert got["max_diff"] <= 1e-5, (name, got["max_diff"])


# -- compiled models -----------------------------------------------------------------


def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


def test_compiled_model_reloads_compiled_and_trains_on_identically(tmp_path):
    jmod.random.set_seed(0)
    x, y = _regression_data()
    model = Sequential([Input(shape=[3]), layers.Dense(4, activation="relu"), layers.Dense(1)])
    model.compile(optimizer="adam", loss=jmod.losses.MeanSquaredError(), metrics=["mae"])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = model.save(str(tmp_path / "trained.jmod"))
    with zipfile.ZipFile(path) as zf:
        assert "optimizer.index" in zf.namelist()
    loaded = load_model(path)
    assert loaded.compiled
    assert int(loaded.optimizer.iterations.value) == 4
    for (key, saved), (key2, restored) in zip(
        model.optimizer.named_variables(), loaded.optimizer.named_variables()
    ):
        assert key == key2
        np.testing.assert_array_equal(restored.value, saved.value)
    again = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    resumed = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert resumed.history == again.history
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_optax_optimizer_cannot_be_stored_so_the_model_loads_uncompiled(tmp_path):
    import optax

    model = Sequential([Input(shape=[3]), layers.Dense(1)])
    model.compile(optax.sgd(0.1), loss="mse")
    with pytest.warns(UserWarning, match="optimizer=.*uncompiled"):
        path = model.save(str(tmp_path / "optax.jmod"))
    assert not load_model(path).compiled
    assert not load_model(path, compile=False).compiled
