"""`TensorSpec`, and the argument trees that saved signatures are made of.

A saved signature records each argument as a tree whose leaves are
`TensorSpec`s (an array of some shape and dtype) or the Python values the
function was traced with (`True`, `"mean"`, `None`), inside lists, tuples and
dicts. This file turns argument values into such trees, trees into JSON and
back, and checks a call's arguments against a tree. Pure functions: no
jax.export, no files.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from jmod.errors import SignatureError
from jmod.saved_model.errors import SavedModelError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATIC_TYPES = (bool, str, type(None))
# How jmod.jit describes a module argument in a Signature.
_MODULE_DESCRIPTION = re.compile(r"<\w+ '[^']*'>")


class TensorSpec:
    """The shape and dtype of an array argument, for `jmod.saved_model.save(signatures=...)`.

    A dimension is an int, `None` (any size: exported shape-polymorphically,
    independent of every other dimension) or a name such as `"batch"` (any
    size, the same wherever that name appears in the signature; `jax.export`
    expressions such as `"2*batch"` work too).

    Example:
        >>> spec = jmod.TensorSpec([None, 3], "float32", name="x")
        >>> spec
        TensorSpec(shape=(None, 3), dtype=float32, name='x')
        >>> spec.is_compatible_with(np.zeros((5, 3), np.float32))
        True
        >>> jmod.TensorSpec.from_array(np.zeros((2, 3), np.int32))
        TensorSpec(shape=(2, 3), dtype=int32)

    Args:
        shape: a sequence of dimensions (int, None or a name).
        dtype: anything `jnp.dtype` accepts; float32 by default, as in TensorFlow.
        name: an optional display name (the argument's name in listings).
    """

    __slots__ = ("shape", "dtype", "name")

    def __init__(self, shape, dtype="float32", name=None):
        try:
            dims = tuple(shape)
        except TypeError:
            raise SavedModelError(
                f"TensorSpec shape must be a sequence of dimensions, got {shape!r}"
            ) from None
        for d in dims:
            ok = d is None or (isinstance(d, str) and d.strip())
            if not ok and not (isinstance(d, (int, np.integer)) and not isinstance(d, bool)):
                raise SavedModelError(
                    f"TensorSpec dimension {d!r} in shape {shape!r}: expected an int >= 0, "
                    "None (any size) or a dimension name such as 'batch'"
                )
            if isinstance(d, (int, np.integer)) and d < 0:
                raise SavedModelError(f"TensorSpec dimension {d} in shape {shape!r} is negative")
        self.shape = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in dims)
        self.dtype = jnp.dtype(dtype)
        self.name = name

    @classmethod
    def from_array(cls, x, name=None):
        """The spec of an array (or `jax.ShapeDtypeStruct`): its exact shape and dtype."""
        return cls(tuple(x.shape), x.dtype, name=name)

    @property
    def polymorphic(self):
        """Whether some dimension is `None` or named (exported shape-polymorphically)."""
        return any(not isinstance(d, int) for d in self.shape)

    def is_compatible_with(self, x):
        """Whether an array of `x`'s shape and dtype fits this spec."""
        shape = tuple(np.shape(x))
        if len(shape) != len(self.shape) or jnp.dtype(x.dtype) != self.dtype:
            return False
        return all(not isinstance(d, int) or d == n for d, n in zip(self.shape, shape))

    def __eq__(self, other):
        return isinstance(other, TensorSpec) and (self.shape, self.dtype, self.name) == (
            other.shape,
            other.dtype,
            other.name,
        )

    def __hash__(self):
        return hash((self.shape, self.dtype, self.name))

    def __repr__(self):
        shape = "(" + ", ".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        name = f", name={self.name!r}" if self.name is not None else ""
        return f"TensorSpec(shape={shape}, dtype={self.dtype.name}{name})"


def _default_array(value):
    """A Python number or nested list as jmod.jit makes it an array (float32, int32)."""
    arr = np.asarray(value)
    if arr.dtype == np.float64 and not jax.config.jax_enable_x64:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.int64 and not jax.config.jax_enable_x64:
        arr = arr.astype(np.int32)
    return arr


def _is_number_tree(x):
    # The values jmod.jit turns into arrays: numbers and non-empty nested lists of them.
    if isinstance(x, list):
        return len(x) > 0 and all(_is_number_tree(i) for i in x)
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def _is_array(x):
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)) or hasattr(
        x, "aval"
    )


def spec_tree(value, where="argument"):
    """The argument tree of a value: arrays (and numbers, number lists) become `TensorSpec`s.

    `jax.ShapeDtypeStruct`s and `TensorSpec`s describe arrays; bools, strings
    and None stay as Python values; lists, tuples and dicts are opened.
    """
    if isinstance(value, TensorSpec):
        return value
    if _is_array(value):
        return TensorSpec.from_array(value)
    if _is_number_tree(value):
        return TensorSpec.from_array(_default_array(value))
    if isinstance(value, str) and _MODULE_DESCRIPTION.fullmatch(value):
        raise SavedModelError(
            f"{where} was the module {value}: a saved function takes arrays and Python "
            "values; only the saved module's own variables travel with it"
        )
    if isinstance(value, _STATIC_TYPES):
        return value
    if isinstance(value, (list, tuple)):
        items = [spec_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise SavedModelError(f"{where}: dict keys must be strings to be saved, got {bad[0]!r}")
        return {k: spec_tree(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise SavedModelError(
        f"{where}: cannot save a signature with a {type(value).__name__} argument "
        f"({value!r:.60}); arguments are arrays, TensorSpecs, bools, strings, None, "
        "or lists/tuples/dicts of those"
    )


# -- JSON ---------------------------------------------------------------------
def to_json(tree):
    """An argument tree as JSON-ready data (tagged, so lists and tuples stay apart)."""
    if isinstance(tree, TensorSpec):
        return {"tensor": {"shape": list(tree.shape), "dtype": tree.dtype.name}}
    if isinstance(tree, tuple):
        return {"tuple": [to_json(t) for t in tree]}
    if isinstance(tree, list):
        return {"list": [to_json(t) for t in tree]}
    if isinstance(tree, dict):
        return {"dict": {k: to_json(v) for k, v in tree.items()}}
    return {"value": tree}


def from_json(data):
    """The argument tree that `to_json` wrote."""
    if not isinstance(data, dict) or len(data) != 1:
        raise SavedModelError(f"malformed argument tree in the metadata: {data!r:.80}")
    ((kind, body),) = data.items()
    if kind == "tensor":
        return TensorSpec(body["shape"], body["dtype"])
    if kind == "tuple":
        return tuple(from_json(t) for t in body)
    if kind == "list":
        return [from_json(t) for t in body]
    if kind == "dict":
        return {k: from_json(v) for k, v in body.items()}
    if kind == "value":
        return body
    raise SavedModelError(f"unknown argument kind {kind!r} in the metadata")


def tensor_specs(tree):
    """The `TensorSpec` leaves of a tree, in the order JAX flattens it (dict keys sorted)."""
    if isinstance(tree, TensorSpec):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [s for t in tree for s in tensor_specs(t)]
    if isinstance(tree, dict):
        return [s for k in sorted(tree) for s in tensor_specs(tree[k])]
    return []


def dummy_values(tree, size=2):
    """The tree with each `TensorSpec` made a zero NumPy array (`size` for free dimensions)."""
    if isinstance(tree, TensorSpec):
        shape = tuple(d if isinstance(d, int) else size for d in tree.shape)
        return np.zeros(shape, tree.dtype)
    if isinstance(tree, (list, tuple)):
        items = [dummy_values(t, size) for t in tree]
        return items if isinstance(tree, list) else tuple(items)
    if isinstance(tree, dict):
        return {k: dummy_values(v, size) for k, v in tree.items()}
    return tree


def symbolic_specs(specs):
    """`jax.ShapeDtypeStruct`s for export: `None` dims get fresh symbols, names are shared."""
    names = {d for s in specs for d in s.shape if isinstance(d, str)}
    fresh = (f"_{i}" for i in range(10**9) if f"_{i}" not in names)
    scope = jax.export.SymbolicScope()
    out = []
    for s in specs:
        if not s.polymorphic:
            out.append(jax.ShapeDtypeStruct(s.shape, s.dtype))
            continue
        dims = [str(d) if d is not None else next(fresh) for d in s.shape]
        shape = jax.export.symbolic_shape(", ".join(dims), scope=scope)
        out.append(jax.ShapeDtypeStruct(shape, s.dtype))
    return out


# -- matching calls -------------------------------------------------------------
class Mismatch(Exception):
    """Why an argument does not fit a saved tree (internal; becomes a SignatureError)."""


def _array_for(spec, value, where, dims):
    if _is_array(value) and not isinstance(value, jax.ShapeDtypeStruct):
        arr = value
        if jnp.dtype(arr.dtype) != spec.dtype:
            got = jnp.dtype(arr.dtype).name
            raise Mismatch(f"{where}: dtype {got}, expected {spec.dtype.name}")
    elif _is_number_tree(value):
        try:
            arr = _default_array(value)
        except ValueError as e:  # ragged lists
            raise Mismatch(f"{where}: {e}") from None
        if arr.dtype != spec.dtype:
            if not np.can_cast(arr.dtype, spec.dtype, "same_kind"):
                raise Mismatch(f"{where}: {arr.dtype.name} values, expected {spec.dtype.name}")
            arr = arr.astype(spec.dtype)
    else:
        raise Mismatch(f"{where}: expected an array, got {type(value).__name__}")
    shape = tuple(arr.shape)
    if len(shape) != len(spec.shape):
        raise Mismatch(f"{where}: shape {shape}, expected {spec.shape}")
    for axis, (d, n) in enumerate(zip(spec.shape, shape)):
        if isinstance(d, int) and d != n:
            raise Mismatch(f"{where}: shape {shape}, expected {spec.shape}")
        if isinstance(d, str) and _IDENTIFIER.fullmatch(d) and dims.setdefault(d, n) != n:
            raise Mismatch(f"{where}: axis {axis} is {n}, but dimension {d!r} is {dims[d]}")
    return arr


def _flatten(tree, value, where, dims, out):
    if isinstance(tree, TensorSpec):
        out.append(_array_for(tree, value, where, dims))
    elif isinstance(tree, (list, tuple)):
        if type(value) is not type(tree) or len(value) != len(tree):
            raise Mismatch(f"{where}: expected a {type(tree).__name__} of {len(tree)}")
        for i, (t, v) in enumerate(zip(tree, value)):
            _flatten(t, v, f"{where}[{i}]", dims, out)
    elif isinstance(tree, dict):
        if not isinstance(value, dict) or set(value) != set(tree):
            raise Mismatch(f"{where}: expected a dict with keys {sorted(tree)}")
        for k in sorted(tree):
            _flatten(tree[k], value[k], f"{where}[{k!r}]", dims, out)
    elif type(value) is not type(tree) or value != tree:
        raise Mismatch(f"{where}: {value!r:.40}, the function was saved for {tree!r:.40}")


def flatten_call(arguments, bound):
    """The arrays of a call bound to argument names, in the saved function's input order.

    `arguments` maps names to saved trees; `bound` maps names to the values
    given. Raises `Mismatch` saying why they do not fit.
    """
    if set(bound) != set(arguments):
        missing, extra = sorted(set(arguments) - set(bound)), sorted(set(bound) - set(arguments))
        raise Mismatch(f"missing arguments {missing or 'none'}, unexpected {extra or 'none'}")
    out, dims = [], {}
    for name in sorted(arguments):
        _flatten(arguments[name], bound[name], name, dims, out)
    return out


def bind(parameters, args, kwargs):
    """Names the positional arguments of a call after the saved function's parameters."""
    if len(args) > len(parameters):
        raise Mismatch(f"{len(args)} positional arguments, the function takes {len(parameters)}")
    bound = dict(zip(parameters, args))
    for k, v in kwargs.items():
        if k in bound:
            raise Mismatch(f"argument {k!r} given twice")
        bound[k] = v
    return bound


# -- describing ---------------------------------------------------------------
def describe_value(x):
    """A short description of a call argument for error messages."""
    if _is_array(x):
        return f"Array(shape={tuple(x.shape)}, dtype={jnp.dtype(x.dtype).name})"
    if _is_number_tree(x) and isinstance(x, list):
        try:
            return f"list(shape={np.shape(x)})"
        except ValueError:
            return "list(ragged)"
    if isinstance(x, (list, tuple)):
        inner = ", ".join(describe_value(v) for v in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner})"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {describe_value(v)}" for k, v in x.items()) + "}"
    return f"{x!r:.60}"


def describe_tree(tree, name=None):
    """An argument tree for listings: TensorSpecs named after their argument."""
    if isinstance(tree, TensorSpec):
        return repr(TensorSpec(tree.shape, tree.dtype, name=name))
    if isinstance(tree, (list, tuple)):
        inner = ", ".join(describe_tree(t) for t in tree)
        return f"[{inner}]" if isinstance(tree, list) else f"({inner})"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {describe_tree(v)}" for k, v in tree.items()) + "}"
    return repr(tree)


def short_tree(tree):
    """An argument or output tree in one short line: `float32[None, 3]`."""
    if isinstance(tree, TensorSpec):
        return f"{tree.dtype.name}[{', '.join(map(str, tree.shape))}]"
    if isinstance(tree, (list, tuple)):
        inner = ", ".join(short_tree(t) for t in tree)
        return f"[{inner}]" if isinstance(tree, list) else f"({inner})"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {short_tree(v)}" for k, v in tree.items()) + "}"
    return repr(tree)


def signature_error(title, args, kwargs, options):
    """A `SignatureError` naming the call received and every saved option, TF style.

    `options` is a list of {name: tree} in parameter order.
    """
    lines = [f"{title}. Got:", f"  Positional arguments ({len(args)} total):"]
    lines += [f"    * {describe_value(a)}" for a in args]
    kw = ", ".join(f"{k!r}: {describe_value(v)}" for k, v in kwargs.items())
    lines.append(f"  Keyword arguments: {{{kw}}}")
    lines.append(
        f" Expected these arguments to match one of the following {len(options)} option(s):"
    )
    for i, arguments in enumerate(options, 1):
        lines.append(f"Option {i}:")
        lines.append(f"  Arguments ({len(arguments)} total):")
        lines += [f"    * {name}: {describe_tree(t, name)}" for name, t in arguments.items()]
    return SignatureError("\n".join(lines))
