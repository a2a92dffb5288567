"""The jmod error hierarchy.

Every error jmod raises derives from `JmodError` and from the builtin a user
would catch for that kind of problem (`ValueError`, `TypeError`, ...), so
`except ValueError` keeps working. Messages name the module, variable or layer
path involved and say what was expected and what came.

Example:
    >>> import jmod
    >>> issubclass(jmod.CheckpointError, ValueError)
    True
"""


class JmodError(Exception):
    """Base class of every error jmod raises."""


class VariableError(JmodError, ValueError):
    """A variable was given a value of the wrong shape or dtype, or a bad argument."""


class ModuleError(JmodError, ValueError):
    """A module's structure or state does not match what was asked of it."""


class TraceError(JmodError, RuntimeError):
    """Something went wrong while `jmod.jit` traced a function."""


class SignatureError(JmodError, ValueError):
    """A call's input signature is not one of those a function was saved with."""


class CheckpointError(JmodError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the objects restored into."""


class LayerCallError(JmodError, ValueError):
    """A layer was called with inputs it cannot take."""


class SerializationError(JmodError, ValueError):
    """A config or archive cannot be (de)serialized."""


class OptimizerError(JmodError, ValueError):
    """Gradients do not match the variables an optimizer was built for."""


class SummaryError(JmodError, ValueError):
    """A summary, trace or profile was asked for with bad data or in the wrong state."""


class TrainingError(JmodError, ValueError):
    """A model was trained, evaluated or compiled with arguments it cannot use."""


class InteropError(JmodError, ValueError):
    """Weights from another framework do not fit the model, or a file is not what it claims."""
