"""Label, value and weight shapes shared by losses and metrics (jmod/_per_sample.py)."""

import jax.numpy as jnp
import numpy as np

import jmod
from jmod._per_sample import broadcast_weights, integer_labels, mean_over_last_axis


def test_mean_over_last_axis_keeps_rank_1_values_one_per_sample():
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(mean_over_last_axis(jnp.asarray(x)), x.mean(axis=-1))
    np.testing.assert_array_equal(mean_over_last_axis(jnp.asarray(x[0])), x[0])


def test_integer_labels_drop_a_size_1_last_axis_only_at_the_scores_rank():
    assert integer_labels(np.array([[2.0], [1.0]]), np.zeros((2, 3))).tolist() == [2, 1]
    assert integer_labels(np.array([2, 1]), np.zeros((2, 3))).tolist() == [2, 1]
    # Per-timestep labels (B, T) against scores (B, T, n) stay as they are.
    labels = integer_labels(np.ones((2, 1)), np.zeros((2, 1, 3)))
    assert labels.shape == (2, 1) and labels.dtype == jnp.int32


def test_broadcast_weights_spread_one_weight_per_sample_like_numpy():
    values = jnp.zeros((2, 3, 4))
    w = np.array([0.5, 2.0], np.float32)
    want = np.broadcast_to(w[:, None, None], (2, 3, 4))
    np.testing.assert_array_equal(broadcast_weights(w, values), want)
    np.testing.assert_array_equal(broadcast_weights(w[:, None, None, None], values), want)
    assert broadcast_weights(1, jnp.zeros(3, jnp.float16)).dtype == jnp.float16


def test_a_loss_and_the_metric_of_the_same_name_weigh_samples_alike():
    y_true = np.array([[0.0, 1.0], [1.0, 1.0]], np.float32)
    y_pred = np.array([[1.0, 1.0], [1.0, 3.0]], np.float32)
    w = np.array([1.0, 3.0], np.float32)
    per_sample = ((y_pred - y_true) ** 2).mean(axis=-1)  # [0.5, 2.0]
    loss = jmod.losses.MeanSquaredError(reduction="mean_with_sample_weight")
    metric = jmod.metrics.MeanSquaredError()
    metric.update_state(y_true, y_pred, sample_weight=w)
    want = (per_sample * w).sum() / w.sum()
    np.testing.assert_allclose(float(loss(y_true, y_pred, w)), want, rtol=1e-6)
    np.testing.assert_allclose(float(metric.result()), want, rtol=1e-6)
