"""Transposed, depthwise and separable convolutions, with Keras' kernel layouts and lengths."""

import jax
import jax.numpy as jnp

from jmod.layers import _common as c
from jmod.layers.conv import _SPATIAL, _Conv
from jmod.layers.layer import InputSpec


def transpose_padding(kernel, stride, dilation, padding, output_padding):
    """Keras' `(left, right)` padding of `jax.lax.conv_transpose` for one spatial axis.

    Example:
        >>> jmod.layers.conv_transpose.transpose_padding(3, 2, 1, "same", None)
        (2, 1)
    """
    kernel = (kernel - 1) * dilation + 1
    if padding == "valid":
        extra = max(kernel, stride) - kernel if output_padding is None else output_padding
        return kernel - 1, kernel - 1 + extra
    if output_padding is None:
        total = stride + kernel - 2
    else:
        total = kernel + kernel % 2 - 2 + output_padding
    left = min(total // 2 + total % 2, kernel - 1)
    return left, total - left


def transpose_length(size, kernel, stride, dilation, padding, output_padding):
    """The output length of a transposed convolution axis (Keras' rule; None stays None).

    Example:
        >>> jmod.layers.conv_transpose.transpose_length(5, 3, 2, 1, "valid", None)
        11
    """
    if size is None:
        return None
    kernel = (kernel - 1) * dilation + 1
    if output_padding is None:
        if padding == "valid":
            return size * stride + max(kernel - stride, 0)
        return size * stride
    pad = kernel // 2 if padding == "same" else 0
    return (size - 1) * stride + kernel - 2 * pad + output_padding


class _ConvTranspose(_Conv):
    """A transposed convolution: kernel `(*kernel_size, filters, in_channels)` as in Keras."""

    def __init__(self, filters, kernel_size, output_padding=None, **kwargs):
        kwargs.pop("groups", None)
        super().__init__(filters, kernel_size, **kwargs)
        self.output_padding = (
            None
            if output_padding is None
            else c.int_tuple(self, "output_padding", output_padding, self.rank, minimum=0)
        )

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"the channel dimension of the inputs must be known, got {input_shape}"
            )
        self.add_weight(
            "kernel",
            (*self.kernel_size, self.filters, channels),
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

    def _pads(self):
        op = self.output_padding or (None,) * self.rank
        return [
            transpose_padding(k, s, d, self.padding, o)
            for k, s, d, o in zip(self.kernel_size, self.strides, self.dilation_rate, op)
        ]

    def call(self, inputs):
        spatial = _SPATIAL[self.rank]
        io = "N" + spatial + "C" if self.data_format == "channels_last" else "NC" + spatial
        out = jax.lax.conv_transpose(
            inputs,
            self._cast(self.kernel),
            self.strides,
            self._pads(),
            rhs_dilation=self.dilation_rate,
            dimension_numbers=(io, spatial + "IO", io),
            transpose_kernel=True,
        )
        if self.use_bias:
            bias = self._cast(self.bias)
            if self.data_format == "channels_first":
                bias = jnp.reshape(bias, (self.filters,) + (1,) * self.rank)
            out = out + bias
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        last = self.data_format == "channels_last"
        sizes = shape[1:-1] if last else shape[2:]
        op = self.output_padding or (None,) * self.rank
        out = tuple(
            transpose_length(n, k, s, d, self.padding, o)
            for n, k, s, d, o in zip(sizes, self.kernel_size, self.strides, self.dilation_rate, op)
        )
        return (shape[0], *out, self.filters) if last else (shape[0], self.filters, *out)

    def get_config(self):
        config = super().get_config()
        config.pop("groups")
        config["output_padding"] = list(self.output_padding) if self.output_padding else None
        return config


_TRANSPOSE_ARGS = """
    Args:
        filters: the number of output channels.
        kernel_size, strides, dilation_rate: an int or one per spatial axis.
        padding: `"valid"` or `"same"` (output size `size * strides`).
        output_padding: extra size added on one side of each axis (< strides), or None.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        activation, use_bias, initializers, regularizers, constraints: as `Conv2D`.
"""


class Conv1DTranspose(_ConvTranspose):
    """The transpose of `Conv1D` (a "deconvolution"): upsamples `(batch, steps, channels)`.

    Example:
        >>> layer = jmod.layers.Conv1DTranspose(4, 3, strides=2, padding="same")
        >>> layer(jnp.ones((2, 5, 3))).shape, layer.kernel.shape
        ((2, 10, 4), (3, 4, 3))
    """

    __doc__ += _TRANSPOSE_ARGS
    rank = 1


class Conv2DTranspose(_ConvTranspose):
    """The transpose of `Conv2D`: upsamples `(batch, height, width, channels)` images.

    Example:
        >>> layer = jmod.layers.Conv2DTranspose(2, 3, strides=2)
        >>> layer(jnp.ones((1, 4, 4, 3))).shape
        (1, 9, 9, 2)
    """

    __doc__ += _TRANSPOSE_ARGS
    rank = 2


class DepthwiseConv2D(_Conv):
    """Convolves each input channel with its own `depth_multiplier` filters.

    The kernel has Keras' shape `(kh, kw, in_channels, depth_multiplier)`;
    output channel `c * depth_multiplier + m` is channel `c`'s filter `m`.

    Example:
        >>> layer = jmod.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
        >>> layer(jnp.ones((1, 5, 5, 3))).shape, layer.kernel.shape
        ((1, 5, 5, 6), (3, 3, 3, 2))

    Args:
        kernel_size, strides, padding, data_format, dilation_rate: as `Conv2D`.
        depth_multiplier: filters per input channel.
        activation, use_bias: as `Conv2D`.
        depthwise_initializer, bias_initializer: initializers.
        depthwise_regularizer, bias_regularizer: penalties added to `losses`.
        depthwise_constraint, bias_constraint: applied after each update.
    """

    rank = 2

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(
            1,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=depthwise_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.depth_multiplier = c.check_int(self, "depth_multiplier", depth_multiplier)

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"the channel dimension of the inputs must be known, got {input_shape}"
            )
        self.filters = channels * self.depth_multiplier
        self.add_weight(
            "kernel",
            (*self.kernel_size, channels, self.depth_multiplier),
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
        self.groups = channels
        self.input_spec = InputSpec(ndim=4, axes={self._channel_axis: channels})

    def call(self, inputs):
        kernel = self.kernel.value
        kh, kw, cin, dm = kernel.shape
        # (kh, kw, in, mult) -> (kh, kw, 1, in * mult): one group per input channel.
        grouped = jnp.reshape(kernel, (kh, kw, 1, cin * dm))
        return self._grouped_conv(inputs, grouped)

    def _grouped_conv(self, inputs, kernel):
        io = "NHWC" if self.data_format == "channels_last" else "NCHW"
        out = jax.lax.conv_general_dilated(
            inputs,
            self._cast(kernel),
            window_strides=self.strides,
            padding=self.padding.upper(),
            rhs_dilation=self.dilation_rate,
            dimension_numbers=(io, "HWIO", io),
            feature_group_count=inputs.shape[self._channel_axis],
        )
        if self.use_bias:
            bias = self._cast(self.bias)
            if self.data_format == "channels_first":
                bias = jnp.reshape(bias, (-1, 1, 1))
            out = out + bias
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.filters = input_shape[self._channel_axis] * self.depth_multiplier
        return super().compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        for key in ("filters", "groups"):
            config.pop(key)
        for old in ("initializer", "regularizer", "constraint"):
            config[f"depthwise_{old}"] = config.pop(f"kernel_{old}")
        config["depth_multiplier"] = self.depth_multiplier
        return config


class SeparableConv2D(DepthwiseConv2D):
    """A depthwise convolution followed by a 1x1 (pointwise) convolution to `filters` channels.

    Weights, as Keras: `depthwise_kernel (kh, kw, in, depth_multiplier)`,
    `pointwise_kernel (1, 1, in * depth_multiplier, filters)`, `bias (filters,)`.

    Example:
        >>> layer = jmod.layers.SeparableConv2D(4, 3)
        >>> layer(jnp.ones((1, 5, 5, 3))).shape, layer.pointwise_kernel.shape
        ((1, 3, 3, 4), (1, 1, 3, 4))

    Args:
        filters: the number of output channels.
        kernel_size, strides, padding, data_format, dilation_rate,
        depth_multiplier, activation, use_bias: as `DepthwiseConv2D`.
        depthwise_*, pointwise_*, bias_*: initializer, regularizer and
            constraint of each weight.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        pointwise_initializer="glorot_uniform",
        pointwise_regularizer=None,
        pointwise_constraint=None,
        **kwargs,
    ):
        super().__init__(kernel_size, **kwargs)
        self.separable_filters = c.check_int(self, "filters", filters)
        c.set_weight_options(
            self, "pointwise", pointwise_initializer, pointwise_regularizer, pointwise_constraint
        )

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"the channel dimension of the inputs must be known, got {input_shape}"
            )
        self.add_weight(
            "depthwise_kernel",
            (*self.kernel_size, channels, self.depth_multiplier),
            self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.add_weight(
            "pointwise_kernel",
            (1, 1, channels * self.depth_multiplier, self.separable_filters),
            self.pointwise_initializer,
            regularizer=self.pointwise_regularizer,
            constraint=self.pointwise_constraint,
        )
        if self.use_bias:
            self.add_weight(
                "bias",
                (self.separable_filters,),
                self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.filters = self.separable_filters
        self.groups = channels
        self.input_spec = InputSpec(ndim=4, axes={self._channel_axis: channels})

    def call(self, inputs):
        kernel = self.depthwise_kernel.value
        kh, kw, cin, dm = kernel.shape
        io = "NHWC" if self.data_format == "channels_last" else "NCHW"
        depthwise = jax.lax.conv_general_dilated(
            inputs,
            self._cast(jnp.reshape(kernel, (kh, kw, 1, cin * dm))),
            window_strides=self.strides,
            padding=self.padding.upper(),
            rhs_dilation=self.dilation_rate,
            dimension_numbers=(io, "HWIO", io),
            feature_group_count=cin,
        )
        out = jax.lax.conv_general_dilated(
            depthwise,
            self._cast(self.pointwise_kernel),
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=(io, "HWIO", io),
        )
        if self.use_bias:
            bias = self._cast(self.bias)
            if self.data_format == "channels_first":
                bias = jnp.reshape(bias, (-1, 1, 1))
            out = out + bias
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        self.filters = self.separable_filters
        return _Conv.compute_output_shape(self, input_shape)

    def get_config(self):
        config = super().get_config()
        config["filters"] = self.separable_filters
        config.update(c.weight_options_config(self, "pointwise"))
        return config
