"""JAX computations as TensorBoard graphs (the pure part of graph summaries).

`graph_def_from_jaxpr` turns a `ClosedJaxpr` into a TensorFlow `GraphDef`
proto, the format TensorBoard's Graphs tab draws:

- each equation becomes a node named `<name stack>/<primitive>`, such as
  `the_model/dense_1/dot_general`: TensorBoard splits names at `/` and draws
  each module as a collapsible box, so the graph shows the module hierarchy;
- inputs become `Placeholder` nodes named by `input_names` (state paths, then
  argument names), closed-over arrays and literals become `Const` nodes, and
  each result an `Identity` node (`output`, `output_1`, ...);
- every node carries `_output_shapes` (TensorBoard labels edges with them)
  and its dtype (`T`, or `dtype` on placeholders and constants).

Calls to nested jitted functions are drawn inline, inside a box named after
the function (`relu/max`) unless their body opens its own name scope (a
nested `jmod.jit` method shows as its module's box); `custom_jvp` /
`custom_vjp` functions and `jax.checkpoint` are drawn inline without a box of
their own. Control flow (`cond`, `while`, `scan`) stays one node.

Module variables (the first `state_inputs` inputs) are drawn inside the box
of the module that first reads them, so a module's box holds its weights.
"""

import inspect
import re

import jax
import numpy as np
from jax.extend import core as jex_core
from tensorboard.compat.proto import (
    attr_value_pb2,
    graph_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.util import tensor_util

__all__ = ["graph_def_from_jaxpr", "graph_of"]

# Primitives whose body is another jaxpr that runs exactly once on the
# equation's inputs: drawing the body inline shows what the call does.
_INLINE_PARAMS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",  # jax.checkpoint
    "checkpoint": "jaxpr",
}
# Of those, the ones that open a box named after the called function. The
# custom derivative wrappers do not: they always wrap a `jit` of the same name.
_SCOPED_CALLS = {"jit", "pjit", "closed_call", "core_call"}

# Constants larger than this are described by shape and dtype only, so a
# model's weights captured as constants do not bloat the event file.
_MAX_CONST_VALUE_ELEMENTS = 16
# Parameters are shown in TensorBoard's info card; TensorBoard hides
# attributes over 1 KiB anyway.
_MAX_PARAM_CHARS = 512

_NUMPY_TO_TF_DTYPE = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF"}


def graph_def_from_jaxpr(closed_jaxpr, input_names=None, output_names=None, state_inputs=0):
    """Converts a `ClosedJaxpr` into a TensorBoard `GraphDef`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> def f(w, x):
        ...     with jax.named_scope("dense"):
        ...         return jnp.tanh(x @ w)
        >>> jaxpr = jax.make_jaxpr(f)(jnp.ones((3, 2)), jnp.ones((1, 3)))
        >>> graph = graph_def_from_jaxpr(jaxpr, ["dense/w", "x"])
        >>> [node.name for node in graph.node]
        ['dense/w', 'x', 'dense/dot_general', 'dense/tanh', 'output']

    Args:
        closed_jaxpr: the computation, e.g. from `jax.make_jaxpr` or
            `jmod.jit(f).jaxpr(*args)`.
        input_names: one name per input variable (`/` separates scopes);
            missing names default to `input`, `input_1`, ...
        output_names: one name per result; default `output`, `output_1`, ...
        state_inputs: how many of the first inputs are module variables named
            by path (`model/dense_1/w`). Each is drawn inside the box of the
            module that first reads it (the name scope whose last part is the
            path's parent, `dense_1`), so inside a function's scope or under
            `jax.grad` the weights still sit next to the ops using them.

    Returns:
        a `tensorboard.compat.proto.graph_pb2.GraphDef`.
    """
    jaxpr = closed_jaxpr.jaxpr
    input_names = list(input_names or ())
    output_names = list(output_names or ())
    builder = _GraphBuilder()
    env = {}
    for i, var in enumerate(jaxpr.invars):
        name = input_names[i] if i < len(input_names) and input_names[i] else "input"
        if i < state_inputs:
            # Named when first read, once the reading module's scope is known.
            env[var] = _Variable(name, var.aval)
        else:
            env[var] = builder.leaf("Placeholder", name, var.aval)
    for i, (var, value) in enumerate(zip(jaxpr.constvars, closed_jaxpr.consts, strict=True)):
        env[var] = builder.leaf("Const", f"const_{i}", var.aval, value=value)
    builder.add_eqns(jaxpr.eqns, env, scope="")
    for i, var in enumerate(jaxpr.outvars):
        name = output_names[i] if i < len(output_names) and output_names[i] else "output"
        source = builder.input_ref(var, env, scope="")
        builder.node("Identity", name, [source], [var.aval])
    for var in jaxpr.invars[:state_inputs]:
        builder.input_ref(var, env, scope="")  # variables nothing reads
    return builder.graph


def graph_of(compiled_fn, *args, **kwargs):
    """The TensorBoard graph of a `jmod.jit` function for the given arguments.

    Placeholders are named by the variables' module paths and the call's
    argument names; operations by the module path that ran them. This is
    what `fn.graph(*args)` returns.

    Example:
        >>> import jax.numpy as jnp, jmod
        >>> @jmod.jit
        ... def double(x):
        ...     return x * 2
        >>> [node.name for node in graph_of(double, jnp.ones(3)).node]
        ['x', 'double/Const', 'double/mul', 'output']

    Args:
        compiled_fn: a `jmod.jit` function or bound method.
        *args, **kwargs: arguments as for a call (they are traced, not run).

    Returns:
        a `GraphDef` (see `graph_def_from_jaxpr`).
    """
    closed_jaxpr = compiled_fn.jaxpr(*args, **kwargs)
    names = compiled_fn.graph_names(*args, **kwargs)
    state_inputs = len(compiled_fn.state_paths(*args, **kwargs))
    return graph_def_from_jaxpr(closed_jaxpr, names, state_inputs=state_inputs)


def argument_names(compiled, args, kwargs):
    """Names of the array leaves of a `jmod.jit` call's arguments, in input order.

    An array argument is named after its parameter (`x`); leaves of a pytree
    argument get their key path (`batch/0`, `inputs/image`). Modules are
    state and other Python values static, so neither is named.
    """
    from jmod.signature import is_number_list, is_special

    static = set(compiled._static_argnames)
    params = list(compiled._param_names)
    instance = () if compiled._instance is None else (compiled._instance,)
    if instance:
        params = params[1:]
    if static:
        # jmod.jit passes every argument by keyword when some are static.
        try:
            bound = inspect.signature(compiled._fn).bind(*instance, *args, **kwargs)
        except TypeError:
            bound = None
        if bound is not None:
            bound.apply_defaults()
            items = list(bound.arguments.items())[len(instance) :]
            args, kwargs = (), {k: v for k, v in items if k not in static}
    leaves = jax.tree_util.tree_flatten_with_path((tuple(args), dict(kwargs)), is_leaf=is_special)[
        0
    ]
    names = []
    for path, leaf in leaves:
        is_array = isinstance(leaf, jax.Array | np.ndarray | np.generic)
        if not (is_array or is_number_list(leaf)):
            continue
        head, *rest = (_key_name(k) for k in path)
        if head == "0":
            index = int(rest.pop(0))
            rest.insert(0, params[index] if index < len(params) else f"arg{index}")
        names.append("/".join(rest))
    return names


def _key_name(key):
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


class _Variable:
    """A state input whose placeholder is made when an operation first reads it."""

    def __init__(self, path, aval):
        self.path = path
        self.aval = aval
        self.ref = None


class _GraphBuilder:
    """Accumulates nodes with TensorFlow-style unique names (`add`, `add_1`)."""

    def __init__(self):
        self.graph = graph_pb2.GraphDef()
        self._taken = set()

    def unique(self, name):
        name = _clean_name(name)
        candidate, n = name, 0
        while candidate in self._taken:
            n += 1
            candidate = f"{name}_{n}"
        self._taken.add(candidate)
        return candidate

    def node(self, op, name, inputs, avals, attrs=None):
        node = self.graph.node.add(name=self.unique(name), op=op, input=inputs)
        shapes = node.attr["_output_shapes"].list.shape
        for aval in avals:
            shapes.append(_shape_proto(aval))
        dtypes = [_dtype_enum(aval) for aval in avals]
        if len(dtypes) == 1:
            node.attr["dtype" if op in ("Placeholder", "Const") else "T"].type = dtypes[0]
        elif dtypes:
            node.attr["T"].list.type.extend(dtypes)
        for key, value in (attrs or {}).items():
            node.attr[key].CopyFrom(value)
        return node.name

    def leaf(self, op, name, aval, value=None):
        attrs = {}
        if value is not None and np.size(value) <= _MAX_CONST_VALUE_ELEMENTS:
            try:
                tensor = tensor_util.make_tensor_proto(np.asarray(value))
                attrs["value"] = attr_value_pb2.AttrValue(tensor=tensor)
            except (TypeError, ValueError):
                pass  # extended dtypes (PRNG keys) have no TensorProto form
        return (self.node(op, name, [], [aval], attrs), 0)

    def input_ref(self, atom, env, scope):
        if isinstance(atom, jex_core.Literal):
            node, index = self.leaf("Const", _join(scope, "Const"), atom.aval, atom.val)
        else:
            node, index = self.resolve(env[atom], scope)
        return node if index == 0 else f"{node}:{index}"

    def resolve(self, value, scope):
        if isinstance(value, _Variable):
            if value.ref is None:
                name = _place_variable(value.path, scope)
                value.ref = self.leaf("Placeholder", name, value.aval)
            return value.ref
        return value

    def add_eqns(self, eqns, env, scope):
        for eqn in eqns:
            eqn_scope = _join(scope, str(eqn.source_info.name_stack))
            name = eqn.primitive.name
            body = _inline_body(eqn)
            if body is not None:
                inner_jaxpr, consts = body
                inner_scope = eqn_scope
                if name in _SCOPED_CALLS and not _labels_itself(inner_jaxpr):
                    inner_scope = _join(eqn_scope, str(eqn.params.get("name") or name))
                inner_env = {}
                for var, value in zip(inner_jaxpr.constvars, consts, strict=True):
                    inner_env[var] = self.leaf(
                        "Const", _join(inner_scope, "Const"), var.aval, value
                    )
                for inner, outer in zip(inner_jaxpr.invars, eqn.invars, strict=True):
                    if isinstance(outer, jex_core.Literal):
                        inner_env[inner] = _parse_ref(self.input_ref(outer, env, eqn_scope))
                    else:
                        inner_env[inner] = env[outer]  # variables stay unnamed until read
                self.add_eqns(inner_jaxpr.eqns, inner_env, inner_scope)
                for inner, outer in zip(inner_jaxpr.outvars, eqn.outvars, strict=True):
                    if isinstance(inner, jex_core.Literal):
                        env[outer] = _parse_ref(self.input_ref(inner, inner_env, inner_scope))
                    else:
                        env[outer] = inner_env[inner]
                continue
            inputs = [self.input_ref(v, env, scope=eqn_scope) for v in eqn.invars]
            avals = [v.aval for v in eqn.outvars]
            node = self.node(name, _join(eqn_scope, name), inputs, avals, _param_attrs(eqn))
            for index, var in enumerate(eqn.outvars):
                if not isinstance(var, jex_core.DropVar):
                    env[var] = (node, index)


def _inline_body(eqn):
    """`(jaxpr, consts)` of a call-like equation that can be drawn inline, else None."""
    param = _INLINE_PARAMS.get(eqn.primitive.name)
    body = eqn.params.get(param) if param else None
    if body is None:
        return None
    if isinstance(body, jex_core.ClosedJaxpr):
        jaxpr, consts = body.jaxpr, body.consts
    elif isinstance(body, jex_core.Jaxpr):
        jaxpr, consts = body, []
    else:
        return None
    if len(jaxpr.invars) != len(eqn.invars) or len(jaxpr.outvars) != len(eqn.outvars):
        return None
    return jaxpr, consts


def _param_attrs(eqn):
    attrs = {}
    for key, value in eqn.params.items():
        if isinstance(value, jex_core.ClosedJaxpr | jex_core.Jaxpr):
            text = f"{{jaxpr: {len(_as_jaxpr(value).eqns)} equations}}"
        elif isinstance(value, tuple | list) and any(
            isinstance(v, jex_core.ClosedJaxpr | jex_core.Jaxpr) for v in value
        ):
            text = f"({len(value)} jaxprs)"
        else:
            text = str(value)
        if len(text) > _MAX_PARAM_CHARS:
            text = text[: _MAX_PARAM_CHARS - 3] + "..."
        attrs[key] = attr_value_pb2.AttrValue(s=text.encode("utf-8"))
    return attrs


def _as_jaxpr(value):
    return value.jaxpr if isinstance(value, jex_core.ClosedJaxpr) else value


def _labels_itself(jaxpr):
    # A nested jmod.jit opens its own module scope: no extra box for its name.
    return bool(jaxpr.eqns) and all(str(e.source_info.name_stack) for e in jaxpr.eqns)


def _place_variable(path, scope):
    """`<scope up to the variable's module>/<leaf>` if it reads inside that module."""
    parent, _, leaf = path.rpartition("/")
    if not parent:
        return path
    owner = parent.rpartition("/")[2]
    parts = _clean_name(scope).split("/") if scope else []
    for depth in range(len(parts), 0, -1):
        if _strip_transforms(parts[depth - 1]) == owner:
            return "/".join([*parts[:depth], leaf])
    return path


def _strip_transforms(part):
    # `jvp(dense_1)` and `transpose(jvp(dense_1))` are still module `dense_1`.
    while part.endswith(")") and "(" in part:
        part = part[part.index("(") + 1 : -1]
    return part


def _parse_ref(ref):
    node, sep, index = ref.rpartition(":")
    return (node, int(index)) if sep else (ref, 0)


def _join(scope, name):
    return "/".join(part for part in (scope, name) if part)


# ":" separates a node from its output index in edge references, and "^" marks
# control edges, so neither may appear inside a name.
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/>()\[\]=,<]")


def _clean_name(name):
    # Transformations of code outside any scope show as `jvp()`; keep `jvp`.
    while "()" in name:
        name = name.replace("()", "")
    name = _BAD_NAME_CHARS.sub("_", name)
    return "/".join(part for part in name.split("/") if part) or "node"


def _shape_proto(aval):
    shape = tensor_shape_pb2.TensorShapeProto()
    for dim in getattr(aval, "shape", ()):
        # Symbolic dimensions (shape polymorphism) are unknown sizes.
        shape.dim.add(size=dim if isinstance(dim, int) else -1)
    return shape


def _dtype_enum(aval):
    dtype = getattr(aval, "dtype", None)
    if dtype is None:
        return types_pb2.DT_INVALID
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return types_pb2.DT_VARIANT  # extended dtypes such as PRNG keys
    enum_name = _NUMPY_TO_TF_DTYPE.get(name, "DT_" + name.upper())
    return (
        types_pb2.DataType.Value(enum_name)
        if enum_name in types_pb2.DataType.keys()
        else types_pb2.DT_INVALID
    )
