"""Random numbers whose key is state: `Generator`, and a seeded global one.

A generator's key is a `jmod.Variable`, so under `jmod.jit` it is threaded
through the compiled computation like any other state: each call draws
fresh numbers, and a seeded program draws the same ones every run.
Outside a trace, a draw of a new shape compiles nothing: the values are
`jax.random`'s, drawn in chunks by one program per distribution and dtype
(`jmod._sampling`).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from jmod import _sampling, _scope
from jmod.module import Module
from jmod.variables import Variable


def _key_data(seed):
    # threefry2x32's key for a seed in [0, 2**32) is [0, seed]: made on the host,
    # it costs no compilation (jax.random.key compiles two programs).
    if (
        isinstance(seed, int)
        and 0 <= seed < 2**32
        and jax.config.jax_default_prng_impl == "threefry2x32"
        and _sampling.eager()
    ):
        return jax.device_put(np.array([0, seed], np.uint32))
    return jax.random.key_data(jax.random.key(seed))


def _seed_key(seed):
    """`jax.random.key(seed)`."""
    return jax.random.wrap_key_data(_key_data(seed))


@jax.jit
def _split(data):
    # Split and unstack in one program (eagerly they are two).
    key, sub = jax.random.split(jax.random.wrap_key_data(data))
    return jax.random.key_data(key), sub


class Generator(Module):
    """A stream of random keys, seeded once; its key is checkpointed state.

    Example:
        >>> g = jmod.random.Generator(seed=0)
        >>> a, b = g.normal((2,)), g.normal((2,))
        >>> bool((a != b).any())
        True

    Args:
        seed: an int; the same seed gives the same numbers.
        name: the module name.
    """

    def __init__(self, seed=0, name=None):
        super().__init__(name=name)
        self.key = Variable(_key_data(seed), trainable=False, name="key")

    def reseed(self, seed):
        """Restarts the stream from `seed`."""
        self.key.assign(_key_data(seed))

    def next_key(self):
        """A fresh `jax.random` key; advances the stream."""
        data, sub = _split(self.key.value)
        self.key.assign(data)
        return sub

    def normal(self, shape, mean=0.0, stddev=1.0, dtype=jnp.float32):
        """Normal samples of `shape`."""
        x = _sampling.draw("normal", self.next_key(), shape, dtype)
        return _sampling.finish(_sampling.scale_shift(x, stddev, mean))

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=jnp.float32):
        """Uniform samples in [minval, maxval)."""
        if jnp.issubdtype(dtype, jnp.integer):
            return jax.random.randint(self.next_key(), tuple(shape), minval, maxval, dtype)
        x = _sampling.draw("uniform", self.next_key(), shape, dtype, minval, maxval)
        return _sampling.finish(x)

    def truncated_normal(self, shape, mean=0.0, stddev=1.0, dtype=jnp.float32):
        """Normal samples cut at two standard deviations."""
        x = _sampling.draw("truncated_normal", self.next_key(), shape, dtype)
        return _sampling.finish(_sampling.scale_shift(x, stddev, mean))

    def bernoulli(self, p, shape):
        """Booleans that are True with probability `p`."""
        return jax.random.bernoulli(self.next_key(), p, tuple(shape))


_global = None


def get_global_generator():
    """The generator that `normal`, `uniform`, initializers and Dropout use by default."""
    if _global is None:
        _make_global(None)
    return _global


def _make_global(seed):
    global _global
    # Made outside any trace (even when first asked for inside one), so its
    # key is a concrete array that compiled functions then capture.
    with _scope.outside(), jax.ensure_compile_time_eval():
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
            if jax.process_count() > 1:
                # Inside a multi-process mesh the key is placed on every process's
                # devices, which requires the same value everywhere: process 0's.
                from jax.experimental import multihost_utils

                seed = int(multihost_utils.broadcast_one_to_all(np.uint32(seed)))
        _global = Generator(seed=seed, name="global_generator")


def set_seed(seed):
    """Seeds the global generator, so the program draws the same numbers every run.

    Example:
        >>> jmod.random.set_seed(0); a = jmod.random.normal((2,))
        >>> jmod.random.set_seed(0); b = jmod.random.normal((2,))
        >>> bool((a == b).all())
        True
    """
    if _global is None:
        # Created from the seed itself, never from os.urandom first: every process
        # of a multi-process mesh then places the same key (an unseeded first key
        # differs per process, which device_put refuses).
        _make_global(int(seed))
    else:
        _global.reseed(int(seed))


def normal(shape, mean=0.0, stddev=1.0, dtype=jnp.float32, generator=None):
    """Normal samples from the global generator (or `generator`)."""
    return (generator or get_global_generator()).normal(shape, mean, stddev, dtype)


def uniform(shape, minval=0.0, maxval=1.0, dtype=jnp.float32, generator=None):
    """Uniform samples in [minval, maxval) from the global generator (or `generator`)."""
    return (generator or get_global_generator()).uniform(shape, minval, maxval, dtype)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=jnp.float32, generator=None):
    """Truncated normal samples from the global generator (or `generator`)."""
    return (generator or get_global_generator()).truncated_normal(shape, mean, stddev, dtype)


def next_key(generator=None):
    """A fresh `jax.random` key from the global generator (or `generator`)."""
    return (generator or get_global_generator()).next_key()
