"""jmod: object-oriented modules, layers and models on JAX."""

from jmod import (
    activations,
    checkpoint,
    compilation_cache,
    constraints,
    distributed,
    errors,
    initializers,
    interop,
    layers,
    losses,
    metrics,
    models,
    module,
    profiler,
    random,
    regularizers,
    saved_model,
    saving,
    summary,
    training,
)
from jmod._version import __version__
from jmod.bridge import functional_call
from jmod.checkpoint import Checkpoint, CheckpointManager
from jmod.compiled import jit
from jmod.distributed import DistributedError, ShardingError
from jmod.errors import (
    CheckpointError,
    InteropError,
    JmodError,
    LayerCallError,
    ModuleError,
    OptimizerError,
    SerializationError,
    SignatureError,
    SummaryError,
    TraceError,
    TrainingError,
    VariableError,
)
from jmod.gradients import grad, value_and_grad
from jmod.models import Input, Model, Sequential
from jmod.module import Module
from jmod.optimizer import Optimizer
from jmod.remat import remat
from jmod.saved_model import TensorSpec
from jmod.saved_model.errors import PlatformError, SavedModelError, SavedModelNotFoundError
from jmod.variables import Variable

# Compiled programs are kept on disk across processes (off: JMOD_COMPILATION_CACHE=0).
compilation_cache.enable_from_environment()

callbacks = training.callbacks  # Keras habit: jmod.callbacks.EarlyStopping

__all__ = [
    "callbacks",
    "Checkpoint",
    "CheckpointManager",
    "DistributedError",
    "ShardingError",
    "Input",
    "Model",
    "Sequential",
    "activations",
    "checkpoint",
    "compilation_cache",
    "constraints",
    "distributed",
    "losses",
    "metrics",
    "models",
    "saving",
    "training",
    "CheckpointError",
    "InteropError",
    "JmodError",
    "LayerCallError",
    "Module",
    "Optimizer",
    "ModuleError",
    "OptimizerError",
    "PlatformError",
    "SavedModelError",
    "SavedModelNotFoundError",
    "SerializationError",
    "SignatureError",
    "SummaryError",
    "TensorSpec",
    "TraceError",
    "TrainingError",
    "Variable",
    "VariableError",
    "__version__",
    "errors",
    "functional_call",
    "grad",
    "initializers",
    "interop",
    "layers",
    "jit",
    "module",
    "profiler",
    "random",
    "regularizers",
    "remat",
    "saved_model",
    "summary",
    "value_and_grad",
]
