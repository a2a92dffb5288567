"""`Variable`: a named, mutable holder of one `jax.Array`."""

import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jmod import _scope, _tracing
from jmod.errors import VariableError


def _strong(x):
    # A weak-typed value (from a Python scalar) would make the first update,
    # whose result is strongly typed, look like a new signature and retrace.
    if getattr(x, "weak_type", False):
        return jax.lax.convert_element_type(x, x.dtype)
    return x


def _as_value(value, dtype):
    if isinstance(value, Variable):
        value = value.value
    if dtype is not None:
        dtype = jnp.dtype(dtype)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) or hasattr(value, "aval"):
        return _strong(jnp.asarray(value, dtype=dtype))
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise VariableError(f"cannot make a variable from {type(value).__name__}: {e}") from e
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise VariableError(f"a variable holds numbers, got {type(value).__name__} {value!r:.60}")
    if dtype is None and arr.dtype == np.float64:
        dtype = jnp.dtype(jnp.float32) if not jax.config.jax_enable_x64 else None
    if dtype is None and arr.dtype == np.int64:
        dtype = jnp.dtype(jnp.int32) if not jax.config.jax_enable_x64 else None
    return _strong(jnp.asarray(arr, dtype=dtype))


def _describe(x):
    return f"{tuple(x.shape)} {jnp.dtype(x.dtype).name}"


class Variable:
    """A named, mutable holder of one `jax.Array`, collected by `jmod.Module`.

    It works wherever an array does (`v * x`, `jnp.matmul(x, v)`, `np.asarray(v)`)
    and is a pytree node with one leaf, so `jax.jit`, `jax.grad` and
    `jax.tree.map` see the array inside. Its shape and dtype are fixed at
    creation: `assign` refuses others.

    Example:
        >>> v = jmod.Variable(5.0, name="train_me")
        >>> v.assign(v * 2)
        >>> float(v)
        10.0

    Args:
        value: the initial value: an array, a nested list, a number.
        trainable: whether gradients and optimizers see it (settable later).
        name: a display name; checkpoints key variables by attribute path.
        dtype: the dtype to store; by default the value's (float32 for Python floats).
        sharding: a partition spec (tuple of mesh axis names or None per
            dimension) or a `jax.sharding.Sharding`; see `jmod.distributed`.
    """

    # `_own`: rebuilt by JAX from a leaf (inside `jax.jit`, `jax.tree.map`):
    # nobody's shared state, so reads and writes go straight to `_v`.
    __slots__ = ("_v", "_trainable", "name", "_own", "__weakref__")
    __array_priority__ = 100

    def __init__(
        self,
        value: Any,  # an array, or anything jnp.asarray takes
        trainable: bool = True,
        name: str | None = None,
        dtype: DTypeLike | None = None,
        sharding=None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise VariableError(f"Variable name must be a str, got {type(name).__name__}")
        value = _as_value(value, dtype)
        if sharding is not None or _tracing.placement.get() is not None:
            # jmod.distributed lays the value out over the active mesh.
            value = _tracing.place(value, sharding, name)
        self._trainable = bool(trainable)
        self.name = name
        self._own = False
        scope = _scope.current()
        if scope is None:
            self._v: Any = value  # a jax.Array (a ShapeDtypeStruct while a trace builds it)
            return
        # Created inside a computation (a deferred build under jmod.jit): the
        # scope holds the value; the object holds a concrete value only, or a
        # shape placeholder until the computation hands back the real one.
        scope.create(self, value)
        self._v = jax.ShapeDtypeStruct(value.shape, value.dtype) if _traced(value) else value

    # -- value -------------------------------------------------------------
    @property
    def _value(self):
        # The real value, for jmod internals (never a scope's).
        return self._v

    @_value.setter
    def _value(self, new):
        _scope.commit([(self, new)])

    @property
    def value(self) -> jax.Array:
        """The current value, a `jax.Array` (a tracer inside a trace)."""
        scope = _scope.current()
        return self._v if scope is None or self._own else scope.read(self)

    @value.setter
    def value(self, new: ArrayLike) -> None:
        self.assign(new)

    def assign(self, value: ArrayLike) -> None:
        """Sets the value; its shape and dtype must match the variable's.

        Python numbers, lists and NumPy arrays are cast to the variable's
        dtype; a JAX array of another dtype is an error, as in TensorFlow.
        Inside a computation the new value is the computation's until it
        ends; outside, other threads see it at once.
        """
        self._store(self._checked(value))

    def _store(self, new):
        if self._own:
            self._v = new
        else:
            _scope.write(self, new)

    def _checked(self, value):
        """`value` as this variable's new value (converted, shape and dtype checked)."""
        old = self._v
        if isinstance(value, Variable):
            value = value.value
        if isinstance(value, jax.Array) or hasattr(value, "aval"):
            if value.dtype != old.dtype:
                raise VariableError(
                    f"variable {self._label()}: cannot assign a value of dtype "
                    f"{jnp.dtype(value.dtype).name}, the variable is {_describe(old)}"
                )
            new = _strong(value)
        else:
            try:
                new = _strong(jnp.asarray(np.asarray(value), dtype=old.dtype))
            except (TypeError, ValueError) as e:
                raise VariableError(
                    f"variable {self._label()}: cannot assign {type(value).__name__}: {e}"
                ) from e
        if new.shape != old.shape:
            raise VariableError(
                f"variable {self._label()}: cannot assign a value of shape "
                f"{tuple(new.shape)}, the variable is {_describe(old)}"
            )
        return new

    def assign_add(self, delta: ArrayLike) -> None:
        """Adds `delta` to the value in place (same shape and dtype rules as `assign`)."""
        self.assign(self.value + jnp.asarray(delta, dtype=self.dtype))

    def assign_sub(self, delta: ArrayLike) -> None:
        """Subtracts `delta` from the value in place."""
        self.assign(self.value - jnp.asarray(delta, dtype=self.dtype))

    def numpy(self) -> np.ndarray:
        """The value as a NumPy array (a copy)."""
        return np.asarray(self.value)

    # -- metadata ----------------------------------------------------------
    @property
    def trainable(self) -> bool:
        """Whether gradients and optimizers update this variable; settable (freezing)."""
        return self._trainable

    @trainable.setter
    def trainable(self, flag: bool) -> None:
        flag = bool(flag)
        if flag != self._trainable:
            self._trainable = flag
            # Compiled train steps decided what to differentiate at trace time.
            _tracing.bump()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._v.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._v.dtype

    @property
    def sharding(self):
        return getattr(self._v, "sharding", None)

    @property
    def ndim(self):
        return len(self._v.shape)

    @property
    def size(self):
        return math.prod(self._v.shape)

    @property
    def T(self):
        return self.value.T

    def _label(self):
        return repr(self.name) if self.name else "(unnamed)"

    def __repr__(self):
        val = self.value
        head = f"Variable {self._label()} shape={self.shape} dtype={jnp.dtype(val.dtype).name}"
        if not self._trainable:
            head += " trainable=False"
        if _traced(val):
            return f"<{head} (traced)>"
        if isinstance(val, jax.ShapeDtypeStruct):
            return f"<{head} (being built)>"
        body = np.array2string(np.asarray(val), threshold=8, edgeitems=2, precision=4)
        return f"<{head} value={body}>"

    # Notebook views (bodies in jmod._render); a property for the reason
    # given at Module._repr_html_.
    @property
    def _repr_html_(self):
        from jmod import _render

        return _render.html_method(self)

    def __treescope_repr__(self, path, subtree_renderer):
        from jmod import _render

        return _render.treescope_repr(self, path, subtree_renderer)

    # -- array protocol ----------------------------------------------------
    def __jax_array__(self):
        return self.value

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self.value)
        return arr.astype(dtype) if dtype is not None else arr

    def __getattr__(self, name):
        # Array methods (reshape, sum, astype, ...) act on the value.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.value, name)

    def __hash__(self):
        return id(self)

    def __bool__(self):
        return bool(self.value)

    def __float__(self):
        return float(self.value)

    def __int__(self):
        return int(self.value)

    def __index__(self):
        return self.value.__index__()

    def __complex__(self):
        return complex(self.value)

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        return iter(self.value)

    def __getitem__(self, idx):
        return self.value[idx]

    def __neg__(self):
        return -self.value

    def __pos__(self):
        return +self.value

    def __abs__(self):
        return abs(self.value)

    def __invert__(self):
        return ~self.value


def _binary(op, reflected=False):
    if reflected:

        def method(self, other):
            return op(other.value if isinstance(other, Variable) else other, self.value)
    else:

        def method(self, other):
            return op(self.value, other.value if isinstance(other, Variable) else other)

    return method


for _name in ("add sub mul truediv floordiv mod pow matmul and or xor lshift rshift ").split():
    _op = getattr(operator, _name + "_") if _name in ("and", "or") else getattr(operator, _name)
    setattr(Variable, f"__{_name}__", _binary(_op))
    setattr(Variable, f"__r{_name}__", _binary(_op, reflected=True))
for _name in "lt le gt ge eq ne".split():
    setattr(Variable, f"__{_name}__", _binary(getattr(operator, _name)))
for _name, _reflected in (("__divmod__", False), ("__rdivmod__", True)):
    setattr(Variable, _name, _binary(divmod, reflected=_reflected))


def _traced(x):
    return isinstance(x, jax.core.Tracer)


def _flatten(v):
    return (v.value,), (v._trainable, v.name)


def _unflatten(aux, children):
    # Rebuilt by JAX transformations with tracers or placeholders as leaves:
    # no validation, and not bound to any scope.
    v = object.__new__(Variable)
    v._v = children[0]
    v._trainable, v.name = aux
    v._own = True
    return v


jax.tree_util.register_pytree_node(Variable, _flatten, _unflatten)
