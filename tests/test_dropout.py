import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import dropout
from tests.layer_checks import config_round_trip, dtype_policy, run_docstring_examples

X = np.arange(1, 4001, dtype=np.float32).reshape(40, 100)


def _check_is_dropout_of(y, x, rate):
    """Every output is 0 or the input scaled by 1/(1-rate)."""
    y = np.asarray(y)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    return kept


@pytest.mark.parametrize("training", [None, False])
def test_inputs_pass_unchanged_outside_training(training):
    layer = jmod.layers.Dropout(0.5)
    np.testing.assert_array_equal(np.asarray(layer(X, training=training)), X)


def test_training_zeroes_about_rate_and_scales_the_rest():
    layer = jmod.layers.Dropout(0.3, seed=0)
    kept = _check_is_dropout_of(layer(X, training=True), X, 0.3)
    # 4000 Bernoulli(0.7) draws: 3 standard deviations is about 0.022.
    assert abs(kept.mean() - 0.7) < 0.03


def test_rate_zero_is_the_identity_even_when_training():
    np.testing.assert_array_equal(np.asarray(jmod.layers.Dropout(0.0)(X, training=True)), X)


def test_each_call_draws_a_new_mask():
    layer = jmod.layers.Dropout(0.5, seed=1)
    a, b = layer(X, training=True), layer(X, training=True)
    assert (np.asarray(a) != np.asarray(b)).any()


def test_same_seed_gives_the_same_masks():
    a, b = jmod.layers.Dropout(0.5, seed=3), jmod.layers.Dropout(0.5, seed=3)
    for _ in range(2):
        np.testing.assert_array_equal(
            np.asarray(a(X, training=True)), np.asarray(b(X, training=True))
        )


def test_seeded_layer_owns_a_checkpointable_generator_key():
    layer = jmod.layers.Dropout(0.5, seed=3)
    assert [p for p, _ in layer.named_variables()] == ["generator/key"]
    assert layer.trainable_variables == ()
    assert jmod.layers.Dropout(0.5).variables == ()


def test_unseeded_layer_draws_from_the_global_generator():
    layer = jmod.layers.Dropout(0.5)
    jmod.random.set_seed(11)
    a = np.asarray(layer(X, training=True))
    jmod.random.set_seed(11)
    b = np.asarray(layer(X, training=True))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [None, 5])
def test_under_jit_two_calls_give_different_masks(seed):
    layer = jmod.layers.Dropout(0.5, seed=seed)
    step = jmod.jit(lambda layer, x: layer(x, training=True))
    masks = [np.asarray(step(layer, X)) != 0 for _ in range(3)]
    traces = step.trace_count
    masks.append(np.asarray(step(layer, X)) != 0)
    assert step.trace_count == traces  # no retrace per call
    assert (masks[1] != masks[2]).any() and (masks[2] != masks[3]).any()
    for m in masks:
        _check_is_dropout_of(np.where(m, X / 0.5, 0), X, 0.5)


def test_jit_draws_the_same_masks_as_eager():
    eager, jitted = jmod.layers.Dropout(0.4, seed=9), jmod.layers.Dropout(0.4, seed=9)
    step = jmod.jit(lambda layer, x: layer(x, training=True))
    for _ in range(2):
        np.testing.assert_array_equal(
            np.asarray(eager(X, training=True)), np.asarray(step(jitted, X))
        )


def test_training_flag_given_as_array_under_jit():
    layer = jmod.layers.Dropout(0.5, seed=2)
    step = jmod.jit(lambda layer, x, t: layer(x, training=t))
    np.testing.assert_array_equal(np.asarray(step(layer, X, jnp.asarray(False))), X)
    _check_is_dropout_of(step(layer, X, jnp.asarray(True)), X, 0.5)
    assert (np.asarray(step(layer, X, jnp.asarray(True))) == 0).any()


def test_training_flag_reaches_dropout_inside_an_outer_layer():
    class Block(jmod.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.drop = jmod.layers.Dropout(0.5, seed=0)

        def call(self, inputs):
            return self.drop(inputs)

    block = Block()
    np.testing.assert_array_equal(np.asarray(block(X)), X)
    assert (np.asarray(block(X, training=True)) == 0).any()


def test_noise_shape_shares_the_mask_along_size_1_axes():
    layer = jmod.layers.Dropout(0.5, noise_shape=(None, 1), seed=4)
    kept = _check_is_dropout_of(layer(X, training=True), X, 0.5)
    rows = kept.all(axis=1) | (~kept).all(axis=1)
    assert rows.all() and 0 < kept[:, 0].sum() < X.shape[0]


def test_noise_shape_of_the_wrong_rank_names_the_layer():
    layer = jmod.layers.Dropout(0.5, noise_shape=(None, 1, 1), name="drop")
    with pytest.raises(LayerCallError, match="'drop' \\(Dropout\\).*noise_shape"):
        layer(X, training=True)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5", None])
def test_rate_outside_0_1_is_refused_naming_the_value(rate):
    with pytest.raises(SerializationError, match=f"Dropout.*rate.*{rate!r}"):
        jmod.layers.Dropout(rate)


def test_bad_seed_or_noise_shape_is_refused():
    with pytest.raises(SerializationError, match="seed"):
        jmod.layers.Dropout(0.5, seed=1.5)
    with pytest.raises(SerializationError, match="noise_shape"):
        jmod.layers.Dropout(0.5, noise_shape=(0, 1))


def test_mixed_bfloat16_output():
    with dtype_policy("mixed_bfloat16"):
        layer = jmod.layers.Dropout(0.5, seed=0)
    y = layer(X[:2, :8], training=True)
    assert y.dtype == jnp.bfloat16


def test_config_round_trip():
    layer = jmod.layers.Dropout(0.25, noise_shape=(None, 1), seed=8, name="drop")
    clone = config_round_trip(layer)
    assert clone.get_config() == {
        "name": "drop",
        "trainable": True,
        "rate": 0.25,
        "noise_shape": [None, 1],
        "seed": 8,
    }
    np.testing.assert_array_equal(
        np.asarray(layer(X, training=True)), np.asarray(clone(X, training=True))
    )


def test_compute_output_shape():
    assert jmod.layers.Dropout(0.1).compute_output_shape((None, 4)) == (None, 4)


def test_docstring_examples_run():
    run_docstring_examples(dropout)
