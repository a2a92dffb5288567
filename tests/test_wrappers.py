"""TimeDistributed, Bidirectional and EinsumDense: forward against NumPy, gradients under
jax.jit and jmod.jit against finite differences (the harness), configs, archives, fit."""

import numpy as np
import pytest

import jmod
from jmod.errors import SerializationError
from jmod.layers import einsum_dense, wrappers
from tests.layer_checks import check_layer, numpy_initializer, run_docstring_examples
from tests.test_recurrent import MASK, _loop_reference

L = jmod.layers
RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 5, 4)).astype(np.float32)


def test_time_distributed_dense_harness():
    def make():
        return L.TimeDistributed(L.Dense(2, kernel_initializer=numpy_initializer(1)))

    def reference(layer, x):
        return x @ np.asarray(layer.layer.kernel.value) + np.asarray(layer.layer.bias.value)

    layer = check_layer(make, X, reference)
    assert [v.name for v in layer.weights] == ["kernel", "bias"]


def _rnn(cls=L.LSTM, **kw):
    # Nameable initializers: Bidirectional makes its copies from the layer's config.
    return cls(
        3,
        kernel_initializer=jmod.initializers.RandomNormal(stddev=0.5, seed=1),
        recurrent_initializer=jmod.initializers.RandomNormal(stddev=0.5, seed=2),
        **kw,
    )


def _bidirectional_reference(layer, x, mask=None):
    fwd = _loop_reference(layer.forward_layer, x, mask)
    bwd = _loop_reference(layer.backward_layer, x, mask)
    if layer.return_state:
        fwd, *fs = fwd
        bwd, *bs = bwd
    if layer.return_sequences:
        bwd = bwd[:, ::-1]
    merged = {
        "concat": lambda: np.concatenate([fwd, bwd], -1),
        "sum": lambda: fwd + bwd,
        "mul": lambda: fwd * bwd,
        "ave": lambda: (fwd + bwd) / 2,
        None: lambda: [fwd, bwd],
    }[layer.merge_mode]()
    if layer.return_state:
        return (*(merged if isinstance(merged, list) else [merged]), *fs, *bs)
    return merged


@pytest.mark.parametrize(
    "kwargs, mode",
    [({}, "concat"), ({"return_sequences": True}, "sum"), ({"return_state": True}, "ave")],
    ids=str,
)
def test_bidirectional_harness(kwargs, mode):
    first = mode == "concat"
    layer = check_layer(
        lambda: L.Bidirectional(_rnn(**kwargs), merge_mode=mode),
        X,
        _bidirectional_reference,
        archive=first,
        fit=first,
        bfloat16=first,
    )
    names = [v.name for v in layer.weights]
    assert names == ["kernel", "recurrent_kernel", "bias"] * 2
    assert layer.forward_layer.name.startswith("forward_")
    assert layer.backward_layer.go_backwards


def test_bidirectional_with_mask_and_gru():
    layer = L.Bidirectional(_rnn(L.GRU, return_sequences=True), merge_mode="mul")
    out = layer(X, mask=MASK)
    np.testing.assert_allclose(
        np.asarray(out), _bidirectional_reference(layer, X, MASK), rtol=1e-5, atol=1e-5
    )


EINSUM = [
    ("ab,bc->ac", (3,), "c", (3, 4)),
    ("abc,cde->abde", (None, 2, 3), "de", (3, 5, 4)),
    ("...b,bc->...c", (3,), None, (3, 5, 4)),
    ("abc,cd->abd", (5, 2), "d", (3, 5, 4)),
]


@pytest.mark.parametrize("equation, out, bias, shape", EINSUM, ids=[e[0] for e in EINSUM])
def test_einsum_dense_harness(equation, out, bias, shape):
    x = RNG.normal(size=shape).astype(np.float32)

    def make():
        return L.EinsumDense(
            equation,
            out,
            bias_axes=bias,
            kernel_initializer=numpy_initializer(3),
            bias_initializer=numpy_initializer(4),
        )

    def reference(layer, x):
        y = np.einsum(equation, x, np.asarray(layer.kernel.value, np.float64))
        return y + (np.asarray(layer.bias.value) if bias else 0)

    first = equation == EINSUM[0][0]
    layer = check_layer(make, x, reference, archive=first, fit=first, bfloat16=first)
    assert layer.compute_output_shape(shape) == layer(x).shape


def test_einsum_dense_shapes_as_keras():
    layer = L.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de")
    layer(X)
    assert layer.kernel.shape == (4, 2, 3) and layer.bias.shape == (2, 3)
    with pytest.raises(jmod.errors.LayerCallError, match="not of the form"):
        L.EinsumDense("a b", 3)(X)


def test_bad_arguments():
    with pytest.raises(SerializationError, match="recurrent layer"):
        L.Bidirectional(L.Dense(2))
    with pytest.raises(SerializationError, match="merge_mode"):
        L.Bidirectional(L.LSTM(2), merge_mode="max")
    with pytest.raises(SerializationError, match="must be a jmod layer"):
        L.TimeDistributed("dense")


@pytest.mark.parametrize("module", [wrappers, einsum_dense])
def test_docstring_examples_run(module):
    run_docstring_examples(module)
