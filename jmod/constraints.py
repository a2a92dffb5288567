"""Weight constraints: callables `(weights) -> weights` applied after each optimizer update.

A layer given `kernel_constraint="max_norm"` (or an object from here)
projects its kernel back onto the constraint's set after every update
that `jmod.Optimizer` (and so `fit`) applies, as Keras does. The math and
the names are Keras 3's.

Example:
    >>> con = jmod.constraints.get({"class_name": "MaxNorm", "config": {"max_value": 1.0}})
    >>> [round(v, 4) for v in con(jnp.array([[3.0], [4.0]])).ravel().tolist()]
    [0.6, 0.8]
"""

import jax.numpy as jnp

from jmod import _named_objects
from jmod.errors import SerializationError

_EPSILON = 1e-7  # Keras' backend.epsilon()


class Constraint:
    """Base class: `con(w)` returns `w` projected onto the allowed set; configs rebuild it.

    Example:
        >>> class Clip(jmod.constraints.Constraint):
        ...     def __call__(self, w):
        ...         return jnp.clip(w, -1.0, 1.0)
        >>> Clip()(jnp.array([-3.0, 0.5])).tolist()
        [-1.0, 0.5]
    """

    def __call__(self, w):
        return w

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _number(owner, label, value, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise SerializationError(
            f"{type(owner).__name__}: {label} must be a number >= {minimum}, got {value!r}"
        )
    return float(value)


def _axis(owner, axis):
    if isinstance(axis, int) and not isinstance(axis, bool):
        return axis
    if isinstance(axis, (list, tuple)) and all(
        isinstance(a, int) and not isinstance(a, bool) for a in axis
    ):
        return list(axis)
    raise SerializationError(
        f"{type(owner).__name__}: axis must be an int or a list of ints, got {axis!r}"
    )


def _norms(w, axis):
    axis = tuple(axis) if isinstance(axis, list) else axis
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


class MaxNorm(Constraint):
    """Rescales each slice along `axis` whose L2 norm exceeds `max_value` down to it.

    With the default `axis=0` each column of a `(in, out)` kernel (the
    weights into one unit) is constrained.

    Example:
        >>> w = jmod.constraints.MaxNorm(2.0)(jnp.array([[3.0, 0.0], [4.0, 1.0]]))
        >>> [round(v, 4) for v in w.ravel().tolist()]
        [1.2, 0.0, 1.6, 1.0]
    """

    def __init__(self, max_value=2.0, axis=0):
        self.max_value = _number(self, "max_value", max_value)
        self.axis = _axis(self, axis)

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = jnp.clip(norms, 0, self.max_value)
        return w * (desired / (_EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Moves each slice's L2 norm along `axis` into `[min_value, max_value]` at `rate`.

    `rate=1` projects exactly; a smaller rate moves part of the way each update.

    Example:
        >>> w = jmod.constraints.MinMaxNorm(1.0, 2.0)(jnp.array([[0.3], [0.4]]))
        >>> [round(v, 4) for v in w.ravel().tolist()]
        [0.6, 0.8]
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = _number(self, "min_value", min_value)
        self.max_value = _number(self, "max_value", max_value)
        self.rate = _number(self, "rate", rate)
        self.axis = _axis(self, axis)
        if self.min_value > self.max_value:
            raise SerializationError(
                f"MinMaxNorm: min_value ({min_value}) must be <= max_value ({max_value})"
            )

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = self.rate * jnp.clip(norms, self.min_value, self.max_value)
        desired = desired + (1 - self.rate) * norms
        return w * (desired / (_EPSILON + norms))

    def get_config(self):
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": self.axis,
        }


class NonNeg(Constraint):
    """Sets negative weights to zero.

    Example:
        >>> jmod.constraints.NonNeg()(jnp.array([-1.0, 2.0])).tolist() == [0.0, 2.0]  # -0.0 too
        True
    """

    def __call__(self, w):
        return w * (w >= 0).astype(w.dtype)


class UnitNorm(Constraint):
    """Scales each slice along `axis` to L2 norm 1.

    Example:
        >>> jmod.constraints.UnitNorm()(jnp.array([[3.0], [4.0]])).ravel().tolist()
        [0.6000000238418579, 0.800000011920929]
    """

    def __init__(self, axis=0):
        self.axis = _axis(self, axis)

    def __call__(self, w):
        return w / (_EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


ALL = {cls.__name__: cls for cls in (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)}
_ALIASES = {
    "max_norm": "MaxNorm",
    "min_max_norm": "MinMaxNorm",
    "non_neg": "NonNeg",
    "unit_norm": "UnitNorm",
}
# Keras' function-style names.
max_norm, min_max_norm, non_neg, unit_norm = MaxNorm, MinMaxNorm, NonNeg, UnitNorm


def get(identifier):
    """A constraint from `None`, a name (`"max_norm"`), a Keras config dict or a callable.

    Example:
        >>> jmod.constraints.get("non_neg")
        NonNeg()

    Raises:
        SerializationError: for an unknown name or a value of another type.
    """
    return _named_objects.get(identifier, Constraint, ALL, _ALIASES, "constraint")


def serialize(constraint):
    """`None`, or `{"class_name": ..., "config": ...}` for a built-in or registered constraint.

    Example:
        >>> jmod.constraints.serialize(jmod.constraints.UnitNorm())
        {'class_name': 'UnitNorm', 'config': {'axis': 0}}

    Raises:
        SerializationError: for a plain callable, which a config could not name.
    """
    return _named_objects.serialize(constraint, ALL, "constraint")


def apply(module, paths=None):
    """Applies the constraints of `module`'s layers to their weights (after an update).

    `paths`, if given, limits it to those variable paths (the ones just updated).
    `jmod.Optimizer.update` calls this; call it yourself after a hand-written update.

    Example:
        >>> layer = jmod.layers.Dense(1, kernel_constraint="non_neg", kernel_initializer="ones")
        >>> _ = layer(jnp.ones((1, 2)))
        >>> layer.kernel.assign(jnp.array([[-1.0], [2.0]]))
        >>> jmod.constraints.apply(layer)
        >>> layer.kernel.value.ravel().tolist() == [0.0, 2.0]
        True
    """
    modules = [module, *getattr(module, "submodules", ())]
    pairs = [p for m in modules for p in m.__dict__.get("_jmod_constraints", ())]
    if not pairs:
        return
    if paths is not None:
        wanted = {id(v) for p, v in module.named_variables() if p in set(paths)}
        pairs = [(v, con) for v, con in pairs if id(v) in wanted]
    for var, con in pairs:
        var.assign(con(var.value).astype(var.dtype))
