"""`Activation`: applies an activation function as a layer."""

from jmod.layers import _common as c
from jmod.layers.layer import Layer


class Activation(Layer):
    """Applies `activation` elementwise (or along the last axis, for softmax).

    Example:
        >>> layer = jmod.layers.Activation("relu")
        >>> layer(jnp.array([[-1.0, 2.0]])).tolist()
        [[0.0, 2.0]]

    Args:
        activation: a name from `jmod.activations` (`"relu"`, `"gelu"`, ...) or
            a callable; `None` for the identity.
    """

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = c.activation(self, activation)

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**c.base_config(self), "activation": c.serialize_activation(self, self.activation)}
