"""The functional API: symbolic `Input`s, layers called on them, and the graph they make.

Calling a layer on a `SymbolicTensor` (what `jmod.Input` returns) builds the
layer from the symbolic shape (batch dimension None, as Keras does), works
out the output shape abstractly with `jax.eval_shape` (nothing is computed)
and records a `Node`. A functional `Model` keeps the nodes between its
inputs and its outputs (`Graph`) and replays them on arrays, eagerly or
under `jmod.jit`. `graph_config` / `graph_from_config` turn a graph into
JSON and back.
"""

import contextlib
import itertools

import jax
import jax.numpy as jnp

from jmod import _scope, random, saving
from jmod.errors import JmodError, LayerCallError, ModuleError, SerializationError
from jmod.layers.layer import Layer, call_with_mask, register_functional, unique_name
from jmod.module import rollback, snapshot

# Sizes standing in for unknown (None) dimensions while shapes are worked out.
# Two different ones: an output dimension that follows them is unknown too.
_PLACEHOLDERS = (83, 89)
_order = itertools.count()
_node_logs: list[list] = []  # lists collecting the nodes made inside `record_nodes` blocks


class SymbolicTensor:
    """A shape and dtype standing for the arrays that will flow through a graph.

    `jmod.Input` makes them; calling a layer on them makes more. Unknown
    dimensions (the batch) are None.

    Example:
        >>> x = jmod.Input(shape=[3])
        >>> x.shape, x.dtype
        ((None, 3), dtype('float32'))
    """

    __slots__ = ("shape", "dtype", "node", "index")

    def __init__(self, shape, dtype, node=None, index=0):
        self.shape = tuple(shape)
        self.dtype = jnp.dtype(dtype)
        self.node = node
        self.index = index

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def layer(self):
        """The layer whose call produced this tensor."""
        return self.node.layer if self.node is not None else None

    def __repr__(self):
        where = f" (from layer {self.layer.name!r})" if self.node is not None else ""
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype.name}{where}>"

    def _refuse(self, *args, **kwargs):
        raise LayerCallError(
            f"{self!r} holds no values: in the functional API only layers can be called on "
            "symbolic tensors. Put the computation in a layer (a jmod.layers.Layer subclass "
            "whose call() does it, or a built-in such as jmod.layers.Add)."
        )

    __jax_array__ = __array__ = __bool__ = __float__ = __int__ = __index__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __matmul__ = __rmatmul__ = __pow__ = __neg__ = _refuse
    __getitem__ = __iter__ = _refuse
    __hash__ = object.__hash__


def _is_symbolic_tree(inputs):
    if isinstance(inputs, SymbolicTensor):
        return True
    if isinstance(inputs, (list, tuple, dict)):
        return any(isinstance(x, SymbolicTensor) for x in jax.tree_util.tree_leaves(inputs))
    return False


class Node:
    """One call of a layer on symbolic tensors: its arguments and its outputs.

    The arguments `(inputs, args, kwargs)` are kept flattened; the symbolic
    tensors among them are `inputs`.
    """

    __slots__ = ("layer", "leaves", "treedef", "inputs", "outputs", "flat_outputs", "order")

    def __init__(self, layer, leaves, treedef):
        self.layer = layer
        self.leaves = leaves
        self.treedef = treedef
        self.inputs = [x for x in leaves if isinstance(x, SymbolicTensor)]
        self.outputs = None
        self.flat_outputs = []
        self.order = next(_order)
        for log in _node_logs:
            log.append(self)

    def set_outputs(self, specs):
        flat, treedef = jax.tree_util.tree_flatten(specs)
        self.flat_outputs = [SymbolicTensor(s.shape, s.dtype, self, i) for i, s in enumerate(flat)]
        self.outputs = jax.tree_util.tree_unflatten(treedef, self.flat_outputs)
        return self.outputs

    def call_args(self, value_of):
        """`(inputs, args, kwargs)` with each symbolic tensor replaced by `value_of(tensor)`."""
        leaves = [value_of(x) if isinstance(x, SymbolicTensor) else x for x in self.leaves]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


@contextlib.contextmanager
def record_nodes():
    """Collects, in a list, the nodes made by layer calls on symbolic tensors in the block."""
    log = []
    _node_logs.append(log)
    try:
        yield log
    finally:
        _node_logs.remove(log)


class InputLayer(Layer):
    """The layer behind `jmod.Input`: it only hands on the model's input.

    Example:
        >>> layer = jmod.models.InputLayer(shape=[3], name="features")
        >>> layer.output.shape, layer.get_config()["batch_shape"]
        ((None, 3), [None, 3])

    Args:
        shape: the shape of one example (no batch dimension); None for unknown sizes.
        batch_size: a fixed batch size, or None.
        dtype: the dtype of the input arrays (default float32).
        name: a name; by default `input_1`, `input_2`, ... as in Keras.
        batch_shape: the full shape including the batch dimension, instead of
            `shape` and `batch_size`.
    """

    def __init__(
        self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None, **kwargs
    ):
        super().__init__(name=name or _input_name(), **kwargs)
        if batch_shape is None:
            if shape is None:
                raise LayerCallError(f"InputLayer {self.name!r}: give shape= or batch_shape=")
            if isinstance(shape, int):
                shape = (shape,)
            batch_shape = (batch_size, *shape)
        elif shape is not None or batch_size is not None:
            raise LayerCallError(
                f"InputLayer {self.name!r}: give either batch_shape= or shape= (and batch_size=)"
            )
        batch_shape = tuple(batch_shape)
        for d in batch_shape:
            if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0):
                raise LayerCallError(
                    f"InputLayer {self.name!r}: dimensions must be ints >= 0 or None, "
                    f"got shape {batch_shape}"
                )
        try:
            self.input_dtype = jnp.dtype(dtype or "float32").name
        except TypeError:
            raise SerializationError(f"InputLayer {self.name!r}: unknown dtype {dtype!r}") from None
        self.batch_shape = batch_shape
        self.built = True
        self._build_shape = batch_shape
        node = Node(self, [], jax.tree_util.tree_structure(()))
        node.set_outputs(jax.ShapeDtypeStruct(batch_shape, self.input_dtype))
        self.__dict__["_jmod_node"] = node

    @property
    def output(self):
        """The symbolic tensor this layer feeds into the graph."""
        return self.__dict__["_jmod_node"].outputs

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {
            "name": self.name,
            "batch_shape": list(self.batch_shape),
            "dtype": self.input_dtype,
        }


def _input_name():
    # Keras numbers inputs from 1 (input_1, input_2, ...) while other layers
    # start bare (dense, dense_1, ...); the shared counter keeps reset_names working.
    base = unique_name("input")
    n = 0 if base == "input" else int(base.rsplit("_", 1)[1])
    return f"input_{n + 1}"


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None):
    """A symbolic input: call layers on it, then make a `jmod.Model` from inputs to outputs.

    Example:
        >>> inputs = jmod.Input(shape=[3])
        >>> outputs = jmod.layers.Dense(2)(inputs)
        >>> outputs.shape
        (None, 2)
        >>> model = jmod.Model(inputs=inputs, outputs=outputs)
        >>> model(jnp.ones((4, 3))).shape
        (4, 2)

    Args:
        shape: the shape of one example, without the batch dimension; None
            entries are sizes that may vary from call to call.
        batch_size: a fixed batch size, or None (any).
        name: the input layer's name (`input_1`, ... by default).
        dtype: the dtype inputs are converted to (default float32).
        batch_shape: the full shape with the batch dimension, instead of
            `shape` and `batch_size`.
    """
    layer = InputLayer(
        shape=shape, batch_size=batch_size, dtype=dtype, name=name, batch_shape=batch_shape
    )
    return layer.output


# -- calling a layer on symbolic tensors ----------------------------------------------


def _shape_specs(tensors, size):
    return [
        jax.ShapeDtypeStruct(tuple(size if d is None else d for d in t.shape), t.dtype)
        for t in tensors
    ]


def _abstract(layer, run, tensors, size):
    """Output specs of `run` with None dims set to `size`; None if variables were created."""
    snap = snapshot([layer, *layer.submodules])
    # The scope keeps every value the call reads or assigns to itself (a batch
    # norm's moving mean, a generator's key), and notes variables created
    # meanwhile (a layer that builds sublayers inside `call`).
    scope = _scope.Scope()
    try:
        with scope:
            out = jax.eval_shape(run, *_shape_specs(tensors, size))
    except Exception:
        if scope.created:
            rollback(snap)
            return None  # built lazily inside call: build for real, then try again
        raise
    if scope.created:
        rollback(snap)
        return None
    return out


def _build_symbolically(layer, leaves, treedef):
    # The layer builds sublayers inside call() (a subclassed model): run its
    # call() on the symbolic tensors themselves, so each sublayer builds from
    # shapes with the batch unknown, as Keras does. A call() that does more
    # than call layers fails here, and the eager build below takes over.
    inputs, args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
    try:
        layer.call(inputs, *args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure means "build it eagerly instead"
        pass


def _build_eagerly(layer, run, tensors):
    # The layer creates variables inside call(); run it once on zeros in a
    # scope, so they exist with their initial values and nothing else the
    # call assigned is kept.
    with _scope.Scope():
        run(*[jnp.zeros(s.shape, s.dtype) for s in _shape_specs(tensors, 1)])


def _unknown_dims(a, b):
    if len(a.shape) != len(b.shape):
        return a
    shape = tuple(x if x == y else None for x, y in zip(a.shape, b.shape))
    return jax.ShapeDtypeStruct(shape, a.dtype)


def call_symbolic(layer, inputs, args, kwargs):
    """Calls `layer` on symbolic tensors: builds it, infers output shapes, records a Node."""
    leaves, treedef = jax.tree_util.tree_flatten((inputs, tuple(args), dict(kwargs)))
    positions = [i for i, x in enumerate(leaves) if isinstance(x, SymbolicTensor)]
    tensors = [leaves[i] for i in positions]
    try:
        layer._check_input_spec(inputs, args, kwargs)
        if not layer.built:
            layer._maybe_build(inputs)
            layer._check_input_spec(inputs, args, kwargs)
    except JmodError:
        raise
    except (TypeError, ValueError) as e:
        raise LayerCallError(layer._call_message(str(e), inputs, args, kwargs)) from e

    def run(*values):
        filled = list(leaves)
        for i, value in zip(positions, values):
            filled[i] = value
        call_inputs, call_args, call_kwargs = jax.tree_util.tree_unflatten(treedef, filled)
        return layer(call_inputs, *call_args, **call_kwargs)

    # Made now if it does not exist yet: made inside an abstract call, its key
    # would be a tracer forever.
    random.get_global_generator()
    first = _abstract(layer, run, tensors, _PLACEHOLDERS[0])
    if first is None:
        _build_symbolically(layer, leaves, treedef)
        first = _abstract(layer, run, tensors, _PLACEHOLDERS[0])
    if first is None:
        _build_eagerly(layer, run, tensors)
        first = _abstract(layer, run, tensors, _PLACEHOLDERS[0])
        if first is None:
            raise LayerCallError(
                f"layer {layer.name!r} ({type(layer).__name__}) creates new variables on every "
                "call; create them in build() or __init__"
            )
    second = _abstract(layer, run, tensors, _PLACEHOLDERS[1])
    specs = jax.tree_util.tree_map(_unknown_dims, first, second)
    node = Node(layer, leaves, treedef)
    return node.set_outputs(specs)


class _FunctionalHook:
    """What `jmod.layers.layer.register_functional` expects."""

    def is_symbolic(self, inputs):
        return _is_symbolic_tree(inputs)

    def call_symbolic(self, layer, inputs, *args, **kwargs):
        return call_symbolic(layer, inputs, args, kwargs)


register_functional(_FunctionalHook())


# -- the graph of a functional model ----------------------------------------------------


def _as_list_structure(structure):
    # Tuples become lists so that a structure reads back the same from JSON.
    if isinstance(structure, tuple):
        return [_as_list_structure(x) for x in structure]
    if isinstance(structure, list):
        return [_as_list_structure(x) for x in structure]
    if isinstance(structure, dict):
        return {k: _as_list_structure(v) for k, v in structure.items()}
    return structure


def _flat_tensors(structure, what, owner):
    flat = jax.tree_util.tree_leaves(structure)
    if not flat:
        raise ModuleError(f"model {owner!r}: {what} must hold at least one symbolic tensor")
    for x in flat:
        if not isinstance(x, SymbolicTensor):
            raise ModuleError(
                f"model {owner!r}: {what} must be symbolic tensors (from jmod.Input and layers "
                f"called on it), got {type(x).__name__}"
            )
    return flat


class Graph:
    """The nodes between a functional model's inputs and outputs, in the order they run.

    Args:
        inputs: a symbolic tensor from `jmod.Input`, or a list/dict of them.
        outputs: symbolic tensors computed from those inputs (any nesting).
        owner: the model's name, for error messages.
    """

    def __init__(self, inputs, outputs, owner="model"):
        self.inputs = _as_list_structure(inputs)
        self.outputs = _as_list_structure(outputs)
        self.input_tensors = _flat_tensors(self.inputs, "inputs", owner)
        self.output_tensors = _flat_tensors(self.outputs, "outputs", owner)
        for t in self.input_tensors:
            if not isinstance(t.layer, InputLayer):
                raise ModuleError(
                    f"model {owner!r}: inputs must come from jmod.Input; {t!r} is the output "
                    "of a layer"
                )
        input_nodes = {id(t.node) for t in self.input_tensors}
        nodes, stack = {}, [t.node for t in self.output_tensors]
        while stack:
            node = stack.pop()
            if id(node) in nodes:
                continue
            nodes[id(node)] = node
            if isinstance(node.layer, InputLayer) and id(node) not in input_nodes:
                raise ModuleError(
                    f"model {owner!r}: graph disconnected: the outputs depend on input "
                    f"{node.layer.name!r}, which is not among the model's inputs "
                    f"{[t.layer.name for t in self.input_tensors]}"
                )
            stack.extend(t.node for t in node.inputs)
        for t in self.input_tensors:
            nodes.setdefault(id(t.node), t.node)
        self.nodes = sorted(nodes.values(), key=lambda n: n.order)
        self.node_index = {}
        counts = {}
        for node in self.nodes:
            k = counts.get(id(node.layer), 0)
            counts[id(node.layer)] = k + 1
            self.node_index[id(node)] = k
        self.layers = self._layers_by_depth()
        names = [layer.name for layer in self.layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ModuleError(
                f"model {owner!r}: layer names must be unique within a model; "
                f"{duplicates} appear more than once"
            )

    def _layers_by_depth(self):
        # Keras' order: a node's depth is its longest distance to an output; a
        # layer's is that of its deepest node; deepest first (inputs), ties in
        # the order the layers were first called.
        depth = {}
        for node in reversed(self.nodes):
            d = depth.setdefault(id(node), 0)
            for t in node.inputs:
                depth[id(t.node)] = max(depth.get(id(t.node), 0), d + 1)
        layer_depth, first = {}, {}
        for node in self.nodes:
            key = id(node.layer)
            layer_depth[key] = max(layer_depth.get(key, 0), depth[id(node)])
            first.setdefault(key, (node.order, node.layer))
        ranked = sorted(first, key=lambda k: (-layer_depth[k], first[k][0]))
        return [first[k][1] for k in ranked]

    def nodes_of(self, layer):
        """This graph's calls of `layer`, in order."""
        return [n for n in self.nodes if n.layer is layer]

    def is_chain(self):
        """True if the graph is one input through single-input layers, each used once."""
        if len(self.input_tensors) != 1:
            return False
        consumers = {}
        for node in self.nodes:
            if isinstance(node.layer, InputLayer):
                continue
            if len(node.inputs) != 1:
                return False
            producer = id(node.inputs[0].node)
            consumers[producer] = consumers.get(producer, 0) + 1
        if any(count > 1 for count in consumers.values()):
            return False
        return all(len(self.nodes_of(layer)) == 1 for layer in self.layers)

    # -- running --------------------------------------------------------------
    def flatten_inputs(self, model, inputs, args, kwargs):
        """The arrays for `input_tensors`, from what the model was called with."""

        def fail(problem):
            raise LayerCallError(model._call_message(problem, inputs, args, kwargs))

        structure, names = self.inputs, [t.layer.name for t in self.input_tensors]
        if isinstance(structure, SymbolicTensor):
            if isinstance(inputs, dict) and len(inputs) == 1 and names[0] in inputs:
                inputs = inputs[names[0]]
            elif isinstance(inputs, (list, tuple)) and len(inputs) == 1:
                inputs = inputs[0]
            flat = [inputs]
        elif isinstance(structure, list) and isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            if missing:
                fail(f"expected inputs named {names}, got keys {sorted(inputs)}")
            flat = [inputs[n] for n in names]
        else:
            if isinstance(inputs, tuple):
                inputs = list(inputs)
            elif len(names) == 1 and not isinstance(inputs, (list, dict)):
                inputs = [inputs]  # a model made with inputs=[x] takes x alone too
            treedef = jax.tree_util.tree_structure(structure)
            try:
                flat = treedef.flatten_up_to(inputs)
            except (ValueError, TypeError):
                fail(f"expected inputs structured as {_describe_structure(structure)}")
        out = []
        for t, x in zip(self.input_tensors, flat):
            x = jnp.asarray(x)
            if x.dtype != t.dtype:
                x = x.astype(t.dtype)
            if len(x.shape) != len(t.shape) or any(
                d is not None and d != s for d, s in zip(t.shape, x.shape)
            ):
                fail(f"input {t.layer.name!r} expected shape {t.shape}, got shape {tuple(x.shape)}")
            out.append(x)
        return out

    def run(self, flat_inputs):
        """Replays the nodes on arrays; returns the outputs in their structure."""
        values = {id(t): x for t, x in zip(self.input_tensors, flat_inputs)}
        masks = {}  # Keras masks (Embedding(mask_zero=True)) carried from layer to layer
        for node in self.nodes:
            if isinstance(node.layer, InputLayer):
                continue
            inputs, args, kwargs = node.call_args(lambda t: values[id(t)])
            mask = [masks.get(id(t)) for t in node.inputs]
            mask = (
                mask[0] if len(mask) == 1 else (mask if any(m is not None for m in mask) else None)
            )
            out, out_mask = call_with_mask(node.layer, inputs, mask, args, **kwargs)
            if out_mask is not None and len(node.flat_outputs) == 1:
                masks[id(node.flat_outputs[0])] = out_mask
            flat = jax.tree_util.tree_leaves(out)
            if len(flat) != len(node.flat_outputs):
                raise LayerCallError(
                    f"layer {node.layer.name!r} returned {len(flat)} arrays, "
                    f"{len(node.flat_outputs)} when the model was built"
                )
            for t, x in zip(node.flat_outputs, flat):
                values[id(t)] = x
        return jax.tree_util.tree_map(lambda t: values[id(t)], self.outputs)


def _describe_structure(structure):
    return str(jax.tree_util.tree_map(lambda t: t.layer.name, structure))


# -- config ------------------------------------------------------------------------------

_TENSOR = "__tensor__"


def _encode(value, graph, where):
    if isinstance(value, SymbolicTensor):
        return {_TENSOR: [value.layer.name, graph.node_index[id(value.node)], value.index]}
    if isinstance(value, (list, tuple)):
        return [_encode(v, graph, where) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, graph, where) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise SerializationError(
        f"{where}: a call argument of type {type(value).__name__} cannot be saved in a "
        "config; pass only symbolic tensors and plain values to layers in a functional model"
    )


def graph_config(graph):
    """The graph as JSON-ready data: each layer's config with the calls made of it."""
    layers = []
    for layer in graph.layers:
        entry = saving.serialize(layer)
        entry["name"] = layer.name
        calls = []
        if not isinstance(layer, InputLayer):
            for node in graph.nodes_of(layer):
                inputs, args, kwargs = node.call_args(lambda t: t)
                where = f"layer {layer.name!r}"
                calls.append(
                    {
                        "args": _encode([inputs, *args], graph, where),
                        "kwargs": _encode(kwargs, graph, where),
                    }
                )
        entry["inbound_nodes"] = calls
        layers.append(entry)
    return {
        "layers": layers,
        "input_layers": _encode(graph.inputs, graph, "inputs"),
        "output_layers": _encode(graph.outputs, graph, "outputs"),
    }


class _Missing(Exception):
    pass


def _decode(value, tensors):
    if isinstance(value, dict) and set(value) == {_TENSOR}:
        key = tuple(value[_TENSOR]) if isinstance(value[_TENSOR], list) else None
        if key not in tensors:
            raise _Missing(value[_TENSOR])
        return tensors[key]
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v, tensors) for k, v in value.items()}
    return value


def graph_from_config(config):
    """`(inputs, outputs)` rebuilt from `graph_config`'s data: layers made and called again."""
    try:
        entries = list(config["layers"])
        input_spec, output_spec = config["input_layers"], config["output_layers"]
    except (KeyError, TypeError) as e:
        raise SerializationError(f"functional model config lacks {e}") from None
    layers, pending, tensors, counts = [], {}, {}, {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise SerializationError(f"functional model config: layer entry {entry!r:.80}")
        layer = saving.deserialize(entry)
        # Tensors refer to layers by the name saved, which a layer whose
        # __init__ drops `name` (the guide's MySequentialModel) does not get back.
        name = entry.get("name", layer.name)
        if name in pending:
            raise SerializationError(f"functional model config: layer {name!r} twice")
        layers.append((name, layer))
        if isinstance(layer, InputLayer):
            tensors[(name, 0, 0)] = layer.output
        pending[name] = list(entry.get("inbound_nodes") or [])
    progress = True
    while progress and any(pending.values()):
        progress = False
        for name, layer in layers:
            calls = pending[name]
            while calls:
                call = calls[0]
                try:
                    args = _decode(call.get("args", []), tensors)
                    kwargs = _decode(call.get("kwargs", {}), tensors)
                except _Missing:
                    break
                if not isinstance(args, list) or not args or not isinstance(kwargs, dict):
                    raise SerializationError(f"functional model config: bad call of layer {name!r}")
                outputs = layer(args[0], *args[1:], **kwargs)
                k = counts.get(name, 0)
                counts[name] = k + 1
                for i, t in enumerate(jax.tree_util.tree_leaves(outputs)):
                    tensors[(name, k, i)] = t
                calls.pop(0)
                progress = True
    stuck = [name for name, calls in pending.items() if calls]
    try:
        if stuck:
            raise _Missing(stuck)
        return _decode(input_spec, tensors), _decode(output_spec, tensors)
    except _Missing as e:
        raise SerializationError(
            f"functional model config: the graph refers to tensors no layer call makes "
            f"({e.args[0]}); the config is inconsistent"
        ) from None
