import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import dense
from tests.layer_checks import call_jitted, config_round_trip, dtype_policy, run_docstring_examples

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def test_output_is_activation_of_inputs_times_kernel_plus_bias():
    layer = jmod.layers.Dense(4, activation="relu", bias_initializer="random_normal")
    x = _x(5, 3)
    out = np.asarray(layer(x))
    w, b = np.asarray(layer.kernel), np.asarray(layer.bias)
    np.testing.assert_allclose(out, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-6)


def test_rank_3_inputs_multiply_along_the_last_axis():
    layer = jmod.layers.Dense(2)
    x = _x(2, 5, 3)
    out = np.asarray(layer(x))
    ref = np.einsum("bti,io->bto", x, np.asarray(layer.kernel)) + np.asarray(layer.bias)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_build_makes_kernel_and_bias_from_the_first_input():
    layer = jmod.layers.Dense(4, name="d")
    assert not layer.built and layer.variables == ()
    layer(jnp.ones((2, 3)))
    assert layer.built
    assert [(p, v.shape) for p, v in layer.named_variables()] == [
        ("bias", (4,)),
        ("kernel", (3, 4)),
    ]
    assert layer.count_params() == 16


def test_use_bias_false_has_only_a_kernel():
    layer = jmod.layers.Dense(2, use_bias=False)
    x = _x(3, 4)
    np.testing.assert_allclose(np.asarray(layer(x)), x @ np.asarray(layer.kernel), rtol=1e-5)
    assert [p for p, _ in layer.named_variables()] == ["kernel"]


def test_incompatible_input_names_layer_class_and_shapes():
    layer = jmod.layers.Dense(3, name="my_dense")
    layer(jnp.ones((1, 3)))
    with pytest.raises(LayerCallError) as info:
        layer(jnp.ones((1, 4)))
    message = str(info.value)
    assert "'my_dense' (Dense)" in message
    assert "last dimension 3" in message and "(1, 4)" in message
    assert "inputs=Array(shape=(1, 4), dtype=float32)" in message


def test_rank_1_input_is_refused_before_building():
    layer = jmod.layers.Dense(3)
    with pytest.raises(LayerCallError, match="rank >= 2"):
        layer(jnp.ones((3,)))
    assert not layer.built
    assert layer(jnp.ones((2, 5))).shape == (2, 3)


@pytest.mark.parametrize("units", [0, -1, 2.5, True, "3"])
def test_bad_units_is_a_serialization_error_naming_the_value(units):
    with pytest.raises(SerializationError, match=f"Dense.*units.*{units!r}"):
        jmod.layers.Dense(units)


def test_unknown_activation_or_initializer_names_the_layer():
    with pytest.raises(SerializationError, match="Dense.*'relux'"):
        jmod.layers.Dense(2, activation="relux")
    with pytest.raises(SerializationError, match="Dense.*kernel_initializer.*'nope'"):
        jmod.layers.Dense(2, kernel_initializer="nope")


def test_jit_gives_the_eager_numbers():
    layer = jmod.layers.Dense(3, activation="tanh")
    x = _x(4, 2)
    eager = np.asarray(layer(x))
    np.testing.assert_allclose(np.asarray(call_jitted(layer, x)), eager, rtol=1e-6)


def test_first_call_under_jit_builds_the_layer():
    layer = jmod.layers.Dense(3)
    out = call_jitted(layer, _x(4, 2))
    assert layer.built and layer.kernel.shape == (2, 3)
    assert not isinstance(layer.kernel.value, jax.core.Tracer)
    x = _x(1, 2)
    np.testing.assert_allclose(
        np.asarray(layer(x)), x @ np.asarray(layer.kernel) + np.asarray(layer.bias), rtol=1e-5
    )
    assert out.shape == (4, 3)


def test_mixed_bfloat16_keeps_float32_variables_and_computes_in_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        layer = jmod.layers.Dense(3)
    x = _x(4, 5)
    out = layer(x)
    assert layer.kernel.dtype == jnp.float32 and layer.bias.dtype == jnp.float32
    assert out.dtype == jnp.bfloat16
    ref = x @ np.asarray(layer.kernel) + np.asarray(layer.bias)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=5e-2, atol=5e-2)
    assert call_jitted(layer, x).dtype == jnp.bfloat16


def test_gradients_match_the_hand_derivation():
    layer = jmod.layers.Dense(2)
    x = _x(3, 4)
    layer(x)
    loss, grads = jmod.value_and_grad(lambda m, x: jnp.sum(m(x) ** 2))(layer, x)
    y = x @ np.asarray(layer.kernel) + np.asarray(layer.bias)
    np.testing.assert_allclose(np.asarray(grads["kernel"]), x.T @ (2 * y), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grads["bias"]), (2 * y).sum(0), rtol=1e-4, atol=1e-5)


def test_kernel_regularizer_adds_its_penalty_to_losses():
    layer = jmod.layers.Dense(
        2, kernel_regularizer=jmod.regularizers.L2(0.1), bias_regularizer="l1"
    )
    layer(jnp.ones((1, 3)))
    kernel = np.asarray(layer.kernel)
    assert len(layer.losses) == 2
    np.testing.assert_allclose(float(layer.losses[0]), 0.1 * (kernel**2).sum(), rtol=1e-5)
    assert float(layer.losses[1]) == 0.0  # zero bias


def test_compute_output_shape_keeps_unknown_batch():
    assert jmod.layers.Dense(7).compute_output_shape((None, 5, 3)) == (None, 5, 7)


def test_config_round_trip_rebuilds_identical_layer():
    layer = jmod.layers.Dense(
        3,
        activation="gelu",
        use_bias=False,
        kernel_initializer=jmod.initializers.GlorotNormal(seed=7),
        kernel_regularizer=jmod.regularizers.L1L2(l1=0.01, l2=0.02),
        name="proj",
    )
    clone = config_round_trip(layer)
    config = clone.get_config()
    assert config["activation"] == "gelu"
    assert config["kernel_initializer"] == {"class_name": "GlorotNormal", "config": {"seed": 7}}
    assert config["kernel_regularizer"]["config"] == {"l1": 0.01, "l2": 0.02}
    x = _x(2, 4)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(clone(x)))


def test_config_names_jax_nn_activations():
    assert jmod.layers.Dense(2, activation=jax.nn.relu).get_config()["activation"] == "relu"


def test_config_of_unnamed_callable_activation_is_a_clear_error():
    layer = jmod.layers.Dense(2, activation=lambda x: x * 2)
    with pytest.raises(SerializationError, match="Dense 'dense.*cannot serialize activation"):
        layer.get_config()


def test_dtype_is_in_config_only_when_given():
    assert "dtype" not in jmod.layers.Dense(2).get_config()
    layer = jmod.layers.Dense(2, dtype="mixed_bfloat16")
    assert config_round_trip(layer).dtype_policy.name == "mixed_bfloat16"


def test_freezing_removes_the_weights_from_trainable_variables():
    layer = jmod.layers.Dense(2)
    layer(jnp.ones((1, 2)))
    layer.trainable = False
    assert layer.trainable_variables == () and len(layer.non_trainable_variables) == 2
    assert config_round_trip(layer).trainable is False


def test_docstring_examples_run():
    run_docstring_examples(dense)
