"""Pooling layers: max and average over windows, and over whole feature maps."""

import jax
import jax.numpy as jnp
import numpy as np

from jmod.layers import _common as c
from jmod.layers.layer import InputSpec, Layer


def _window_reduce(x, kind, window, strides, padding):
    """Max or mean of `x` over windows (`window`/`strides` give a size per axis)."""
    pad = padding.upper()
    # The init values are NumPy scalars, not jnp arrays: under jit a jnp array is
    # a tracer, and JAX then picks the generic reduce_window, which has no
    # reverse-mode rule (pooling could not be trained under jit). With a
    # constant it picks reduce_window_max/sum, which differentiate.
    if kind == "max":
        if jnp.issubdtype(x.dtype, jnp.floating):
            init = np.array(-np.inf, x.dtype)
        else:
            init = np.array(np.iinfo(x.dtype).min, x.dtype)
        return jax.lax.reduce_window(x, init, jax.lax.max, window, strides, pad)
    zero = np.array(0, x.dtype)
    total = jax.lax.reduce_window(x, zero, jax.lax.add, window, strides, pad)
    if pad == "VALID":
        size = 1
        for w in window:
            size *= w
        return total / jnp.asarray(size, x.dtype)
    # With "same" padding the border windows average only the real elements (TF, Keras).
    ones = jnp.ones(x.shape[1:-1], x.dtype)[None, ..., None]
    count = jax.lax.reduce_window(ones, zero, jax.lax.add, window, strides, pad)
    return total / count


class _Pooling(Layer):
    """A `rank`-D max or average pooling; subclasses fix both."""

    rank: int | None = None
    kind: str | None = None

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = c.int_tuple(self, "pool_size", pool_size, self.rank)
        strides = self.pool_size if strides is None else strides
        self.strides = c.int_tuple(self, "strides", strides, self.rank)
        self.padding = c.check_choice(self, "padding", padding, ("valid", "same"))
        self.data_format = c.check_choice(
            self, "data_format", data_format or "channels_last", ("channels_last", "channels_first")
        )
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        x = inputs
        if self.data_format == "channels_first":
            x = jnp.moveaxis(x, 1, -1)
        window, strides = (1, *self.pool_size, 1), (1, *self.strides, 1)
        out = _window_reduce(x, self.kind, window, strides, self.padding)
        if self.data_format == "channels_first":
            out = jnp.moveaxis(out, -1, 1)
        return out

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        last = self.data_format == "channels_last"
        sizes = shape[1:-1] if last else shape[2:]
        out = tuple(
            c.window_output_length(n, p, s, self.padding)
            for n, p, s in zip(sizes, self.pool_size, self.strides)
        )
        return (shape[0], *out, shape[-1]) if last else (shape[0], shape[1], *out)

    def get_config(self):
        return {
            **c.base_config(self),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
        }


_POOL_ARGS = """
    Args:
        pool_size: the window size, an int or one per spatial axis.
        strides: the step between windows; by default `pool_size`.
        padding: `"valid"` (only whole windows) or `"same"` (output size
            `ceil(size / strides)`; border windows cover only real elements).
        data_format: `"channels_last"` (default) or `"channels_first"`.
"""


class MaxPooling1D(_Pooling):
    """The maximum over windows of `(batch, steps, channels)` inputs.

    Example:
        >>> layer = jmod.layers.MaxPooling1D(2)
        >>> layer(jnp.array([[[1.0], [3.0], [2.0], [0.0]]]))[0, :, 0].tolist()
        [3.0, 2.0]
    """

    __doc__ += _POOL_ARGS
    rank, kind = 1, "max"


class MaxPooling2D(_Pooling):
    """The maximum over windows of `(batch, height, width, channels)` images.

    Example:
        >>> layer = jmod.layers.MaxPooling2D((2, 2))
        >>> layer(jnp.ones((1, 28, 28, 3))).shape
        (1, 14, 14, 3)
    """

    __doc__ += _POOL_ARGS
    rank, kind = 2, "max"


class AveragePooling1D(_Pooling):
    """The mean over windows of `(batch, steps, channels)` inputs.

    Example:
        >>> layer = jmod.layers.AveragePooling1D(2)
        >>> layer(jnp.array([[[1.0], [3.0], [2.0], [0.0]]]))[0, :, 0].tolist()
        [2.0, 1.0]
    """

    __doc__ += _POOL_ARGS
    rank, kind = 1, "avg"


class AveragePooling2D(_Pooling):
    """The mean over windows of `(batch, height, width, channels)` images.

    Example:
        >>> layer = jmod.layers.AveragePooling2D(2, padding="same")
        >>> layer(jnp.ones((1, 5, 5, 3))).shape
        (1, 3, 3, 3)
    """

    __doc__ += _POOL_ARGS
    rank, kind = 2, "avg"


class _GlobalPooling(Layer):
    """Mean or max over all spatial axes; subclasses fix the rank and kind."""

    rank: int | None = None
    kind: str | None = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = c.check_choice(
            self, "data_format", data_format or "channels_last", ("channels_last", "channels_first")
        )
        self.keepdims = bool(keepdims)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def _axes(self):
        first = 1 if self.data_format == "channels_last" else 2
        return tuple(range(first, first + self.rank))

    def call(self, inputs, mask=None):
        if mask is not None and self.rank == 1:
            # Masked steps do not count (Keras): a weighted mean, or a max over real steps.
            m = (
                jnp.asarray(mask, bool)[..., None]
                if self.data_format == "channels_last"
                else (jnp.asarray(mask, bool)[:, None, :])
            )
            if self.kind == "avg":
                w = m.astype(inputs.dtype)
                total = jnp.sum(inputs * w, axis=self._axes(), keepdims=self.keepdims)
                count = jnp.sum(w, axis=self._axes(), keepdims=self.keepdims)
                return total / jnp.maximum(count, 1)
            low = jnp.asarray(jnp.finfo(inputs.dtype).min, inputs.dtype)
            return jnp.max(jnp.where(m, inputs, low), axis=self._axes(), keepdims=self.keepdims)
        reduce = jnp.mean if self.kind == "avg" else jnp.max
        return reduce(inputs, axis=self._axes(), keepdims=self.keepdims)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        axes = self._axes()
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        return {**c.base_config(self), "data_format": self.data_format, "keepdims": self.keepdims}


_GLOBAL_ARGS = """
    Args:
        data_format: `"channels_last"` (default) or `"channels_first"`.
        keepdims: keep the reduced axes with size 1.
"""


class GlobalAveragePooling1D(_GlobalPooling):
    """The mean over all steps: `(batch, steps, channels)` to `(batch, channels)`.

    Example:
        >>> jmod.layers.GlobalAveragePooling1D()(jnp.ones((2, 7, 3))).shape
        (2, 3)
    """

    __doc__ += _GLOBAL_ARGS
    rank, kind = 1, "avg"


class GlobalAveragePooling2D(_GlobalPooling):
    """The mean over height and width: `(batch, h, w, channels)` to `(batch, channels)`.

    Example:
        >>> jmod.layers.GlobalAveragePooling2D()(jnp.ones((2, 5, 5, 3))).shape
        (2, 3)
    """

    __doc__ += _GLOBAL_ARGS
    rank, kind = 2, "avg"


class GlobalMaxPooling1D(_GlobalPooling):
    """The maximum over all steps: `(batch, steps, channels)` to `(batch, channels)`.

    Example:
        >>> jmod.layers.GlobalMaxPooling1D()(jnp.ones((2, 7, 3))).shape
        (2, 3)
    """

    __doc__ += _GLOBAL_ARGS
    rank, kind = 1, "max"


class GlobalMaxPooling2D(_GlobalPooling):
    """The maximum over height and width: `(batch, h, w, channels)` to `(batch, channels)`.

    Example:
        >>> jmod.layers.GlobalMaxPooling2D(keepdims=True)(jnp.ones((2, 5, 5, 3))).shape
        (2, 1, 1, 3)
    """

    __doc__ += _GLOBAL_ARGS
    rank, kind = 2, "max"


class MaxPooling3D(_Pooling):
    """The maximum over windows of `(batch, depth, height, width, channels)` volumes.

    Example:
        >>> jmod.layers.MaxPooling3D(2)(jnp.ones((1, 4, 4, 4, 2))).shape
        (1, 2, 2, 2, 2)
    """

    __doc__ += _POOL_ARGS
    rank, kind = 3, "max"


class AveragePooling3D(_Pooling):
    """The mean over windows of `(batch, depth, height, width, channels)` volumes.

    Example:
        >>> jmod.layers.AveragePooling3D(2, padding="same")(jnp.ones((1, 3, 3, 3, 2))).shape
        (1, 2, 2, 2, 2)
    """

    __doc__ += _POOL_ARGS
    rank, kind = 3, "avg"


class GlobalAveragePooling3D(_GlobalPooling):
    """The mean over depth, height and width: `(batch, d, h, w, channels)` to `(batch, channels)`.

    Example:
        >>> jmod.layers.GlobalAveragePooling3D()(jnp.ones((2, 3, 3, 3, 4))).shape
        (2, 4)
    """

    __doc__ += _GLOBAL_ARGS
    rank, kind = 3, "avg"


class GlobalMaxPooling3D(_GlobalPooling):
    """The maximum over depth, height and width: `(batch, d, h, w, c)` to `(batch, c)`.

    Example:
        >>> jmod.layers.GlobalMaxPooling3D()(jnp.ones((2, 3, 3, 3, 4))).shape
        (2, 4)
    """

    __doc__ += _GLOBAL_ARGS
    rank, kind = 3, "max"
