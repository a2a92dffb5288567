"""`Flatten` and `Reshape`: change the shape of each example, keeping the batch axis."""

import math

import jax.numpy as jnp

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import InputSpec, Layer


class Flatten(Layer):
    """Flattens each example to a vector: `(batch, ...)` to `(batch, prod(...))`.

    With `data_format="channels_first"` the channels axis is moved last
    first, so the order of the flat features matches a channels-last model.

    Example:
        >>> jmod.layers.Flatten()(jnp.ones((2, 3, 4))).shape
        (2, 12)

    Args:
        data_format: `"channels_last"` (default) or `"channels_first"`.
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = c.check_choice(
            self, "data_format", data_format or "channels_last", ("channels_last", "channels_first")
        )
        self.input_spec = InputSpec(min_ndim=1)

    def call(self, inputs):
        x = inputs
        if self.data_format == "channels_first" and x.ndim > 2:
            x = jnp.moveaxis(x, 1, -1)
        return jnp.reshape(x, (x.shape[0], -1))

    def compute_output_shape(self, input_shape):
        rest = tuple(input_shape)[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)
        return (input_shape[0], size)

    def get_config(self):
        return {**c.base_config(self), "data_format": self.data_format}


class Reshape(Layer):
    """Reshapes each example to `target_shape` (the batch axis is kept).

    One entry of `target_shape` may be -1: it takes whatever size is left.

    Example:
        >>> jmod.layers.Reshape((3, 4))(jnp.ones((2, 12))).shape
        (2, 3, 4)
        >>> jmod.layers.Reshape((-1, 2))(jnp.ones((2, 12))).shape
        (2, 6, 2)

    Args:
        target_shape: the shape of each example, without the batch axis.
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        try:
            target = tuple(target_shape)
        except TypeError:
            target = None
        if (
            target is None
            or any(isinstance(d, bool) or not isinstance(d, int) for d in target)
            or any(d < 1 and d != -1 for d in target)
            or target.count(-1) > 1
        ):
            raise SerializationError(
                f"{c.where(self)}: target_shape must be a sequence of ints >= 1 with at most "
                f"one -1, got {target_shape!r}"
            )
        self.target_shape = target

    def _resolve(self, input_shape):
        """`target_shape` with its -1 filled in for inputs of `input_shape` (None if unknown)."""
        rest = tuple(input_shape)[1:]
        if any(d is None for d in rest):
            if -1 in self.target_shape:
                return tuple(None if d == -1 else d for d in self.target_shape)
            return self.target_shape
        size = math.prod(rest)
        known = math.prod(d for d in self.target_shape if d != -1)
        if size % known if -1 in self.target_shape else size != known:
            raise ValueError(
                f"cannot reshape examples of shape {rest} ({size} elements) to "
                f"target_shape {self.target_shape}"
            )
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def call(self, inputs):
        return jnp.reshape(inputs, (inputs.shape[0], *self._resolve(inputs.shape)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._resolve(input_shape))

    def get_config(self):
        return {**c.base_config(self), "target_shape": list(self.target_shape)}
