"""jmod.metrics against NumPy: accumulation over batches, weights, reset, jit."""

import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod import metrics
from jmod.training import TrainingError
from tests.test_losses import run_examples

RNG = np.random.default_rng(0)


def _batches(*arrays, size=5):
    n = len(arrays[0])
    for start in range(0, n, size):
        yield tuple(a[start : start + size] for a in arrays)


def test_mean_accumulates_weighted_values_across_batches():
    values = RNG.normal(size=12)
    weights = RNG.uniform(size=12)
    m = metrics.Mean()
    for v, w in _batches(values, weights):
        m.update_state(v, sample_weight=w)
    assert float(m.result()) == pytest.approx(np.sum(values * weights) / weights.sum(), rel=1e-5)


def test_mean_of_multi_axis_values_averages_each_sample_first():
    values = RNG.normal(size=(4, 3))
    weights = np.array([1.0, 0.0, 2.0, 1.0])
    m = metrics.Mean()
    m.update_state(values, sample_weight=weights)
    per_sample = values.mean(axis=1)
    assert float(m.result()) == pytest.approx(np.sum(per_sample * weights) / 4.0, rel=1e-5)


def test_reset_state_starts_over_and_an_empty_mean_is_zero():
    m = metrics.Mean()
    m.update_state(jnp.array([4.0]))
    m.reset_state()
    assert float(m.result()) == 0.0
    m.update_state(jnp.array([1.0, 3.0]))
    assert float(m.result()) == 2.0


def test_accuracy_variants_match_numpy():
    scores = RNG.normal(size=(20, 5))
    labels = RNG.integers(0, 5, size=20)
    hits = scores.argmax(-1) == labels
    sparse = metrics.SparseCategoricalAccuracy()
    categorical = metrics.CategoricalAccuracy()
    for s, y in _batches(scores, labels, size=7):
        sparse.update_state(y[:, None], s)
        categorical.update_state(np.eye(5)[y], s)
    assert float(sparse.result()) == pytest.approx(hits.mean())
    assert float(categorical.result()) == pytest.approx(hits.mean())

    probs = RNG.uniform(size=(20, 1))
    truth = RNG.integers(0, 2, size=(20, 1))
    binary = metrics.BinaryAccuracy(threshold=0.3)
    binary.update_state(truth, probs)
    assert float(binary.result()) == pytest.approx(((probs > 0.3) == truth).mean())

    exact = metrics.Accuracy()
    exact.update_state([1, 2, 3, 4], [1, 0, 3, 0])
    assert float(exact.result()) == 0.5


def test_top_k_accuracy_matches_numpy_ranking():
    scores = RNG.normal(size=(30, 6))
    labels = RNG.integers(0, 6, size=30)
    top3 = np.argsort(-scores, axis=-1)[:, :3]
    expected = np.mean([label in row for label, row in zip(labels, top3)])
    sparse = metrics.SparseTopKCategoricalAccuracy(k=3)
    sparse.update_state(labels, scores)
    dense = metrics.TopKCategoricalAccuracy(k=3)
    dense.update_state(np.eye(6)[labels], scores)
    assert float(sparse.result()) == pytest.approx(expected)
    assert float(dense.result()) == pytest.approx(expected)


def test_regression_metrics():
    t, p = RNG.normal(size=(9, 2)), RNG.normal(size=(9, 2))
    mse, rmse, mae = (
        metrics.MeanSquaredError(),
        metrics.RootMeanSquaredError(),
        metrics.MeanAbsoluteError(),
    )
    for tb, pb in _batches(t, p, size=4):
        for m in (mse, rmse, mae):
            m.update_state(tb, pb)
    assert float(mse.result()) == pytest.approx(np.mean((t - p) ** 2), rel=1e-5)
    assert float(rmse.result()) == pytest.approx(np.sqrt(np.mean((t - p) ** 2)), rel=1e-5)
    assert float(mae.result()) == pytest.approx(np.mean(np.abs(t - p)), rel=1e-5)


def test_crossentropy_metrics_average_the_loss():
    z = RNG.normal(size=(6, 3))
    labels = RNG.integers(0, 3, size=6)
    m = metrics.SparseCategoricalCrossentropy(from_logits=True)
    m.update_state(labels, z)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert float(m.result()) == pytest.approx(-logp[np.arange(6), labels].mean(), rel=1e-5)


def test_precision_and_recall_with_weights_and_several_thresholds():
    truth = RNG.integers(0, 2, size=40)
    probs = RNG.uniform(size=40)
    weights = RNG.uniform(size=40)
    thresholds = [0.2, 0.5, 0.8]
    p = metrics.Precision(thresholds=thresholds)
    r = metrics.Recall(thresholds=thresholds)
    for t, s, w in _batches(truth, probs, weights, size=16):
        p.update_state(t, s, sample_weight=w)
        r.update_state(t, s, sample_weight=w)
    for i, th in enumerate(thresholds):
        predicted = probs > th
        tp = np.sum(weights * (predicted & (truth == 1)))
        fp = np.sum(weights * (predicted & (truth == 0)))
        fn = np.sum(weights * (~predicted & (truth == 1)))
        assert float(p.result()[i]) == pytest.approx(tp / (tp + fp), rel=1e-5)
        assert float(r.result()[i]) == pytest.approx(tp / (tp + fn), rel=1e-5)


def test_precision_of_one_class_and_with_no_positive_predictions():
    onehot = np.eye(3)[[0, 1, 2, 1]]
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    p = metrics.Precision(class_id=1)
    p.update_state(onehot, scores)
    assert float(p.result()) == pytest.approx(0.5)  # class 1 predicted twice, right once
    empty = metrics.Precision()
    empty.update_state(np.array([1, 1]), np.array([0.1, 0.2]))
    assert float(empty.result()) == 0.0


def _roc_auc_exact(truth, scores):
    # Probability that a random positive outranks a random negative (ties half).
    pos, neg = scores[truth == 1], scores[truth == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def _auc_numpy(truth, scores, num_thresholds, curve):
    inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    th = np.array([-1e-7, *inner, 1 + 1e-7])
    pred = scores[:, None] > th[None, :]
    pos = (truth == 1)[:, None]
    tp, fp = (pred & pos).sum(0), (pred & ~pos).sum(0)
    fn, tn = (~pred & pos).sum(0), (~pred & ~pos).sum(0)
    if curve == "ROC":
        x, y = fp / (fp + tn), tp / (tp + fn)
        return np.sum((x[:-1] - x[1:]) * (y[:-1] + y[1:]) / 2)
    # Davis & Goadrich interpolation between thresholds, in NumPy.
    total = 0.0
    for i in range(num_thresholds - 1):
        p0, p1 = tp[i] + fp[i], tp[i + 1] + fp[i + 1]
        dtp, dp = tp[i] - tp[i + 1], p0 - p1
        if dp <= 0 or tp[i + 1] + fn[i + 1] <= 0:
            continue
        slope = dtp / dp
        intercept = tp[i + 1] - slope * p1
        ratio = p0 / p1 if p0 > 0 and p1 > 0 else 1.0
        total += slope * (dtp + intercept * np.log(ratio)) / (tp[i + 1] + fn[i + 1])
    return total


def test_auc_roc_matches_the_thresholded_formula_and_the_exact_area():
    truth = RNG.integers(0, 2, size=300)
    scores = np.clip(0.5 + 0.25 * (truth - 0.5) + RNG.normal(scale=0.2, size=300), 0, 1)
    m = metrics.AUC(num_thresholds=200)
    for t, s in _batches(truth, scores, size=64):
        m.update_state(t, s)
    value = float(m.result())
    assert value == pytest.approx(_auc_numpy(truth, scores, 200, "ROC"), rel=1e-5)
    assert value == pytest.approx(_roc_auc_exact(truth, scores), abs=5e-3)


def test_auc_pr_uses_the_interpolated_curve():
    truth = RNG.integers(0, 2, size=200)
    scores = np.clip(0.5 + 0.3 * (truth - 0.5) + RNG.normal(scale=0.25, size=200), 0, 1)
    m = metrics.AUC(num_thresholds=50, curve="PR")
    m.update_state(truth, scores)
    assert float(m.result()) == pytest.approx(_auc_numpy(truth, scores, 50, "PR"), rel=1e-4)


def test_auc_rejects_bad_arguments():
    with pytest.raises(TrainingError, match="curve must be 'ROC' or 'PR'"):
        metrics.AUC(curve="roc")


def test_metrics_update_inside_jit_and_keep_their_state():
    m = metrics.SparseCategoricalAccuracy()

    @jmod.jit
    def update(metric, y, p):
        metric.update_state(y, p)
        return metric.result()

    scores = RNG.normal(size=(8, 3)).astype(np.float32)
    labels = RNG.integers(0, 3, size=8).astype(np.int32)
    update(m, labels[:4], scores[:4])
    result = update(m, labels[4:], scores[4:])
    assert float(result) == pytest.approx((scores.argmax(-1) == labels).mean())
    assert update.trace_count == 1
    assert [p for p, _ in m.named_variables()] == ["count", "total"]
    assert all(not v.trainable for v in m.variables)


def test_get_by_name_instance_and_function():
    assert isinstance(metrics.get("auc"), metrics.AUC)
    assert isinstance(metrics.get("mae"), metrics.MeanAbsoluteError)
    acc = metrics.BinaryAccuracy()
    assert metrics.get(acc) is acc
    custom = metrics.get(lambda t, p: jnp.abs(t - p))
    custom.update_state(np.zeros(2), np.array([1.0, 3.0]))
    assert float(custom.result()) == 2.0
    with pytest.raises(TrainingError, match="unknown metric 'accuracyy'"):
        metrics.get("accuracyy")


def test_config_round_trip():
    auc = metrics.AUC(num_thresholds=10, curve="PR", name="pr")
    clone = metrics.AUC.from_config(auc.get_config())
    assert clone.get_config() == auc.get_config()
    p = metrics.Precision(thresholds=[0.3, 0.6], class_id=2)
    assert metrics.Precision.from_config(p.get_config()).get_config() == p.get_config()


def test_docstring_examples_run():
    run_examples(metrics)
