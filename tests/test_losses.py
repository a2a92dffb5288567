"""jmod.losses against NumPy formulas."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmod import losses
from jmod.training import TrainingError

RNG = np.random.default_rng(0)


def run_examples(module):
    """Asserts `module` has docstring examples (pytest's --doctest-modules runs them)."""
    tests = [t for t in doctest.DocTestFinder().find(module, module.__name__) if t.examples]
    assert tests, f"{module.__name__} has no examples"


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_mean_squared_and_absolute_error_per_sample():
    t, p = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    np.testing.assert_allclose(losses.mean_squared_error(t, p), ((p - t) ** 2).mean(-1), rtol=1e-5)
    np.testing.assert_allclose(losses.mean_absolute_error(t, p), np.abs(p - t).mean(-1), rtol=1e-5)


def test_labels_of_shape_b_meet_predictions_b1_elementwise():
    t, p = RNG.normal(size=6), RNG.normal(size=(6, 1))
    values = losses.mean_squared_error(t, p)
    assert values.shape == (6,)  # not (6, 6): no broadcasting across samples
    np.testing.assert_allclose(values, (p[:, 0] - t) ** 2, rtol=1e-5)
    assert float(losses.MeanSquaredError()(t, p)) == pytest.approx(np.mean((p[:, 0] - t) ** 2))


def test_huber_is_quadratic_then_linear():
    t = np.zeros((1, 4))
    p = np.array([[0.5, -1.0, 2.0, -4.0]])
    delta = 1.5
    e = np.abs(p - t)
    ref = np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta)).mean(-1)
    np.testing.assert_allclose(losses.huber(t, p, delta=delta), ref, rtol=1e-6)
    assert float(losses.Huber(delta=delta)(t, p)) == pytest.approx(ref[0])


def test_binary_crossentropy_from_probabilities_and_logits():
    t = RNG.integers(0, 2, size=(6, 2)).astype(np.float64)
    z = RNG.normal(size=(6, 2))
    p = 1 / (1 + np.exp(-z))
    ref = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(losses.binary_crossentropy(t, p), ref, rtol=1e-5)
    np.testing.assert_allclose(losses.binary_crossentropy(t, z, from_logits=True), ref, rtol=1e-5)
    # Probabilities are clipped to [1e-7, 1 - 1e-7]: a confident mistake stays finite.
    assert float(losses.binary_crossentropy(np.ones((1, 1)), np.zeros((1, 1)))[0]) == (
        pytest.approx(-np.log(1e-7), rel=1e-3)
    )


def test_label_smoothing_moves_targets_toward_uniform():
    t = np.array([[0.0, 1.0, 0.0]])
    z = RNG.normal(size=(1, 3))
    smooth = t * 0.8 + 0.2 / 3
    ref = -(smooth * np.log(_softmax(z))).sum(-1)
    out = losses.categorical_crossentropy(t, z, from_logits=True, label_smoothing=0.2)
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    bt = np.array([[1.0]])
    bref = -(0.9 * np.log(0.7) + 0.1 * np.log(0.3))
    assert float(losses.binary_crossentropy(bt, np.array([[0.7]]), label_smoothing=0.2)[0]) == (
        pytest.approx(bref, rel=1e-5)
    )


def test_categorical_and_sparse_crossentropy_agree_with_numpy():
    z = RNG.normal(size=(7, 4))
    labels = RNG.integers(0, 4, size=7)
    onehot = np.eye(4)[labels]
    ref = -np.log(_softmax(z)[np.arange(7), labels])
    np.testing.assert_allclose(
        losses.categorical_crossentropy(onehot, z, from_logits=True), ref, rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.sparse_categorical_crossentropy(labels, z, from_logits=True), ref, rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.sparse_categorical_crossentropy(labels[:, None], _softmax(z)), ref, rtol=1e-5
    )
    # Probabilities are renormalized first, as Keras does.
    np.testing.assert_allclose(
        losses.categorical_crossentropy(onehot, 3.0 * _softmax(z)), ref, rtol=1e-5
    )


def test_reductions_and_sample_weights():
    t, p = np.zeros((4, 1)), np.array([[1.0], [2.0], [3.0], [4.0]])
    w = np.array([1.0, 0.0, 2.0, 0.5])
    sq = np.array([1.0, 4.0, 9.0, 16.0])
    assert float(losses.MeanSquaredError()(t, p, w)) == pytest.approx(np.sum(sq * w) / 4)
    assert float(losses.MeanSquaredError(reduction="sum")(t, p, w)) == pytest.approx(np.sum(sq * w))
    assert float(
        losses.MeanSquaredError(reduction="mean_with_sample_weight")(t, p, w)
    ) == pytest.approx(np.sum(sq * w) / w.sum())
    np.testing.assert_allclose(losses.MeanSquaredError(reduction="none")(t, p, w), sq * w)
    # The count trainers pass for padded batches: divide by real samples only.
    assert float(losses.reduce_values(sq, w, count=2)) == pytest.approx(np.sum(sq * w) / 2)


def test_get_by_name_class_instance_and_function():
    assert isinstance(losses.get("mse"), losses.MeanSquaredError)
    assert isinstance(
        losses.get("SparseCategoricalCrossentropy"), losses.SparseCategoricalCrossentropy
    )
    huber = losses.Huber(delta=2.0)
    assert losses.get(huber) is huber
    assert losses.get(None) is None
    wrapped = losses.get(losses.mean_absolute_error)
    assert wrapped.name == "mean_absolute_error"
    assert float(wrapped(np.zeros((2, 1)), np.ones((2, 1)))) == 1.0
    with pytest.raises(TrainingError, match="unknown loss 'nope'; known names: .*huber"):
        losses.get("nope")
    with pytest.raises(TrainingError, match="got int"):
        losses.get(3)


def test_config_round_trip():
    loss = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    clone = losses.CategoricalCrossentropy.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert clone.fn_kwargs["from_logits"] is True


def test_bad_reduction_is_an_error_naming_the_loss():
    with pytest.raises(TrainingError, match="huber_loss: reduction must be one of"):
        losses.Huber(reduction="mean")


def test_docstring_examples_run():
    run_examples(losses)


# -- labels that do not fit ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, y_true, y_pred",
    [
        (losses.mean_squared_error, (4, 3), (4, 2)),
        (losses.mean_absolute_error, (4, 2), (4, 1)),
        (losses.huber, (4, 3), (4, 2)),
        (losses.binary_crossentropy, (4, 5), (4, 1)),
        (losses.categorical_crossentropy, (4, 3), (4, 5)),
        (losses.categorical_crossentropy, (4,), (4, 5)),
        (losses.sparse_categorical_crossentropy, (4, 2), (4, 5)),
        (losses.sparse_categorical_crossentropy, (3,), (4, 5)),
    ],
)
def test_labels_that_do_not_fit_raise_training_error_naming_loss_and_shapes(fn, y_true, y_pred):
    message = (
        f"loss '{fn.__name__}': labels y of shape {y_true} do not fit the model output of "
        f"shape {y_pred}"
    )
    with pytest.raises(TrainingError) as info:
        fn(jnp.zeros(y_true), jnp.zeros(y_pred))
    assert str(info.value).startswith(message)
    with pytest.raises(TrainingError) as info:  # the same under jit, at trace time
        jax.jit(fn)(jnp.zeros(y_true), jnp.zeros(y_pred))
    assert str(info.value).startswith(message)


def test_check_labels_names_the_loss_object_and_traces_nothing():
    loss = losses.BinaryCrossentropy(name="bce_head")
    t, p = jax.ShapeDtypeStruct((16, 5), "float32"), jax.ShapeDtypeStruct((16, 1), "float32")
    with pytest.raises(TrainingError, match=r"^loss 'bce_head': labels y of shape \(16, 5\)"):
        losses.check_labels(loss, t, p)
    losses.check_labels(loss, p, p)  # fits: no error

    def quartic(y_true, y_pred):  # a custom loss: its own broadcasting error, named
        return jnp.mean((y_pred - y_true) ** 4, axis=-1)

    with pytest.raises(TrainingError, match=r"^loss 'quartic': labels y of shape \(16, 3\) .*"
                       r"\(16, 5\): TypeError"):  # fmt: skip
        losses.check_labels(losses.get(quartic), jnp.zeros((16, 3)), jnp.zeros((16, 5)))


def test_check_label_range_matches_numpy_bounds():
    name = "sparse_categorical_crossentropy"
    losses.check_label_range(np.array([0, 4, 2]), 5, name)
    losses.check_label_range(np.array([0.0, 4.0]), 5, name)  # whole floats are labels too
    for bad in ([0, 5], [-1, 2], [0.5, 1.0]):
        with pytest.raises(TrainingError, match=r"must lie in \[0, 5\)"):
            losses.check_label_range(np.array(bad), 5, name)
    assert losses.sparse_classes(losses.SparseCategoricalCrossentropy(axis=1), (8, 7, 2)) == 7
