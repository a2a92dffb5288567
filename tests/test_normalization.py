import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import normalization
from tests.layer_checks import call_jitted, config_round_trip, dtype_policy, run_docstring_examples

RNG = np.random.default_rng(1)
X = (RNG.normal(size=(8, 3)) * [1.0, 2.0, 5.0] + [0.0, -1.0, 3.0]).astype(np.float32)


def _bn_reference(x, axes, gamma, beta, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)  # biased, as Keras 3
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, mean, var


def _random_affine(layer):
    layer.gamma.assign(RNG.uniform(0.5, 2.0, size=layer.gamma.shape).astype(np.float32))
    layer.beta.assign(RNG.normal(size=layer.beta.shape).astype(np.float32))
    return np.asarray(layer.gamma), np.asarray(layer.beta)


def test_batch_norm_training_uses_batch_statistics():
    bn = jmod.layers.BatchNormalization()
    bn(X)  # build
    gamma, beta = _random_affine(bn)
    ref, _, _ = _bn_reference(X, (0,), gamma, beta, 1e-3)
    np.testing.assert_allclose(np.asarray(bn(X, training=True)), ref, rtol=1e-5, atol=1e-5)


def test_batch_norm_moving_statistics_follow_the_momentum_rule():
    momentum = 0.9
    bn = jmod.layers.BatchNormalization(momentum=momentum)
    moving_mean, moving_var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = X + step
        bn(x, training=True)
        moving_mean = moving_mean * momentum + x.mean(0) * (1 - momentum)
        moving_var = moving_var * momentum + x.var(0) * (1 - momentum)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), moving_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), moving_var, rtol=1e-5)


@pytest.mark.parametrize("training", [None, False])
def test_batch_norm_inference_uses_and_keeps_moving_statistics(training):
    bn = jmod.layers.BatchNormalization(epsilon=0.01)
    bn(X, training=True)
    mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    out = np.asarray(bn(X, training=training))
    np.testing.assert_allclose(out, (X - mean) / np.sqrt(var + 0.01), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), mean)
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), var)


def test_batch_norm_moving_statistics_update_under_jit_as_eagerly():
    eager, jitted = jmod.layers.BatchNormalization(), jmod.layers.BatchNormalization()
    step = jmod.jit(lambda layer, x: layer(x, training=True))
    for i in range(3):
        a, b = eager(X * (i + 1), training=True), step(jitted, X * (i + 1))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            np.asarray(getattr(jitted, name)), np.asarray(getattr(eager, name)), rtol=1e-6
        )
    assert not np.allclose(np.asarray(jitted.moving_mean), 0)


def test_batch_norm_inference_under_jit_freezes_statistics():
    bn = jmod.layers.BatchNormalization()
    bn(X, training=True)
    before = np.asarray(bn.moving_mean)
    call_jitted(bn, X, training=False)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), before)


def _loss(model, x):
    return jnp.sum(model(x, training=True) ** 2)


def test_value_and_grad_keeps_the_statistics_update_and_skips_them_in_grads():
    bn = jmod.layers.BatchNormalization(momentum=0.5)
    bn(X)
    _, grads = jmod.value_and_grad(_loss)(bn, X)
    assert sorted(grads) == ["beta", "gamma"]
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.5 * X.mean(0), rtol=1e-5)


def test_first_step_that_builds_inside_value_and_grad_updates_statistics_once():
    bn = jmod.layers.BatchNormalization(momentum=0.5)
    jmod.value_and_grad(_loss)(bn, X)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.5 * X.mean(0), rtol=1e-5)


def test_jitted_train_step_updates_statistics():
    bn = jmod.layers.BatchNormalization(momentum=0.5)
    bn(X)
    step = jmod.jit(lambda m, x: jmod.value_and_grad(_loss)(m, x))
    step(bn, X)
    step(bn, X)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.75 * X.mean(0), rtol=1e-5)


def test_gradient_of_beta_matches_hand_derivation():
    bn = jmod.layers.BatchNormalization()
    bn(X)
    _, grads = jmod.value_and_grad(lambda m, x: jnp.sum(m(x, training=True) * x))(bn, X)
    # d/d beta of sum(y * x) = sum over the batch of x.
    np.testing.assert_allclose(np.asarray(grads["beta"]), X.sum(0), rtol=1e-4)


def test_frozen_batch_norm_runs_in_inference_mode():
    bn = jmod.layers.BatchNormalization()
    bn(X)
    bn.trainable = False
    out = np.asarray(bn(X, training=True))
    np.testing.assert_allclose(out, X / np.sqrt(1 + 1e-3), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), np.zeros(3))


def test_moving_statistics_stay_non_trainable_after_unfreezing_a_parent():
    class Block(jmod.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bn = jmod.layers.BatchNormalization()

        def call(self, inputs):
            return self.bn(inputs)

    block = Block()
    block(X)
    block.trainable = False
    block.trainable = True
    trainable = sorted(p for p, v in block.named_variables() if v.trainable)
    assert trainable == ["bn/beta", "bn/gamma"]


def test_batch_norm_over_channels_first_axis():
    x = RNG.normal(size=(4, 2, 3, 3)).astype(np.float32)
    bn = jmod.layers.BatchNormalization(axis=1, epsilon=1e-5)
    bn(x)
    gamma, beta = _random_affine(bn)
    ref, mean, _ = _bn_reference(
        x, (0, 2, 3), gamma.reshape(1, 2, 1, 1), beta.reshape(1, 2, 1, 1), 1e-5
    )
    np.testing.assert_allclose(np.asarray(bn(x, training=True)), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.01 * mean.ravel(), rtol=1e-4)


def test_batch_norm_variables():
    bn = jmod.layers.BatchNormalization()
    bn(X)
    assert [(p, v.shape, v.trainable) for p, v in bn.named_variables()] == [
        ("beta", (3,), True),
        ("gamma", (3,), True),
        ("moving_mean", (3,), False),
        ("moving_variance", (3,), False),
    ]


def test_batch_norm_mixed_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        bn = jmod.layers.BatchNormalization(momentum=0.0)
    out = bn(X, training=True)
    assert out.dtype == jnp.bfloat16
    assert all(v.dtype == jnp.float32 for v in bn.variables)
    ref, _, _ = _bn_reference(X, (0,), 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=2e-2, atol=2e-2)
    # The statistics are taken in float32 of the bfloat16 inputs.
    x16 = np.asarray(jnp.asarray(X, jnp.bfloat16), np.float32)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), x16.mean(0), rtol=1e-5)


def test_wrong_feature_size_after_build_names_the_layer():
    bn = jmod.layers.BatchNormalization(name="bn")
    bn(X)
    with pytest.raises(LayerCallError, match="'bn' \\(BatchNormalization\\).*\\(8, 4\\)"):
        bn(jnp.ones((8, 4)))


def test_axis_out_of_range_is_a_layer_call_error():
    with pytest.raises(LayerCallError, match="axis 3 is out of range"):
        jmod.layers.BatchNormalization(axis=3)(X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"momentum": 1.0}, "momentum.*1.0"),
        ({"momentum": -0.1}, "momentum"),
        ({"epsilon": -1e-3}, "epsilon"),
        ({"axis": "x"}, "axis"),
        ({"gamma_initializer": "bogus"}, "gamma_initializer"),
    ],
)
def test_bad_arguments_are_serialization_errors(kwargs, match):
    with pytest.raises(SerializationError, match=f"BatchNormalization.*{match}"):
        jmod.layers.BatchNormalization(**kwargs)


def test_batch_norm_config_round_trip():
    bn = jmod.layers.BatchNormalization(
        axis=[1, 2],
        momentum=0.8,
        epsilon=1e-4,
        center=False,
        gamma_regularizer="l2",
        moving_variance_initializer=jmod.initializers.Constant(2.0),
    )
    clone = config_round_trip(bn)
    assert clone.get_config()["axis"] == [1, 2]
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(bn(x)), np.asarray(clone(x)))
    assert [p for p, _ in clone.named_variables()] == ["gamma", "moving_mean", "moving_variance"]


def _ln_reference(x, axes, gamma, beta, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def test_layer_norm_normalizes_each_example_over_features():
    ln = jmod.layers.LayerNormalization()
    ln(X)
    gamma, beta = _random_affine(ln)
    ref = _ln_reference(X, (1,), gamma, beta, 1e-3)
    np.testing.assert_allclose(np.asarray(ln(X)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(call_jitted(ln, X)), ref, rtol=1e-5, atol=1e-5)


def test_layer_norm_over_several_axes():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    ln = jmod.layers.LayerNormalization(axis=[1, 2], epsilon=1e-6)
    ln(x)
    gamma, beta = _random_affine(ln)
    assert gamma.shape == (3, 4)
    ref = _ln_reference(x, (1, 2), gamma[None], beta[None], 1e-6)
    np.testing.assert_allclose(np.asarray(ln(x)), ref, rtol=1e-4, atol=1e-5)


def test_layer_norm_mixed_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        ln = jmod.layers.LayerNormalization()
    out = ln(X)
    assert out.dtype == jnp.bfloat16 and ln.gamma.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(out, np.float32), _ln_reference(X, (1,), 1.0, 0.0, 1e-3), rtol=2e-2, atol=3e-2
    )


def test_layer_norm_config_round_trip():
    ln = jmod.layers.LayerNormalization(axis=-1, epsilon=1e-5, scale=False, name="ln")
    clone = config_round_trip(ln)
    assert clone.get_config()["epsilon"] == 1e-5 and clone.name == "ln"
    np.testing.assert_array_equal(np.asarray(ln(X)), np.asarray(clone(X)))


def test_compute_output_shape():
    assert jmod.layers.LayerNormalization().compute_output_shape((None, 3)) == (None, 3)
    assert jmod.layers.BatchNormalization().compute_output_shape((None, 3)) == (None, 3)


def test_docstring_examples_run():
    run_docstring_examples(normalization)
