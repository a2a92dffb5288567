"""The error `fit`, `evaluate`, losses, metrics and callbacks raise for misuse.

Example:
    >>> from jmod.training import TrainingError
    >>> issubclass(TrainingError, ValueError)
    True
"""

from jmod.errors import JmodError


class TrainingError(JmodError, ValueError):
    """A model was trained, evaluated or compiled with arguments it cannot use."""
