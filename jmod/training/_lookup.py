"""Finding a loss or metric from what a user passed to `compile` (shared by both)."""

import inspect

from jmod.training._errors import TrainingError


def lookup(identifier, classes, base, wrap, kind):
    """An instance of `base` from a name in `classes`, a `base` subclass, or a callable.

    Callables are wrapped with `wrap`; anything else is a `TrainingError`
    naming `kind` ("loss" or "metric").
    """
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, str):
        cls = classes.get(identifier)
        if cls is None:
            known = sorted(k for k in classes if k.islower())
            raise TrainingError(f"unknown {kind} {identifier!r}; known names: {', '.join(known)}")
        return cls()
    if inspect.isclass(identifier) and issubclass(identifier, base):
        return identifier()
    if callable(identifier):
        return wrap(identifier)
    raise TrainingError(
        f"a {kind} must be a name, a {base.__module__}.{base.__name__} or a callable "
        f"(y_true, y_pred), got {type(identifier).__name__}"
    )
