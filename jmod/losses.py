"""Losses: `Loss` objects and their function forms, as in Keras.

A function form (`mean_squared_error(y_true, y_pred)`) returns one value per
sample (elementwise losses are averaged over the last axis when the inputs
have more than one); a `Loss` object reduces those values to a scalar, with
optional per-sample weights:

    loss(y_true, y_pred, sample_weight) = sum(values * sample_weight) / values.size

(`reduction="sum_over_batch_size"`, the Keras default). Crossentropies take
probabilities, or logits with `from_logits=True` (more accurate: no clipping).

Example:
    >>> mse = jmod.losses.MeanSquaredError()
    >>> float(mse(jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [1.0]])))
    0.5
    >>> jmod.losses.get("sparse_categorical_crossentropy").name
    'sparse_categorical_crossentropy'
"""

import jax
import jax.numpy as jnp
import numpy as np

from jmod._naming import keras_snake_case
from jmod._per_sample import broadcast_weights, integer_labels, mean_over_last_axis
from jmod.training._errors import TrainingError
from jmod.training._lookup import lookup

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before a log (Keras' epsilon).
EPSILON = 1e-7
REDUCTIONS = ("sum_over_batch_size", "sum", "mean_with_sample_weight", "none")


# -- shapes and dtypes ---------------------------------------------------------------


def _float(x):
    """`x` as a float array, computed in float32 if it is a half type."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def match_rank(y_true, y_pred):
    """Puts `y_true` and `y_pred` at the same rank when they differ by a size-1 last axis.

    Labels of shape `(B,)` against predictions `(B, 1)` would otherwise
    broadcast to `(B, B)`: the classic silent bug.

    Example:
        >>> t, p = match_rank(jnp.zeros(4), jnp.zeros((4, 1)))
        >>> t.shape, p.shape
        ((4, 1), (4, 1))
    """
    t, p = jnp.ndim(y_true), jnp.ndim(y_pred)
    if p == t + 1 and jnp.shape(y_pred)[-1] == 1:
        y_true = jnp.expand_dims(y_true, -1)
    elif t == p + 1 and jnp.shape(y_true)[-1] == 1:
        y_true = jnp.squeeze(y_true, -1)
    return y_true, y_pred


def _misfit(name, y_true, y_pred, needs):
    return TrainingError(
        f"loss {name!r}: labels y of shape {tuple(jnp.shape(y_true))} do not fit the model "
        f"output of shape {tuple(jnp.shape(y_pred))}: {needs}"
    )


def _prepare(y_true, y_pred, name, same_shape=False):
    """Float inputs at the same rank; labels must fit the output (checked on static shapes).

    With `same_shape`, labels must have the output's shape (as Keras 3 asks of
    crossentropies); otherwise they may broadcast against it (a `(B, 1)`
    target for a `(B, n)` output), never enlarge it.
    """
    y_pred = _float(y_pred)
    y_true = jnp.asarray(y_true).astype(y_pred.dtype)
    t, p = match_rank(y_true, y_pred)
    if same_shape:
        if t.shape != p.shape:
            raise _misfit(name, y_true, y_pred, "this loss needs labels of the output's shape")
    else:
        try:
            fits = jnp.broadcast_shapes(t.shape, p.shape) == p.shape
        except ValueError:
            fits = False
        if not fits:
            raise _misfit(
                name, y_true, y_pred, "labels must have the output's shape (or broadcast to it)"
            )
    return t, p


# -- function forms ------------------------------------------------------------------


def mean_squared_error(y_true, y_pred):
    """`mean((y_pred - y_true) ** 2)` over the last axis, per sample.

    Example:
        >>> jmod.losses.mean_squared_error(jnp.array([[0.0, 2.0]]), jnp.array([[1.0, 1.0]]))
        Array([1.], dtype=float32)
    """
    y_true, y_pred = _prepare(y_true, y_pred, "mean_squared_error")
    return mean_over_last_axis(jnp.square(y_pred - y_true))


def mean_absolute_error(y_true, y_pred):
    """`mean(|y_pred - y_true|)` over the last axis, per sample.

    Example:
        >>> jmod.losses.mean_absolute_error(jnp.array([[0.0, 2.0]]), jnp.array([[1.0, 1.0]]))
        Array([1.], dtype=float32)
    """
    y_true, y_pred = _prepare(y_true, y_pred, "mean_absolute_error")
    return mean_over_last_axis(jnp.abs(y_pred - y_true))


def huber(y_true, y_pred, delta=1.0):
    """Quadratic for errors up to `delta`, linear beyond; averaged over the last axis.

    `0.5 * e**2` if `|e| <= delta`, else `delta * (|e| - 0.5 * delta)`.

    Example:
        >>> jmod.losses.huber(jnp.array([[0.0, 0.0]]), jnp.array([[0.5, 3.0]]))
        Array([1.3125], dtype=float32)
    """
    y_true, y_pred = _prepare(y_true, y_pred, "huber")
    error = jnp.abs(y_pred - y_true)
    quadratic = jnp.minimum(error, delta)
    linear = error - quadratic
    return mean_over_last_axis(0.5 * jnp.square(quadratic) + delta * linear)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Crossentropy of independent 0/1 labels, averaged over the last axis.

    Example:
        >>> out = jmod.losses.binary_crossentropy(jnp.array([[1.0]]), jnp.array([[0.5]]))
        >>> round(float(out[0]), 4)    # -log(0.5)
        0.6931
    """
    y_true, y_pred = _prepare(y_true, y_pred, "binary_crossentropy", same_shape=True)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        values = -(
            y_true * jax.nn.log_sigmoid(y_pred) + (1.0 - y_true) * jax.nn.log_sigmoid(-y_pred)
        )
    else:
        p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
        values = -(y_true * jnp.log(p) + (1.0 - y_true) * jnp.log(1.0 - p))
    return mean_over_last_axis(values)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Crossentropy of one-hot (or soft) labels over the class `axis`, per sample.

    Probabilities are renormalized to sum to 1 and clipped, as Keras does.

    Example:
        >>> out = jmod.losses.categorical_crossentropy(
        ...     jnp.array([[0.0, 1.0]]), jnp.array([[0.5, 0.5]]))
        >>> round(float(out[0]), 4)
        0.6931
    """
    y_pred = _float(y_pred)
    y_true = jnp.asarray(y_true).astype(y_pred.dtype)
    if y_true.shape != y_pred.shape:
        raise _misfit(
            "categorical_crossentropy",
            y_true,
            y_pred,
            "one-hot labels need the output's shape (integer labels take "
            "sparse_categorical_crossentropy)",
        )
    if label_smoothing:
        classes = y_pred.shape[axis]
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / classes
    if from_logits:
        log_p = jax.nn.log_softmax(y_pred, axis=axis)
    else:
        p = y_pred / jnp.sum(y_pred, axis=axis, keepdims=True)
        log_p = jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))
    return -jnp.sum(y_true * log_p, axis=axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    """Crossentropy of integer class labels against class scores on `axis`, per sample.

    Labels may have shape `(B,)` or `(B, 1)`.

    Example:
        >>> out = jmod.losses.sparse_categorical_crossentropy(
        ...     jnp.array([1]), jnp.array([[1.0, 1.0]]), from_logits=True)
        >>> round(float(out[0]), 4)
        0.6931
    """
    y_pred = _float(y_pred)
    labels = integer_labels(y_true, y_pred)
    classes = jnp.shape(y_pred)[axis] if jnp.ndim(y_pred) else None
    if classes is None or labels.shape != jnp.shape(jnp.moveaxis(y_pred, axis, -1))[:-1]:
        raise _misfit(
            "sparse_categorical_crossentropy",
            y_true,
            y_pred,
            "integer labels need the output's shape without its class axis "
            "(one-hot labels take categorical_crossentropy)",
        )
    if from_logits:
        log_p = jax.nn.log_softmax(y_pred, axis=axis)
    else:
        p = y_pred / jnp.sum(y_pred, axis=axis, keepdims=True)
        log_p = jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))
    log_p = jnp.moveaxis(log_p, axis, -1)
    # A one-hot product, not a gather: the gather's gradient is a scatter,
    # which cost a 784-512-512-10 train step 20% on CPU.
    onehot = jax.nn.one_hot(labels, log_p.shape[-1], dtype=log_p.dtype)
    return -jnp.sum(onehot * log_p, axis=-1)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


# -- reduction -------------------------------------------------------------------------


def reduce_values(values, sample_weight=None, reduction="sum_over_batch_size", count=None):
    """Reduces per-sample loss values to a scalar, weighting samples by `sample_weight`.

    Args:
        values: per-sample losses, shape `(B, ...)`.
        sample_weight: `None`, a scalar, or shape `(B,)` (broadcast over the rest).
        reduction: `"sum_over_batch_size"` (sum / number of values),
            `"sum"`, `"mean_with_sample_weight"` (sum / sum of weights) or `"none"`.
        count: the number of values to divide by for `"sum_over_batch_size"`
            (`fit` passes the number of real, unpadded values); default `values.size`.

    Example:
        >>> float(reduce_values(jnp.array([1.0, 3.0]), jnp.array([1.0, 0.0])))
        0.5
    """
    values = jnp.asarray(values)
    if sample_weight is not None:
        weights = broadcast_weights(sample_weight, values)
        values = values * weights
    if reduction == "none":
        return values
    total = jnp.sum(values)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return total / jnp.maximum(jnp.sum(weights), EPSILON)
    if count is None:
        count = values.size
    return total / jnp.maximum(jnp.asarray(count, total.dtype), 1.0)


# -- Loss objects ----------------------------------------------------------------------


class Loss:
    """Base class of losses: `call` gives per-sample values, `__call__` reduces them.

    Subclass and implement `call(y_true, y_pred)`, or wrap a function with
    `LossFunctionWrapper`.

    Example:
        >>> class Quartic(jmod.losses.Loss):
        ...     def call(self, y_true, y_pred):
        ...         return jnp.mean((y_pred - y_true) ** 4, axis=-1)
        >>> float(Quartic()(jnp.zeros((2, 1)), jnp.ones((2, 1))))
        1.0

    Args:
        reduction: how `__call__` reduces (see `reduce_values`).
        name: the name used in logs.
    """

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in REDUCTIONS:
            raise TrainingError(
                f"loss {name or type(self).__name__}: reduction must be one of {REDUCTIONS}, "
                f"got {reduction!r}"
            )
        self.reduction = reduction
        self.name = name or keras_snake_case(type(self).__name__)

    def call(self, y_true, y_pred):
        """Per-sample loss values. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement call()")

    def __call__(self, y_true, y_pred, sample_weight=None):
        values = self.call(y_true, y_pred)
        return reduce_values(values, sample_weight, self.reduction)

    def get_config(self):
        """The constructor arguments that rebuild this loss."""
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


class LossFunctionWrapper(Loss):
    """A `Loss` from a function `fn(y_true, y_pred, **kwargs)` returning per-sample values.

    Example:
        >>> loss = jmod.losses.LossFunctionWrapper(jmod.losses.mean_absolute_error)
        >>> loss.name, float(loss(jnp.zeros((2, 1)), jnp.ones((2, 1))))
        ('mean_absolute_error', 1.0)
    """

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, **kwargs):
        super().__init__(reduction=reduction, name=name or getattr(fn, "__name__", "loss"))
        self.fn = fn
        self.fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        return {**super().get_config(), **self.fn_kwargs}

    @classmethod
    def from_config(cls, config):
        # Subclasses fix their function; only the wrapper itself needs one.
        return cls(**config)


class MeanSquaredError(LossFunctionWrapper):
    """Mean of squared errors. See `mean_squared_error`.

    Example:
        >>> float(jmod.losses.MeanSquaredError()(jnp.zeros((2, 1)), jnp.full((2, 1), 2.0)))
        4.0
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error"):
        super().__init__(mean_squared_error, reduction=reduction, name=name)


class MeanAbsoluteError(LossFunctionWrapper):
    """Mean of absolute errors. See `mean_absolute_error`.

    Example:
        >>> float(jmod.losses.MeanAbsoluteError()(jnp.zeros((2, 1)), jnp.full((2, 1), -2.0)))
        2.0
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error"):
        super().__init__(mean_absolute_error, reduction=reduction, name=name)


class Huber(LossFunctionWrapper):
    """Huber loss with threshold `delta`. See `huber`.

    Example:
        >>> float(jmod.losses.Huber(delta=1.0)(jnp.zeros((1, 1)), jnp.full((1, 1), 3.0)))
        2.5
    """

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss"):
        super().__init__(huber, reduction=reduction, name=name, delta=float(delta))


class BinaryCrossentropy(LossFunctionWrapper):
    """Crossentropy of 0/1 labels against probabilities (or logits). See `binary_crossentropy`.

    Example:
        >>> loss = jmod.losses.BinaryCrossentropy(from_logits=True)
        >>> round(float(loss(jnp.array([[1.0]]), jnp.array([[0.0]]))), 4)
        0.6931
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="binary_crossentropy",
    ):
        super().__init__(
            binary_crossentropy,
            reduction=reduction,
            name=name,
            from_logits=bool(from_logits),
            label_smoothing=float(label_smoothing),
        )


class CategoricalCrossentropy(LossFunctionWrapper):
    """Crossentropy of one-hot labels. See `categorical_crossentropy`.

    Example:
        >>> loss = jmod.losses.CategoricalCrossentropy(from_logits=True)
        >>> round(float(loss(jnp.array([[0.0, 1.0]]), jnp.array([[0.0, 0.0]]))), 4)
        0.6931
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_crossentropy",
    ):
        super().__init__(
            categorical_crossentropy,
            reduction=reduction,
            name=name,
            from_logits=bool(from_logits),
            label_smoothing=float(label_smoothing),
            axis=int(axis),
        )


class SparseCategoricalCrossentropy(LossFunctionWrapper):
    """Crossentropy of integer labels. See `sparse_categorical_crossentropy`.

    Example:
        >>> loss = jmod.losses.SparseCategoricalCrossentropy(from_logits=True)
        >>> round(float(loss(jnp.array([0]), jnp.array([[0.0, 0.0]]))), 4)
        0.6931
    """

    def __init__(
        self,
        from_logits=False,
        axis=-1,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
    ):
        super().__init__(
            sparse_categorical_crossentropy,
            reduction=reduction,
            name=name,
            from_logits=bool(from_logits),
            axis=int(axis),
        )


# -- checking labels before training --------------------------------------------------


def check_labels(loss, y_true, y_pred):
    """Raises `TrainingError` if labels like `y_true` do not fit outputs like `y_pred` for `loss`.

    Both may be arrays or `jax.ShapeDtypeStruct`s: the loss is traced
    abstractly (nothing is computed), so `fit` runs this once, on the host,
    before its first step. The error names the loss, the label shape and the
    output shape.

    Example:
        >>> y = jax.ShapeDtypeStruct((16, 5), "float32")
        >>> check_labels(get("binary_crossentropy"), y, jax.ShapeDtypeStruct((16, 1), "float32"))
        Traceback (most recent call last):
        ...
        jmod.errors.TrainingError: loss 'binary_crossentropy': labels y of shape (16, 5) ...
    """
    try:
        jax.eval_shape(loss.call, y_true, y_pred)
    except TrainingError as e:
        name = getattr(loss, "name", None)
        message = str(e)
        if name and message.startswith("loss '"):  # the function's name: the object's instead
            message = message[message.index("': ") + 3 :]
        raise TrainingError(f"loss {name!r}: {message}" if name else message) from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(
            f"loss {getattr(loss, 'name', loss)!r}: labels y of shape "
            f"{tuple(y_true.shape)} do not fit the model output of shape "
            f"{tuple(y_pred.shape)}: {type(e).__name__}: {first}"
        ) from None


def sparse_classes(loss, y_pred_shape):
    """The number of classes integer labels index for `loss` (sparse crossentropy), else None.

    Example:
        >>> sparse_classes(get("sparse_categorical_crossentropy"), (16, 5))
        5
        >>> sparse_classes(get("mse"), (16, 5)) is None
        True
    """
    fn = getattr(loss, "fn", None)
    if fn is not sparse_categorical_crossentropy or not y_pred_shape:
        return None
    return int(y_pred_shape[loss.fn_kwargs.get("axis", -1)])


def check_label_range(labels, classes, name):
    """Raises `TrainingError` unless every label is an integer in `[0, classes)` (host-side).

    Example:
        >>> check_label_range(np.array([0, 4, 12]), 5, "sparse_categorical_crossentropy")
        Traceback (most recent call last):
        ...
        jmod.errors.TrainingError: loss 'sparse_categorical_crossentropy': ...
    """
    labels = np.asarray(labels)
    if not labels.size:
        return
    low, high = labels.min(), labels.max()
    bad = low < 0 or high >= classes
    if not bad and not np.issubdtype(labels.dtype, np.integer):
        bad = not np.array_equal(labels, np.rint(labels))
    if bad:
        raise TrainingError(
            f"loss {name!r}: integer labels must lie in [0, {classes}) for an output of "
            f"{classes} classes; the labels y range over [{low}, {high}]"
            + ("" if np.issubdtype(labels.dtype, np.integer) else " (or are not whole numbers)")
        )


# -- lookup ----------------------------------------------------------------------------

_CLASSES = {
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "huber": Huber,
    "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
for _cls in set(_CLASSES.values()):
    _CLASSES[_cls.__name__] = _cls


def get(identifier):
    """A `Loss` object from a name, a `Loss`, or a function `(y_true, y_pred) -> values`.

    Names are the function names (`"mse"`, `"sparse_categorical_crossentropy"`)
    or class names (`"Huber"`); `None` gives `None`.

    Example:
        >>> jmod.losses.get("mse")
        <MeanSquaredError 'mean_squared_error'>
    """
    if identifier is None:
        return None
    return lookup(identifier, _CLASSES, Loss, LossFunctionWrapper, "loss")
