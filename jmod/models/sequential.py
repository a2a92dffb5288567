"""`Sequential`: a stack of layers, each feeding the next."""

import jax
import numpy as np

from jmod import _sampling, saving
from jmod.compiled import jit
from jmod.errors import ModuleError, SerializationError
from jmod.layers import layer as _layer
from jmod.layers.layer import Layer, call_with_mask
from jmod.layers.policy import dtype_policy
from jmod.models import functional
from jmod.models.model import Model, _store_layers


class Sequential(Model):
    """A model that calls its layers one after the other.

    Its input shape comes from an `Input` added first, from the first
    layer's `input_shape=`, from `build(input_shape)`, or from the first
    call (batch dimension kept unknown); from then on `summary()` shows
    each layer's output shape.

    Example:
        >>> model = jmod.Sequential([
        ...     jmod.Input(shape=[3]),
        ...     jmod.layers.Dense(4, activation="relu"),
        ...     jmod.layers.Dense(2),
        ... ])
        >>> model(jnp.ones((5, 3))).shape, model.count_params()
        ((5, 2), 26)
        >>> model.output_shape
        (None, 2)

    Args:
        layers: the layers in order (a `jmod.Input` may come first).
        name: the model's name (`sequential`, `sequential_1`, ... by default).
        trainable: whether its variables are trained.
        dtype: a dtype policy name, as for layers.
    """

    def __init__(self, layers=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.__dict__["_jmod_input"] = None
        _store_layers(self, [])
        for layer in layers or ():
            self.add(layer)

    def add(self, layer):
        """Appends a layer (or, first of all, a `jmod.Input`)."""
        if isinstance(layer, functional.SymbolicTensor):
            if not isinstance(layer.layer, functional.InputLayer):
                raise ModuleError(
                    f"Sequential {self.name!r}: add() takes layers or a jmod.Input, got the "
                    f"output of layer {layer.layer.name!r}"
                )
            layer = layer.layer
        if isinstance(layer, functional.InputLayer):
            if self.layers or self.__dict__["_jmod_input"] is not None:
                raise ModuleError(
                    f"Sequential {self.name!r}: an Input can only be added first, before any layer"
                )
            self.__dict__["_jmod_input"] = layer.output
            self._rebuild()
            return
        if not isinstance(layer, Layer):
            raise ModuleError(
                f"Sequential {self.name!r}: add() takes a jmod.layers.Layer, got "
                f"{type(layer).__name__}"
            )
        if any(other.name == layer.name for other in self.layers):
            raise ModuleError(
                f"Sequential {self.name!r}: a layer named {layer.name!r} is already in the "
                "model; layer names must be unique"
            )
        _store_layers(self, [*self.layers, layer])
        batch_shape = layer.__dict__.get("_batch_input_shape")
        if self.__dict__["_jmod_input"] is None and len(self.layers) == 1 and batch_shape:
            self.__dict__["_jmod_input"] = functional.Input(
                batch_shape=batch_shape, name=f"{layer.name}_input"
            )
        self._rebuild()

    def pop(self):
        """Removes and returns the last layer."""
        layers = self.layers
        if not layers:
            raise ModuleError(f"Sequential {self.name!r}: pop() on a model with no layers")
        _store_layers(self, layers[:-1])
        self._rebuild()
        return layers[-1]

    def _rebuild(self):
        # Runs the layers on the symbolic input: builds them and records each
        # output shape (for summary) in a graph.
        x = self.__dict__["_jmod_input"]
        if x is None:
            self.built = False
            self.__dict__.pop("_jmod_graph", None)
            return
        start = x
        for layer in self.layers:
            x = layer(x)
        self.__dict__["_jmod_graph"] = functional.Graph(start, x, self.name)
        self._build_shape = start.shape
        self.built = True

    def _maybe_build(self, inputs):
        if self.built:
            return
        if self.__dict__["_jmod_input"] is None and getattr(inputs, "ndim", 0) >= 1 and self.layers:
            first = self.layers[0]
            self.__dict__["_jmod_input"] = functional.Input(
                batch_shape=(None, *inputs.shape[1:]),
                dtype=inputs.dtype,
                name=f"{first.name}_input",
            )
            self._rebuild()
        else:
            super()._maybe_build(inputs)

    def build(self, input_shape=None):
        """Builds the layers for inputs of `input_shape` (batch dimension included, may be None).

        Example:
            >>> model = jmod.Sequential([jmod.layers.Dense(2)])
            >>> model.build((None, 3))
            >>> model.count_params()
            8
        """
        if input_shape is None:
            if self.__dict__["_jmod_input"] is None:
                raise ModuleError(
                    f"Sequential {self.name!r}: build() needs an input_shape; the model has "
                    "no Input"
                )
        else:
            first = self.layers[0].name if self.layers else self.name
            self.__dict__["_jmod_input"] = functional.Input(
                batch_shape=tuple(input_shape), name=f"{first}_input"
            )
        self._rebuild()

    def __call__(self, inputs, *args, **kwargs):
        # An eager call of built-in layers runs as one compiled computation:
        # op by op, every op of every layer compiled its own XLA program on
        # first use (24 Dense layers: 72 programs, ~10 s on a laptop CPU, against
        # ~1 s for the one program). Custom layers keep running op by op, so
        # their prints and breakpoints fire on every call.
        if args or set(kwargs) - {"training"} or not self._compiles(inputs):
            return super().__call__(inputs, *args, **kwargs)
        training = kwargs.get("training")
        if training is None:
            training = _layer._training.get()
        if not self.built:
            self._maybe_build(self._convert_input(inputs))
        return self._compiled_call(inputs, training=training)

    @jit
    def _compiled_call(self, inputs, training=None):
        return Layer.__call__(self, inputs, training=training)

    def _compiles(self, inputs):
        if not isinstance(inputs, (np.ndarray, jax.Array)) or isinstance(inputs, jax.core.Tracer):
            return False
        return bool(self.layers) and _sampling.eager() and _compilable(self)

    def call(self, inputs, training=None, mask=None):
        x = inputs
        for layer in self.layers:
            # Keras masks (Embedding(mask_zero=True)) flow from layer to layer.
            x, mask = call_with_mask(layer, x, mask)
        return x

    def get_config(self):
        if type(self).__init__ is not Sequential.__init__:
            return Layer.get_config(self)  # a subclass: its own constructor arguments
        config = {"name": self.name, "trainable": self.trainable}
        if self.dtype_policy.name != dtype_policy().name:
            config["dtype"] = self.dtype_policy.name
        layers = [saving.serialize(layer) for layer in self.layers]
        start = self.__dict__["_jmod_input"]
        if start is not None:
            layers.insert(0, saving.serialize(start.layer))
        config["layers"] = layers
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if cls.__init__ is not Sequential.__init__:
            return cls(**config)
        entries = config.pop("layers", [])
        if not isinstance(entries, list):
            raise SerializationError(
                f"Sequential config: 'layers' must be a list, got {entries!r:.60}"
            )
        return cls(layers=[saving.deserialize(entry) for entry in entries], **config)


def _compilable(model):
    """Whether every layer is jmod's own and adds no per-call loss (nested models too)."""
    for layer in model.layers:
        if not type(layer).__module__.startswith("jmod."):
            return False
        if layer.__dict__.get("activity_regularizer") is not None:
            return False
        inner = getattr(layer, "layers", None)
        if inner is not None and not _compilable(layer):
            return False
    return True
