"""How losses and metrics line up labels, values and sample weights, one value per sample.

Shared by `jmod.losses` and `jmod.metrics`, so a loss and the metric of the
same name agree on shapes.

Example:
    >>> from jmod import _per_sample
    >>> _per_sample.mean_over_last_axis(jnp.array([[1.0, 3.0], [2.0, 2.0]])).tolist()
    [2.0, 2.0]
"""

import jax.numpy as jnp


def mean_over_last_axis(values):
    """`values` averaged over their last axis, unless they are rank 1.

    Values of rank 1 are one per sample already: averaging them would mix
    samples (and break sample weights and padding masks).

    Example:
        >>> from jmod._per_sample import mean_over_last_axis
        >>> mean_over_last_axis(jnp.array([[1.0, 3.0]])).tolist()
        [2.0]
        >>> mean_over_last_axis(jnp.array([1.0, 3.0])).tolist()
        [1.0, 3.0]
    """
    return jnp.mean(values, axis=-1) if values.ndim > 1 else values


def integer_labels(y_true, y_pred):
    """Class indices as int32; a size-1 last axis is dropped when `y_true` has `y_pred`'s rank.

    Labels `(B, 1)` against scores `(B, n)` become `(B,)`, as Keras' sparse
    losses and metrics take them.

    Example:
        >>> from jmod._per_sample import integer_labels
        >>> integer_labels(jnp.array([[2.0], [0.0]]), jnp.zeros((2, 3))).tolist()
        [2, 0]
    """
    y_true = jnp.asarray(y_true)
    if y_true.ndim == jnp.ndim(y_pred) and y_true.shape[-1] == 1:
        y_true = jnp.squeeze(y_true, -1)
    return y_true.astype(jnp.int32)


def broadcast_weights(weights, values):
    """`weights` in the dtype and shape of `values`, one weight spread over each sample.

    Trailing size-1 axes beyond `values`' rank are dropped, then axes are
    added on the right: weights `(B,)` or `(B, 1)` against values `(B, T)`
    weigh each sample's `T` values alike.

    Example:
        >>> from jmod._per_sample import broadcast_weights
        >>> broadcast_weights(jnp.array([[1.0], [0.0]]), jnp.zeros((2, 3))).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    weights = jnp.asarray(weights, values.dtype)
    while weights.ndim > values.ndim and weights.shape[-1] == 1:
        weights = jnp.squeeze(weights, -1)
    weights = jnp.reshape(weights, weights.shape + (1,) * (values.ndim - weights.ndim))
    return jnp.broadcast_to(weights, values.shape)
