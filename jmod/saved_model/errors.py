"""Errors of `jmod.saved_model` (a call with an unsaved signature is `jmod.SignatureError`).

Example:
    >>> import jmod.saved_model
    >>> try:
    ...     jmod.saved_model.load("/no/such/saved_model")
    ... except FileNotFoundError as e:
    ...     type(e).__name__
    'SavedModelNotFoundError'
"""

from jmod.errors import JmodError


class SavedModelError(JmodError, ValueError):
    """A module cannot be saved as asked, or a saved model is malformed, modified or too new."""


class SavedModelNotFoundError(SavedModelError, FileNotFoundError):
    """The saved model directory, or one of its files, does not exist."""


class PlatformError(SavedModelError, RuntimeError):
    """The saved model was exported for other platforms (say cuda) than this process runs on."""
