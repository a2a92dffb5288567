"""Keras 3 files into jmod: weights saved by Keras itself load, and .keras archives rebuild."""

import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

import jmod  # noqa: E402
from jmod import layers  # noqa: E402
from jmod.interop import InteropError, load_keras_weights, model_from_keras  # noqa: E402

RNG = np.random.default_rng(0)
X_IMG = RNG.normal(size=(2, 8, 8, 3)).astype("float32")
X_SEQ = RNG.normal(size=(2, 5, 8)).astype("float32")


def randomize(model):
    # Non-trivial values everywhere (Keras starts biases and moving stats at 0/1).
    rng = np.random.default_rng(1)
    for v in model.weights:
        value = rng.normal(size=v.shape).astype("float32")
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A Keras CNN and a Keras attention block, saved as .keras and .weights.h5 by Keras."""
    d = tmp_path_factory.mktemp("keras")
    cnn = randomize(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                keras.layers.BatchNormalization(),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(5, activation="tanh"),
                keras.layers.Dropout(0.1),
                keras.layers.Dense(2),
            ]
        )
    )
    cnn.save(d / "cnn.keras")
    cnn.save_weights(d / "cnn.weights.h5")
    i = keras.Input((5, 8))
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(i, i)
    h = keras.layers.LayerNormalization(epsilon=1e-5)(keras.layers.Add()([i, a]))
    block = randomize(keras.Model(i, keras.layers.Dense(3)(h)))
    block.save(d / "block.keras")
    return {
        "dir": d,
        "cnn": np.asarray(cnn.predict(X_IMG, verbose=0)),
        "block": np.asarray(block.predict(X_SEQ, verbose=0)),
    }


def jmod_cnn():
    return jmod.Sequential([
        jmod.Input(shape=[8, 8, 3]),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(5, activation="tanh"),
        layers.Dropout(0.1),
        layers.Dense(2),
    ])  # fmt: skip


@pytest.mark.parametrize("filename", ["cnn.weights.h5", "cnn.keras"])
def test_keras_weights_load_into_the_same_jmod_model(saved, filename):
    model = jmod_cnn()
    report = load_keras_weights(model, saved["dir"] / filename)
    assert report.consumed and len(report.matched) == 10
    np.testing.assert_allclose(np.asarray(model(X_IMG)), saved["cnn"], atol=1e-5)


def test_model_from_keras_rebuilds_sequential_with_equal_predictions(saved):
    model = model_from_keras(saved["dir"] / "cnn.keras")
    assert [type(x).__name__ for x in model.layers] == [
        "Conv2D", "BatchNormalization", "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    assert model.layers[1].epsilon == pytest.approx(1e-3)
    np.testing.assert_allclose(np.asarray(model(X_IMG)), saved["cnn"], atol=1e-5)


def test_model_from_keras_rebuilds_functional_attention_block(saved):
    model = model_from_keras(saved["dir"] / "block.keras")
    kinds = {type(x).__name__ for x in model.layers}
    assert {"MultiHeadAttention", "Add", "LayerNormalization", "Dense"} <= kinds
    np.testing.assert_allclose(np.asarray(model(X_SEQ)), saved["block"], atol=1e-5)


def test_keras_lstm_and_gru_weights_load(tmp_path):
    x = RNG.normal(size=(2, 6, 4)).astype("float32")
    for kind in ("LSTM", "GRU"):
        k = randomize(keras.Sequential([
            keras.Input((6, 4)), getattr(keras.layers, kind)(8), keras.layers.Dense(2),
        ]))  # fmt: skip
        k.save_weights(tmp_path / f"{kind}.weights.h5")
        j = jmod.Sequential([jmod.Input(shape=[6, 4]), getattr(layers, kind)(8), layers.Dense(2)])
        report = load_keras_weights(j, tmp_path / f"{kind}.weights.h5")
        assert report.consumed and len(report.matched) == 5
        np.testing.assert_allclose(
            np.asarray(j(x)), np.asarray(k.predict(x, verbose=0)), atol=1e-5, err_msg=kind
        )


def test_unknown_layer_is_named_and_nothing_runs(tmp_path):
    k = keras.Sequential([
        keras.Input((3,)), keras.layers.Dense(2), keras.layers.GaussianNoise(0.1, name="noisy"),
    ])  # fmt: skip
    k.save(tmp_path / "n.keras")
    with pytest.raises(InteropError, match=r"layer 'noisy' is a Keras 'GaussianNoise'"):
        model_from_keras(tmp_path / "n.keras")


def test_lambda_layer_is_refused_by_name_not_run(tmp_path):
    k = keras.Sequential([
        keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2, name="doubler"),
    ])  # fmt: skip
    k.save(tmp_path / "l.keras")
    with pytest.raises(InteropError, match=r"layer 'doubler' is a Keras 'Lambda'"):
        model_from_keras(tmp_path / "l.keras")


def test_nested_sequential_inside_functional_rebuilds(tmp_path):
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
    i = keras.Input((4,))
    outer = randomize(keras.Model(i, keras.layers.Dense(2)(inner(i))))
    outer.save(tmp_path / "nested.keras")
    x = RNG.normal(size=(3, 4)).astype("float32")
    model = model_from_keras(tmp_path / "nested.keras")
    np.testing.assert_allclose(
        np.asarray(model(x)), np.asarray(outer.predict(x, verbose=0)), atol=1e-5
    )


def test_wrong_shape_names_file_path_and_both_shapes(saved):
    wrong = jmod.Sequential([
        jmod.Input(shape=[8, 8, 3]),
        layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(6),
        layers.Dense(2),
    ])  # fmt: skip
    before = [np.asarray(v.value) for v in wrong.variables]
    with pytest.raises(InteropError) as e:
        load_keras_weights(wrong, saved["dir"] / "cnn.weights.h5")
    msg = str(e.value)
    assert "cnn.weights.h5" in msg and "(64, 5) in the file" in msg and "(64, 6)" in msg
    assert all(np.array_equal(b, np.asarray(v.value)) for b, v in zip(before, wrong.variables))


def test_missing_layer_is_reported(saved):
    short = jmod.Sequential([
        jmod.Input(shape=[8, 8, 3]), layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(), layers.MaxPooling2D(), layers.Flatten(), layers.Dense(5),
    ])  # fmt: skip
    with pytest.raises(InteropError, match=r"unused in the file: layers/dense_1/vars/0 \(5, 2\)"):
        load_keras_weights(short, saved["dir"] / "cnn.weights.h5")
    report = load_keras_weights(short, saved["dir"] / "cnn.weights.h5", strict=False)
    assert len(report.matched) == 8 and len(report.unused) == 2


def test_files_that_are_not_what_they_claim(tmp_path):
    model = jmod.Sequential([jmod.Input(shape=[3]), layers.Dense(2)])
    fake_h5 = tmp_path / "w.weights.h5"
    fake_h5.write_text("not hdf5")
    with pytest.raises(InteropError, match="w.weights.h5: not a Keras weights file"):
        load_keras_weights(model, fake_h5)
    fake_zip = tmp_path / "m.keras"
    fake_zip.write_bytes(b"\x89HDF\r\n not a zip")
    with pytest.raises(InteropError, match="m.keras: not a .keras archive"):
        model_from_keras(fake_zip)
    other_zip = tmp_path / "o.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InteropError, match=r"o.keras: a .keras archive holds model.weights.h5"):
        load_keras_weights(model, other_zip)


def test_docstring_examples_run():
    from jmod.interop import keras as keras_mod
    from tests.layer_checks import run_docstring_examples

    run_docstring_examples(keras_mod)
