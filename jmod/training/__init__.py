"""Training: `compile` / `fit` / `evaluate` / `predict` (the `TrainerMixin` of `jmod.Model`).

Also the callbacks (`jmod.training.callbacks`), the progress bar, and the
batching of arrays and iterables. Losses and metrics are `jmod.losses` and
`jmod.metrics`.

Example:
    >>> from jmod.training import callbacks
    >>> callbacks.EarlyStopping(patience=3).patience
    3
"""

import importlib

from jmod.training import callbacks, data, optimizers, progress
from jmod.training._errors import TrainingError
from jmod.training.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    TerminateOnNaN,
)
from jmod.training.optimizers import get_learning_rate, set_learning_rate
from jmod.training.progress import Progbar, ProgbarLogger

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "Progbar",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
    "TrainerMixin",
    "TrainingError",
    "callbacks",
    "data",
    "get_learning_rate",
    "optimizers",
    "progress",
    "set_learning_rate",
]


def __getattr__(name):
    # The trainer imports jmod.losses and jmod.metrics, which import this
    # package for TrainingError: loading it on first use breaks the cycle.
    if name == "TrainerMixin":
        return importlib.import_module("jmod.training.trainer").TrainerMixin
    if name in ("trainer", "objectives", "steps"):
        return importlib.import_module(f"jmod.training.{name}")
    raise AttributeError(f"module 'jmod.training' has no attribute {name!r}")
