"""`Embedding`: integer ids to dense vectors."""

import jax
import jax.numpy as jnp
import numpy as np

from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer
from jmod.variables import Variable


class Embedding(Layer):
    """Looks up row `i` of an `(input_dim, output_dim)` table for each id `i`.

    The output has the input's shape plus a last axis of `output_dim`. Ids
    outside `[0, input_dim)` are an error when called eagerly; under
    `jmod.jit` they cannot be checked and give NaN rows.

    Example:
        >>> layer = jmod.layers.Embedding(10, 4)
        >>> layer(jnp.array([[1, 2, 3]])).shape
        (1, 3, 4)
        >>> bool((layer(jnp.array([7]))[0] == layer.embeddings.value[7]).all())
        True

    Args:
        input_dim: the vocabulary size (largest id + 1).
        output_dim: the size of each vector.
        embeddings_initializer: initializer of the table (Keras' default:
            uniform in [-0.05, 0.05]).
        embeddings_regularizer: a penalty of the table added to `losses`.
        mask_zero: whether id 0 is padding; `compute_mask` then marks it False.
        embeddings_constraint: applied to the table after each optimizer update.
        lora_rank, lora_alpha: Keras config keys; only None is accepted.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        mask_zero=False,
        embeddings_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if lora_rank is not None:
            raise SerializationError(f"{c.where(self)}: lora_rank is not supported")
        self.embeddings_constraint = c.constraint(
            self, "embeddings_constraint", embeddings_constraint
        )
        self.input_dim = c.check_int(self, "input_dim", input_dim)
        self.output_dim = c.check_int(self, "output_dim", output_dim)
        self.embeddings_initializer = c.initializer(
            self, "embeddings_initializer", embeddings_initializer
        )
        self.embeddings_regularizer = c.regularizer(
            self, "embeddings_regularizer", embeddings_regularizer
        )
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape):
        self.add_weight(
            "embeddings",
            (self.input_dim, self.output_dim),
            self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint,
        )

    def call(self, inputs):
        ids = inputs
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            ids = ids.astype(jnp.int32)
        if not isinstance(ids, jax.core.Tracer):
            host = np.asarray(ids)
            if host.size and (host.min() < 0 or host.max() >= self.input_dim):
                raise ValueError(
                    f"ids must be in [0, {self.input_dim}), got values from {host.min()} "
                    f"to {host.max()}"
                )
        return jnp.take(self._cast(self.embeddings), ids, axis=0)

    def _convert_input(self, x):
        # Ids are never cast to the compute dtype: bfloat16 holds integers
        # exactly only up to 256, so id 1001 would become 1000.
        if isinstance(x, (list, tuple, int, float)):
            return jnp.asarray(x)
        return x.value if isinstance(x, Variable) else x

    def compute_mask(self, inputs, mask=None):
        """`inputs != 0` when `mask_zero`, else None."""
        if not self.mask_zero:
            return None
        return jnp.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape), self.output_dim)

    def get_config(self):
        return {
            **c.base_config(self),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": c.serialize_initializer(
                self, "embeddings_initializer", self.embeddings_initializer
            ),
            "embeddings_regularizer": c.serialize_regularizer(
                self, "embeddings_regularizer", self.embeddings_regularizer
            ),
            "mask_zero": self.mask_zero,
            "embeddings_constraint": c.serialize_constraint(
                self, "embeddings_constraint", self.embeddings_constraint
            ),
        }
