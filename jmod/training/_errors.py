"""The error `fit`, `evaluate`, losses, metrics and callbacks raise (defined in jmod.errors).

Example:
    >>> from jmod.training import TrainingError
    >>> issubclass(TrainingError, ValueError)
    True
"""

from jmod.errors import TrainingError

__all__ = ["TrainingError"]
