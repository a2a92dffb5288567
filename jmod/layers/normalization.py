"""Normalization layers: Batch, Layer, Group, RMS and Unit normalization."""

import jax
import jax.numpy as jnp

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import InputSpec, Layer


def _check_float(layer, label, value, low, high=None, low_inclusive=False):
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (value >= low if low_inclusive else value > low)
    ok = ok and (high is None or value < high)
    if not ok:
        lo = f"[{low}" if low_inclusive else f"({low}"
        bounds = (
            f"in {lo}, {high})" if high is not None else f"{'>=' if low_inclusive else '>'} {low}"
        )
        raise SerializationError(
            f"{c.where(layer)}: {label} must be a number {bounds}, got {value!r}"
        )
    return float(value)


class _Normalization(Layer):
    """What both normalizations share: axis, epsilon, the gamma/beta weights."""

    supports_masking = True

    def __init__(
        self,
        axis,
        epsilon,
        center,
        scale,
        beta_initializer,
        gamma_initializer,
        beta_regularizer,
        gamma_regularizer,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.beta_constraint = c.constraint(self, "beta_constraint", beta_constraint)
        self.gamma_constraint = c.constraint(self, "gamma_constraint", gamma_constraint)
        self.axis = c.check_axis(self, axis)
        self.epsilon = _check_float(self, "epsilon", epsilon, 0.0, low_inclusive=True)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = c.initializer(self, "beta_initializer", beta_initializer)
        self.gamma_initializer = c.initializer(self, "gamma_initializer", gamma_initializer)
        self.beta_regularizer = c.regularizer(self, "beta_regularizer", beta_regularizer)
        self.gamma_regularizer = c.regularizer(self, "gamma_regularizer", gamma_regularizer)

    def _build_affine(self, input_shape):
        rank = len(input_shape)
        self._axes = c.normalize_axes(self, self.axis, rank)
        sizes = [input_shape[a] for a in self._axes]
        if any(s is None for s in sizes):
            raise ValueError(
                f"the normalized axes {self.axis} must have known sizes, got shape {input_shape}"
            )
        self.input_spec = InputSpec(ndim=rank, axes={a: input_shape[a] for a in self._axes})
        if self.scale:
            self.add_weight(
                "gamma",
                sizes,
                self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
            )
        if self.center:
            self.add_weight(
                "beta",
                sizes,
                self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
            )
        return sizes

    def _broadcast(self, param, rank):
        # A (sizes of the normalized axes) weight, shaped to broadcast against the inputs.
        shape = [1] * rank
        for a, s in zip(self._axes, param.shape):
            shape[a] = s
        return jnp.reshape(param, shape)

    def _normalize(self, x, mean, variance):
        rank = x.ndim
        inv = 1.0 / jnp.sqrt(variance + self.epsilon)
        if self.scale:
            inv = inv * self._broadcast(self.gamma.value, rank)
        out = (x - mean) * inv
        if self.center:
            out = out + self._broadcast(self.beta.value, rank)
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _shared_config(self):
        return {
            **c.base_config(self),
            "axis": self.axis[0] if len(self.axis) == 1 else list(self.axis),
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": c.serialize_initializer(
                self, "beta_initializer", self.beta_initializer
            ),
            "gamma_initializer": c.serialize_initializer(
                self, "gamma_initializer", self.gamma_initializer
            ),
            "beta_regularizer": c.serialize_regularizer(
                self, "beta_regularizer", self.beta_regularizer
            ),
            "gamma_regularizer": c.serialize_regularizer(
                self, "gamma_regularizer", self.gamma_regularizer
            ),
            "beta_constraint": c.serialize_constraint(
                self, "beta_constraint", self.beta_constraint
            ),
            "gamma_constraint": c.serialize_constraint(
                self, "gamma_constraint", self.gamma_constraint
            ),
        }


class BatchNormalization(_Normalization):
    """Normalizes with batch statistics while training, moving averages at inference.

    With `training=True` the inputs are normalized with the mean and variance
    over every axis except `axis`, and the moving statistics are updated:
    `moving = moving * momentum + batch * (1 - momentum)` (the batch variance
    is the biased one, as in Keras 3). Otherwise the moving statistics are
    used and left alone. The updates happen under `jmod.jit` and inside
    `jmod.value_and_grad` as well. As in Keras, a layer set to
    `trainable = False` always runs in inference mode. Statistics are
    computed in float32 under mixed precision.

    Example:
        >>> bn = jmod.layers.BatchNormalization(momentum=0.5)
        >>> x = jnp.array([[0.0, 2.0], [2.0, 6.0]])
        >>> bn(x, training=True).tolist()
        [[-0.9995003938674927, -0.9998750686645508], [0.9995003938674927, 0.9998750686645508]]
        >>> bn.moving_mean.value.tolist()     # 0.5 * 0 + 0.5 * [1, 4]
        [0.5, 2.0]

    Args:
        axis: the features axis (or axes) that keep their own statistics.
        momentum: the moving averages' decay, in (0, 1).
        epsilon: added to the variance before the square root.
        center: whether to add the learned offset `beta`.
        scale: whether to multiply by the learned `gamma`.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer: initializers of the four weights.
        beta_regularizer, gamma_regularizer: penalties added to `losses`.
        beta_constraint, gamma_constraint: applied after each optimizer update.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        **kwargs,
    ):
        super().__init__(
            axis,
            epsilon,
            center,
            scale,
            beta_initializer,
            gamma_initializer,
            beta_regularizer,
            gamma_regularizer,
            beta_constraint,
            gamma_constraint,
            **kwargs,
        )
        if synchronized or renorm:
            raise SerializationError(
                f"{c.where(self)}: synchronized and renorm are not supported (batch statistics "
                "are computed over the whole global batch under jmod.distributed already)"
            )
        self.momentum = _check_float(self, "momentum", momentum, 0.0, 1.0, low_inclusive=True)
        self.moving_mean_initializer = c.initializer(
            self, "moving_mean_initializer", moving_mean_initializer
        )
        self.moving_variance_initializer = c.initializer(
            self, "moving_variance_initializer", moving_variance_initializer
        )

    def build(self, input_shape):
        sizes = self._build_affine(input_shape)
        self.add_weight("moving_mean", sizes, self.moving_mean_initializer, trainable=False)
        self.add_weight("moving_variance", sizes, self.moving_variance_initializer, trainable=False)

    def call(self, inputs, training=None):
        x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
        reduce = tuple(a for a in range(x.ndim) if a not in self._axes)
        if training and self.trainable:
            mean = jnp.mean(x, axis=reduce, keepdims=True)
            variance = jnp.mean(jnp.square(x - mean), axis=reduce, keepdims=True)
            m = self.momentum
            self.moving_mean.assign(
                self.moving_mean.value * m + jnp.reshape(mean, self.moving_mean.shape) * (1 - m)
            )
            self.moving_variance.assign(
                self.moving_variance.value * m
                + jnp.reshape(variance, self.moving_variance.shape) * (1 - m)
            )
        else:
            mean = self._broadcast(self.moving_mean.value, x.ndim)
            variance = self._broadcast(self.moving_variance.value, x.ndim)
        return self._normalize(x, mean, variance).astype(inputs.dtype)

    def get_config(self):
        return {
            **self._shared_config(),
            "momentum": self.momentum,
            "moving_mean_initializer": c.serialize_initializer(
                self, "moving_mean_initializer", self.moving_mean_initializer
            ),
            "moving_variance_initializer": c.serialize_initializer(
                self, "moving_variance_initializer", self.moving_variance_initializer
            ),
        }


class LayerNormalization(_Normalization):
    """Normalizes each example over `axis` (the features), then scales and shifts.

    `gamma * (x - mean) / sqrt(variance + epsilon) + beta`, the statistics
    taken over `axis` for each example separately; computed in float32
    under mixed precision.

    Example:
        >>> ln = jmod.layers.LayerNormalization(epsilon=0.0)
        >>> ln(jnp.array([[1.0, 3.0]])).tolist()
        [[-1.0, 1.0]]

    Args:
        axis: the axis (or axes) normalized over, by default the last.
        epsilon: added to the variance before the square root.
        center: whether to add the learned offset `beta`.
        scale: whether to multiply by the learned `gamma`.
        beta_initializer, gamma_initializer: initializers of the weights.
        beta_regularizer, gamma_regularizer: penalties added to `losses`.
        beta_constraint, gamma_constraint: applied after each optimizer update.
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        rms_scaling=False,
        **kwargs,
    ):
        super().__init__(
            axis,
            epsilon,
            center,
            scale,
            beta_initializer,
            gamma_initializer,
            beta_regularizer,
            gamma_regularizer,
            beta_constraint,
            gamma_constraint,
            **kwargs,
        )
        if rms_scaling:
            raise SerializationError(
                f"{c.where(self)}: rms_scaling=True is not supported; use RMSNormalization"
            )

    def build(self, input_shape):
        self._build_affine(input_shape)

    def call(self, inputs):
        x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
        mean = jnp.mean(x, axis=self._axes, keepdims=True)
        variance = jnp.mean(jnp.square(x - mean), axis=self._axes, keepdims=True)
        return self._normalize(x, mean, variance).astype(inputs.dtype)

    def get_config(self):
        return self._shared_config()


class GroupNormalization(_Normalization):
    """Normalizes each example over groups of channels (and all other non-batch axes).

    The `C` channels along `axis` are split into `groups` groups of `C / groups`;
    each group of each example is normalized by its own mean and variance,
    then scaled by `gamma` and shifted by `beta` (one per channel). `groups`
    equal to the channels is instance normalization; 1 is layer normalization
    over all axes.

    Example:
        >>> gn = jmod.layers.GroupNormalization(groups=2, epsilon=0.0)
        >>> gn(jnp.array([[1.0, 3.0, 10.0, 20.0]])).tolist()
        [[-1.0, 1.0, -1.0, 1.0]]

    Args:
        groups: the number of groups; divides the number of channels.
        axis: the channels axis.
        epsilon, center, scale, initializers, regularizers: as `LayerNormalization`.
        beta_constraint, gamma_constraint: applied after each update.
    """

    def __init__(
        self,
        groups=32,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(
            axis,
            epsilon,
            center,
            scale,
            beta_initializer,
            gamma_initializer,
            beta_regularizer,
            gamma_regularizer,
            beta_constraint,
            gamma_constraint,
            **kwargs,
        )
        self.groups = c.check_int(self, "groups", groups)
        if len(self.axis) != 1:
            raise SerializationError(f"{c.where(self)}: axis must be one int, got {axis!r}")

    def build(self, input_shape):
        channels = input_shape[self.axis[0]]
        if channels is not None and channels % self.groups:
            raise ValueError(f"the {channels} channels are not divisible by groups={self.groups}")
        self._build_affine(input_shape)

    def call(self, inputs):
        x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
        axis = self._axes[0]
        moved = jnp.moveaxis(x, axis, -1)
        grouped = jnp.reshape(moved, (*moved.shape[:-1], self.groups, -1))
        reduce = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
        mean = jnp.mean(grouped, axis=reduce, keepdims=True)
        variance = jnp.mean(jnp.square(grouped - mean), axis=reduce, keepdims=True)
        normed = (grouped - mean) / jnp.sqrt(variance + self.epsilon)
        normed = jnp.moveaxis(jnp.reshape(normed, moved.shape), -1, axis)
        if self.scale:
            normed = normed * self._broadcast(self.gamma.value, x.ndim)
        if self.center:
            normed = normed + self._broadcast(self.beta.value, x.ndim)
        return normed.astype(inputs.dtype)

    def get_config(self):
        config = self._shared_config()
        config["axis"] = self.axis[0]
        return {**config, "groups": self.groups}


class RMSNormalization(Layer):
    """`x / sqrt(mean(x**2 over axis) + epsilon) * scale` (Keras 3's RMSNormalization).

    Example:
        >>> rms = jmod.layers.RMSNormalization(epsilon=0.0)
        >>> [round(v, 4) for v in rms(jnp.array([[3.0, 4.0]]))[0].tolist()]  # / sqrt(12.5)
        [0.8485, 1.1314]

    Args:
        axis: the axis (or axes) the mean of squares is taken over.
        epsilon: added to the mean of squares.
    """

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.axis = c.check_axis(self, axis)
        self.epsilon = _check_float(self, "epsilon", epsilon, 0.0, low_inclusive=True)

    def build(self, input_shape):
        axes = c.normalize_axes(self, self.axis, len(input_shape))
        self._axes = axes
        self.add_weight("scale", tuple(input_shape[a] for a in axes), "ones")

    def call(self, inputs):
        x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
        ms = jnp.mean(jnp.square(x), axis=self._axes, keepdims=True)
        shape = [1] * x.ndim
        for a, s in zip(self._axes, self.scale.shape):
            shape[a] = s
        out = x / jnp.sqrt(ms + self.epsilon) * jnp.reshape(self.scale.value, shape)
        return out.astype(inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        axis = self.axis[0] if len(self.axis) == 1 else list(self.axis)
        return {**c.base_config(self), "axis": axis, "epsilon": self.epsilon}


class UnitNormalization(Layer):
    """Scales each example to unit L2 norm over `axis`: `x / sqrt(max(sum(x**2), 1e-12))`.

    Example:
        >>> jmod.layers.UnitNormalization()(jnp.array([[3.0, 4.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = c.check_axis(self, axis)

    def call(self, inputs):
        x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
        axes = self.axis[0] if len(self.axis) == 1 else self.axis
        sq = jnp.sum(jnp.square(x), axis=axes, keepdims=True)
        return (x * jax.lax.rsqrt(jnp.maximum(sq, 1e-12))).astype(inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        axis = self.axis[0] if len(self.axis) == 1 else list(self.axis)
        return {**c.base_config(self), "axis": axis}
