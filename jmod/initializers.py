"""Initializers: callables `(shape, dtype) -> array`, as Keras names them.

Unseeded initializers draw from the global generator (`jmod.random.set_seed`
makes them reproducible); a seeded one gives the same values every call.
The values are `jax.nn.initializers`' and `jax.random`'s for the same key,
bit for bit; eager draws of any shape reuse a few compiled programs (see
`jmod._sampling`), so a new weight shape costs no compilation.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jmod import _sampling
from jmod import random as jrandom
from jmod.errors import SerializationError


class Initializer:
    """Base class: `init(shape, dtype=float32)` returns an array.

    Example:
        >>> init = jmod.initializers.get("glorot_uniform")
        >>> init((3, 2)).shape
        (3, 2)
    """

    def __call__(self, shape, dtype=jnp.float32):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _Seeded(Initializer):
    def __init__(self, seed=None):
        self.seed = seed

    def _key(self):
        if self.seed is None:
            return jrandom.next_key()
        return jrandom._seed_key(self.seed)

    def get_config(self):
        return {"seed": self.seed}


class Zeros(Initializer):
    """All zeros."""

    def __call__(self, shape, dtype=jnp.float32):
        return _sampling.filled(shape, 0, dtype)


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape, dtype=jnp.float32):
        return _sampling.filled(shape, 1, dtype)


class Constant(Initializer):
    """Every element equal to `value`."""

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=jnp.float32):
        return _sampling.filled(shape, self.value, dtype)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(_Seeded):
    """Normal with `mean` and `stddev`."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=jnp.float32):
        x = _sampling.draw("normal", self._key(), shape, dtype)
        return _sampling.finish(_sampling.scale_shift(x, self.stddev, self.mean))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    """Normal with `mean` and `stddev`, redrawn beyond two standard deviations."""

    def __call__(self, shape, dtype=jnp.float32):
        x = _sampling.draw("truncated_normal", self._key(), shape, dtype)
        return _sampling.finish(_sampling.scale_shift(x, self.stddev, self.mean))


class RandomUniform(_Seeded):
    """Uniform in [minval, maxval)."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype=jnp.float32):
        x = _sampling.draw("uniform", self._key(), shape, dtype, self.minval, self.maxval)
        return _sampling.finish(x)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(_Seeded):
    """Samples scaled to the fan in/out of the kernel (Glorot, He, LeCun are special cases)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise SerializationError(
                f"VarianceScaling mode must be fan_in/fan_out/fan_avg, got {mode!r}"
            )
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise SerializationError(
                "VarianceScaling distribution must be truncated_normal/untruncated_normal/"
                f"uniform, got {distribution!r}"
            )
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        key = self._key()
        if len(shape) < 2:
            # Vectors and scalars have no in/out axes: fan in = fan out = size (Keras).
            fan = shape[0] if shape else 1
            std = (self.scale / max(1, fan)) ** 0.5
            if self.distribution == "uniform":
                limit = 3**0.5 * std
                return _sampling.finish(_sampling.draw("uniform", key, shape, dtype, -limit, limit))
            if self.distribution == "untruncated_normal":
                x = _sampling.draw("normal", key, shape, dtype)
                return _sampling.finish(_sampling.scale_shift(x, std, None))
            # The truncated normal's stddev is 0.8796 of the untruncated one.
            x = _sampling.draw("truncated_normal", key, shape, dtype)
            return _sampling.finish(_sampling.scale_shift(x, std / 0.87962566, None))
        # jax.nn.initializers.variance_scaling(scale, mode, distribution), with the
        # scalar factor computed on the host in the dtype (the same IEEE ops).
        dtype = jnp.dtype(dtype)
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out}.get(self.mode, (fan_in + fan_out) / 2)
        variance = np.asarray(self.scale / denominator, dtype)
        if self.distribution == "truncated_normal":
            factor = np.sqrt(variance) / np.asarray(0.87962566103423978, dtype)
            x = _sampling.draw("truncated_normal", key, shape, dtype)
        elif self.distribution == "untruncated_normal":
            factor = np.sqrt(variance)
            x = _sampling.draw("normal", key, shape, dtype)
        else:
            factor = np.sqrt(np.asarray(3, dtype) * variance)
            x = _sampling.draw("uniform", key, shape, dtype, -1.0, 1.0)
        return _sampling.finish(_sampling.scale_shift(x, factor, None))

    def get_config(self):
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


def _variant(name, scale, mode, distribution, doc):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    return type(
        name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config, "__doc__": doc}
    )


GlorotUniform = _variant("GlorotUniform", 1.0, "fan_avg", "uniform", "Glorot (Xavier) uniform.")
GlorotNormal = _variant(
    "GlorotNormal", 1.0, "fan_avg", "truncated_normal", "Glorot (Xavier) normal."
)
HeUniform = _variant("HeUniform", 2.0, "fan_in", "uniform", "He uniform (for ReLU).")
HeNormal = _variant("HeNormal", 2.0, "fan_in", "truncated_normal", "He normal (for ReLU).")
LecunUniform = _variant("LecunUniform", 1.0, "fan_in", "uniform", "LeCun uniform (for SELU).")
LecunNormal = _variant("LecunNormal", 1.0, "fan_in", "truncated_normal", "LeCun normal (for SELU).")


class Orthogonal(_Seeded):
    """A (semi-)orthogonal matrix times `gain`."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape, dtype=jnp.float32):
        return _orthogonal(self._key(), tuple(int(d) for d in shape), jnp.dtype(dtype), self.gain)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _orthogonal(key, shape, dtype, gain):
    # One compiled program per shape instead of one per eager op (QR, reshape,
    # moveaxis, scale); QR has no shape-agnostic form.
    return jax.nn.initializers.orthogonal(gain)(key, shape, dtype)


ALL = {
    cls.__name__: cls
    for cls in (
        Zeros,
        Ones,
        Constant,
        RandomNormal,
        TruncatedNormal,
        RandomUniform,
        VarianceScaling,
        GlorotUniform,
        GlorotNormal,
        HeUniform,
        HeNormal,
        LecunUniform,
        LecunNormal,
        Orthogonal,
    )
}
_ALIASES = {
    "zeros": "Zeros",
    "ones": "Ones",
    "constant": "Constant",
    "random_normal": "RandomNormal",
    "normal": "RandomNormal",
    "truncated_normal": "TruncatedNormal",
    "random_uniform": "RandomUniform",
    "uniform": "RandomUniform",
    "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform",
    "xavier_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "xavier_normal": "GlorotNormal",
    "he_uniform": "HeUniform",
    "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform",
    "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal",
}


def get(identifier):
    """An initializer from a name (`"he_normal"`), a config dict, or a callable.

    Example:
        >>> jmod.initializers.get("zeros")((2,)).tolist()
        [0.0, 0.0]
    """
    if identifier is None:
        return None
    if isinstance(identifier, Initializer) or callable(identifier):
        return identifier
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name not in ALL:
            raise SerializationError(
                f"unknown initializer {identifier!r}; expected one of {sorted(_ALIASES)}"
            )
        return ALL[name]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = _ALIASES.get(identifier["class_name"], identifier["class_name"])
        if name not in ALL:
            raise SerializationError(f"unknown initializer class {identifier['class_name']!r}")
        return ALL[name].from_config(identifier.get("config", {}))
    raise SerializationError(
        f"an initializer is a name, a config dict or a callable, got {type(identifier).__name__}"
    )


def serialize(initializer):
    """`{"class_name": ..., "config": ...}` for a built-in initializer."""
    if not isinstance(initializer, Initializer):
        raise SerializationError(f"cannot serialize initializer {initializer!r}")
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
