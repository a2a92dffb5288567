"""Callbacks: code that runs at the start and end of training, epochs and batches.

The hooks are Keras': `on_train_begin/end`, `on_epoch_begin/end`,
`on_{train,test,predict}_batch_begin/end`, `on_{test,predict}_begin/end`.
Epoch logs hold Python floats; batch logs hold 0-d arrays (still on the
device: `float(v)` waits for the step), so a callback that does not look
at them costs the training loop nothing.

Example:
    >>> class PrintEpoch(Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(epoch, sorted(logs))
    >>> PrintEpoch().on_epoch_end(0, {"loss": 0.5})
    0 ['loss']
"""

import csv
import inspect
import math
import os
import warnings

import numpy as np

from jmod.training import optimizers
from jmod.training._errors import TrainingError

_BATCH_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class Callback:
    """Base class of callbacks; override the hooks you need.

    `self.model` is the model being trained, `self.params` holds `epochs`,
    `steps` and `verbose`. Setting `self.model.stop_training = True` ends
    `fit` after the current step.

    Example:
        >>> class Stop(Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         self.model.stop_training = logs["loss"] < 0.1
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        """Called once at the start of `fit`."""

    def on_train_end(self, logs=None):
        """Called once at the end of `fit`, with the last epoch's logs."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of each epoch (numbered from 0)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of each epoch with its logs (validation ones prefixed `val_`)."""

    def on_train_batch_begin(self, batch, logs=None):
        """Called before each train step (batch numbered from 0 within the epoch)."""

    def on_train_batch_end(self, batch, logs=None):
        """Called after each train step with the running logs."""

    def on_test_begin(self, logs=None):
        """Called at the start of `evaluate` (and of validation in `fit`)."""

    def on_test_end(self, logs=None):
        """Called at the end of `evaluate` with its logs."""

    def on_test_batch_begin(self, batch, logs=None):
        """Called before each evaluation step."""

    def on_test_batch_end(self, batch, logs=None):
        """Called after each evaluation step."""

    def on_predict_begin(self, logs=None):
        """Called at the start of `predict`."""

    def on_predict_end(self, logs=None):
        """Called at the end of `predict`."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Called before each prediction step."""

    def on_predict_batch_end(self, batch, logs=None):
        """Called after each prediction step with `{"outputs": ...}`."""


def _overrides(callback, hook):
    # LambdaCallback sets its hooks on the instance.
    return hook in vars(callback) or getattr(type(callback), hook) is not getattr(Callback, hook)


class CallbackList:
    """Calls a hook on every callback in order; batch hooks only where overridden.

    Example:
        >>> history = History()
        >>> callbacks = CallbackList([history], params={"epochs": 1})
        >>> callbacks.on_epoch_end(0, {"loss": 1.0}); history.history
        {'loss': [1.0]}
    """

    def __init__(self, callbacks=(), model=None, params=None):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TrainingError(
                    f"callbacks must be jmod.training.callbacks.Callback objects, got "
                    f"{type(cb).__name__}"
                )
        self.params = dict(params or {})
        for cb in self.callbacks:
            cb.set_params(self.params)
            if model is not None:
                cb.set_model(model)
        # The hot loop skips callbacks that leave a batch hook as the no-op.
        self._batch = {h: [cb for cb in self.callbacks if _overrides(cb, h)] for h in _BATCH_HOOKS}

    def __iter__(self):
        return iter(self.callbacks)

    def _call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _call_batch(self, hook, batch, logs):
        for cb in self._batch[hook]:
            getattr(cb, hook)(batch, logs)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._call_batch("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._call_batch("on_train_batch_end", batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call_batch("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._call_batch("on_test_batch_end", batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call_batch("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._call_batch("on_predict_batch_end", batch, logs)

    def has_batch_hooks(self, kind):
        """Whether any callback listens to `kind`'s (train/test/predict) batch hooks."""
        return bool(self._batch[f"on_{kind}_batch_begin"] or self._batch[f"on_{kind}_batch_end"])


class History(Callback):
    """Records each epoch's logs; `fit` returns it (and sets `model.history`).

    Example:
        >>> h = History()
        >>> h.on_epoch_end(0, {"loss": 0.5}); h.on_epoch_end(1, {"loss": 0.25})
        >>> h.history, h.epoch
        ({'loss': [0.5, 0.25]}, [0, 1])
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def set_model(self, model):
        super().set_model(model)
        model.history = self

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


# -- monitoring a logged value -----------------------------------------------------------

_UP_WORDS = ("acc", "auc", "precision", "recall", "f1")


def _improvement_op(monitor, mode, model, who):
    if mode not in ("auto", "min", "max"):
        raise TrainingError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        direction = None
        finder = getattr(model, "_jmod_direction", None)
        if finder is not None:
            direction = finder(monitor)
        if direction is None:
            name = monitor[4:] if monitor.startswith("val_") else monitor
            direction = "up" if any(w in name for w in _UP_WORDS) and "loss" not in name else "down"
        mode = "max" if direction == "up" else "min"
    return mode


def _improved(mode, current, best, min_delta=0.0):
    if best is None:
        return True
    if mode == "max":
        return current - min_delta > best
    return current + min_delta < best


def _monitored(logs, monitor, who):
    value = (logs or {}).get(monitor)
    if value is None:
        warnings.warn(
            f"{who}: the logs have no {monitor!r} (available: {sorted(logs or {})}); skipping",
            stacklevel=3,
        )
        return None
    return float(value)


def _host_state(model):
    # Copies, not views: the train step donates the variables' buffers.
    return {path: np.array(value, copy=True) for path, value in model.state().items()}


class ModelCheckpoint(Callback):
    """Saves the model (and optimizer) with a `jmod.CheckpointManager` during `fit`.

    Checkpoints are `directory/ckpt-N` with N the epoch number (from 1), or
    the step number with an integer `save_freq`. Restore with
    `jmod.Checkpoint(model=model, optimizer=model.optimizer).restore(path)`.

    Example:
        >>> import tempfile
        >>> cb = ModelCheckpoint(tempfile.mkdtemp(), monitor="loss", save_best_only=True)
        >>> cb.save_best_only
        True

    Args:
        directory: where the checkpoints go.
        monitor: the logged value `save_best_only` compares.
        save_best_only: save only when `monitor` improved on the best so far.
        mode: `"min"`, `"max"` or `"auto"` (from the metric, else from the name).
        save_freq: `"epoch"`, or an int: save every that many train steps.
        max_to_keep: how many checkpoints the manager keeps (None: all).
        include_optimizer: save the optimizer's state too.
        initial_value_threshold: a value `monitor` must beat to be saved first.
        verbose: 1 prints a line per save.
    """

    def __init__(
        self,
        directory,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        mode="auto",
        save_freq="epoch",
        max_to_keep=None,
        include_optimizer=True,
        initial_value_threshold=None,
    ):
        super().__init__()
        if save_freq != "epoch" and (not isinstance(save_freq, int) or save_freq < 1):
            raise TrainingError(
                f"ModelCheckpoint: save_freq must be 'epoch' or a positive int, got {save_freq!r}"
            )
        self.directory = os.fspath(directory)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.mode = mode
        self.save_freq = save_freq
        self.max_to_keep = max_to_keep
        self.include_optimizer = include_optimizer
        self.best = initial_value_threshold
        self.manager = None
        self.last_saved = None
        self._steps = 0

    def on_train_begin(self, logs=None):
        from jmod.checkpoint import Checkpoint, CheckpointManager

        self._mode = _improvement_op(self.monitor, self.mode, self.model, "ModelCheckpoint")
        objects = {"model": self.model}
        optimizer = getattr(self.model, "optimizer", None)
        if self.include_optimizer and optimizer is not None:
            objects["optimizer"] = optimizer
        self.manager = CheckpointManager(
            Checkpoint(**objects), self.directory, max_to_keep=self.max_to_keep
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._steps += 1
        if self._steps % self.save_freq == 0:
            self._save(self._steps, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch + 1, logs)

    def _save(self, number, logs):
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if current is None or not _improved(self._mode, current, self.best):
                return
            if self.verbose:
                print(f"ModelCheckpoint: {self.monitor} improved from {self.best} to {current}")
            self.best = current
        self.last_saved = self.manager.save(step=number)
        if self.verbose:
            print(f"ModelCheckpoint: saved {self.last_saved}")


class EarlyStopping(Callback):
    """Stops `fit` when `monitor` has not improved for `patience` epochs.

    Example:
        >>> stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        >>> stop.patience
        2

    Args:
        monitor: the logged value to watch.
        min_delta: a change smaller than this is no improvement.
        patience: epochs without improvement before stopping.
        mode: `"min"`, `"max"` or `"auto"`.
        baseline: the value `monitor` must beat for the wait to reset.
        restore_best_weights: at the end, put back the variables of the best epoch.
        start_from_epoch: epochs to wait before watching at all.
        verbose: 1 prints when it stops.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0.0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch

    def on_train_begin(self, logs=None):
        self._mode = _improvement_op(self.monitor, self.mode, self.model, "EarlyStopping")
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(logs, self.monitor, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _host_state(self.model)
            self.best_epoch = epoch
        self.wait += 1
        if _improved(self._mode, current, self.best, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _host_state(self.model)
            if self.baseline is None or _improved(self._mode, current, self.baseline, 0.0):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of epoch {self.best_epoch + 1}")
            self.model.load_state(self.best_weights)


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to `schedule(epoch, lr)`.

    The rate lives in the optimizer's state, so changing it does not retrace
    the train step. Needs an optimizer compiled by name (`"adam"`) or built
    with `optax.inject_hyperparams`. The epoch logs get `learning_rate`.
    (For a rate that changes every step, give optax a schedule instead:
    `optax.adam(optax.cosine_decay_schedule(1e-3, 1000))`.)

    Example:
        >>> cb = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
        >>> cb.schedule(0, 1.0)
        0.5

    Args:
        schedule: `f(epoch, lr) -> new lr`, or `f(epoch) -> lr`.
        verbose: 1 prints each change.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose
        try:
            params = inspect.signature(schedule).parameters.values()
            kinds = [p.kind for p in params]
            positional = [k for k in kinds if k in (k.POSITIONAL_ONLY, k.POSITIONAL_OR_KEYWORD)]
            self._takes_lr = len(positional) >= 2 or any(k is k.VAR_POSITIONAL for k in kinds)
        except (TypeError, ValueError):
            self._takes_lr = True

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = optimizers.get_learning_rate(optimizer)
        new = self.schedule(epoch, lr) if self._takes_lr else self.schedule(epoch)
        new = float(new)
        if not math.isfinite(new):
            raise TrainingError(f"LearningRateScheduler: schedule gave {new} at epoch {epoch}")
        optimizers.set_learning_rate(optimizer, new)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = optimizers.get_learning_rate(self.model.optimizer)


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` when `monitor` stops improving.

    Example:
        >>> ReduceLROnPlateau(factor=0.5, patience=3).factor
        0.5

    Args:
        monitor: the logged value to watch.
        factor: the multiplier, in (0, 1).
        patience: epochs without improvement before reducing.
        mode: `"min"`, `"max"` or `"auto"`.
        min_delta: a change smaller than this is no improvement.
        cooldown: epochs to wait after a reduction before watching again.
        min_lr: the rate never goes below this.
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__()
        if not 0.0 < factor < 1.0:
            raise TrainingError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.verbose, self.mode, self.min_delta = verbose, mode, min_delta
        self.cooldown, self.min_lr = cooldown, min_lr

    def on_train_begin(self, logs=None):
        self._mode = _improvement_op(self.monitor, self.mode, self.model, "ReduceLROnPlateau")
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = optimizers.get_learning_rate(optimizer)
        current = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _improved(self._mode, current, self.best, self.min_delta):
            self.best, self.wait = current, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = optimizers.get_learning_rate(optimizer)
            new = max(old * self.factor, self.min_lr)
            if new < old:
                optimizers.set_learning_rate(optimizer, new)
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                self.cooldown_counter, self.wait = self.cooldown, 0


class TerminateOnNaN(Callback):
    """Stops `fit` as soon as the loss is NaN or infinite (waits for each step to check).

    Example:
        >>> TerminateOnNaN().params
        {}
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            print(f"Batch {batch}: invalid loss {float(loss)}, terminating training")
            self.model.stop_training = True


class TensorBoard(Callback):
    """Writes the logs as TensorBoard scalars through `jmod.summary`.

    Training values go to `log_dir/train`, validation values (without their
    `val_` prefix) to `log_dir/validation`, as `epoch_<name>` at each epoch;
    with an integer `update_freq`, also `batch_<name>` every that many steps.
    View with `tensorboard --logdir log_dir`.

    Example:
        >>> import tempfile
        >>> TensorBoard(tempfile.mkdtemp()).update_freq
        'epoch'
    """

    def __init__(self, log_dir="logs", update_freq="epoch"):
        super().__init__()
        if update_freq != "epoch" and (not isinstance(update_freq, int) or update_freq < 1):
            raise TrainingError(
                f"TensorBoard: update_freq must be 'epoch' or a positive int, got {update_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writers = {}
        self._step = 0

    def _writer(self, which):
        writer = self._writers.get(which)
        if writer is None:
            from jmod import summary

            writer = summary.create_file_writer(os.path.join(self.log_dir, which))
            self._writers[which] = writer
        return writer

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.update_freq == "epoch" or self._step % self.update_freq:
            return
        writer = self._writer("train")
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                writer.scalar(f"batch_{key}", float(value), step=self._step)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if np.ndim(value) != 0:
                continue
            if key.startswith("val_"):
                self._writer("validation").scalar(f"epoch_{key[4:]}", float(value), step=epoch)
            else:
                self._writer("train").scalar(f"epoch_{key}", float(value), step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class CSVLogger(Callback):
    """Appends each epoch's logs to a CSV file: `epoch` then the log names, sorted.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> cb = CSVLogger(path); cb.on_train_begin()
        >>> cb.on_epoch_end(0, {"loss": 0.5}); cb.on_train_end()
        >>> open(path).read().splitlines()
        ['epoch,loss', '0,0.5']

    Args:
        filename: the CSV file.
        separator: the field separator.
        append: add to an existing file instead of overwriting it.
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._file = None
        self._writer = None
        self._keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename)
        self._header_written = bool(exists)
        if exists:
            with open(self.filename, newline="") as f:
                header = f.readline().strip()
            self._keys = header.split(self.separator)[1:] if header else None
        else:
            self._keys = None
        self._file = open(self.filename, "a" if self.append else "w", newline="")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.writer(self._file, delimiter=self.separator, lineterminator="\n")
        if not self._header_written:
            self._writer.writerow(["epoch", *self._keys])
            self._header_written = True
        row = [epoch]
        for key in self._keys:
            value = logs.get(key, "NA")
            row.append(float(value) if np.ndim(value) == 0 and value != "NA" else value)
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file, self._writer = None, None


class LambdaCallback(Callback):
    """A callback from plain functions, one per hook.

    Example:
        >>> seen = []
        >>> cb = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
        >>> cb.on_epoch_end(3, {}); seen
        [3]

    Args:
        **hooks: `on_epoch_begin=f(epoch, logs)`, `on_train_batch_end=f(batch, logs)`,
            `on_train_begin=f(logs)`, ... any hook name of `Callback`.
    """

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise TrainingError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


from jmod.training.ema import SwapEMAWeights  # noqa: E402, F401 (a Keras 3 callback)
