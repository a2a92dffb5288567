import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod import activations
from jmod.errors import SerializationError
from tests.layer_checks import call_jitted, config_round_trip, dtype_policy, run_docstring_examples

X = np.linspace(-4.0, 4.0, 17, dtype=np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.log1p(np.exp(x))


_erf = np.vectorize(math.erf)

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

REFERENCES = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "tanh": np.tanh,
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "exponential": np.exp,
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(),
    "log_softmax": lambda x: x - np.log(np.exp(x).sum()),
    "celu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "glu": lambda x: x[: len(x) // 2] * _sigmoid(x[len(x) // 2 :]),
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
    "sparse_plus": lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
    "squareplus": lambda x: (x + np.sqrt(x**2 + 4)) / 2,
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "threshold": lambda x: np.where(x > 0, x, 0),
    "sparsemax": lambda x: _sparsemax_bisection(x),
}


def _sparsemax_bisection(x):
    """The simplex projection by bisection on tau: sum(max(x - tau, 0)) = 1."""
    lo, hi = x.min() - 1, x.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        lo, hi = (tau, hi) if np.maximum(x - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(x - (lo + hi) / 2, 0)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_numpy_reference(name):
    x = X[:16] if name == "glu" else X  # glu halves its axis
    got = activations.get(name)(jnp.asarray(x))
    np.testing.assert_allclose(
        np.asarray(got), REFERENCES[name](x.astype(np.float64)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", sorted(activations.ALL))
def test_activation_gradient_under_jit_matches_finite_differences(name):
    # Points away from the kinks (0, +-0.5, +-1), where central differences are exact enough.
    x = np.array([-2.3, -0.8, -0.3, 0.2, 0.7, 1.6, 2.9, -1.4], np.float32)
    fn = activations.get(name)
    weights = np.linspace(0.5, 1.5, x.size).astype(np.float32)
    weights = weights[: x.size // 2] if name == "glu" else weights
    loss = lambda v: jnp.sum(fn(v) * weights)
    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x)), np.float64)
    eps = 1e-3
    numeric = [
        (float(loss(x + eps * e)) - float(loss(x - eps * e))) / (2 * eps)
        for e in np.eye(x.size, dtype=np.float32)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-2)
    assert (
        np.asarray(jmod.jit(jax.grad(loss))(jnp.asarray(x))).tolist()
        == grad.astype(np.float32).tolist()
    )


def test_every_builtin_has_a_reference():
    assert set(activations.ALL) <= set(REFERENCES)


def test_gelu_approximate_uses_tanh_formula():
    ref = 0.5 * X * (1 + np.tanh(np.sqrt(2 / np.pi) * (X + 0.044715 * X**3)))
    got = activations.gelu(jnp.asarray(X), approximate=True)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


def test_relu_options_slope_cap_and_threshold():
    got = activations.relu(jnp.asarray(X), negative_slope=0.1, max_value=2.0, threshold=1.0)
    ref = np.minimum(np.where(X >= 1.0, X, 0.1 * (X - 1.0)), 2.0)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)


def test_softmax_normalizes_along_the_given_axis():
    x = jnp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    out = np.asarray(activations.softmax(x, axis=0))
    np.testing.assert_allclose(out.sum(axis=0), np.ones(3), rtol=1e-6)
    ref = np.exp(np.asarray(x)) / np.exp(np.asarray(x)).sum(axis=0)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_get_none_is_linear_and_callables_pass_through():
    assert activations.get(None) is activations.linear
    fn = lambda x: x * 3  # noqa: E731
    assert activations.get(fn) is fn


def test_get_accepts_keras_style_config_dict():
    assert activations.get({"class_name": "relu", "config": {}}) is activations.relu


def test_unknown_name_is_a_serialization_error_listing_the_names():
    with pytest.raises(SerializationError, match="'relux'.*'relu'"):
        activations.get("relux")


def test_non_callable_identifier_is_refused():
    with pytest.raises(SerializationError, match="int"):
        activations.get(3)


@pytest.mark.parametrize("name", sorted([*activations.ALL, "swish", "hard_swish"]))
def test_serialize_then_get_gives_the_same_function(name):
    fn = activations.get(name)
    assert activations.get(activations.serialize(fn)) is fn


def test_serialize_names_jax_nn_functions():
    assert activations.serialize(jax.nn.relu) == "relu"
    assert activations.serialize(jnp.tanh) == "tanh"


def test_jax_nn_gelu_is_not_mistaken_for_exact_gelu():
    # jax.nn.gelu defaults to the tanh approximation; naming it "gelu" would
    # change the math after a config round trip.
    with pytest.raises(SerializationError):
        activations.serialize(jax.nn.gelu)


def test_serializing_an_unregistered_lambda_fails_clearly():
    with pytest.raises(SerializationError, match="register_serializable"):
        activations.serialize(lambda x: x)


def test_registered_function_serializes_by_its_registered_name():
    saving = pytest.importorskip("jmod.saving")

    @saving.register_serializable(package="ActTest")
    def cube(x):
        return x**3

    name = activations.serialize(cube)
    assert name == "ActTest>cube"
    assert activations.get(name) is cube
    layer = jmod.layers.Dense(2, activation=cube)
    assert jmod.layers.Dense.from_config(layer.get_config()).activation is cube


def test_docstring_examples_run():
    run_docstring_examples(activations)


# -- the Activation layer -------------------------------------------------------


def test_activation_layer_applies_the_function():
    layer = jmod.layers.Activation("softplus")
    x = X.reshape(1, -1)
    np.testing.assert_allclose(np.asarray(layer(x)), _softplus(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(call_jitted(layer, x)), _softplus(x), rtol=1e-5, atol=1e-6
    )


def test_activation_layer_mixed_bfloat16_output():
    with dtype_policy("mixed_bfloat16"):
        layer = jmod.layers.Activation("relu")
    assert layer(X.reshape(1, -1)).dtype == jnp.bfloat16


def test_activation_layer_config_round_trip():
    clone = config_round_trip(jmod.layers.Activation(jax.nn.silu, name="act"))
    assert clone.get_config() == {"name": "act", "trainable": True, "activation": "silu"}
    assert clone.activation is activations.silu


def test_activation_layer_unknown_name_names_the_layer():
    with pytest.raises(SerializationError, match="Activation.*'nope'"):
        jmod.layers.Activation("nope")


def test_activation_layer_docstring_examples_run():
    run_docstring_examples(jmod.layers.activation)
