"""Argument checks and config pieces shared by the built-in layers."""

import math

from jmod import activations, constraints, initializers, regularizers
from jmod.errors import SerializationError
from jmod.layers.policy import dtype_policy


def base_config(layer):
    """The `Layer` part of a config (name, trainable, dtype), as `Layer.get_config` writes it.

    Built-in layers write their own arguments, serialized by name, so they
    skip the captured constructor arguments (which may hold callables).
    """
    config = {"name": layer.name, "trainable": layer.trainable}
    captured = layer.__dict__.get("_jmod_init_args", {})
    if layer.dtype_policy.name != dtype_policy().name or "dtype" in captured:
        config["dtype"] = layer.dtype_policy.name
    activity = layer.__dict__.get("activity_regularizer")
    if activity is not None:
        config["activity_regularizer"] = serialize_regularizer(
            layer, "activity_regularizer", activity
        )
    return config


def where(layer):
    """`Dense` or `Dense 'dense_1'` for error messages (the name exists after `__init__`)."""
    name = layer.__dict__.get("_name")
    return f"{type(layer).__name__} {name!r}" if name else type(layer).__name__


def check_int(layer, label, value, minimum=1):
    """`value` as an int >= `minimum`, or a SerializationError naming the layer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SerializationError(
            f"{where(layer)}: {label} must be an int >= {minimum}, got {value!r}"
        )
    return value


def check_choice(layer, label, value, choices):
    """`value` lowercased if it is one of `choices`, else a SerializationError."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise SerializationError(
        f"{where(layer)}: {label} must be one of {list(choices)}, got {value!r}"
    )


def int_tuple(layer, label, value, rank, minimum=1):
    """An int or a sequence of `rank` ints, as a tuple of `rank` ints >= `minimum`."""
    items = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if (
        items is None
        or len(items) != rank
        or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in items)
    ):
        raise SerializationError(
            f"{where(layer)}: {label} must be an int >= {minimum} or {rank} of them, got {value!r}"
        )
    return items


def check_axis(layer, axis, label="axis"):
    """An int axis or a tuple of them."""
    axes = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
    try:
        axes = tuple(axes)
    except TypeError:
        axes = None
    if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
        raise SerializationError(
            f"{where(layer)}: {label} must be an int or a list of ints, got {axis!r}"
        )
    return axes


def normalize_axes(layer, axes, rank):
    """`axes` as sorted non-negative ints for an input of `rank`; ValueError if out of range.

    Raised inside `build`/`call`, the ValueError becomes a LayerCallError that
    names the layer and its call arguments.
    """
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(f"axis {a} is out of range for inputs of rank {rank}")
        out.append(a % rank)
    return tuple(sorted(set(out)))


def activation(layer, value):
    """`activations.get`, with the layer named in the error."""
    try:
        return activations.get(value)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {e}") from None


def initializer(layer, label, value):
    """`initializers.get`, with the layer and argument named in the error."""
    if value is None:
        raise SerializationError(f"{where(layer)}: {label} must be given, got None")
    if isinstance(value, dict) and isinstance(value.get("config"), dict):
        # Keras 3.15 writes input_axes/output_axes (None unless set) into variance scalings.
        inner = {k: v for k, v in value["config"].items()}
        for key in ("input_axes", "output_axes"):
            if inner.get(key, 0) is None:
                inner.pop(key)
        value = {**value, "config": inner}
    try:
        return initializers.get(value)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {label}: {e}") from None


def regularizer(layer, label, value):
    """`regularizers.get`, with the layer and argument named in the error."""
    try:
        return regularizers.get(value)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {label}: {e}") from None


def constraint(layer, label, value):
    """`constraints.get`, with the layer and argument named in the error."""
    try:
        return constraints.get(value)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {label}: {e}") from None


def serialize_constraint(layer, label, con):
    try:
        return constraints.serialize(con)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {label}: {e}") from None


def serialize_activation(layer, fn):
    try:
        return activations.serialize(fn)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {e}") from None


def serialize_initializer(layer, label, init):
    if not isinstance(init, initializers.Initializer):
        raise SerializationError(
            f"{where(layer)}: cannot serialize {label}={init!r:.60}; a config names "
            "jmod.initializers only"
        )
    return initializers.serialize(init)


def serialize_regularizer(layer, label, reg):
    try:
        return regularizers.serialize(reg)
    except SerializationError as e:
        raise SerializationError(f"{where(layer)}: {label}: {e}") from None


def window_output_length(size, window, stride, padding, dilation=1):
    """Output length of a convolution/pooling axis (None stays None)."""
    if size is None:
        return None
    if padding == "valid":
        return max(0, (size - (window - 1) * dilation - 1) // stride + 1)
    return math.ceil(size / stride)  # "same" and "causal"


def set_weight_options(layer, name, initializer_, regularizer_=None, constraint_=None):
    """Sets `{name}_initializer`, `{name}_regularizer`, `{name}_constraint` on `layer`, checked."""
    setattr(layer, f"{name}_initializer", initializer(layer, f"{name}_initializer", initializer_))
    setattr(layer, f"{name}_regularizer", regularizer(layer, f"{name}_regularizer", regularizer_))
    setattr(layer, f"{name}_constraint", constraint(layer, f"{name}_constraint", constraint_))


def weight_options_config(layer, *names):
    """The config entries `set_weight_options` reads back, for each weight name."""
    config = {}
    for name in names:
        config[f"{name}_initializer"] = serialize_initializer(
            layer, f"{name}_initializer", getattr(layer, f"{name}_initializer")
        )
        config[f"{name}_regularizer"] = serialize_regularizer(
            layer, f"{name}_regularizer", getattr(layer, f"{name}_regularizer")
        )
        config[f"{name}_constraint"] = serialize_constraint(
            layer, f"{name}_constraint", getattr(layer, f"{name}_constraint")
        )
    return config


def add_option_weight(layer, name, shape, trainable=True, initializer_=None):
    """`layer.add_weight(name, ...)` with the layer's `{name}_*` options."""
    return layer.add_weight(
        name,
        shape,
        initializer_ or getattr(layer, f"{name}_initializer"),
        trainable=trainable,
        regularizer=getattr(layer, f"{name}_regularizer", None),
        constraint=getattr(layer, f"{name}_constraint", None),
    )


def check_rate(layer, label, value):
    """A dropout-like rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SerializationError(
            f"{where(layer)}: {label} must be a number in [0, 1), got {value!r}"
        )
    return float(value)
