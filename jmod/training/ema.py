"""`SwapEMAWeights`: evaluate and save with the optimizer's moving averages (Keras' callback)."""

from jmod.training._errors import TrainingError
from jmod.training.callbacks import Callback


class SwapEMAWeights(Callback):
    """Evaluates (and with `swap_on_epoch`, saves) with the optimizer's EMA weights.

    As Keras' `SwapEMAWeights`: during validation and `evaluate` the model's
    trainable variables hold their moving averages; with
    `swap_on_epoch=True` they also hold them from the end of each epoch
    until the next begins, so callbacks placed after this one
    (`ModelCheckpoint`) save the averages. The optimizer needs `use_ema=True`.

    Example:
        >>> jmod.callbacks.SwapEMAWeights(swap_on_epoch=True).swap_on_epoch
        True
    """

    def __init__(self, swap_on_epoch=False):
        super().__init__()
        self.swap_on_epoch = bool(swap_on_epoch)
        self._swapped = False

    def _swap(self, want):
        if self._swapped == want:
            return
        optimizer = self.model.optimizer
        if optimizer is None or not optimizer.options.use_ema:
            raise TrainingError(
                "SwapEMAWeights needs a model compiled with an optimizer with use_ema=True"
            )
        if optimizer.built:
            optimizer.swap_ema_weights()
            self._swapped = want

    def on_test_begin(self, logs=None):
        self._swap(True)

    def on_test_end(self, logs=None):
        if not (self.swap_on_epoch and self._in_epoch_end):
            self._swap(False)

    def on_epoch_begin(self, epoch, logs=None):
        self._in_epoch_end = False
        self._swap(False)

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_on_epoch:
            self._in_epoch_end = True
            self._swap(True)

    def on_train_end(self, logs=None):
        self._swap(False)

    _in_epoch_end = False
