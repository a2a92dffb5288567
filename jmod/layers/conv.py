"""`Conv1D` and `Conv2D`: convolutions over `jax.lax.conv_general_dilated`."""

import jax
import jax.numpy as jnp

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import InputSpec, Layer

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


class _Conv(Layer):
    """A `rank`-D convolution; `Conv1D` and `Conv2D` fix the rank."""

    rank: int | None = None
    _paddings: tuple[str, ...] = ("valid", "same")

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        rank = self.rank
        self.kernel_constraint = c.constraint(self, "kernel_constraint", kernel_constraint)
        self.bias_constraint = c.constraint(self, "bias_constraint", bias_constraint)
        self.filters = c.check_int(self, "filters", filters)
        self.kernel_size = c.int_tuple(self, "kernel_size", kernel_size, rank)
        self.strides = c.int_tuple(self, "strides", strides, rank)
        self.padding = c.check_choice(self, "padding", padding, self._paddings)
        self.data_format = c.check_choice(
            self, "data_format", data_format or "channels_last", ("channels_last", "channels_first")
        )
        self.dilation_rate = c.int_tuple(self, "dilation_rate", dilation_rate, rank)
        self.groups = c.check_int(self, "groups", groups)
        if self.filters % self.groups:
            raise SerializationError(
                f"{c.where(self)}: filters ({self.filters}) must be divisible by groups "
                f"({self.groups})"
            )
        self.activation = c.activation(self, activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = c.initializer(self, "kernel_initializer", kernel_initializer)
        self.bias_initializer = c.initializer(self, "bias_initializer", bias_initializer)
        self.kernel_regularizer = c.regularizer(self, "kernel_regularizer", kernel_regularizer)
        self.bias_regularizer = c.regularizer(self, "bias_regularizer", bias_regularizer)
        self.input_spec = InputSpec(ndim=rank + 2)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"the channel dimension of the inputs must be known, got {input_shape}"
            )
        if channels % self.groups:
            raise ValueError(
                f"the inputs' {channels} channels are not divisible by groups={self.groups}"
            )
        self.add_weight(
            "kernel",
            (*self.kernel_size, channels // self.groups, self.filters),
            self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.add_weight(
                "bias",
                (self.filters,),
                self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={self._channel_axis: channels})

    def call(self, inputs):
        spatial = _SPATIAL[self.rank]
        io = "N" + spatial + "C" if self.data_format == "channels_last" else "NC" + spatial
        if self.padding == "causal":
            # Left padding only: step t sees inputs up to t, never later ones.
            padding = [((self.kernel_size[0] - 1) * self.dilation_rate[0], 0)]
        else:
            padding = self.padding.upper()
        out = jax.lax.conv_general_dilated(
            inputs,
            self._cast(self.kernel),
            window_strides=self.strides,
            padding=padding,
            rhs_dilation=self.dilation_rate,
            dimension_numbers=(io, spatial + "IO", io),
            feature_group_count=self.groups,
        )
        if self.use_bias:
            bias = self._cast(self.bias)
            if self.data_format == "channels_first":
                bias = jnp.reshape(bias, (self.filters,) + (1,) * self.rank)
            out = out + bias
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            sizes = input_shape[1:-1]
        else:
            sizes = input_shape[2:]
        out = tuple(
            c.window_output_length(n, k, s, self.padding, d)
            for n, k, s, d in zip(sizes, self.kernel_size, self.strides, self.dilation_rate)
        )
        if self.data_format == "channels_last":
            return (input_shape[0], *out, self.filters)
        return (input_shape[0], self.filters, *out)

    def get_config(self):
        return {
            **c.base_config(self),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "groups": self.groups,
            "activation": c.serialize_activation(self, self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": c.serialize_initializer(
                self, "kernel_initializer", self.kernel_initializer
            ),
            "bias_initializer": c.serialize_initializer(
                self, "bias_initializer", self.bias_initializer
            ),
            "kernel_regularizer": c.serialize_regularizer(
                self, "kernel_regularizer", self.kernel_regularizer
            ),
            "bias_regularizer": c.serialize_regularizer(
                self, "bias_regularizer", self.bias_regularizer
            ),
            "kernel_constraint": c.serialize_constraint(
                self, "kernel_constraint", self.kernel_constraint
            ),
            "bias_constraint": c.serialize_constraint(
                self, "bias_constraint", self.bias_constraint
            ),
        }


class Conv1D(_Conv):
    """1-D convolution over `(batch, steps, channels)` inputs (temporal convolution).

    `padding="causal"` pads on the left only, so output step `t` depends on
    input steps up to `t` (WaveNet-style).

    Example:
        >>> layer = jmod.layers.Conv1D(4, 3, padding="same")
        >>> layer(jnp.ones((2, 10, 3))).shape
        (2, 10, 4)
        >>> layer.kernel.shape          # (width, in channels, filters)
        (3, 3, 4)

    Args:
        filters: the number of output channels.
        kernel_size: the window width, an int.
        strides: the step between windows.
        padding: `"valid"` (no padding), `"same"` (output length
            `ceil(steps / strides)`) or `"causal"`.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: the spacing between kernel taps.
        groups: split the channels into this many independent groups.
        activation: a name or callable applied to the output; None for linear.
        use_bias: whether to add a bias per filter.
        kernel_initializer, bias_initializer: initializers of the weights.
        kernel_regularizer, bias_regularizer: penalties added to `losses`.
        kernel_constraint, bias_constraint: applied after each optimizer update.
    """

    rank = 1
    _paddings = ("valid", "same", "causal")


class Conv2D(_Conv):
    """2-D convolution over `(batch, height, width, channels)` images.

    The kernel has shape `(kh, kw, in_channels // groups, filters)`, as in Keras.

    Example:
        >>> layer = jmod.layers.Conv2D(8, (3, 3), strides=2, padding="same", activation="relu")
        >>> layer(jnp.ones((1, 28, 28, 1))).shape
        (1, 14, 14, 8)

    Args:
        filters: the number of output channels.
        kernel_size: the window size, an int or `(height, width)`.
        strides: the step between windows, an int or a pair.
        padding: `"valid"` (no padding) or `"same"` (output size
            `ceil(size / strides)`).
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: the spacing between kernel taps, an int or a pair.
        groups: split the channels into this many independent groups.
        activation: a name or callable applied to the output; None for linear.
        use_bias: whether to add a bias per filter.
        kernel_initializer, bias_initializer: initializers of the weights.
        kernel_regularizer, bias_regularizer: penalties added to `losses`.
        kernel_constraint, bias_constraint: applied after each optimizer update.
    """

    rank = 2


class Conv3D(_Conv):
    """3-D convolution over `(batch, depth, height, width, channels)` volumes.

    The kernel has shape `(kd, kh, kw, in_channels // groups, filters)`.

    Example:
        >>> layer = jmod.layers.Conv3D(2, 3, padding="same")
        >>> layer(jnp.ones((1, 4, 4, 4, 1))).shape
        (1, 4, 4, 4, 2)

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        groups, activation, use_bias, initializers, regularizers, constraints:
        as `Conv2D`, with three spatial axes.
    """

    rank = 3
