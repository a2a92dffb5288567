"""`Dropout`: zeroes a random fraction of the inputs while training."""

import jax
import jax.numpy as jnp

from jmod import random as jrandom
from jmod.errors import SerializationError
from jmod.layers import _common as c
from jmod.layers.layer import Layer


def dropout(x, rate, key, noise_shape=None):
    """`x` with each element zeroed with probability `rate`, the rest scaled by `1/(1-rate)`.

    Elements sharing an index along the axes where `noise_shape` is 1 share
    one draw (dropping whole channels, say).

    Example:
        >>> x = jnp.ones((2, 3))
        >>> y = jmod.layers.dropout.dropout(x, 0.5, jax.random.key(0))
        >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
        True
    """
    shape = x.shape if noise_shape is None else tuple(noise_shape)
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Dropout(Layer):
    """Sets inputs to 0 with probability `rate` while training, scaling the rest by `1/(1-rate)`.

    Active only when called with `training=True` (or inside a call that got
    it); otherwise the inputs pass through unchanged. Each call draws a new
    mask, under `jmod.jit` too: the generator's key is state threaded
    through the compiled call. Without `seed` the global generator
    (`jmod.random.set_seed`) is used; with one, the layer owns a
    `jmod.random.Generator` (its key is checkpointed with the layer).

    Example:
        >>> layer = jmod.layers.Dropout(0.5, seed=0)
        >>> x = jnp.ones((2, 4))
        >>> bool((layer(x) == x).all())            # inference: unchanged
        True
        >>> y = layer(x, training=True)
        >>> bool(((y == 0) | (y == 2)).all())
        True

    Args:
        rate: the probability of dropping an element, in [0, 1).
        noise_shape: the mask's shape, broadcast against the inputs; `None`
            entries take the input's size (`(None, 1, None)` drops the same
            features at every step of a sequence).
        seed: an int for a layer-owned generator, or None for the global one.
    """

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise SerializationError(
                f"{c.where(self)}: rate must be a number in [0, 1), got {rate!r}"
            )
        if noise_shape is not None:
            noise_shape = tuple(noise_shape)
            if any(d is not None and (not isinstance(d, int) or d < 1) for d in noise_shape):
                raise SerializationError(
                    f"{c.where(self)}: noise_shape entries must be ints >= 1 or None, "
                    f"got {noise_shape!r}"
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SerializationError(f"{c.where(self)}: seed must be an int or None, got {seed!r}")
        self.rate = float(rate)
        self.noise_shape = noise_shape
        self.seed = seed
        if seed is not None:
            self.generator = jrandom.Generator(seed)

    def call(self, inputs, training=None):
        if training is None or training is False or self.rate == 0.0:
            return inputs
        noise_shape = self._noise_shape(inputs.shape)
        key = jrandom.next_key(self.__dict__.get("generator"))
        dropped = dropout(inputs, self.rate, key, noise_shape)
        if training is True:
            return dropped
        # A traced or array-valued flag: choose inside the computation.
        return jnp.where(training, dropped, inputs)

    def _noise_shape(self, shape):
        if self.noise_shape is None:
            return None
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"noise_shape {self.noise_shape} has rank {len(self.noise_shape)}, "
                f"the inputs have shape {tuple(shape)}"
            )
        return tuple(s if d is None else d for d, s in zip(self.noise_shape, shape))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **c.base_config(self),
            "rate": self.rate,
            "noise_shape": list(self.noise_shape) if self.noise_shape is not None else None,
            "seed": self.seed,
        }
