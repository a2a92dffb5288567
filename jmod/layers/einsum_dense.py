"""`EinsumDense`: a dense layer written as an einsum equation (Keras' kernel and bias shapes)."""

import re

import jax.numpy as jnp

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer


def analyze_equation(equation, bias_axes, input_shape, output_shape):
    """`(kernel_shape, bias_shape or None, full_output_shape)` as Keras derives them.

    `output_shape` excludes the batch axis (and the axes an ellipsis stands for).

    Example:
        >>> jmod.layers.einsum_dense.analyze_equation("ab,bc->ac", "c", (None, 4), (3,))
        ((4, 3), (3,), (None, 3))
    """
    dotted = re.sub(r"\.\.\.", "0", equation)
    left = False
    split = re.fullmatch(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)", dotted)
    if split is None:
        split = re.fullmatch(r"0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)", dotted)
        left = split is not None
    if split is None:
        split = re.fullmatch(r"([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0", dotted)
    if split is None:
        raise ValueError(
            f"equation {equation!r} is not of the form 'ab,bc->ac' (an ellipsis may lead or trail)"
        )
    in_spec, w_spec, out_spec = split.groups()
    input_shape = list(input_shape)
    elided = len(input_shape) - len(in_spec)
    out = [output_shape] if isinstance(output_shape, int) else list(output_shape)
    out.insert(0, input_shape[0])
    if elided > 0 and left:
        for i in range(1, elided):
            out.insert(1, input_shape[i])
    elif elided > 0:
        out.extend(input_shape[len(input_shape) - elided :])
    if left:
        in_map = {d: i + elided - len(input_shape) for i, d in enumerate(in_spec)}
        out_map = {d: i + elided - len(out) for i, d in enumerate(out_spec)}
    else:
        in_map = {d: i for i, d in enumerate(in_spec)}
        out_map = {d: i for i, d in enumerate(out_spec)}
    for d in in_spec:
        if (
            d in out_map
            and out[out_map[d]] is not None
            and out[out_map[d]] != input_shape[in_map[d]]
        ):
            raise ValueError(
                f"output_shape gives axis {d!r} size {out[out_map[d]]}, the inputs have "
                f"{input_shape[in_map[d]]}"
            )
    for d in out_spec:  # a None in output_shape takes the inputs' size of that axis
        if d in in_map and out[out_map[d]] is None:
            out[out_map[d]] = input_shape[in_map[d]]
    kernel = []
    for d in w_spec:
        if d in in_map:
            kernel.append(input_shape[in_map[d]])
        elif d in out_map:
            kernel.append(out[out_map[d]])
        else:
            raise ValueError(f"kernel axis {d!r} of {equation!r} is in neither input nor output")
    bias = None
    if bias_axes:
        for d in bias_axes:
            if d not in out_spec:
                raise ValueError(f"bias axis {d!r} is not an output axis of {equation!r}")
        first = min(out_spec.find(d) for d in bias_axes)
        bias = [out[out_map[d]] if d in bias_axes else 1 for d in out_spec[first:]]
        if not left:
            bias += [1] * elided
    return tuple(kernel), None if bias is None else tuple(bias), tuple(out)


class EinsumDense(Layer):
    """`activation(einsum(equation, inputs, kernel) + bias)`, the kernel shaped by the equation.

    Example:
        >>> layer = jmod.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4),
        ...                                 bias_axes="de")
        >>> layer(jnp.ones((3, 5, 6))).shape, layer.kernel.shape, layer.bias.shape
        ((3, 5, 2, 4), (6, 2, 4), (2, 4))

    Args:
        equation: e.g. `"ab,bc->ac"` (a Dense), `"...b,bc->...c"`, `"abc,cde->abde"`.
        output_shape: the output's shape without the batch axis (None for an
            axis taken from the inputs); an int for one axis.
        activation: a name or callable; None for linear.
        bias_axes: the output axes (letters) the bias spans; None for no bias.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: as `Dense`.
    """

    def __init__(
        self,
        equation,
        output_shape,
        activation=None,
        bias_axes=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(equation, str):
            raise SerializationError(f"{c.where(self)}: equation must be a str, got {equation!r}")
        if lora_rank is not None:
            raise SerializationError(f"{c.where(self)}: lora_rank is not supported")
        self.equation = equation
        if isinstance(output_shape, int) and not isinstance(output_shape, bool):
            output_shape = (output_shape,)
        self.partial_output_shape = tuple(output_shape)
        self.activation = c.activation(self, activation)
        self.bias_axes = bias_axes
        c.set_weight_options(
            self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint
        )
        c.set_weight_options(self, "bias", bias_initializer, bias_regularizer, bias_constraint)

    def build(self, input_shape):
        kernel, bias, out = analyze_equation(
            self.equation, self.bias_axes, input_shape, self.partial_output_shape
        )
        self.full_output_shape = out
        c.add_option_weight(self, "kernel", kernel)
        if bias is not None:
            c.add_option_weight(self, "bias", bias)

    def call(self, inputs):
        out = jnp.einsum(self.equation, inputs, self._cast(self.kernel))
        if "bias" in self.__dict__:
            out = out + self._cast(self.bias)
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        return analyze_equation(
            self.equation, self.bias_axes, input_shape, self.partial_output_shape
        )[2]

    def get_config(self):
        return {
            **c.base_config(self),
            "equation": self.equation,
            "output_shape": list(self.partial_output_shape),
            "activation": c.serialize_activation(self, self.activation),
            "bias_axes": self.bias_axes,
            **c.weight_options_config(self, "kernel", "bias"),
        }
