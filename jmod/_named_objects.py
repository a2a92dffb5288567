"""Keras-style small objects by name: `get` and `serialize` for regularizers and constraints.

Both take `None`, a name, a `{"class_name", "config"}` dict or a callable, and
write built-in or `@jmod.saving.register_serializable()` classes back as
such dicts; only the kind's word and its classes differ.
"""

from jmod.errors import SerializationError


def get(identifier, base, classes, aliases, kind):
    """The object `identifier` names, of the built-in `classes` (by name) or a registered one."""
    if identifier is None or isinstance(identifier, base) or callable(identifier):
        return identifier
    if isinstance(identifier, str):
        name = aliases.get(identifier, identifier)
        if name not in classes:
            raise SerializationError(
                f"unknown {kind} {identifier!r}; expected one of {sorted(aliases)}"
            )
        return classes[name]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = aliases.get(identifier["class_name"], identifier["class_name"])
        cls = classes.get(name) or _registered(name)
        if cls is None:
            raise SerializationError(
                f"unknown {kind} class {identifier['class_name']!r}; expected one of "
                f"{sorted(classes)} or a class registered with @jmod.saving.register_serializable()"
            )
        return cls.from_config(identifier.get("config") or {})
    raise SerializationError(
        f"a {kind} is None, a name, a config dict or a callable, got {type(identifier).__name__}"
    )


def serialize(obj, classes, kind):
    """`None`, or `{"class_name": ..., "config": ...}` for a built-in or registered object."""
    if obj is None:
        return None
    cls = type(obj)
    if classes.get(cls.__name__) is cls:
        return {"class_name": cls.__name__, "config": obj.get_config()}
    saving = _saving()
    name = saving.get_registered_name(cls) if saving is not None else None
    if name and saving.get_registered_object(name) is cls and hasattr(cls, "get_config"):
        return {"class_name": name, "config": obj.get_config()}
    raise SerializationError(
        f"cannot serialize {kind} {obj!r:.60}: a config names built-in {kind}s "
        f"({sorted(classes)}) or classes registered with @jmod.saving.register_serializable()"
    )


def _saving():
    # jmod.saving imports layers, which import the modules using this one: look it up late.
    try:
        from jmod import saving
    except ImportError:
        return None
    return saving


def _registered(name):
    saving = _saving()
    cls = saving.get_registered_object(name) if saving is not None else None
    return cls if hasattr(cls, "from_config") else None
