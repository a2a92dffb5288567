"""Weight regularizers: callables `(weights) -> scalar` added to a layer's `losses`.

Example:
    >>> reg = jmod.regularizers.get({"class_name": "L2", "config": {"l2": 0.5}})
    >>> float(reg(jnp.array([1.0, 2.0])))
    2.5
"""

import jax.numpy as jnp

from jmod import _named_objects
from jmod.errors import SerializationError


class Regularizer:
    """Base class: `reg(x)` returns a scalar penalty; configs rebuild it."""

    def __call__(self, x):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """`l1 * sum(|x|) + l2 * sum(x**2)`."""

    def __init__(self, l1=0.0, l2=0.0):
        for label, value in (("l1", l1), ("l2", l2)):
            if not isinstance(value, (int, float)) or value < 0:
                raise SerializationError(
                    f"{type(self).__name__}: {label} must be a number >= 0, got {value!r}"
                )
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, x):
        x = jnp.asarray(x, jnp.float32)
        out = jnp.zeros((), jnp.float32)
        if self.l1:
            out = out + self.l1 * jnp.sum(jnp.abs(x))
        if self.l2:
            out = out + self.l2 * jnp.sum(jnp.square(x))
        return out

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """`l1 * sum(|x|)` (Keras' default factor 0.01)."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """`l2 * sum(x**2)` (Keras' default factor 0.01)."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


ALL = {cls.__name__: cls for cls in (L1, L2, L1L2)}
_ALIASES = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2"}


def get(identifier):
    """A regularizer from `None`, a name (`"l2"`), a config dict or a callable.

    Raises:
        SerializationError: for an unknown name or a value of another type.
    """
    return _named_objects.get(identifier, Regularizer, ALL, _ALIASES, "regularizer")


def serialize(regularizer):
    """`None`, or `{"class_name": ..., "config": ...}` for a built-in or registered regularizer.

    Raises:
        SerializationError: for a plain callable, which a config could not name.
    """
    return _named_objects.serialize(regularizer, ALL, "regularizer")
