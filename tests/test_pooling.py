import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import pooling
from tests.layer_checks import call_jitted, config_round_trip, dtype_policy, run_docstring_examples

RNG = np.random.default_rng(3)
X2 = RNG.normal(size=(2, 7, 6, 3)).astype(np.float32)
X1 = RNG.normal(size=(2, 9, 3)).astype(np.float32)


def _pool2d_reference(x, kind, pool, strides, padding):
    """Channels-last pooling by explicit loops; "same" windows cover only real elements."""
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool, strides
    if padding == "same":
        oh, ow = math.ceil(h / sh), math.ceil(w / sw)
        top = max((oh - 1) * sh + ph - h, 0) // 2
        left = max((ow - 1) * sw + pw - w, 0) // 2
    else:
        oh, ow, top, left = (h - ph) // sh + 1, (w - pw) // sw + 1, 0, 0
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * sh - top, j * sw - left
            window = x[:, max(r0, 0) : r0 + ph, max(c0, 0) : c0 + pw, :]
            out[:, i, j] = window.max(axis=(1, 2)) if kind == "max" else window.mean(axis=(1, 2))
    return out


CASES = [
    dict(pool_size=2),
    dict(pool_size=3, strides=2),
    dict(pool_size=(2, 3), padding="same"),
    dict(pool_size=3, strides=(2, 1), padding="same"),
]


@pytest.mark.parametrize("kwargs", CASES, ids=str)
@pytest.mark.parametrize("cls", [jmod.layers.MaxPooling2D, jmod.layers.AveragePooling2D])
def test_pooling_2d_matches_loop_reference(cls, kwargs):
    layer = cls(**kwargs)
    out = np.asarray(layer(X2))
    kind = "max" if cls is jmod.layers.MaxPooling2D else "avg"
    ref = _pool2d_reference(X2, kind, layer.pool_size, layer.strides, layer.padding)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 7, 6, 3)) == (None, *out.shape[1:])


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("cls", [jmod.layers.MaxPooling1D, jmod.layers.AveragePooling1D])
def test_pooling_1d_matches_loop_reference(cls, padding):
    layer = cls(pool_size=2, padding=padding)
    out = np.asarray(layer(X1))
    kind = "max" if cls is jmod.layers.MaxPooling1D else "avg"
    ref = _pool2d_reference(X1[:, None], kind, (1, 2), (1, 2), padding)[:, 0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape(X1.shape) == out.shape


def test_same_average_divides_border_windows_by_their_real_elements():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32).reshape(1, 5, 1)
    out = jmod.layers.AveragePooling1D(2, padding="same")(x)
    assert np.asarray(out).ravel().tolist() == [1.5, 3.5, 5.0]


def test_channels_first_pooling_equals_transposed_channels_last():
    x = np.transpose(X2, (0, 3, 1, 2))
    out = jmod.layers.MaxPooling2D(2, data_format="channels_first")(x)
    ref = np.asarray(jmod.layers.MaxPooling2D(2)(X2))
    np.testing.assert_array_equal(np.asarray(out), np.transpose(ref, (0, 3, 1, 2)))


@pytest.mark.parametrize(
    "cls, reduce, rank",
    [
        (jmod.layers.GlobalAveragePooling2D, np.mean, 2),
        (jmod.layers.GlobalMaxPooling2D, np.max, 2),
        (jmod.layers.GlobalAveragePooling1D, np.mean, 1),
        (jmod.layers.GlobalMaxPooling1D, np.max, 1),
    ],
)
def test_global_pooling_reduces_all_spatial_axes(cls, reduce, rank):
    x = X2 if rank == 2 else X1
    axes = tuple(range(1, rank + 1))
    np.testing.assert_allclose(np.asarray(cls()(x)), reduce(x, axis=axes), rtol=1e-5)
    kept = cls(keepdims=True)
    np.testing.assert_allclose(np.asarray(kept(x)), reduce(x, axis=axes, keepdims=True), rtol=1e-5)
    assert kept.compute_output_shape(x.shape) == reduce(x, axis=axes, keepdims=True).shape
    assert cls().compute_output_shape((None, *x.shape[1:])) == (None, 3)


def test_global_average_pooling_channels_first():
    x = np.transpose(X2, (0, 3, 1, 2))
    out = jmod.layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    np.testing.assert_allclose(np.asarray(out), X2.mean(axis=(1, 2)), rtol=1e-5)


def test_jit_gives_the_eager_numbers():
    for layer in (jmod.layers.AveragePooling2D(3, padding="same"), jmod.layers.MaxPooling2D()):
        np.testing.assert_array_equal(np.asarray(call_jitted(layer, X2)), np.asarray(layer(X2)))


def test_mixed_bfloat16_output():
    with dtype_policy("mixed_bfloat16"):
        layers = [jmod.layers.AveragePooling2D(), jmod.layers.GlobalAveragePooling2D()]
    for layer in layers:
        assert layer(X2).dtype == jnp.bfloat16


def test_wrong_rank_names_the_layer():
    with pytest.raises(LayerCallError, match="'p' \\(MaxPooling2D\\).*rank 4"):
        jmod.layers.MaxPooling2D(name="p")(X1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "full"}, "padding.*'full'"),
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": (2, 2, 2)}, "pool_size"),
        ({"strides": (1, 0)}, "strides"),
        ({"data_format": "NHWC"}, "data_format"),
    ],
)
def test_bad_arguments_are_serialization_errors(kwargs, match):
    with pytest.raises(SerializationError, match=f"MaxPooling2D.*{match}"):
        jmod.layers.MaxPooling2D(**kwargs)


def test_config_round_trip():
    layer = jmod.layers.AveragePooling2D((2, 3), strides=1, padding="same", name="avg")
    clone = config_round_trip(layer)
    assert clone.get_config()["strides"] == [1, 1]
    np.testing.assert_array_equal(np.asarray(layer(X2)), np.asarray(clone(X2)))
    assert config_round_trip(jmod.layers.GlobalMaxPooling1D(keepdims=True)).keepdims


def test_default_names_are_keras_style():
    jmod.layers.reset_names()
    assert jmod.layers.MaxPooling2D().name == "max_pooling2d"
    assert jmod.layers.GlobalAveragePooling2D().name == "global_average_pooling2d"


def test_docstring_examples_run():
    run_docstring_examples(pooling)


def _jnp_pool2d(x, kind, pool, strides, padding):
    """The loop reference written with jnp slices: differentiable by JAX on its own path."""
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool, strides
    if padding == "same":
        oh, ow = math.ceil(h / sh), math.ceil(w / sw)
        top = max((oh - 1) * sh + ph - h, 0) // 2
        left = max((ow - 1) * sw + pw - w, 0) // 2
    else:
        oh, ow, top, left = (h - ph) // sh + 1, (w - pw) // sw + 1, 0, 0
    rows = []
    for i in range(oh):
        row = []
        for j in range(ow):
            r0, c0 = i * sh - top, j * sw - left
            window = x[:, max(r0, 0) : r0 + ph, max(c0, 0) : c0 + pw, :]
            row.append(window.max(axis=(1, 2)) if kind == "max" else window.mean(axis=(1, 2)))
        rows.append(jnp.stack(row, axis=1))
    return jnp.stack(rows, axis=1)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
@pytest.mark.parametrize("cls", [jmod.layers.MaxPooling2D, jmod.layers.AveragePooling2D])
def test_pooling_2d_gradient_under_jit_matches_reference(cls, kwargs):
    layer = cls(**kwargs)
    kind = "max" if cls is jmod.layers.MaxPooling2D else "avg"
    out_shape = layer.compute_output_shape(X2.shape)
    g = RNG.normal(size=out_shape).astype(np.float32)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(layer(x) * g)))(X2)
    ref = jax.grad(
        lambda x: jnp.sum(_jnp_pool2d(x, kind, layer.pool_size, layer.strides, layer.padding) * g)
    )(X2)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "cls",
    [
        jmod.layers.MaxPooling1D,
        jmod.layers.AveragePooling1D,
        jmod.layers.GlobalMaxPooling1D,
        jmod.layers.GlobalAveragePooling1D,
    ],
)
def test_pooling_1d_gradient_under_jmod_jit_matches_eager(cls):
    layer = cls(padding="same") if "Global" not in cls.__name__ else cls()
    loss = lambda x: jnp.sum(layer(x) ** 2)
    grad = jmod.jit(lambda x: jax.grad(loss)(x))(X1)
    # The eager gradient takes JAX's concrete-init path: an independent lowering.
    np.testing.assert_allclose(np.asarray(grad), np.asarray(jax.grad(loss)(X1)), rtol=1e-5)
    assert float(jnp.abs(grad).sum()) > 0


def test_cnn_with_pooling_trains_with_fit():
    jmod.random.set_seed(0)
    x = RNG.normal(size=(32, 8, 8, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    model = jmod.Sequential(
        [
            jmod.layers.Conv2D(4, 3, padding="same", activation="relu"),
            jmod.layers.MaxPooling2D(),
            jmod.layers.AveragePooling2D(),
            jmod.layers.GlobalMaxPooling2D(),
            jmod.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=optax.adam(1e-2), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
