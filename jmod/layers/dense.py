"""`Dense`: `activation(inputs @ kernel + bias)`."""

import jax.numpy as jnp

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import InputSpec, Layer


class Dense(Layer):
    """A densely-connected layer: `activation(inputs @ kernel + bias)`.

    The kernel's input size is taken from the first input (`build`), so only
    the output size is given. Inputs of rank > 2 are multiplied along their
    last axis.

    Example:
        >>> layer = jmod.layers.Dense(2, activation="relu")
        >>> layer(jnp.ones((4, 3))).shape
        (4, 2)
        >>> [v.shape for v in layer.weights]   # kernel, bias: Keras' order
        [(3, 2), (2,)]

    Args:
        units: size of the output's last axis, an int >= 1.
        activation: a name (`"relu"`) or a callable; `None` for linear.
        use_bias: whether to add a bias vector.
        kernel_initializer: initializer of the `(in, units)` kernel.
        bias_initializer: initializer of the `(units,)` bias.
        kernel_regularizer: a `jmod.regularizers` name/object or callable whose
            penalty of the kernel is added to `losses`.
        bias_regularizer: the same for the bias.
        kernel_sharding: a partition spec for the kernel over the active mesh,
            e.g. `(None, "model")` for model parallelism (`jmod.distributed`).
        bias_sharding: the same for the bias.
        kernel_constraint, bias_constraint: a `jmod.constraints` name/object or
            callable applied after each optimizer update (`"max_norm"`, ...).
        lora_rank, lora_alpha: Keras config keys; only None is accepted.
    """

    supports_masking = True

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_sharding=None,
        bias_sharding=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if lora_rank is not None:
            raise SerializationError(
                f"{c.where(self)}: lora_rank is not supported, got {lora_rank}"
            )
        self.kernel_constraint = c.constraint(self, "kernel_constraint", kernel_constraint)
        self.bias_constraint = c.constraint(self, "bias_constraint", bias_constraint)
        self.units = c.check_int(self, "units", units)
        # Partition specs over the active mesh's axes (jmod.distributed).
        self.kernel_sharding = tuple(kernel_sharding) if kernel_sharding is not None else None
        self.bias_sharding = tuple(bias_sharding) if bias_sharding is not None else None
        self.activation = c.activation(self, activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = c.initializer(self, "kernel_initializer", kernel_initializer)
        self.bias_initializer = c.initializer(self, "bias_initializer", bias_initializer)
        self.kernel_regularizer = c.regularizer(self, "kernel_regularizer", kernel_regularizer)
        self.bias_regularizer = c.regularizer(self, "bias_regularizer", bias_regularizer)
        self.input_spec = InputSpec(min_ndim=2)

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"the last dimension of the inputs must be known, got {input_shape}")
        self.add_weight(
            "kernel",
            (in_dim, self.units),
            self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            sharding=self.kernel_sharding,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.add_weight(
                "bias",
                (self.units,),
                self.bias_initializer,
                regularizer=self.bias_regularizer,
                sharding=self.bias_sharding,
                constraint=self.bias_constraint,
            )
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_dim})

    def call(self, inputs):
        out = jnp.matmul(inputs, self._cast(self.kernel))
        if self.use_bias:
            out = out + self._cast(self.bias)
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self):
        return {
            **c.base_config(self),
            "units": self.units,
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
            **({"kernel_sharding": list(self.kernel_sharding)} if self.kernel_sharding else {}),
            **({"bias_sharding": list(self.bias_sharding)} if self.bias_sharding else {}),
        }
