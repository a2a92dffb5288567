import math

import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import conv
from tests.layer_checks import (
    call_jitted,
    config_round_trip,
    dtype_policy,
    numpy_initializer,
    run_docstring_examples,
)

RNG = np.random.default_rng(2)
INIT = {"kernel_initializer": numpy_initializer(1), "bias_initializer": numpy_initializer(2)}


def _conv2d_reference(x, w, b, strides, padding, dilation, groups=1):
    """Channels-last 2-D convolution by explicit loops (TF's padding rule for "same")."""
    n, h, wd, _ = x.shape
    kh, kw, cin_g, filters = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = math.ceil(h / sh), math.ceil(wd / sw)
        ph, pw = max((oh - 1) * sh + ekh - h, 0), max((ow - 1) * sw + ekw - wd, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - ekh) // sh + 1, (wd - ekw) // sw + 1
    per_group = filters // groups
    out = np.zeros((n, oh, ow, filters), np.float64)
    for i in range(oh):
        for j in range(ow):
            for f in range(filters):
                g = f // per_group
                patch = x[
                    :,
                    i * sh : i * sh + ekh : dh,
                    j * sw : j * sw + ekw : dw,
                    g * cin_g : (g + 1) * cin_g,
                ]
                out[:, i, j, f] = (patch * w[:, :, :, f]).sum(axis=(1, 2, 3))
    return out + (0 if b is None else b)


def _conv1d_reference(x, w, b, stride, padding, dilation, groups=1):
    if padding == "causal":
        x = np.pad(x, ((0, 0), ((w.shape[0] - 1) * dilation, 0), (0, 0)))
        padding = "valid"
    out = _conv2d_reference(x[:, None], w[None], b, (1, stride), padding, (1, dilation), groups)
    return out[:, 0]


def _weights(layer):
    return np.asarray(layer.kernel), (np.asarray(layer.bias) if layer.use_bias else None)


CASES_2D = [
    dict(kernel_size=3),
    dict(kernel_size=(2, 3), strides=2, padding="same"),
    dict(kernel_size=3, strides=(2, 1), padding="same"),
    dict(kernel_size=2, dilation_rate=2, padding="same"),
    dict(kernel_size=3, dilation_rate=(1, 2)),
    dict(kernel_size=1, groups=2, use_bias=False),
    dict(kernel_size=3, groups=2, padding="same", strides=2),
]


@pytest.mark.parametrize("kwargs", CASES_2D, ids=lambda k: str(sorted(k.items())))
def test_conv2d_matches_loop_reference(kwargs):
    x = RNG.normal(size=(2, 7, 6, 4)).astype(np.float32)
    layer = jmod.layers.Conv2D(6, **INIT, **kwargs)
    out = np.asarray(layer(x))
    w, b = _weights(layer)
    ref = _conv2d_reference(
        x,
        w,
        b,
        layer.strides,
        layer.padding,
        layer.dilation_rate,
        layer.groups,
    )
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert layer.compute_output_shape((None, 7, 6, 4)) == (None, *out.shape[1:])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3),
        dict(kernel_size=3, strides=2, padding="same"),
        dict(kernel_size=2, dilation_rate=3, padding="causal"),
        dict(kernel_size=3, padding="causal", strides=2),
        dict(kernel_size=2, groups=3),
    ],
    ids=str,
)
def test_conv1d_matches_loop_reference(kwargs):
    x = RNG.normal(size=(2, 9, 3)).astype(np.float32)
    layer = jmod.layers.Conv1D(6, **INIT, **kwargs)
    out = np.asarray(layer(x))
    w, b = _weights(layer)
    ref = _conv1d_reference(
        x, w, b, layer.strides[0], layer.padding, layer.dilation_rate[0], layer.groups
    )
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert layer.compute_output_shape((2, 9, 3)) == out.shape


def test_causal_output_does_not_see_the_future():
    layer = jmod.layers.Conv1D(2, 3, padding="causal", **INIT)
    x = RNG.normal(size=(1, 8, 1)).astype(np.float32)
    changed = x.copy()
    changed[0, 5:] += 10.0
    np.testing.assert_array_equal(np.asarray(layer(x))[0, :5], np.asarray(layer(changed))[0, :5])


def test_channels_first_equals_transposed_channels_last():
    x = RNG.normal(size=(2, 4, 6, 5)).astype(np.float32)  # NCHW
    first = jmod.layers.Conv2D(3, 3, padding="same", data_format="channels_first")
    last = jmod.layers.Conv2D(3, 3, padding="same", **INIT)
    out_last = np.asarray(last(np.transpose(x, (0, 2, 3, 1))))
    first(x)
    first.kernel.assign(last.kernel)
    first.bias.assign(last.bias)
    out_first = np.asarray(first(x))
    np.testing.assert_allclose(out_first, np.transpose(out_last, (0, 3, 1, 2)), rtol=1e-5)
    assert first.compute_output_shape((None, 4, 6, 5)) == (None, 3, 6, 5)


def test_activation_is_applied():
    x = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    layer = jmod.layers.Conv2D(3, 3, activation="relu", **INIT)
    out = np.asarray(layer(x))
    w, b = _weights(layer)
    ref = np.maximum(_conv2d_reference(x, w, b, (1, 1), "valid", (1, 1)), 0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_kernel_layout_is_keras_hwio():
    layer = jmod.layers.Conv2D(8, (3, 2), groups=2, **INIT)
    layer(jnp.ones((1, 5, 5, 4)))
    assert layer.kernel.shape == (3, 2, 2, 8) and layer.bias.shape == (8,)


def test_jit_gives_the_eager_numbers():
    x = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
    layer = jmod.layers.Conv2D(4, 3, strides=2, padding="same", **INIT)
    np.testing.assert_allclose(
        np.asarray(call_jitted(layer, x)), np.asarray(layer(x)), rtol=1e-6, atol=1e-6
    )


def test_mixed_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        layer = jmod.layers.Conv1D(4, 3, **INIT)
    x = RNG.normal(size=(2, 6, 3)).astype(np.float32)
    out = layer(x)
    assert out.dtype == jnp.bfloat16 and layer.kernel.dtype == jnp.float32
    w, b = _weights(layer)
    np.testing.assert_allclose(
        np.asarray(out, np.float32),
        _conv1d_reference(x, w, b, 1, "valid", 1),
        rtol=5e-2,
        atol=5e-2,
    )


def test_wrong_channels_after_build_names_the_layer():
    layer = jmod.layers.Conv2D(2, 3, name="c", **INIT)
    layer(jnp.ones((1, 5, 5, 3)))
    with pytest.raises(
        LayerCallError, match="'c' \\(Conv2D\\).*last dimension 3.*\\(1, 5, 5, 4\\)"
    ):
        layer(jnp.ones((1, 5, 5, 4)))


def test_wrong_rank_is_refused():
    with pytest.raises(LayerCallError, match="rank 4"):
        jmod.layers.Conv2D(2, 3, **INIT)(jnp.ones((5, 5, 3)))


def test_channels_not_divisible_by_groups():
    with pytest.raises(LayerCallError, match="5 channels are not divisible by groups=2"):
        jmod.layers.Conv2D(4, 1, groups=2, **INIT)(jnp.ones((1, 3, 3, 5)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "full"}, "padding.*'full'"),
        ({"padding": "causal"}, "padding.*'causal'"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"strides": -1}, "strides"),
        ({"filters": 0}, "filters"),
        ({"groups": 3}, "divisible by groups"),
        ({"data_format": "nhwc"}, "data_format"),
    ],
)
def test_bad_arguments_are_serialization_errors(kwargs, match):
    args = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(SerializationError, match=f"Conv2D.*{match}"):
        jmod.layers.Conv2D(**args)


def test_config_round_trip():
    layer = jmod.layers.Conv2D(
        4,
        (3, 2),
        strides=(2, 1),
        padding="SAME",
        dilation_rate=1,
        activation="silu",
        kernel_initializer=jmod.initializers.HeNormal(seed=3),
        bias_regularizer="l2",
        name="c1",
    )
    clone = config_round_trip(layer)
    config = clone.get_config()
    assert config["kernel_size"] == [3, 2] and config["padding"] == "same"
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(clone(x)))
    assert config_round_trip(jmod.layers.Conv1D(2, 3, padding="causal")).padding == "causal"


def test_default_names_are_keras_style():
    jmod.layers.reset_names()
    assert jmod.layers.Conv2D(2, 3).name == "conv2d"
    assert jmod.layers.Conv1D(2, 3).name == "conv1d"


def test_docstring_examples_run():
    run_docstring_examples(conv)
