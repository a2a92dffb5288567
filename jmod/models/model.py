"""`Model`: a layer made of layers, with `summary()`, `save()` and the functional API.

Subclass it and write `call` (a subclassed model), or give it symbolic
`inputs` and `outputs` (a functional model: `jmod.Model(inputs=..., outputs=...)`).
"""

import inspect
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jmod import _scope, _tracing, saving
from jmod.errors import ModuleError, SerializationError
from jmod.layers.layer import Layer, _map_shapes
from jmod.layers.policy import dtype_policy
from jmod.models import functional
from jmod.models import summary as _summary
from jmod.module import _deliver, _expand
from jmod.training.trainer import TrainerMixin

# Functional and Sequential models keep their layers in the instance dict under
# "layers", a dict name -> layer, so variable paths read `layers/dense/kernel`
# (as in Keras 3 archives); the `layers` property (a list, as Keras gives it)
# shadows that entry for attribute access.
_STORE = "layers"


def _store_layers(model, layers):
    store = {layer.name: layer for layer in layers}
    d = model.__dict__
    d[_STORE] = store
    d["_jmod_version"] = _tracing.bump()
    if d.get("_jmod_pending"):
        _deliver(model, _STORE, store)


def _input_spec(inputs):
    # Shapes (batch dimension unknown) and dtypes of a call's inputs, as JSON.
    def spec(x):
        if not hasattr(x, "shape"):
            return None
        shape = list(x.shape)
        if shape:
            shape[0] = None
        return {"shape": shape, "dtype": jnp.dtype(x.dtype).name}

    return jax.tree_util.tree_map(spec, inputs, is_leaf=lambda x: hasattr(x, "shape"))


def _is_spec(x):
    return isinstance(x, dict) and "shape" in x and "dtype" in x


def _is_shape(x):
    return isinstance(x, (list, tuple)) and all(d is None or isinstance(d, int) for d in x)


class Model(TrainerMixin, Layer):
    """A layer that groups layers: subclassed, or functional from `jmod.Input`s.

    Subclassed models create layers in `__init__` and use them in `call`;
    their variables are collected like any module's. Functional models are
    made from symbolic inputs and outputs, may have several of each (lists
    or dicts) and share layers; they run eagerly or under `jmod.jit`, and
    rebuild from their config.

    Example:
        >>> class TwoLayers(jmod.Model):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.dense_1 = jmod.layers.Dense(3)
        ...         self.dense_2 = jmod.layers.Dense(2)
        ...     def call(self, x):
        ...         return self.dense_2(self.dense_1(x))
        >>> model = TwoLayers()
        >>> model(jnp.ones((1, 3))).shape, model.count_params()
        ((1, 2), 20)
        >>> inputs = jmod.Input(shape=[3])
        >>> functional = jmod.Model(inputs=inputs, outputs=jmod.layers.Dense(2)(inputs))
        >>> [type(layer).__name__ for layer in functional.layers]
        ['InputLayer', 'Dense']

    Args:
        inputs: for a functional model, a symbolic tensor from `jmod.Input`
            or a list/dict of them.
        outputs: for a functional model, symbolic tensors computed from `inputs`.
        name: the model's name (`model`, `model_1`, ... or the subclass in snake_case).
        trainable: whether its variables are trained.
        dtype: a dtype policy name, as for layers.
    """

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if inputs is None and outputs is None:
            return
        if inputs is None or outputs is None:
            raise ModuleError(
                f"model {self.name!r}: a functional model needs both inputs= and outputs="
            )
        self._set_graph(functional.Graph(inputs, outputs, self.name))

    def _set_graph(self, graph):
        self.__dict__["_jmod_graph"] = graph
        _store_layers(self, graph.layers)
        self._build_shape = jax.tree_util.tree_map(lambda t: t.shape, graph.inputs)
        self.built = True

    # -- structure -----------------------------------------------------------------
    @property
    def layers(self):
        """The model's direct layers, as a list.

        Functional: the graph's layers from the inputs on (input layers
        included). Subclassed: the layers assigned to attributes, in
        assignment order.
        """
        store = self.__dict__.get(_STORE)
        if store is not None:
            return list(store.values())
        found = {}
        for attr, value in vars(self).items():
            if attr.startswith("_jmod") or attr in type(self)._jmod_untracked:
                continue
            for _, obj in _expand(attr, value, set()):
                if isinstance(obj, Layer):
                    found.setdefault(id(obj), obj)
        return list(found.values())

    @layers.setter
    def layers(self, value):
        raise ModuleError(
            f"model {self.name!r}: `layers` is read-only (it lists the model's layers); "
            "keep your layers under another attribute name"
        )

    def get_layer(self, name=None, index=None):
        """The layer called `name` (or at position `index` in `layers`).

        Example:
            >>> inputs = jmod.Input(shape=[3])
            >>> model = jmod.Model(inputs, jmod.layers.Dense(2, name="head")(inputs))
            >>> model.get_layer("head").units
            2
        """
        layers = self.layers
        if index is not None:
            if name is not None:
                raise ModuleError(f"model {self.name!r}: get_layer takes a name or an index")
            if not -len(layers) <= index < len(layers):
                raise ModuleError(
                    f"model {self.name!r}: get_layer index {index} out of range; the model "
                    f"has {len(layers)} layers"
                )
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ModuleError(
            f"model {self.name!r}: no layer named {name!r}; its layers are "
            f"{[layer.name for layer in layers]}"
        )

    def _graph(self):
        return self.__dict__.get("_jmod_graph")

    @property
    def inputs(self):
        """A functional model's symbolic inputs, as a list (None for subclassed models)."""
        graph = self._graph()
        return list(graph.input_tensors) if graph is not None else None

    @property
    def outputs(self):
        """A functional model's symbolic outputs, as a list (None for subclassed models)."""
        graph = self._graph()
        return list(graph.output_tensors) if graph is not None else None

    @property
    def input_shape(self):
        """The shape(s) the model was built for, batch dimension None in functional models."""
        return self._build_shape

    @property
    def output_shape(self):
        """A functional model's output shape(s)."""
        graph = self._graph()
        if graph is None:
            raise ModuleError(f"model {self.name!r}: output_shape needs a functional model")
        return jax.tree_util.tree_map(lambda t: t.shape, graph.outputs)

    # -- building and calling ------------------------------------------------------
    def call(self, inputs, training=None, mask=None):
        """Runs a functional model's graph; subclassed models override this."""
        graph = self._graph()
        if graph is None:
            raise NotImplementedError(
                f"{type(self).__name__} must implement call(), or be made with "
                "jmod.Model(inputs=..., outputs=...)"
            )
        return graph.run(graph.flatten_inputs(self, inputs, (), {}))

    def _maybe_build(self, inputs):
        # Keras never runs Model.build from the first call: a subclassed model
        # builds its layers by calling them. A subclass's own build() does run.
        if self.built:
            return
        self._build_shape = _map_shapes(inputs)
        self.__dict__["_jmod_build_spec"] = _input_spec(inputs)
        if type(self).build is not Model.build:
            self.__dict__["_jmod_building"] = True
            try:
                self.build(self._build_shape)
            finally:
                self.__dict__.pop("_jmod_building", None)
        self.built = True

    def build(self, input_shape):
        """Creates the variables by calling the model once on zeros of `input_shape`.

        None dimensions become 1. Inputs are float32; a model taking integer
        inputs is built by calling it on data instead.

        Example:
            >>> class Head(jmod.Model):
            ...     def __init__(self, **kwargs):
            ...         super().__init__(**kwargs)
            ...         self.dense = jmod.layers.Dense(2)
            ...     def call(self, x):
            ...         return self.dense(x)
            >>> model = Head()
            >>> model.build((None, 3))
            >>> model.count_params()
            8
        """
        if self.built or self.__dict__.get("_jmod_building"):
            return
        shapes = jax.tree_util.tree_map(
            lambda s: {"shape": list(s), "dtype": "float32"}, input_shape, is_leaf=_is_shape
        )
        self.build_from_config({"input_spec": shapes})

    def get_build_config(self):
        """What `build_from_config` needs to create a subclassed model's variables, or None."""
        spec = self.__dict__.get("_jmod_build_spec")
        if self._graph() is not None or spec is None or not self.built:
            return None
        return {"input_spec": spec}

    def build_from_config(self, config):
        """Creates the variables from `get_build_config()`'s dict (a call on zeros)."""
        spec = config["input_spec"]
        zeros = jax.tree_util.tree_map(
            lambda s: jnp.zeros(tuple(1 if d is None else d for d in s["shape"]), s["dtype"]),
            spec,
            is_leaf=_is_spec,
        )
        with _scope.Scope():  # creates the variables; keeps nothing else the call assigns
            self(zeros)
        self.__dict__["_jmod_build_spec"] = spec
        self._build_shape = jax.tree_util.tree_map(
            lambda s: tuple(s["shape"]), spec, is_leaf=_is_spec
        )

    # -- config --------------------------------------------------------------------
    def get_config(self):
        """Functional models: the graph (layers and how they are called); others: see Layer."""
        graph = self._graph()
        if graph is None or type(self).__init__ is not Model.__init__:
            return super().get_config()
        config = {"name": self.name, "trainable": self.trainable}
        if self.dtype_policy.name != dtype_policy().name:
            config["dtype"] = self.dtype_policy.name
        config.update(functional.graph_config(graph))
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuilds a model from `get_config()`; a functional config rebuilds its graph."""
        config = dict(config)
        if {"layers", "input_layers", "output_layers"} <= config.keys():
            inputs, outputs = functional.graph_from_config(config)
            rest = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
            return cls(inputs=inputs, outputs=outputs, **rest)
        return cls(**config)

    def to_json(self):
        """The model's config (`jmod.saving.serialize`) as a JSON string."""
        return json.dumps(saving.serialize(self))

    # -- compile config (stored by save) ------------------------------------------
    def compile(self, *args, **kwargs):
        """Sets up training (see `jmod.training.TrainerMixin.compile`).

        The arguments are kept so that `save` can store them when they are
        names or serializable jmod objects (`"adam"`, `"mse"`, `["mae"]`):
        `load_model` then compiles the model again and restores the
        optimizer's state. An optax object or a plain function cannot be
        stored; such a model loads uncompiled.
        """
        super().compile(*args, **kwargs)
        bound = inspect.signature(TrainerMixin.compile).bind(self, *args, **kwargs)
        self.__dict__["_jmod_compile_args"] = dict(list(bound.arguments.items())[1:])

    def get_compile_config(self):
        """The `compile` arguments as JSON-ready data, or None if not compiled or not storable."""
        arguments = self.__dict__.get("_jmod_compile_args")
        if arguments is None:
            return None
        try:
            return {key: _encode_compile(value, key) for key, value in arguments.items()}
        except SerializationError as e:
            warnings.warn(
                f"model {self.name!r}: compile arguments cannot be saved ({e}); the archive "
                "loads as an uncompiled model",
                stacklevel=3,
            )
            return None

    def compile_from_config(self, config):
        """Compiles the model with the arguments `get_compile_config()` stored."""
        self.compile(**{key: _decode_compile(value) for key, value in config.items()})

    # -- summary -------------------------------------------------------------------
    def _summary_parts(self):
        if not self.built:
            raise ModuleError(
                f"model {self.name!r} has not yet been built. Build the model first by calling "
                "`build()` or by calling the model on a batch of data."
            )
        graph = self._graph()
        rows = []
        if graph is not None:
            chain = graph.is_chain()
            for layer in self.layers:
                nodes = graph.nodes_of(layer)
                shapes = {_shape_text(n.outputs) for n in nodes}
                shape = shapes.pop() if len(shapes) == 1 else "multiple"
                if isinstance(layer, functional.InputLayer):
                    shape = f"[{shape}]"
                connected = [
                    f"{t.layer.name}[{graph.node_index[id(t.node)]}][{t.index}]"
                    for n in nodes
                    for t in n.inputs
                ]
                rows.append((_label(layer), shape, layer.count_params(), connected))
        else:
            chain = True
            shapes = self._inferred_shapes()
            for layer in self.layers:
                shape = shapes.get(id(layer), {"multiple"})
                shape = next(iter(shape)) if len(shape) == 1 else "multiple"
                rows.append((_label(layer), shape, layer.count_params(), None))
        return rows, _totals(self._param_variables()), not chain

    def _inferred_shapes(self):
        # A subclassed model replayed on symbolic inputs: each direct layer's
        # output shape, where call() only calls layers. Otherwise "multiple".
        spec = self.__dict__.get("_jmod_build_spec")
        if spec is None:
            return {}
        try:
            sym = jax.tree_util.tree_map(
                lambda s: functional.SymbolicTensor(s["shape"], s["dtype"]), spec, is_leaf=_is_spec
            )
            with functional.record_nodes() as nodes:
                self.call(sym)
        except Exception:  # any call() that does more than call layers
            return {}
        direct = {id(layer) for layer in self.layers}
        shapes = {}
        for node in nodes:
            if id(node.layer) in direct:
                shapes.setdefault(id(node.layer), set()).add(_shape_text(node.outputs))
        return shapes

    def summary(self, line_length=None, positions=None, print_fn=None):
        """Prints the table of layers, output shapes and parameter counts, with totals.

        The batch dimension shows as None. Graphs that are not a simple chain
        get a "Connected to" column, as in Keras.

        Example:
            >>> jmod.layers.reset_names()
            >>> inputs = jmod.Input(shape=[3])
            >>> model = jmod.Model(inputs, jmod.layers.Dense(2)(inputs))
            >>> model.summary()  # doctest: +NORMALIZE_WHITESPACE
            Model: "model"
            _________________________________________________________________
             Layer (type)                Output Shape              Param #
            =================================================================
             input_1 (InputLayer)        [(None, 3)]               0
            <BLANKLINE>
             dense (Dense)               (None, 2)                 8
            <BLANKLINE>
            =================================================================
            Total params: 8 (32.00 B)
            Trainable params: 8 (32.00 B)
            Non-trainable params: 0 (0.00 B)
            _________________________________________________________________

        Args:
            line_length: total width of the table.
            positions: where columns end (fractions of the width, or columns).
            print_fn: called with each line instead of `print`.
        """
        rows, totals, connections = self._summary_parts()
        text = _summary.format_table(self.name, rows, totals, connections, line_length, positions)
        if print_fn is None:
            print(text)
        else:
            for line in text.split("\n"):
                print_fn(line)

    # -- saving --------------------------------------------------------------------
    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Writes the whole model to one zip archive (`"model.jmod"`).

        The archive holds the config (JSON), the weights (jmod checkpoint
        format), the optimizer state if the model was compiled, and metadata.
        `jmod.models.load_model(filepath)` rebuilds it.
        """
        from jmod.models import archive

        return archive.save_model(self, filepath, overwrite, include_optimizer)

    def save_weights(self, filepath):
        """Writes the variables as a jmod checkpoint (`filepath.index` and data files)."""
        from jmod.checkpoint import Checkpoint

        return Checkpoint(model=self).write(filepath)

    def load_weights(self, filepath, partial=False):
        """Restores variables from `save_weights`' checkpoint; returns the load status.

        Variables not created yet (a model not yet called) get their values
        when they are created.
        """
        from jmod.checkpoint import Checkpoint

        return Checkpoint(model=self).restore(filepath, partial=partial)


def _label(layer):
    return f"{layer.name} ({type(layer).__name__})"


def _shape_text(outputs):
    return str(jax.tree_util.tree_map(lambda t: t.shape, outputs))


def _totals(variables):
    counts = {True: [0, 0], False: [0, 0]}
    for var in variables:
        size = int(np.prod(var.shape, dtype=np.int64))
        counts[bool(var.trainable)][0] += size
        counts[bool(var.trainable)][1] += size * jnp.dtype(var.dtype).itemsize
    return (*counts[True], *counts[False])


def _encode_compile(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) or type(value) is tuple:
        return [_encode_compile(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode_compile(v, f"{where}.{k}") for k, v in value.items()}
    if hasattr(value, "get_config") and not isinstance(value, type):
        return saving.serialize(value)
    raise SerializationError(f"{where}={type(value).__name__} is neither a name nor a jmod object")


def _decode_compile(value):
    if isinstance(value, dict) and {"class_name", "config", "registered_name"} <= value.keys():
        return saving.deserialize(value)
    if isinstance(value, list):
        return [_decode_compile(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_compile(v) for k, v in value.items()}
    return value
