"""Activation layers with arguments: `ReLU`, `LeakyReLU`, `ELU`, `PReLU`, `Softmax`, `Rescaling`."""

import jax.numpy as jnp

from jmod import activations
from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer


def _number(layer, label, value, minimum=None, optional=False):
    if optional and value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise SerializationError(
            f"{c.where(layer)}: {label} must be a number{bound}, got {value!r}"
        )
    return float(value)


class _Elementwise(Layer):
    supports_masking = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class ReLU(_Elementwise):
    """`relu` with Keras' options: `max_value` cap, `negative_slope` below `threshold`.

    Example:
        >>> jmod.layers.ReLU(max_value=1.0)(jnp.array([-1.0, 0.5, 3.0])).tolist()
        [0.0, 0.5, 1.0]
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_value = _number(self, "max_value", max_value, 0.0, optional=True)
        self.negative_slope = _number(self, "negative_slope", negative_slope, 0.0)
        self.threshold = _number(self, "threshold", threshold)

    def call(self, inputs):
        return activations.relu(inputs, self.negative_slope, self.max_value, self.threshold)

    def get_config(self):
        return {
            **c.base_config(self),
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
        }


class LeakyReLU(_Elementwise):
    """`x` for positives, `negative_slope * x` otherwise (Keras' layer default 0.3).

    Example:
        >>> jmod.layers.LeakyReLU(0.5)(jnp.array([-2.0, 3.0])).tolist()
        [-1.0, 3.0]
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = _number(self, "negative_slope", negative_slope, 0.0)

    def call(self, inputs):
        return activations.leaky_relu(inputs, self.negative_slope)

    def get_config(self):
        return {**c.base_config(self), "negative_slope": self.negative_slope}


class ELU(_Elementwise):
    """`x` for positives, `alpha * (exp(x) - 1)` otherwise.

    Example:
        >>> round(float(jmod.layers.ELU()(jnp.array([-1.0]))[0]), 4)
        -0.6321
    """

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = _number(self, "alpha", alpha)

    def call(self, inputs):
        return activations.elu(inputs, self.alpha)

    def get_config(self):
        return {**c.base_config(self), "alpha": self.alpha}


class PReLU(_Elementwise):
    """Leaky relu with a learned slope `alpha` per input element (shared along `shared_axes`).

    `relu(x) - alpha * relu(-x)`; `alpha` has the input's shape without the
    batch axis, with size 1 along `shared_axes` (1-based, as in Keras).

    Example:
        >>> layer = jmod.layers.PReLU(alpha_initializer="ones", shared_axes=[1])
        >>> layer(jnp.array([[[-2.0, 1.0], [3.0, -1.0]]])).tolist(), layer.alpha.shape
        ([[[-2.0, 1.0], [3.0, -1.0]]], (1, 2))
    """

    def __init__(
        self,
        alpha_initializer="zeros",
        alpha_regularizer=None,
        alpha_constraint=None,
        shared_axes=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        c.set_weight_options(self, "alpha", alpha_initializer, alpha_regularizer, alpha_constraint)
        if shared_axes is None:
            self.shared_axes = None
        else:
            self.shared_axes = tuple(c.check_axis(self, shared_axes, "shared_axes"))

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for axis in self.shared_axes or ():
            shape[axis - 1] = 1
        if any(d is None for d in shape):
            raise ValueError(f"the non-shared axes must have known sizes, got {input_shape}")
        c.add_option_weight(self, "alpha", tuple(shape))

    def call(self, inputs):
        alpha = self._cast(self.alpha)
        return jnp.maximum(inputs, 0) - alpha * jnp.maximum(-inputs, 0)

    def get_config(self):
        return {
            **c.base_config(self),
            **c.weight_options_config(self, "alpha"),
            "shared_axes": list(self.shared_axes) if self.shared_axes else None,
        }


class Softmax(_Elementwise):
    """Softmax along `axis`; positions where `mask` is False get probability 0.

    Example:
        >>> x, mask = jnp.array([[0.0, 0.0, 5.0]]), jnp.array([[1, 1, 0]])
        >>> jmod.layers.Softmax()(x, mask=mask).tolist()
        [[0.5, 0.5, 0.0]]
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = c.check_axis(self, axis)

    def call(self, inputs, mask=None):
        axis = self.axis[0] if len(self.axis) == 1 else self.axis
        if mask is None:
            return jnp.exp(inputs - _logsumexp(inputs, axis))
        keep = jnp.asarray(mask).astype(bool)
        x = jnp.where(keep, inputs, jnp.asarray(-1e9, inputs.dtype))
        return jnp.where(keep, jnp.exp(x - _logsumexp(x, axis)), 0)

    def get_config(self):
        return {
            **c.base_config(self),
            "axis": self.axis[0] if len(self.axis) == 1 else list(self.axis),
        }


def _logsumexp(x, axis):
    import jax

    return jax.nn.logsumexp(x, axis=axis, keepdims=True)


class Rescaling(_Elementwise):
    """`inputs * scale + offset` (e.g. `Rescaling(1 / 255)` for pixel values).

    Example:
        >>> jmod.layers.Rescaling(0.5, offset=1.0)(jnp.array([2.0, 4.0])).tolist()
        [2.0, 3.0]
    """

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _number(self, "scale", scale)
        self.offset = _number(self, "offset", offset)

    def call(self, inputs):
        x = (
            inputs
            if jnp.issubdtype(inputs.dtype, jnp.floating)
            else inputs.astype(self.compute_dtype)
        )
        return x * jnp.asarray(self.scale, x.dtype) + jnp.asarray(self.offset, x.dtype)

    def get_config(self):
        return {**c.base_config(self), "scale": self.scale, "offset": self.offset}
