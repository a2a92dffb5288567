"""Models: subclassed and functional `Model`, `Sequential`, `Input`, and whole-model archives.

Example:
    >>> inputs = jmod.models.Input(shape=[3])
    >>> model = jmod.models.Model(inputs, jmod.layers.Dense(2)(inputs))
    >>> model(jnp.ones((1, 3))).shape
    (1, 2)
"""

from jmod.models import archive
from jmod.models.archive import load_model
from jmod.models.functional import Input, InputLayer, SymbolicTensor
from jmod.models.model import Model
from jmod.models.sequential import Sequential


def model_from_json(text, custom_objects=None):
    """Rebuilds a model (without weights) from `model.to_json()`.

    Only jmod built-ins and registered classes are instantiated.
    """
    import json

    from jmod import saving
    from jmod.errors import SerializationError

    try:
        config = json.loads(text)
    except ValueError as e:
        raise SerializationError(f"model_from_json: not valid JSON: {e}") from None
    unknown = saving.unknown_classes(config, custom_objects)
    if unknown:
        raise SerializationError(f"model_from_json: {saving.unknown_message(unknown)}")
    return saving.deserialize(config, custom_objects)


__all__ = [
    "Input",
    "InputLayer",
    "Model",
    "Sequential",
    "SymbolicTensor",
    "archive",
    "load_model",
    "model_from_json",
]
