"""jmod models out to ONNX (jax2onnx), run in onnxruntime: equal outputs, any batch size."""

import numpy as np
import pytest

pytest.importorskip("jax2onnx")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import jax.numpy as jnp  # noqa: E402

import jmod  # noqa: E402
from jmod import layers  # noqa: E402
from jmod.interop import InteropError, export_onnx  # noqa: E402
from tests.guide import MySequentialModule  # noqa: E402


def run_onnx(path, *inputs):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feed)[0]


def check(model, path, spec, make):
    export_onnx(model, path, spec)
    for batch in (1, 4):  # one file, two batch sizes: the batch dimension is dynamic
        x = make(batch)
        np.testing.assert_allclose(run_onnx(path, x), np.asarray(model(x)), atol=1e-5, rtol=1e-5)


def test_guide_module_exports_with_dynamic_batch(tmp_path):
    model = MySequentialModule()
    model(jnp.ones((1, 3)))
    path = str(tmp_path / "guide.onnx")
    rng = np.random.default_rng(0)
    check(model, path, jmod.TensorSpec([None, 3]), lambda b: rng.normal(size=(b, 3)).astype("f4"))
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 3


def test_cnn_with_pooling_runs_in_onnxruntime(tmp_path):
    # Max pooling needs jmod's rewrite: jax2onnx's own 4-D MaxPool is refused by onnxruntime.
    model = jmod.Sequential([
        jmod.Input(shape=[8, 8, 3]),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(3, strides=2, padding="same"),
        layers.Conv2D(6, 3, groups=2),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2),
    ])  # fmt: skip
    rng = np.random.default_rng(1)
    make = lambda b: rng.normal(size=(b, 8, 8, 3)).astype("f4")
    check(model, str(tmp_path / "cnn.onnx"), [None, 8, 8, 3], make)


class Block(jmod.Module):
    def __init__(self):
        super().__init__()
        self.attn = layers.MultiHeadAttention(num_heads=2, key_dim=4)
        self.norm1 = layers.LayerNormalization()
        self.ff = layers.Dense(8, activation="relu")
        self.norm2 = layers.LayerNormalization()

    def __call__(self, x):
        x = self.norm1(x + self.attn(x, x))
        return self.norm2(x + self.ff(x))


def test_transformer_block_exports(tmp_path):
    model = Block()
    model(jnp.ones((1, 5, 8)))
    rng = np.random.default_rng(2)
    make = lambda b: rng.normal(size=(b, 5, 8)).astype("f4")
    check(model, str(tmp_path / "block.onnx"), jmod.TensorSpec([None, 5, 8]), make)


def test_unbuilt_model_is_a_clear_error(tmp_path):
    with pytest.raises(InteropError, match="no variables yet"):
        export_onnx(jmod.Sequential([layers.Dense(2)]), str(tmp_path / "x.onnx"), [None, 3])


def test_docstring_examples_run():
    from jmod.interop import onnx as onnx_mod
    from tests.layer_checks import run_docstring_examples

    run_docstring_examples(onnx_mod)
