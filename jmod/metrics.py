"""Stateful metrics: modules whose running state is variables.

`update_state(...)` accumulates a batch, `result()` reads the value so far,
`reset_state()` starts over. The state lives in non-trainable variables, so
a metric updates inside a `jmod.jit` train step like any other state and
`fit` resets it at each epoch.

Example:
    >>> acc = jmod.metrics.SparseCategoricalAccuracy()
    >>> acc.update_state(jnp.array([0, 1]), jnp.array([[0.9, 0.1], [0.8, 0.2]]))
    >>> float(acc.result())
    0.5
    >>> acc.reset_state(); float(acc.result())
    0.0
"""

import jax
import jax.numpy as jnp
import numpy as np

from jmod import _per_sample, losses
from jmod.module import Module
from jmod.training._errors import TrainingError
from jmod.training._lookup import lookup
from jmod.variables import Variable


def _divide_no_nan(a, b):
    safe = jnp.where(b == 0, 1.0, b)
    return jnp.where(b == 0, 0.0, a / safe)


class Metric(Module):
    """Base class of metrics: state in variables, `update_state` / `result` / `reset_state`.

    Subclasses create their state with `add_variable` in `__init__` and
    implement `update_state` and `result` with jnp operations (they run
    inside compiled train steps).

    Example:
        >>> class Count(jmod.metrics.Metric):
        ...     def __init__(self, name="count"):
        ...         super().__init__(name=name)
        ...         self.n = self.add_variable("n")
        ...     def update_state(self, values, sample_weight=None):
        ...         self.n.assign_add(jnp.asarray(jnp.size(values), jnp.float32))
        ...     def result(self):
        ...         return self.n.value
        >>> c = Count(); c.update_state(jnp.zeros(3)); float(c.result())
        3.0

    Args:
        name: the name used in logs.
        dtype: the dtype of the state (float32).
    """

    # Whether a larger value is better: EarlyStopping/ModelCheckpoint mode="auto" ask.
    direction = "up"

    def __init__(self, name=None, dtype=None):
        super().__init__(name=name)
        self.dtype = jnp.dtype(dtype or jnp.float32)
        self.__dict__["_jmod_initial"] = []

    def add_variable(self, name, shape=(), initializer=0.0, dtype=None):
        """Creates a non-trainable state variable, attribute `name`, filled with `initializer`."""
        dtype = jnp.dtype(dtype or self.dtype)
        initial = np.full(tuple(shape), initializer, dtype=dtype)
        # A copy: on CPU the variable's buffer may alias the NumPy array, and
        # train steps donate (overwrite) variable buffers.
        var = Variable(initial.copy(), trainable=False, name=name, dtype=dtype)
        self.__dict__["_jmod_initial"].append((var, initial))
        setattr(self, name, var)
        return var

    def update_state(self, *args, **kwargs):
        """Accumulates one batch. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement update_state()")

    def result(self):
        """The metric's value so far. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement result()")

    def reset_state(self):
        """Puts every state variable back to its initial value."""
        for var, initial in self.__dict__["_jmod_initial"]:
            var.assign(initial)

    def __call__(self, *args, **kwargs):
        """Updates with one batch and returns the result so far."""
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self):
        """The constructor arguments that rebuild this metric."""
        return {"name": self.name, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _one_per_sample(values, sample_weight):
    """(values reduced to one per sample, weights broadcast to them)."""
    values = jnp.asarray(values, jnp.float32)
    if values.ndim > 1:
        keep = 1 if sample_weight is None else max(1, jnp.ndim(sample_weight))
        keep = min(keep, values.ndim)
        if values.ndim > keep:
            values = jnp.mean(values, axis=tuple(range(keep, values.ndim)))
    if sample_weight is None:
        return values, None
    return values, _per_sample.broadcast_weights(sample_weight, values)


class Sum(Metric):
    """The weighted sum of the values seen.

    Example:
        >>> s = jmod.metrics.Sum(); s.update_state(jnp.array([1.0, 2.0])); float(s.result())
        3.0
    """

    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable("total")

    def update_state(self, values, sample_weight=None):
        values, weights = _one_per_sample(values, sample_weight)
        if weights is not None:
            values = values * weights
        self.total.assign_add(jnp.sum(values).astype(self.dtype))

    def result(self):
        return self.total.value


class Mean(Metric):
    """The weighted mean of the values seen: `sum(values * w) / sum(w)`.

    Values with more than one axis are first averaged per sample (axis 0).

    Example:
        >>> m = jmod.metrics.Mean()
        >>> m.update_state(jnp.array([1.0, 3.0])); m.update_state(5.0, sample_weight=2.0)
        >>> float(m.result())    # (1 + 3 + 2 * 5) / 4
        3.5
    """

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable("total")
        self.count = self.add_variable("count")

    def update_state(self, values, sample_weight=None):
        values, weights = _one_per_sample(values, sample_weight)
        if weights is None:
            total, count = jnp.sum(values), jnp.asarray(values.size, jnp.float32)
        else:
            total, count = jnp.sum(values * weights), jnp.sum(weights)
        self.total.assign_add(total.astype(self.dtype))
        self.count.assign_add(count.astype(self.dtype))

    def result(self):
        return _divide_no_nan(self.total.value, self.count.value)


class MeanMetricWrapper(Mean):
    """The mean of `fn(y_true, y_pred, **kwargs)` over all samples seen.

    Example:
        >>> m = jmod.metrics.MeanMetricWrapper(jmod.losses.mean_absolute_error, name="mae")
        >>> m.update_state(jnp.zeros((2, 1)), jnp.ones((2, 1))); float(m.result())
        1.0
    """

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "mean"), dtype=dtype)
        self.fn = fn
        self.fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(self.fn(y_true, y_pred, **self.fn_kwargs), sample_weight)

    def get_config(self):
        return {**super().get_config(), **self.fn_kwargs}


# -- accuracy functions ---------------------------------------------------------------


def accuracy(y_true, y_pred):
    """1.0 where `y_pred == y_true` exactly, else 0.0 (for integer predictions)."""
    y_true, y_pred = losses.match_rank(jnp.asarray(y_true), jnp.asarray(y_pred))
    return (y_true == y_pred.astype(y_true.dtype)).astype(jnp.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1.0 where `(y_pred > threshold) == y_true`, averaged over the last axis."""
    y_true, y_pred = losses.match_rank(jnp.asarray(y_true), jnp.asarray(y_pred))
    hits = (y_pred > threshold) == (y_true > 0.5)
    return _per_sample.mean_over_last_axis(hits.astype(jnp.float32))


def categorical_accuracy(y_true, y_pred):
    """1.0 where the arg-max of `y_pred` is the arg-max of one-hot `y_true`."""
    return (jnp.argmax(y_true, -1) == jnp.argmax(y_pred, -1)).astype(jnp.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where the arg-max of `y_pred` is the integer label `y_true`."""
    labels = _per_sample.integer_labels(y_true, y_pred)
    return (jnp.argmax(y_pred, -1) == labels).astype(jnp.float32)


def _in_top_k(scores, labels, k):
    # A label is in the top k when fewer than k classes score strictly higher.
    target = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    higher = jnp.sum(scores > target, axis=-1)
    return (higher < k).astype(jnp.float32)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the one-hot label's class is among the `k` highest scores."""
    return _in_top_k(jnp.asarray(y_pred), jnp.argmax(y_true, -1), k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the integer label is among the `k` highest scores."""
    return _in_top_k(jnp.asarray(y_pred), _per_sample.integer_labels(y_true, y_pred), k)


# -- mean metrics ---------------------------------------------------------------------


class Accuracy(MeanMetricWrapper):
    """How often predictions equal labels exactly.

    Example:
        >>> m = jmod.metrics.Accuracy(); m.update_state([1, 2, 3], [1, 2, 0])
        >>> round(float(m.result()), 4)
        0.6667
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    """How often `y_pred > threshold` matches 0/1 labels.

    Example:
        >>> m = jmod.metrics.BinaryAccuracy()
        >>> m.update_state(jnp.array([[1.0], [0.0]]), jnp.array([[0.7], [0.6]]))
        >>> float(m.result())
        0.5
    """

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=float(threshold))


class CategoricalAccuracy(MeanMetricWrapper):
    """How often the predicted class (arg-max) matches a one-hot label.

    Example:
        >>> m = jmod.metrics.CategoricalAccuracy()
        >>> m.update_state(jnp.array([[0, 1], [1, 0]]), jnp.array([[0.2, 0.8], [0.3, 0.7]]))
        >>> float(m.result())
        0.5
    """

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often the predicted class (arg-max) matches an integer label.

    Example:
        >>> m = jmod.metrics.SparseCategoricalAccuracy()
        >>> m.update_state(jnp.array([1, 0]), jnp.array([[0.2, 0.8], [0.3, 0.7]]))
        >>> float(m.result())
        0.5
    """

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often a one-hot label's class is among the `k` highest scores.

    Example:
        >>> m = jmod.metrics.TopKCategoricalAccuracy(k=2)
        >>> m.update_state(jnp.array([[0, 0, 1]]), jnp.array([[0.5, 0.2, 0.3]]))
        >>> float(m.result())
        1.0
    """

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=int(k))


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often an integer label is among the `k` highest scores.

    Example:
        >>> m = jmod.metrics.SparseTopKCategoricalAccuracy(k=1)
        >>> m.update_state(jnp.array([2]), jnp.array([[0.5, 0.2, 0.3]]))
        >>> float(m.result())
        0.0
    """

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=int(k))


class MeanSquaredError(MeanMetricWrapper):
    """The mean squared error over all samples seen.

    Example:
        >>> m = jmod.metrics.MeanSquaredError()
        >>> m.update_state(jnp.zeros((2, 1)), jnp.array([[1.0], [3.0]])); float(m.result())
        5.0
    """

    direction = "down"

    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(losses.mean_squared_error, name=name, dtype=dtype)


class MeanAbsoluteError(MeanMetricWrapper):
    """The mean absolute error over all samples seen.

    Example:
        >>> m = jmod.metrics.MeanAbsoluteError()
        >>> m.update_state(jnp.zeros((2, 1)), jnp.array([[1.0], [-3.0]])); float(m.result())
        2.0
    """

    direction = "down"

    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(losses.mean_absolute_error, name=name, dtype=dtype)


class RootMeanSquaredError(MeanSquaredError):
    """The square root of the mean squared error over all samples seen.

    Example:
        >>> m = jmod.metrics.RootMeanSquaredError()
        >>> m.update_state(jnp.zeros((2, 1)), jnp.array([[3.0], [-3.0]])); float(m.result())
        3.0
    """

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def result(self):
        return jnp.sqrt(super().result())


class BinaryCrossentropy(MeanMetricWrapper):
    """The mean binary crossentropy over all samples seen.

    Example:
        >>> m = jmod.metrics.BinaryCrossentropy(from_logits=True)
        >>> m.update_state(jnp.array([[1.0]]), jnp.array([[0.0]])); round(float(m.result()), 4)
        0.6931
    """

    direction = "down"

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False):
        super().__init__(
            losses.binary_crossentropy, name=name, dtype=dtype, from_logits=bool(from_logits)
        )


class CategoricalCrossentropy(MeanMetricWrapper):
    """The mean categorical crossentropy over all samples seen.

    Example:
        >>> m = jmod.metrics.CategoricalCrossentropy(from_logits=True)
        >>> m.update_state(jnp.array([[0, 1]]), jnp.array([[0.0, 0.0]]))
        >>> round(float(m.result()), 4)
        0.6931
    """

    direction = "down"

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False):
        super().__init__(
            losses.categorical_crossentropy, name=name, dtype=dtype, from_logits=bool(from_logits)
        )


class SparseCategoricalCrossentropy(MeanMetricWrapper):
    """The mean sparse categorical crossentropy over all samples seen.

    Example:
        >>> m = jmod.metrics.SparseCategoricalCrossentropy(from_logits=True)
        >>> m.update_state(jnp.array([0]), jnp.array([[0.0, 0.0]])); round(float(m.result()), 4)
        0.6931
    """

    direction = "down"

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False):
        super().__init__(
            losses.sparse_categorical_crossentropy,
            name=name,
            dtype=dtype,
            from_logits=bool(from_logits),
        )


# -- confusion-matrix metrics ---------------------------------------------------------


class _Confusion(Metric):
    """Counts of true/false positives/negatives at fixed thresholds."""

    _counts: tuple[str, ...] = (
        "true_positives",
        "false_positives",
        "true_negatives",
        "false_negatives",
    )

    def __init__(self, thresholds, name, dtype, class_id=None, from_logits=False):
        super().__init__(name=name, dtype=dtype)
        self.thresholds = np.asarray(thresholds, np.float32).reshape(-1)
        self.class_id = class_id
        self.from_logits = bool(from_logits)
        for count in self._counts:
            self.add_variable(count, shape=self.thresholds.shape)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = losses.match_rank(jnp.asarray(y_true), jnp.asarray(y_pred))
        y_pred = y_pred.astype(jnp.float32)
        if self.from_logits:
            y_pred = jax.nn.sigmoid(y_pred)
        weights = jnp.ones(y_pred.shape, jnp.float32)
        if sample_weight is not None:
            weights = _per_sample.broadcast_weights(sample_weight, weights)
        if self.class_id is not None:
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
            weights = weights[..., self.class_id]
        label = jnp.reshape(y_true > 0.5, (-1, 1))
        weights = jnp.reshape(weights, (-1, 1))
        predicted = jnp.reshape(y_pred, (-1, 1)) > jnp.asarray(self.thresholds)[None, :]
        counts = {
            "true_positives": label & predicted,
            "false_positives": ~label & predicted,
            "true_negatives": ~label & ~predicted,
            "false_negatives": label & ~predicted,
        }
        for name in self._counts:
            var = getattr(self, name)
            var.assign_add(jnp.sum(weights * counts[name], axis=0).astype(self.dtype))

    def _single(self, values):
        return values[0] if self.thresholds.size == 1 else values

    def get_config(self):
        thresholds = self.thresholds.tolist()
        return {
            **super().get_config(),
            "thresholds": thresholds[0] if len(thresholds) == 1 else thresholds,
            "class_id": self.class_id,
        }


class Precision(_Confusion):
    """Of the samples predicted positive (`y_pred > threshold`), the fraction that are.

    Example:
        >>> m = jmod.metrics.Precision()
        >>> m.update_state(jnp.array([1, 0, 1, 0]), jnp.array([0.9, 0.8, 0.2, 0.1]))
        >>> float(m.result())    # 1 true positive, 1 false positive
        0.5

    Args:
        thresholds: a float or a list (then `result()` is a vector); default 0.5.
        class_id: compute for this class (last axis index) only.
    """

    _counts = ("true_positives", "false_positives")

    def __init__(self, thresholds=None, class_id=None, name="precision", dtype=None):
        super().__init__(0.5 if thresholds is None else thresholds, name, dtype, class_id)

    def result(self):
        tp, fp = self.true_positives.value, self.false_positives.value
        return self._single(_divide_no_nan(tp, tp + fp))


class Recall(_Confusion):
    """Of the positive samples, the fraction predicted positive (`y_pred > threshold`).

    Example:
        >>> m = jmod.metrics.Recall()
        >>> m.update_state(jnp.array([1, 0, 1, 0]), jnp.array([0.9, 0.8, 0.2, 0.1]))
        >>> float(m.result())    # 1 of 2 positives found
        0.5

    Args:
        thresholds: a float or a list (then `result()` is a vector); default 0.5.
        class_id: compute for this class (last axis index) only.
    """

    _counts = ("true_positives", "false_negatives")

    def __init__(self, thresholds=None, class_id=None, name="recall", dtype=None):
        super().__init__(0.5 if thresholds is None else thresholds, name, dtype, class_id)

    def result(self):
        tp, fn = self.true_positives.value, self.false_negatives.value
        return self._single(_divide_no_nan(tp, tp + fn))


def auc_thresholds(num_thresholds):
    """Keras' AUC thresholds: evenly spaced in (0, 1), plus just below 0 and above 1."""
    inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    return np.array([0.0 - losses.EPSILON, *inner, 1.0 + losses.EPSILON], np.float32)


class AUC(_Confusion):
    """Area under the ROC (or precision-recall) curve, from counts at fixed thresholds.

    The curve is sampled at `num_thresholds` evenly spaced thresholds and
    integrated by the trapezoid rule (`"interpolation"`; for PR the
    Davis & Goadrich interpolation), as Keras does.

    Example:
        >>> m = jmod.metrics.AUC()
        >>> m.update_state(jnp.array([0, 0, 1, 1]), jnp.array([0.1, 0.4, 0.35, 0.8]))
        >>> round(float(m.result()), 2)
        0.75

    Args:
        num_thresholds: how many thresholds to count at (more: closer to the exact area).
        curve: `"ROC"` or `"PR"`.
        summation_method: `"interpolation"`, `"minoring"` or `"majoring"`.
        from_logits: apply a sigmoid to the predictions first.
    """

    def __init__(
        self,
        num_thresholds=200,
        curve="ROC",
        summation_method="interpolation",
        name="auc",
        dtype=None,
        from_logits=False,
    ):
        if curve not in ("ROC", "PR"):
            raise TrainingError(f"AUC {name!r}: curve must be 'ROC' or 'PR', got {curve!r}")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise TrainingError(
                f"AUC {name!r}: summation_method must be 'interpolation', 'minoring' or "
                f"'majoring', got {summation_method!r}"
            )
        if not isinstance(num_thresholds, int) or num_thresholds < 2:
            raise TrainingError(f"AUC {name!r}: num_thresholds must be an int >= 2")
        self.num_thresholds = num_thresholds
        self.curve = curve
        self.summation_method = summation_method
        super().__init__(auc_thresholds(num_thresholds), name, dtype, from_logits=from_logits)

    def result(self):
        tp, fp = self.true_positives.value, self.false_positives.value
        tn, fn = self.true_negatives.value, self.false_negatives.value
        if self.curve == "PR" and self.summation_method == "interpolation":
            return _interpolate_pr_auc(tp, fp, fn)
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, _divide_no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = jnp.minimum(y[:-1], y[1:])
        else:
            heights = jnp.maximum(y[:-1], y[1:])
        return jnp.sum((x[:-1] - x[1:]) * heights)

    def get_config(self):
        return {
            "name": self.name,
            "dtype": self.dtype.name,
            "num_thresholds": self.num_thresholds,
            "curve": self.curve,
            "summation_method": self.summation_method,
            "from_logits": self.from_logits,
        }


def _interpolate_pr_auc(tp, fp, fn):
    # Davis & Goadrich (2006): precision interpolated linearly in the number
    # of positives predicted between two thresholds, integrated exactly.
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = _divide_no_nan(dtp, jnp.maximum(dp, 0.0))
    intercept = tp[1:] - slope * p[1:]
    both = (p[:-1] > 0) & (p[1:] > 0)
    ratio = jnp.where(both, _divide_no_nan(p[:-1], jnp.maximum(p[1:], 0.0)), 1.0)
    increments = _divide_no_nan(
        slope * (dtp + intercept * jnp.log(ratio)), jnp.maximum(tp[1:] + fn[1:], 0.0)
    )
    return jnp.sum(increments)


# -- lookup ----------------------------------------------------------------------------

_CLASSES = {
    "accuracy": Accuracy,
    "acc": Accuracy,
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "root_mean_squared_error": RootMeanSquaredError,
    "rmse": RootMeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "precision": Precision,
    "recall": Recall,
    "auc": AUC,
    "mean": Mean,
    "sum": Sum,
}
for _cls in set(_CLASSES.values()):
    _CLASSES[_cls.__name__] = _cls


def get(identifier):
    """A `Metric` from a name, a `Metric` (returned as is), a class, or a function.

    A function `fn(y_true, y_pred) -> per-sample values` becomes a
    `MeanMetricWrapper` named after it.

    Example:
        >>> jmod.metrics.get("auc").name
        'auc'
    """
    return lookup(identifier, _CLASSES, Metric, MeanMetricWrapper, "metric")
