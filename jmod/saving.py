"""Configs of layers and models: `serialize`, `deserialize`, and the registry of user classes.

A serialized object is a JSON-ready dict `{"class_name", "config",
"registered_name"}`. `deserialize` only ever instantiates jmod's own
classes (`jmod.layers.*`, `jmod.models.*`, initializers, regularizers) and
classes registered with `@register_serializable()`: a config names a class,
it never says where to import one from, so loading a config imports and
runs nothing the file chose.

Example:
    >>> @jmod.saving.register_serializable(package="Demo")
    ... class Scale(jmod.layers.Layer):
    ...     def __init__(self, factor=2.0, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.factor = factor
    ...     def call(self, inputs):
    ...         return inputs * self.factor
    >>> config = jmod.saving.serialize(Scale(3.0, name="s"))
    >>> config["registered_name"], config["config"]["factor"]
    ('Demo>Scale', 3.0)
    >>> jmod.saving.deserialize(config).factor
    3.0
"""

import contextlib
import json

from jmod.errors import JmodError, SerializationError

_REGISTRY: dict[str, object] = {}  # registered name -> class or function
_NAMES: dict[object, str] = {}  # class or function -> registered name
_SCOPES: list[dict] = []  # custom_objects dicts of enclosing custom_object_scope blocks

# Where built-in classes live; looked up by class name only.
_BUILTIN_MODULES = (
    "jmod.layers",
    "jmod.models",
    "jmod.initializers",
    "jmod.regularizers",
    "jmod.activations",
    "jmod.losses",
    "jmod.metrics",
)


def register_serializable(package="Custom", name=None):
    """Class decorator: lets `deserialize` / `load_model` rebuild this class by name.

    The class is stored under `"package>name"` (default name: the class
    name); configs refer to it by that string. Registering another class
    under a name already taken is an error, re-running the same class
    definition (a notebook cell) is not.

    Example:
        >>> @jmod.saving.register_serializable(package="Demo")
        ... class Twice(jmod.layers.Layer):
        ...     def call(self, inputs):
        ...         return 2 * inputs
        >>> jmod.saving.get_registered_name(Twice)
        'Demo>Twice'

    Args:
        package: a namespace for the name, so two libraries can both have a `Block`.
        name: the name within the package; the class's `__name__` by default.
    """
    if not isinstance(package, str) or ">" in package:
        raise SerializationError(f"package must be a str without '>', got {package!r}")

    def decorator(obj):
        if isinstance(obj, type) and not hasattr(obj, "get_config"):
            raise SerializationError(
                f"cannot register {obj.__qualname__}: it has no get_config() "
                "(subclass jmod.layers.Layer or define get_config/from_config)"
            )
        key = f"{package}>{name or obj.__name__}"
        existing = _REGISTRY.get(key)
        if existing is not None and _identity(existing) != _identity(obj):
            raise SerializationError(
                f"{key!r} is already registered to {_identity(existing)[0]}."
                f"{_identity(existing)[1]}; pass another package= or name="
            )
        if existing is not None:
            _NAMES.pop(existing, None)
        _REGISTRY[key] = obj
        _NAMES[obj] = key
        return obj

    return decorator


def _identity(obj):
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", repr(obj))


def get_registered_name(obj):
    """The name configs use for `obj`'s class: `"Package>Name"` if registered, else its name."""
    if not isinstance(obj, type) and obj not in _NAMES and hasattr(obj, "get_config"):
        obj = type(obj)  # an instance: its class's name
    return _NAMES.get(obj, getattr(obj, "__name__", repr(obj)))


def get_registered_object(name, custom_objects=None):
    """The class registered (or given in `custom_objects`) under `name`, else None.

    Looks in `custom_objects`, then the enclosing `custom_object_scope`s, then
    the `register_serializable` registry. Built-ins are not returned here.
    """
    for objects in (custom_objects or {}, *reversed(_SCOPES)):
        if name in objects:
            return objects[name]
    return _REGISTRY.get(name)


@contextlib.contextmanager
def custom_object_scope(custom_objects):
    """Within the block, `deserialize` also finds the classes in `custom_objects` by name.

    Example:
        >>> class Plain(jmod.layers.Layer):
        ...     def call(self, inputs):
        ...         return inputs
        >>> config = jmod.saving.serialize(Plain(name="p"))
        >>> with jmod.saving.custom_object_scope({"Plain": Plain}):
        ...     type(jmod.saving.deserialize(config)).__name__
        'Plain'
    """
    _SCOPES.append(dict(custom_objects or {}))
    try:
        yield
    finally:
        _SCOPES.pop()


def _builtins():
    """{(module name, class name): class} for every class jmod's public modules offer."""
    import importlib
    import sys

    found = {}
    for module_name in _BUILTIN_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__.startswith("jmod.")
                and hasattr(obj, "from_config")
            ):
                found.setdefault((module_name, obj.__name__), obj)
    return found


def _builtin(class_name, module=None):
    # `module` tells apart built-ins with one name (jmod.losses.MeanSquaredError
    # and jmod.metrics.MeanSquaredError); it only ever selects among _BUILTIN_MODULES.
    for (module_name, name), cls in _builtins().items():
        if name == class_name and module in (None, module_name):
            return cls
    return None


def _builtin_module(cls):
    for (module_name, _), builtin in _builtins().items():
        if builtin is cls:
            return module_name
    return None


def serialize(obj):
    """`{"class_name", "config", "registered_name"}` for a layer, model or other configurable.

    `registered_name` is None for jmod's own classes, `"Package>Name"` for
    registered ones, and the bare class name for unregistered user classes
    (which then load only with `custom_objects`).

    Example:
        >>> jmod.saving.serialize(jmod.layers.Layer(name="plain"))["config"]
        {'name': 'plain', 'trainable': True}
    """
    cls = type(obj)
    if not hasattr(obj, "get_config"):
        raise SerializationError(f"cannot serialize {cls.__name__}: it has no get_config()")
    config = obj.get_config()
    label = getattr(obj, "name", cls.__name__)
    if not isinstance(config, dict):
        raise SerializationError(
            f"{label!r} ({cls.__name__}): get_config() must return a dict, got "
            f"{type(config).__name__}"
        )
    _check_json(config, f"{label}.config")
    module = None if cls in _NAMES else _builtin_module(cls)
    if cls in _NAMES:
        registered = _NAMES[cls]
    elif module is not None:
        registered = None
    else:
        registered = cls.__name__
    out = {"class_name": cls.__name__, "config": config, "registered_name": registered}
    if module is not None and module not in ("jmod.layers", "jmod.models"):
        out["module"] = module
    return out


def _check_json(value, where):
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"{where}: config keys must be str, got {key!r}")
            _check_json(item, f"{where}.{key}")
        return
    raise SerializationError(
        f"{where}: {type(value).__name__} is not JSON-serializable; get_config() must "
        "return plain values (numbers, strings, lists, dicts, None)"
    )


def _find_class(class_name, registered_name, custom_objects, module=None):
    if registered_name:
        cls = get_registered_object(registered_name, custom_objects)
        if cls is None:
            cls = get_registered_object(class_name, custom_objects)
        return cls
    found = get_registered_object(class_name, custom_objects)
    return found or _builtin(class_name, module if isinstance(module, str) else None)


def _is_ref(value):
    return (
        isinstance(value, dict)
        and isinstance(value.get("class_name"), str)
        and isinstance(value.get("config"), dict)
        and "registered_name" in value
    )


def unknown_classes(config, custom_objects=None):
    """The names in `config` (searched recursively) that `deserialize` could not find.

    Used to refuse a whole archive at once, listing every missing class.
    """
    unknown = []

    def walk(value):
        if _is_ref(value):
            registered = value["registered_name"]
            found = _find_class(
                value["class_name"], registered, custom_objects, value.get("module")
            )
            if found is None:
                unknown.append(registered or value["class_name"])
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(config)
    return sorted(set(unknown))


def unknown_message(names):
    """The sentence explaining that `names` cannot be loaded and what to do."""
    listed = ", ".join(repr(n) for n in names)
    return (
        f"unknown class(es) {listed}: only jmod's built-in classes and classes registered "
        "with @jmod.saving.register_serializable() can be loaded, and nothing is imported "
        "from the file. Define and register the class(es) before loading, or pass "
        "custom_objects={registered name: class}"
    )


def deserialize(config, custom_objects=None):
    """Rebuilds an object from `serialize`'s dict; only built-in or registered classes.

    Example:
        >>> layer = jmod.saving.deserialize(
        ...     {"class_name": "Layer", "config": {"name": "x"}, "registered_name": None})
        >>> layer.name
        'x'

    Args:
        config: the dict `serialize` made (as read back from JSON).
        custom_objects: extra classes by registered name or class name.

    Raises:
        SerializationError: the class is unknown, or its config does not fit it.
    """
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise SerializationError(
            "expected a dict with 'class_name' and 'config', got "
            f"{json.dumps(config, default=repr)[:120]}"
        )
    class_name = config["class_name"]
    registered = config.get("registered_name")
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise SerializationError(
            f"{class_name}: 'config' must be a dict, got {type(inner).__name__}"
        )
    cls = _find_class(class_name, registered, custom_objects, config.get("module"))
    if cls is None:
        raise SerializationError(unknown_message([registered or class_name]))
    if not hasattr(cls, "from_config"):
        raise SerializationError(f"{registered or class_name}: the class has no from_config()")
    with custom_object_scope(custom_objects or {}):
        try:
            obj = cls.from_config(dict(inner))
        except JmodError:
            raise
        except (TypeError, KeyError, AttributeError) as e:
            raise SerializationError(
                f"cannot rebuild {registered or class_name} from its config "
                f"(keys {sorted(inner)}): {type(e).__name__}: {e}"
            ) from e
    saved_name = inner.get("name")
    if isinstance(saved_name, str) and saved_name and getattr(obj, "name", None) != saved_name:
        # A constructor that drops `name` (the guide's MySequentialModel) still
        # gets its saved name back: graphs and weight paths refer to it.
        obj._name = saved_name
    return obj
