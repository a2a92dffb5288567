"""Transposed, depthwise and separable convolutions against NumPy scatter/gather loops;
gradients under jax.jit and jmod.jit, configs, archives, bfloat16 and fit via the harness."""

import math

import numpy as np
import pytest

import jmod
from jmod.errors import SerializationError
from jmod.layers import conv_transpose
from jmod.layers.conv_transpose import transpose_length, transpose_padding
from tests.layer_checks import check_layer, numpy_initializer, run_docstring_examples

RNG = np.random.default_rng(0)
X2 = RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)
X1 = RNG.normal(size=(2, 6, 3)).astype(np.float32)


def _transpose_reference(x, kernel, bias, strides, dilation, padding, output_padding):
    """Scatter-add of every input pixel times the kernel, then Keras' crop/pad per axis."""
    x = np.asarray(x, np.float64)
    k = np.asarray(kernel, np.float64)  # (kh, kw, filters, in)
    n, h, w, _ = x.shape
    kh, kw, f, _ = k.shape
    (sh, sw), (dh, dw) = strides, dilation
    full = np.zeros((n, (h - 1) * sh + (kh - 1) * dh + 1, (w - 1) * sw + (kw - 1) * dw + 1, f))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    full[:, i * sh + a * dh, j * sw + b * dw] += x[:, i, j] @ k[a, b].T
    sizes = [(h, kh, sh, dh, 0), (w, kw, sw, dw, 1)]
    out = full
    for size, kk, s, d, axis in sizes:
        op = None if output_padding is None else output_padding[axis]
        lo, _ = transpose_padding(kk, s, d, padding, op)
        length = transpose_length(size, kk, s, d, padding, op)
        start = (kk - 1) * d - lo
        idx = np.arange(length) + start
        valid = (idx >= 0) & (idx < out.shape[axis + 1])
        taken = np.take(out, np.clip(idx, 0, out.shape[axis + 1] - 1), axis=axis + 1)
        shape = [1, 1, 1, 1]
        shape[axis + 1] = length
        out = taken * valid.reshape(shape)
    return out + (0 if bias is None else np.asarray(bias))


def _grouped_reference(x, kernel, strides, dilation, padding):
    """Depthwise convolution by explicit taps: kernel (kh, kw, in, mult)."""
    x = np.asarray(x, np.float64)
    kh, kw, cin, dm = kernel.shape
    n, h, w, _ = x.shape
    (sh, sw), (dh, dw) = strides, dilation
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = math.ceil(h / sh), math.ceil(w / sw)
        ph, pw = max((oh - 1) * sh + eh - h, 0), max((ow - 1) * sw + ew - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    out = np.zeros((n, oh, ow, cin, dm))
    for a in range(kh):
        for b in range(kw):
            patch = x[
                :,
                a * dh : a * dh + (oh - 1) * sh + 1 : sh,
                b * dw : b * dw + (ow - 1) * sw + 1 : sw,
            ]
            out += patch[..., None] * np.asarray(kernel, np.float64)[a, b]
    return out.reshape(n, oh, ow, cin * dm)


def _bias(layer):
    return np.asarray(layer.bias.value) if layer.use_bias else None


TRANSPOSE_2D = [
    dict(kernel_size=3),
    dict(kernel_size=3, strides=2, padding="same"),
    dict(kernel_size=(2, 3), strides=(2, 1), output_padding=(1, 0)),
    dict(kernel_size=3, strides=2, padding="same", dilation_rate=1, output_padding=1),
    dict(kernel_size=2, dilation_rate=2),
]


@pytest.mark.parametrize("kwargs", TRANSPOSE_2D, ids=str)
def test_conv2d_transpose_harness(kwargs):
    def make():
        return jmod.layers.Conv2DTranspose(
            2,
            kernel_initializer=numpy_initializer(1),
            bias_initializer=numpy_initializer(2),
            **kwargs,
        )

    def reference(layer, x):
        return _transpose_reference(
            x,
            layer.kernel.value,
            _bias(layer),
            layer.strides,
            layer.dilation_rate,
            layer.padding,
            layer.output_padding,
        )

    first = kwargs == TRANSPOSE_2D[0]
    layer = check_layer(make, X2, reference, archive=first, fit=first, bfloat16=first)
    assert layer.compute_output_shape((None, 5, 4, 3)) == (None, *layer(X2).shape[1:])


@pytest.mark.parametrize("padding, strides", [("valid", 1), ("same", 2), ("valid", 3)])
def test_conv1d_transpose_harness(padding, strides):
    def make():
        return jmod.layers.Conv1DTranspose(
            2, 3, strides=strides, padding=padding, kernel_initializer=numpy_initializer(3)
        )

    def reference(layer, x):
        k = np.asarray(layer.kernel.value)[None]
        out = _transpose_reference(x[:, None], k, _bias(layer), (1, strides), (1, 1), padding, None)
        return out[:, 0]

    first = padding == "valid" and strides == 1
    check_layer(make, X1, reference, archive=first, fit=first, bfloat16=first)


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=3), dict(kernel_size=(2, 3), strides=2, padding="same", depth_multiplier=2)],
    ids=str,
)
def test_depthwise_conv2d_harness(kwargs):
    def make():
        return jmod.layers.DepthwiseConv2D(
            depthwise_initializer=numpy_initializer(4),
            bias_initializer=numpy_initializer(5),
            **kwargs,
        )

    def reference(layer, x):
        out = _grouped_reference(
            x, np.asarray(layer.kernel.value), layer.strides, layer.dilation_rate, layer.padding
        )
        return out + _bias(layer)

    first = "depth_multiplier" not in kwargs
    layer = check_layer(make, X2, reference, archive=first, fit=first, bfloat16=first)
    assert [v.name for v in layer.weights] == ["kernel", "bias"]


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(strides=2, padding="same", depth_multiplier=2)], ids=str
)
def test_separable_conv2d_harness(kwargs):
    def make():
        return jmod.layers.SeparableConv2D(
            4,
            3,
            depthwise_initializer=numpy_initializer(6),
            pointwise_initializer=numpy_initializer(7),
            bias_initializer=numpy_initializer(8),
            **kwargs,
        )

    def reference(layer, x):
        dw = _grouped_reference(
            x, np.asarray(layer.depthwise_kernel.value), layer.strides, (1, 1), layer.padding
        )
        return dw @ np.asarray(layer.pointwise_kernel.value, np.float64)[0, 0] + _bias(layer)

    first = not kwargs
    layer = check_layer(make, X2, reference, archive=first, fit=first, bfloat16=first)
    assert [v.name for v in layer.weights] == ["depthwise_kernel", "pointwise_kernel", "bias"]


def test_channels_first_transpose_equals_channels_last():
    last = jmod.layers.Conv2DTranspose(2, 3, strides=2, kernel_initializer=numpy_initializer(1))
    first = jmod.layers.Conv2DTranspose(2, 3, strides=2, data_format="channels_first")
    out = last(X2)
    first(np.transpose(X2, (0, 3, 1, 2)))
    first.set_weights(last.get_weights())
    got = first(np.transpose(X2, (0, 3, 1, 2)))
    np.testing.assert_allclose(
        np.transpose(np.asarray(got), (0, 2, 3, 1)), out, rtol=1e-5, atol=1e-6
    )


def test_bad_arguments():
    with pytest.raises(SerializationError, match="Conv2DTranspose.*output_padding"):
        jmod.layers.Conv2DTranspose(2, 3, output_padding=-1)
    with pytest.raises(SerializationError, match="depth_multiplier"):
        jmod.layers.DepthwiseConv2D(3, depth_multiplier=0)


def test_docstring_examples_run():
    run_docstring_examples(conv_transpose)
