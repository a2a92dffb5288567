"""Layers that change the shape of each example, keeping the batch axis: Flatten, Reshape,
padding, cropping, upsampling, Permute, RepeatVector."""

import math

import jax
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


def _pairs(layer, label, value, rank):
    """An int, `rank` ints (symmetric) or `rank` pairs, as `rank` (before, after) pairs."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * rank
    try:
        items = list(value)
    except TypeError:
        items = None
    if (
        rank == 1
        and items is not None
        and len(items) == 2
        and all(isinstance(i, int) for i in items)
    ):
        items = [tuple(items)]
    out = []
    for item in items or [None]:
        if isinstance(item, int) and not isinstance(item, bool):
            item = (item, item)
        try:
            pair = tuple(item)
        except TypeError:
            pair = ()
        if len(pair) != 2 or any(
            isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pair
        ):
            out = None
            break
        out.append(pair)
    if not out or len(out) != rank:
        raise SerializationError(
            f"{c.where(layer)}: {label} must be an int >= 0, {rank} of them or {rank} pairs, "
            f"got {value!r}"
        )
    return tuple(out)


class _Spatial(Layer):
    """A layer over the spatial axes of `(batch, *spatial, channels)` (or channels first)."""

    rank = 1

    def _init_format(self, data_format):
        self.data_format = c.check_choice(
            self, "data_format", data_format or "channels_last", ("channels_last", "channels_first")
        )
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def _spatial_axes(self):
        first = 1 if self.data_format == "channels_last" else 2
        return list(range(first, first + self.rank))


class ZeroPadding1D(_Spatial):
    """Pads the steps axis with zeros: `padding` an int or `(before, after)`.

    Example:
        >>> jmod.layers.ZeroPadding1D((1, 2))(jnp.ones((1, 3, 2))).shape
        (1, 6, 2)
    """

    rank = 1

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(self, "padding", padding, self.rank)
        self._init_format(data_format)

    supports_masking = False

    def call(self, inputs):
        widths = [(0, 0)] * inputs.ndim
        for axis, pair in zip(self._spatial_axes(), self.padding):
            widths[axis] = pair
        return jnp.pad(inputs, widths)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (a, b) in zip(self._spatial_axes(), self.padding):
            shape[axis] = None if shape[axis] is None else shape[axis] + a + b
        return tuple(shape)

    def get_config(self):
        padding = [list(p) for p in self.padding]
        return {
            **c.base_config(self),
            "padding": padding[0] if self.rank == 1 else padding,
            "data_format": self.data_format,
        }


class ZeroPadding2D(ZeroPadding1D):
    """Pads height and width with zeros: an int, `(h, w)` or `((top, bottom), (left, right))`.

    Example:
        >>> jmod.layers.ZeroPadding2D(1)(jnp.ones((1, 3, 3, 2))).shape
        (1, 5, 5, 2)
    """

    rank = 2


class Cropping1D(_Spatial):
    """Removes `cropping = (before, after)` steps from the ends of the steps axis.

    Example:
        >>> jmod.layers.Cropping1D((1, 2))(jnp.ones((1, 6, 2))).shape
        (1, 3, 2)
    """

    rank = 1

    def __init__(self, cropping=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(self, "cropping", cropping, self.rank)
        self._init_format(data_format)

    def call(self, inputs):
        index = [slice(None)] * inputs.ndim
        for axis, (a, b) in zip(self._spatial_axes(), self.cropping):
            if a + b >= inputs.shape[axis]:
                raise ValueError(
                    f"cropping {(a, b)} removes all {inputs.shape[axis]} entries of axis {axis}"
                )
            index[axis] = slice(a, inputs.shape[axis] - b)
        return inputs[tuple(index)]

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (a, b) in zip(self._spatial_axes(), self.cropping):
            shape[axis] = None if shape[axis] is None else shape[axis] - a - b
        return tuple(shape)

    def get_config(self):
        cropping = [list(p) for p in self.cropping]
        return {
            **c.base_config(self),
            "cropping": cropping[0] if self.rank == 1 else cropping,
            "data_format": self.data_format,
        }


class Cropping2D(Cropping1D):
    """Crops height and width: an int, `(h, w)` or `((top, bottom), (left, right))`.

    Example:
        >>> jmod.layers.Cropping2D(((1, 0), (0, 2)))(jnp.ones((1, 4, 5, 2))).shape
        (1, 3, 3, 2)
    """

    rank = 2


class UpSampling1D(Layer):
    """Repeats each step `size` times: `(batch, steps, features)` to `(batch, steps * size, ...)`.

    Example:
        >>> jmod.layers.UpSampling1D(2)(jnp.array([[[1.0], [2.0]]]))[0, :, 0].tolist()
        [1.0, 1.0, 2.0, 2.0]
    """

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = c.check_int(self, "size", size)
        self.input_spec = InputSpec(ndim=3)

    def call(self, inputs):
        return jnp.repeat(inputs, self.size, axis=1)

    def compute_output_shape(self, input_shape):
        b, s, f = input_shape
        return (b, None if s is None else s * self.size, f)

    def get_config(self):
        return {**c.base_config(self), "size": self.size}


class UpSampling2D(_Spatial):
    """Enlarges images by `size` (rows, columns): nearest-neighbour repeats or bilinear.

    Example:
        >>> jmod.layers.UpSampling2D(2)(jnp.ones((1, 3, 4, 2))).shape
        (1, 6, 8, 2)

    Args:
        size: an int or `(rows, columns)` factors.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        interpolation: `"nearest"` or `"bilinear"` (`jax.image.resize`, half-pixel centers).
    """

    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = c.int_tuple(self, "size", size, 2)
        self.interpolation = c.check_choice(
            self, "interpolation", interpolation, ("nearest", "bilinear")
        )
        self._init_format(data_format)

    def call(self, inputs):
        axes = self._spatial_axes()
        if self.interpolation == "nearest":
            out = inputs
            for axis, k in zip(axes, self.size):
                out = jnp.repeat(out, k, axis=axis)
            return out
        shape = list(inputs.shape)
        for axis, k in zip(axes, self.size):
            shape[axis] *= k
        return jax.image.resize(inputs, shape, method="bilinear", antialias=False)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, k in zip(self._spatial_axes(), self.size):
            shape[axis] = None if shape[axis] is None else shape[axis] * k
        return tuple(shape)

    def get_config(self):
        return {
            **c.base_config(self),
            "size": list(self.size),
            "data_format": self.data_format,
            "interpolation": self.interpolation,
        }


class Permute(Layer):
    """Permutes the non-batch axes: `dims` are 1-based, as in Keras (`(2, 1)` swaps two axes).

    Example:
        >>> jmod.layers.Permute((2, 1))(jnp.ones((4, 3, 5))).shape
        (4, 5, 3)
    """

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        try:
            dims = tuple(dims)
        except TypeError:
            dims = ()
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise SerializationError(
                f"{c.where(self)}: dims must be a permutation of 1..n, got {dims!r}"
            )
        self.dims = dims

    def call(self, inputs):
        if inputs.ndim != len(self.dims) + 1:
            raise ValueError(f"dims {self.dims} need inputs of rank {len(self.dims) + 1}")
        return jnp.transpose(inputs, (0, *self.dims))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def get_config(self):
        return {**c.base_config(self), "dims": list(self.dims)}


class RepeatVector(Layer):
    """Repeats each `(features,)` example `n` times: `(batch, f)` to `(batch, n, f)`.

    Example:
        >>> jmod.layers.RepeatVector(3)(jnp.ones((2, 4))).shape
        (2, 3, 4)
    """

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = c.check_int(self, "n", n)
        self.input_spec = InputSpec(ndim=2)

    def call(self, inputs):
        return jnp.repeat(inputs[:, None, :], self.n, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def get_config(self):
        return {**c.base_config(self), "n": self.n}
