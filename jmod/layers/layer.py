"""`Layer`: a module that builds itself from its first input, as Keras layers do."""

import contextvars
import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np

from jmod import _scope, constraints, initializers, regularizers
from jmod._naming import keras_snake_case
from jmod.errors import JmodError, LayerCallError, SerializationError
from jmod.layers.policy import DTypePolicy, dtype_policy
from jmod.module import Module
from jmod.random import Generator
from jmod.signature import is_number_list
from jmod.variables import Variable

_name_counts: dict[str, int] = {}


def unique_name(base):
    """`base`, then `base_1`, `base_2`, ... within this process (Keras layer naming)."""
    n = _name_counts.get(base, 0)
    _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def reset_names():
    """Starts layer naming afresh (`dense`, `dense_1`, ... again), like `clear_session`."""
    _name_counts.clear()


class InputSpec:
    """What a layer accepts: rank bounds and fixed axis sizes, checked before `call`.

    Example:
        >>> spec = jmod.layers.InputSpec(min_ndim=2, axes={-1: 3})
        >>> spec.check((4, 3)) is None
        True
    """

    def __init__(self, ndim=None, min_ndim=None, axes=None):
        self.ndim, self.min_ndim, self.axes = ndim, min_ndim, dict(axes or {})

    def check(self, shape):
        """None if `shape` is acceptable, else a sentence saying why not."""
        rank = len(shape)
        if self.ndim is not None and rank != self.ndim:
            return f"expected inputs of rank {self.ndim}, got shape {tuple(shape)}"
        if self.min_ndim is not None and rank < self.min_ndim:
            return f"expected inputs of rank >= {self.min_ndim}, got shape {tuple(shape)}"
        for axis, size in self.axes.items():
            if -rank <= axis < rank and shape[axis] is not None and shape[axis] != size:
                where = "last dimension" if axis == -1 else f"dimension {axis}"
                return f"expected inputs with {where} {size}, got shape {tuple(shape)}"
        return None


def _describe_arg(x):
    if isinstance(x, (list, tuple)) and x and all(hasattr(i, "shape") for i in x):
        items = ", ".join(_describe_arg(i) for i in x)
        return f"[{items}]" if isinstance(x, list) else f"({items})"
    if isinstance(x, Variable):
        x = x._value
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        kind = "Array" if not isinstance(x, np.ndarray) else "ndarray"
        return f"{kind}(shape={tuple(x.shape)}, dtype={jnp.dtype(x.dtype).name})"
    text = repr(x)
    return text if len(text) < 80 else text[:77] + "..."


def _shape_of(x):
    if hasattr(x, "shape"):
        return tuple(x.shape)
    return tuple(np.shape(x))


def _is_input_number_list(x):
    # `jmod.jit`'s rule for a list of numbers, but only a list: a tuple at the
    # top is several inputs.
    return isinstance(x, list) and is_number_list(x)


def _map_shapes(inputs):
    return jax.tree_util.tree_map(_shape_of, inputs, is_leaf=lambda x: hasattr(x, "shape"))


# The `training` flag of the outermost layer call, handed to inner layers that
# were not given one (Keras' call context); per thread and asyncio task.
_training = contextvars.ContextVar("jmod_training", default=None)


class Layer(Module):
    """Base class of Keras-style layers: `build` once from the first input, then `call`.

    Subclasses implement `build(input_shape)` (create variables, e.g. with
    `add_weight`) and `call(inputs, training=None, mask=None)`. Layers whose
    `__init__` takes only plain values get `get_config` for free.

    Example:
        >>> class Scale(jmod.layers.Layer):
        ...     def build(self, input_shape):
        ...         self.k = self.add_weight("k", (input_shape[-1],), initializer="ones")
        ...     def call(self, inputs):
        ...         return inputs * self.k
        >>> layer = Scale()
        >>> layer(jnp.ones((2, 3))).shape, layer.built
        ((2, 3), True)

    Args:
        name: a name; by default a unique snake_case one (`scale`, `scale_1`, ...).
        trainable: whether the layer's variables are trained.
        dtype: a dtype or `DTypePolicy` name (`"mixed_bfloat16"`).
        activity_regularizer: a `jmod.regularizers` name/object or callable whose
            penalty of each output (divided by the batch size) is added to `losses`.
    """

    _jmod_untracked = frozenset({"input_spec"})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_jmod_captures", False):
            cls.__init__ = _capture_init_args(init)
        call = cls.__dict__.get("call")
        if call is not None:
            params = inspect.signature(call).parameters
            cls._jmod_call_takes = frozenset(params)
            cls._jmod_call_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())

    def __init__(
        self,
        name=None,
        trainable=True,
        dtype=None,
        input_shape=None,
        activity_regularizer=None,
        **kwargs,
    ):
        if kwargs.get("quantization_config", 0) is None:
            kwargs.pop("quantization_config")  # written by Keras 3 into every config
        if isinstance(dtype, dict):  # a Keras 3 DTypePolicy config
            dtype = dtype.get("config", {}).get("name", dtype)
        if kwargs:
            raise SerializationError(
                f"{type(self).__name__}: unexpected keyword arguments {sorted(kwargs)}; "
                "a layer takes name, trainable, dtype and its own arguments"
            )
        if name is not None and not isinstance(name, str):
            raise SerializationError(f"layer name must be a str, got {type(name).__name__}")
        super().__init__(name=name or unique_name(keras_snake_case(type(self).__name__)))
        self.built = False
        self.dtype_policy = DTypePolicy(dtype) if dtype is not None else dtype_policy()
        self.input_spec = None
        self._trainable = bool(trainable)
        self._losses = []
        self._build_shape = None
        self._batch_input_shape = (None, *input_shape) if input_shape is not None else None
        if activity_regularizer is not None:
            self.activity_regularizer = regularizers.get(activity_regularizer)

    # -- dtype -------------------------------------------------------------------
    @property
    def dtype(self):
        """The dtype variables are stored in."""
        return self.dtype_policy.variable_dtype

    @property
    def compute_dtype(self):
        """The dtype the layer computes in (bfloat16 under `"mixed_bfloat16"`)."""
        return self.dtype_policy.compute_dtype

    def _cast(self, x):
        """`x` (a variable or array) in the compute dtype, if it is floating."""
        x = x.value if isinstance(x, Variable) else x
        if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != self.compute_dtype:
            return x.astype(self.compute_dtype)
        return x

    # -- trainability --------------------------------------------------------------
    @property
    def trainable(self):
        """Setting False freezes every variable of this layer and its sublayers."""
        return self._trainable

    @trainable.setter
    def trainable(self, flag):
        flag = bool(flag)
        self._trainable = flag
        # Variables created non-trainable (batch statistics, also those of
        # sublayers) and non-float ones (random keys) stay frozen on unfreeze.
        frozen_at_creation = set(self.__dict__.get("_jmod_frozen", ()))
        for sub in self.submodules:
            frozen_at_creation.update(sub.__dict__.get("_jmod_frozen", ()))
        for var in self.variables:
            var.trainable = (
                flag
                and id(var) not in frozen_at_creation
                and jnp.issubdtype(var.dtype, jnp.inexact)
            )
        for sub in self.submodules:
            if isinstance(sub, Layer):
                sub.__dict__["_trainable"] = flag

    # -- weights -------------------------------------------------------------------
    def add_weight(
        self,
        name=None,
        shape=(),
        initializer=None,
        trainable=True,
        dtype=None,
        regularizer=None,
        sharding=None,
        constraint=None,
    ):
        """Creates a variable, attaches it as attribute `name` and returns it.

        Args:
            name: attribute name (and variable name); auto-numbered if None.
            shape: the variable's shape.
            initializer: a name (`"glorot_uniform"`), an `Initializer` or a callable
                `(shape, dtype) -> array`; default glorot_uniform for floats, zeros else.
            trainable: whether it is trained.
            dtype: defaults to the layer's variable dtype.
            regularizer: a callable `(value) -> scalar` whose result is added to
                `losses` on every call.
            sharding: a partition spec over the active mesh's axes, e.g.
                `(None, "model")` (see `jmod.distributed`); None replicates.
            constraint: a `jmod.constraints` name/object or callable
                `(value) -> value` applied after each optimizer update.
        """
        dtype = jnp.dtype(dtype or self.dtype)
        if initializer is None:
            initializer = "glorot_uniform" if jnp.issubdtype(dtype, jnp.floating) else "zeros"
        init = initializers.get(initializer)
        if name is None:
            name = unique_name(f"_{self.name}_variable").split(f"_{self.name}_", 1)[1]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SerializationError(
                f"layer {self.name!r}: weight name {name!r} is not an identifier"
            )
        var = Variable(
            init(tuple(shape), dtype),
            trainable=trainable and self._trainable,
            name=name,
            dtype=dtype,
            sharding=sharding,
        )
        if not trainable:
            self.__dict__.setdefault("_jmod_frozen", set()).add(id(var))
        if regularizer is not None:
            self.__dict__.setdefault("_jmod_regularizers", []).append((var, regularizer))
        if constraint is not None:
            self.__dict__.setdefault("_jmod_constraints", []).append(
                (var, constraints.get(constraint))
            )
        setattr(self, name, var)
        return var

    @property
    def weights(self):
        """The variables in Keras' order, as a list.

        A layer's own weights as they were created (trainable ones, then
        non-trainable ones), then each sublayer's in the order the sublayers
        were assigned: `BatchNormalization` gives gamma, beta, moving_mean,
        moving_variance, as Keras does. Random generator keys are not
        weights. `get_weights`/`set_weights` use this order; checkpoints
        and `variables` keep their paths and sorted order.
        """
        return _keras_order(self)

    @property
    def trainable_weights(self):
        return list(self.trainable_variables)

    @property
    def non_trainable_weights(self):
        return list(self.non_trainable_variables)

    def _param_variables(self):
        # A seeded layer's random key is state, but not a parameter (Keras
        # does not count its seed generators either).
        keys = {id(v) for m in self.submodules if isinstance(m, Generator) for v in m.variables}
        return [v for v in self.variables if id(v) not in keys]

    def count_params(self):
        """The number of scalars in all variables (random generator keys excluded)."""
        return int(sum(np.prod(v.shape, dtype=np.int64) for v in self._param_variables()))

    def get_weights(self):
        """Weight values as NumPy arrays, in `weights` (Keras') order."""
        return [np.asarray(v.value) for v in self.weights]

    def set_weights(self, weights):
        """Assigns NumPy arrays in `weights` (Keras') order; each shape must match."""
        variables = self.weights
        if len(weights) != len(variables):
            raise LayerCallError(
                f"layer {self.name!r}: set_weights got {len(weights)} arrays, the layer has "
                f"{len(variables)} weights ({[v.name for v in variables]})"
            )
        for i, (var, w) in enumerate(zip(variables, weights)):
            if tuple(np.shape(w)) != tuple(var.shape):
                raise LayerCallError(
                    f"layer {self.name!r}: set_weights array {i} has shape {tuple(np.shape(w))}, "
                    f"weight {var.name!r} has shape {tuple(var.shape)}"
                )
        for var, w in zip(variables, weights):
            var.assign(w)

    # -- losses --------------------------------------------------------------------
    def add_loss(self, loss):
        """Adds a scalar to `losses` (reset at the start of each call)."""
        self._losses.append(loss)

    @property
    def losses(self):
        """Losses added during the last call, of this layer and its sublayers."""
        out = list(self._losses)
        for var, reg in self.__dict__.get("_jmod_regularizers", ()):
            out.append(reg(var.value))
        for sub in self.submodules:
            if isinstance(sub, Layer):
                out.extend(sub._losses)
                for var, reg in sub.__dict__.get("_jmod_regularizers", ()):
                    out.append(reg(var.value))
        return out

    # -- masks ---------------------------------------------------------------------
    supports_masking = False

    def compute_mask(self, inputs, mask=None):
        """The mask of the outputs: `mask` passed on if `supports_masking`, else None.

        Layers that change the steps axis (or make a mask, as
        `Embedding(mask_zero=True)`) override this.
        """
        return mask if self.supports_masking else None

    # -- building and calling ------------------------------------------------------
    def build(self, input_shape):
        """Creates the layer's variables from the first input's shape; runs once."""

    def call(self, inputs, *args, **kwargs):
        """The layer's computation. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement call()")

    def compute_output_shape(self, input_shape):
        """The output shape for `input_shape` (traced abstractly, never run)."""
        spec = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(
                tuple(1 if d is None else d for d in s), self.compute_dtype
            ),
            input_shape,
            is_leaf=lambda s: (
                isinstance(s, (tuple, list)) and all(d is None or isinstance(d, int) for d in s)
            ),
        )
        out = jax.eval_shape(lambda x: self(x), spec)
        return jax.tree_util.tree_map(lambda o: tuple(o.shape), out)

    def _maybe_build(self, inputs):
        if self.built:
            return
        shape = _map_shapes(inputs)
        self._build_shape = shape
        self.build(shape)
        self.built = True

    def __call__(self, inputs, *args, **kwargs):
        functional = _functional_hook()
        if functional is not None and functional.is_symbolic(inputs):
            return functional.call_symbolic(self, inputs, *args, **kwargs)
        cls = type(self)
        takes = getattr(cls, "_jmod_call_takes", frozenset())
        training = kwargs.get("training")
        if training is None:
            training = _training.get()
        if "training" in takes or getattr(cls, "_jmod_call_var_kw", False):
            if training is not None:
                kwargs["training"] = training
        else:
            # A call without `training` still passes it on to its sublayers (Keras).
            kwargs.pop("training", None)
        if "mask" not in takes and kwargs.get("mask") is None:
            kwargs.pop("mask", None)
        # A nested list of numbers (`layer([[2.0, 2.0, 2.0]])`, as in the guide) is one
        # input array, not a tree of scalars.
        inputs = jax.tree_util.tree_map(self._convert_input, inputs, is_leaf=_is_input_number_list)
        try:
            # Checked before build too, so that a rejected input never builds the layer.
            self._check_input_spec(inputs, args, kwargs)
            if not self.built:
                self._maybe_build(inputs)
                self._check_input_spec(inputs, args, kwargs)
            self._losses.clear()
            token = _training.set(training)
            try:
                outputs = self.call(inputs, *args, **kwargs)
            finally:
                _training.reset(token)
            activity = self.__dict__.get("activity_regularizer")
            if activity is not None:
                for out in jax.tree_util.tree_leaves(outputs):
                    self.add_loss(activity(out) / out.shape[0] if out.ndim else activity(out))
            return outputs
        except (JmodError, _scope.Capture, jax.errors.JAXTypeError):
            raise
        except (TypeError, ValueError) as e:
            raise LayerCallError(self._call_message(str(e), inputs, args, kwargs)) from e

    def _check_input_spec(self, inputs, args, kwargs):
        if self.input_spec is not None:
            problem = self.input_spec.check(_shape_of(jax.tree_util.tree_leaves(inputs)[0]))
            if problem:
                raise LayerCallError(self._call_message(problem, inputs, args, kwargs))

    def _convert_input(self, x):
        if isinstance(x, Variable):
            x = x.value
        if not hasattr(x, "dtype") and isinstance(x, (list, tuple, int, float)):
            x = jnp.asarray(x)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
            if x.dtype != self.compute_dtype:
                x = jnp.asarray(x, self.compute_dtype)
        return x

    def _call_message(self, problem, inputs, args, kwargs):
        received = [f"inputs={_describe_arg(inputs)}"]
        received += [_describe_arg(a) for a in args]
        received += [f"{k}={_describe_arg(v)}" for k, v in kwargs.items()]
        built = f" (built for input shape {self._build_shape})" if self.built else ""
        return (
            f"layer {self.name!r} ({type(self).__name__}){built}: {problem}\n"
            f"Call arguments received: {', '.join(received)}"
        )

    # -- config --------------------------------------------------------------------
    def get_config(self):
        """The constructor arguments that rebuild this layer (JSON-serializable).

        Layers whose `__init__` takes only plain values (numbers, strings,
        lists, dicts, None) need not override this: the arguments they were
        constructed with are captured.
        """
        config = {"name": self.name, "trainable": self.trainable}
        if self.dtype_policy.name != dtype_policy().name or "dtype" in self.__dict__.get(
            "_jmod_init_args", {}
        ):
            config["dtype"] = self.dtype_policy.name
        captured = self.__dict__.get("_jmod_init_args")
        if captured is None:
            return config
        for key, value in captured.items():
            if not _plain(value):
                raise SerializationError(
                    f"layer {self.name!r} ({type(self).__name__}): constructor argument "
                    f"{key}={type(value).__name__} is not a plain value; override get_config()"
                )
            config.setdefault(key, value)
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuilds a layer from `get_config()`'s dict."""
        return cls(**config)


def takes_mask(layer):
    """Whether `layer.call` accepts a `mask` argument.

    Example:
        >>> jmod.layers.layer.takes_mask(jmod.layers.LSTM(2))
        True
    """
    cls = type(layer)
    return "mask" in getattr(cls, "_jmod_call_takes", ()) or getattr(
        cls, "_jmod_call_var_kw", False
    )


def call_with_mask(layer, inputs, mask=None, args=(), **kwargs):
    """`layer(inputs, mask=mask, **kwargs)` if its call takes a mask; returns `(outputs, mask)`.

    The returned mask is `layer.compute_mask(inputs, mask)`: how `Sequential`
    and functional models carry Keras masks (from `Embedding(mask_zero=True)`)
    from layer to layer.

    Example:
        >>> emb = jmod.layers.Embedding(5, 2, mask_zero=True)
        >>> _, mask = jmod.layers.layer.call_with_mask(emb, jnp.array([[3, 0]]))
        >>> mask.tolist()
        [[True, False]]
    """
    if isinstance(mask, list) and "query_mask" in getattr(type(layer), "_jmod_call_takes", ()):
        # Attention: one padding mask per input (query, value, key), as Keras hands them.
        for key, m in zip(("query_mask", "value_mask", "key_mask"), mask):
            if m is not None and kwargs.get(key) is None:
                kwargs[key] = m
    elif mask is not None and "mask" not in kwargs and takes_mask(layer):
        kwargs["mask"] = mask
    outputs = layer(inputs, *args, **kwargs)
    compute = getattr(layer, "compute_mask", None)
    return outputs, compute(inputs, mask) if compute is not None else None


def _keras_order(layer):
    # Own weights as created (insertion order of attributes), trainable ones
    # first, then sublayers depth first in assignment order (Keras' tracking).
    out, seen_vars, seen_mods = [], set(), set()

    def expand(value):
        if isinstance(value, (Module, Variable)):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from expand(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from expand(item)

    def visit(module):
        seen_mods.add(id(module))
        if isinstance(module, Generator):
            return
        untracked = type(module)._jmod_untracked
        own, subs = [], []
        for name, value in list(vars(module).items()):
            if name.startswith("_jmod") or name in untracked:
                continue
            for obj in expand(value):
                (own if isinstance(obj, Variable) else subs).append(obj)
        frozen = module.__dict__.get("_jmod_frozen", ())
        for v in [v for v in own if id(v) not in frozen] + [v for v in own if id(v) in frozen]:
            if id(v) not in seen_vars:
                seen_vars.add(id(v))
                out.append(v)
        for sub in subs:
            if id(sub) not in seen_mods:
                visit(sub)

    visit(layer)
    keys = {id(v) for m in layer.submodules if isinstance(m, Generator) for v in m.variables}
    rest = [v for v in layer.variables if id(v) not in seen_vars and id(v) not in keys]
    return out + rest


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _capture_init_args(init):
    # Records the arguments of the outermost __init__ so that get_config can
    # rebuild user layers without boilerplate.
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "_jmod_init_args" not in self.__dict__:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                bound = None
            captured = {}
            if bound is not None:
                for key, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[key].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        captured.update(value)
                    elif kind is not inspect.Parameter.VAR_POSITIONAL:
                        captured[key] = value
            self.__dict__["_jmod_init_args"] = captured
        init(self, *args, **kwargs)

    wrapper._jmod_captures = True
    return wrapper


def _functional_hook():
    # The functional API (jmod.models) registers itself here when imported.
    return _FUNCTIONAL[0]


_FUNCTIONAL = [None]


def register_functional(hook):
    """Lets the functional API intercept calls on symbolic inputs (internal)."""
    _FUNCTIONAL[0] = hook
