"""Weight regularizers: callables `(weights) -> scalar` added to a layer's `losses`.

Example:
    >>> reg = jmod.regularizers.get({"class_name": "L2", "config": {"l2": 0.5}})
    >>> float(reg(jnp.array([1.0, 2.0])))
    2.5
"""

import jax.numpy as jnp

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
    if identifier is None or isinstance(identifier, Regularizer) or callable(identifier):
        return identifier
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name not in ALL:
            raise SerializationError(
                f"unknown regularizer {identifier!r}; expected one of {sorted(_ALIASES)}"
            )
        return ALL[name]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = _ALIASES.get(identifier["class_name"], identifier["class_name"])
        cls = ALL.get(name) or _registered(name)
        if cls is None:
            raise SerializationError(
                f"unknown regularizer class {identifier['class_name']!r}; expected one of "
                f"{sorted(ALL)} or a class registered with @jmod.saving.register_serializable()"
            )
        return cls.from_config(identifier.get("config", {}))
    raise SerializationError(
        f"a regularizer is None, a name, a config dict or a callable, got "
        f"{type(identifier).__name__}"
    )


def serialize(regularizer):
    """`None`, or `{"class_name": ..., "config": ...}` for a built-in or registered regularizer.

    Raises:
        SerializationError: for a plain callable, which a config could not name.
    """
    if regularizer is None:
        return None
    cls = type(regularizer)
    if ALL.get(cls.__name__) is cls:
        return {"class_name": cls.__name__, "config": regularizer.get_config()}
    saving = _saving()
    name = saving.get_registered_name(cls) if saving is not None else None
    if name and saving.get_registered_object(name) is cls and hasattr(cls, "get_config"):
        return {"class_name": name, "config": regularizer.get_config()}
    raise SerializationError(
        f"cannot serialize regularizer {regularizer!r:.60}: a config names built-in "
        f"regularizers ({sorted(ALL)}) or classes registered with "
        "@jmod.saving.register_serializable()"
    )


def _saving():
    # jmod.saving imports layers, which import this module: look it up late.
    try:
        from jmod import saving
    except ImportError:
        return None
    return saving


def _registered(name):
    saving = _saving()
    cls = saving.get_registered_object(name) if saving is not None else None
    return cls if hasattr(cls, "from_config") else None
