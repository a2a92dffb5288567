"""Layer wrappers: `TimeDistributed` (a layer per step), `Bidirectional` (an RNN both ways)."""

import jax
import jax.numpy as jnp

from jmod import saving
from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer


def _build_inner(layer, shape):
    # Inner layers are built from the outer build's shape (unknown sizes as 1), so
    # their variables exist before any traced call.
    if not layer.built:
        concrete = tuple(1 if d is None else d for d in shape)
        layer._maybe_build(jax.ShapeDtypeStruct(concrete, jnp.float32))


def _layer_arg(owner, value, label="layer"):
    if isinstance(value, dict):
        if str(value.get("module", "")).startswith("keras"):
            value = {k: v for k, v in value.items() if k != "module"}  # a Keras 3 config
        value = saving.deserialize(value)
    if not isinstance(value, Layer):
        raise SerializationError(
            f"{c.where(owner)}: {label} must be a jmod layer, got {type(value).__name__}"
        )
    return value


class TimeDistributed(Layer):
    """Applies `layer` to every step of `(batch, steps, ...)` inputs (one call on batch*steps).

    Example:
        >>> layer = jmod.layers.TimeDistributed(jmod.layers.Dense(2))
        >>> layer(jnp.ones((4, 5, 3))).shape
        (4, 5, 2)

    Args:
        layer: the layer applied at each step; its weights are shared by all steps.
    """

    supports_masking = True

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = _layer_arg(self, layer)

    def build(self, input_shape):
        if len(input_shape) >= 3:
            _build_inner(self.layer, (None, *tuple(input_shape)[2:]))

    def call(self, inputs, training=None, mask=None):
        if inputs.ndim < 3:
            raise ValueError(
                f"expected inputs of rank >= 3 (batch, steps, ...), got {inputs.shape}"
            )
        batch, steps = inputs.shape[:2]
        flat = jnp.reshape(inputs, (batch * steps, *inputs.shape[2:]))
        out = self.layer(flat, training=training)
        return jnp.reshape(out, (batch, steps, *out.shape[1:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None, *tuple(input_shape)[2:]))
        return (input_shape[0], input_shape[1], *inner[1:])

    def get_config(self):
        return {**c.base_config(self), "layer": saving.serialize(self.layer)}


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy backwards, and merges their outputs.

    The backward copy is made from `layer`'s config with `go_backwards`
    flipped (or is `backward_layer`); with `return_sequences` its output is
    reversed back into step order before merging. Weights: the forward
    layer's, then the backward one's (Keras' order).

    Example:
        >>> layer = jmod.layers.Bidirectional(jmod.layers.LSTM(3, return_sequences=True))
        >>> layer(jnp.ones((2, 5, 4))).shape
        (2, 5, 6)

    Args:
        layer: an RNN layer (`LSTM`, `GRU`, `SimpleRNN`, `RNN`).
        merge_mode: `"concat"` (default), `"sum"`, `"mul"`, `"ave"` or None
            (a list of the two outputs).
        backward_layer: the layer for the backward direction; by default a copy.

    Call arguments:
        inputs, mask, training: passed to both layers.
    """

    supports_masking = True
    _modes = ("concat", "sum", "mul", "ave")

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        layer = _layer_arg(self, layer)
        if not hasattr(layer, "return_sequences") or not hasattr(layer, "go_backwards"):
            raise SerializationError(
                f"{c.where(self)}: layer must be a recurrent layer, got {type(layer).__name__}"
            )
        if merge_mode is not None:
            merge_mode = c.check_choice(self, "merge_mode", merge_mode, self._modes)
        self.merge_mode = merge_mode
        config = layer.get_config()
        config["name"] = "forward_" + layer.name
        self.forward_layer = type(layer).from_config(config)
        if backward_layer is None:
            config = layer.get_config()
            config["name"] = "backward_" + layer.name
            config["go_backwards"] = not layer.go_backwards
            backward_layer = type(layer).from_config(config)
        else:
            backward_layer = _layer_arg(self, backward_layer, "backward_layer")
        self.backward_layer = backward_layer
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    def build(self, input_shape):
        _build_inner(self.forward_layer, input_shape)
        _build_inner(self.backward_layer, input_shape)

    def call(self, inputs, mask=None, training=None):
        kw = {"training": training}
        if mask is not None:
            kw["mask"] = mask
        fwd = self.forward_layer(inputs, **kw)
        bwd = self.backward_layer(inputs, **kw)
        states = ()
        if self.return_state:
            fwd, *f_states = fwd
            bwd, *b_states = bwd
            states = (*f_states, *b_states)
        if self.return_sequences:
            bwd = jnp.flip(bwd, axis=1)
        if self.merge_mode == "concat":
            out = jnp.concatenate([fwd, bwd], axis=-1)
        elif self.merge_mode == "sum":
            out = fwd + bwd
        elif self.merge_mode == "mul":
            out = fwd * bwd
        elif self.merge_mode == "ave":
            out = (fwd + bwd) / 2
        else:
            out = [fwd, bwd]
        if self.return_state:
            return (*out, *states) if isinstance(out, list) else (out, *states)
        return out

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def get_config(self):
        layer = saving.serialize(self.forward_layer)
        layer["config"]["name"] = layer["config"]["name"].removeprefix("forward_")
        return {
            **c.base_config(self),
            "layer": layer,
            "merge_mode": self.merge_mode,
            "backward_layer": saving.serialize(self.backward_layer),
        }
