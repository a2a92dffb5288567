"""Callbacks in fit: History, EarlyStopping, ModelCheckpoint, schedules, loggers."""

import csv

import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import jmod
from jmod.layers import Layer
from jmod.training import TrainerMixin, TrainingError, callbacks
from tests.test_losses import run_examples


class Linear(TrainerMixin, Layer):
    def __init__(self, w=0.1, **kwargs):
        super().__init__(**kwargs)
        self.w = jmod.Variable(np.full((3, 1), w, np.float32), name="w")
        self.b = jmod.Variable(np.zeros(1, np.float32), name="b")
        self.built = True

    def call(self, x):
        return x @ self.w + self.b


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x @ np.array([[1.0], [-1.0], [2.0]]) + 0.3).astype(np.float32)


def _compiled(optimizer="sgd", **kwargs):
    model = Linear()
    model.compile(optimizer, loss="mse", **kwargs)
    return model


def _feed(callback, model, values, key="val_loss"):
    """Runs the epoch-end hook over a sequence of monitored values; returns epochs run."""
    callback.set_model(model)
    callback.on_train_begin()
    ran = 0
    for epoch, value in enumerate(values):
        ran += 1
        model.w.assign(np.full((3, 1), float(epoch), np.float32))
        callback.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            break
    callback.on_train_end()
    return ran


def test_history_records_every_epoch_and_is_set_on_the_model():
    x, y = _data()
    model = _compiled(metrics=["mae"])
    history = model.fit(x, y, batch_size=5, epochs=3, validation_data=(x, y), verbose=0)
    assert model.history is history
    assert history.epoch == [0, 1, 2]
    assert list(history.history) == ["loss", "mae", "val_loss", "val_mae"]
    assert all(len(v) == 3 for v in history.history.values())
    assert all(isinstance(v, float) for v in history.history["loss"])
    # The model after the last epoch gives the last val_loss.
    assert model.evaluate(x, y, verbose=0)[0] == pytest.approx(history.history["val_loss"][-1])


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights():
    model = _compiled()
    stop = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    ran = _feed(stop, model, [1.0, 0.5, 0.6, 0.7, 0.4])
    assert ran == 4 and stop.stopped_epoch == 3
    assert stop.best == 0.5 and stop.best_epoch == 1
    # The weights were set to the epoch number at each epoch: epoch 1's come back.
    np.testing.assert_array_equal(np.asarray(model.w), np.ones((3, 1)))


def test_early_stopping_min_delta_and_baseline():
    model = _compiled()
    model.stop_training = False
    stop = callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=0.2)
    assert _feed(stop, model, [1.0, 0.9, 0.85], key="loss") == 2  # 0.1 is no improvement
    values = [0.9, 0.95, 0.97, 0.6]
    model.stop_training = False
    assert _feed(callbacks.EarlyStopping("loss", patience=2), model, values, key="loss") == 3
    # Above the baseline the first epoch does not reset the wait: one epoch sooner.
    model.stop_training = False
    stop = callbacks.EarlyStopping(monitor="loss", patience=2, baseline=0.5)
    assert _feed(stop, model, values, key="loss") == 2


def test_early_stopping_ends_fit():
    x, y = _data()
    model = _compiled(optax.sgd(0.0))  # the loss never changes
    history = model.fit(
        x,
        y,
        epochs=10,
        verbose=0,
        callbacks=[callbacks.EarlyStopping("loss", patience=1, min_delta=1e-3)],
    )
    assert len(history.history["loss"]) == 2


def test_mode_auto_follows_the_metric_direction():
    model = _compiled(metrics=["accuracy", "mse"])
    directions = {}
    for monitor in ("val_accuracy", "val_loss", "mse", "val_auc_2"):
        stop = callbacks.EarlyStopping(monitor=monitor)
        stop.set_model(model)
        stop.on_train_begin()
        directions[monitor] = stop._mode
    assert directions == {
        "val_accuracy": "max",
        "val_loss": "min",
        "mse": "min",
        "val_auc_2": "max",
    }


def test_model_checkpoint_saves_each_epoch_and_restores_model_and_optimizer(tmp_path):
    x, y = _data()
    model = _compiled("adam")
    saver = callbacks.ModelCheckpoint(tmp_path / "ckpts", max_to_keep=2)
    model.fit(x, y, batch_size=5, epochs=3, verbose=0, callbacks=[saver])
    names = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert names == [
        "checkpoint",
        *[f"ckpt-{i}.{s}" for i in (2, 3) for s in ("data-00000-of-00001", "index")],
    ]
    restored = _compiled("adam")
    restored.optimizer.build()
    jmod.checkpoint.Checkpoint(model=restored, optimizer=restored.optimizer).restore(
        saver.last_saved
    ).assert_consumed()
    for (p1, v1), (p2, v2) in zip(
        [*model.named_variables(), *model.optimizer.named_variables()],
        [*restored.named_variables(), *restored.optimizer.named_variables()],
    ):
        assert p1 == p2
        np.testing.assert_array_equal(np.asarray(v1), np.asarray(v2))


def test_model_checkpoint_best_only_saves_improvements(tmp_path):
    model = _compiled()
    saver = callbacks.ModelCheckpoint(tmp_path, monitor="val_loss", save_best_only=True)
    saved = []
    saver.set_model(model)
    saver.on_train_begin()
    for epoch, value in enumerate([3.0, 2.0, 2.5, 1.0]):
        before = saver.last_saved
        saver.on_epoch_end(epoch, {"val_loss": value})
        if saver.last_saved != before:
            saved.append(saver.last_saved.rsplit("-", 1)[1])
    assert saved == ["1", "2", "4"]
    assert saver.best == 1.0


def test_learning_rate_scheduler_changes_the_rate_without_retracing():
    x, y = _data(n=8)
    model = _compiled("sgd")
    schedule = callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5**epoch)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[schedule])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])
    assert model.train_function.trace_count == 1
    w, b = np.full((3, 1), 0.1), np.zeros(1)
    for lr in (0.1, 0.05, 0.025):  # one full-batch SGD step per epoch, in NumPy
        err = x @ w + b - y
        w, b = w - lr * 2 / len(x) * x.T @ err, b - lr * 2 / len(x) * err.sum(0)
    np.testing.assert_allclose(np.asarray(model.w), w, rtol=1e-5)


def test_learning_rate_scheduler_needs_an_injectable_rate():
    x, y = _data(n=4)
    model = _compiled(optax.sgd(0.1))
    with pytest.raises(TrainingError, match="inject_hyperparams"):
        model.fit(x, y, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda e: 0.1)])


def test_reduce_lr_on_plateau_multiplies_the_rate_after_patience():
    model = _compiled("sgd")
    reduce = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.003)
    _feed(reduce, model, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # Reduced after epochs 2 and 4 (0.01 -> 0.005 -> 0.003 at the floor).
    assert jmod.training.get_learning_rate(model.optimizer) == pytest.approx(0.003)


def _tensorboard_values(logdir, tag):
    events = EventAccumulator(str(logdir))
    events.Reload()
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]


def test_tensorboard_writes_train_and_validation_scalars(tmp_path):
    x, y = _data()
    model = _compiled(metrics=["mae"])
    board = callbacks.TensorBoard(tmp_path, update_freq=2)
    history = model.fit(
        x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y), callbacks=[board]
    )
    train = _tensorboard_values(tmp_path / "train", "epoch_loss")
    assert train == [
        (0, pytest.approx(history.history["loss"][0])),
        (1, pytest.approx(history.history["loss"][1])),
    ]
    val = _tensorboard_values(tmp_path / "validation", "epoch_mae")
    assert [v for _, v in val] == pytest.approx(history.history["val_mae"])
    # 3 steps per epoch, every 2nd step: steps 2, 4, 6.
    assert [s for s, _ in _tensorboard_values(tmp_path / "train", "batch_loss")] == [2, 4, 6]


def test_csv_logger_writes_one_row_per_epoch_and_appends(tmp_path):
    x, y = _data()
    model = _compiled(metrics=["mae"])
    path = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.CSVLogger(path)])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.CSVLogger(path, append=True)])
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "loss", "mae"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "0"]
    assert float(rows[2][1]) == pytest.approx(history.history["loss"][1])


def test_lambda_callback_hooks_see_every_step_and_phase():
    x, y = _data(n=10)
    model = _compiled()
    seen = {"train": [], "test": 0, "epochs": [], "predict": 0}
    hooks = callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen["train"].append((batch, float(logs["loss"]))),
        on_test_end=lambda logs: seen.__setitem__("test", seen["test"] + 1),
        on_epoch_end=lambda epoch, logs: seen["epochs"].append(sorted(logs)),
        on_predict_batch_end=lambda batch, logs: seen.__setitem__("predict", seen["predict"] + 1),
    )
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y), callbacks=[hooks])
    assert [b for b, _ in seen["train"]] == [0, 1, 2, 0, 1, 2]
    assert seen["test"] == 2
    assert seen["epochs"] == [["loss", "val_loss"]] * 2
    model.predict(x, batch_size=4, verbose=0, callbacks=[hooks])
    assert seen["predict"] == 3
    with pytest.raises(TrainingError, match="unknown hook 'on_batch'"):
        callbacks.LambdaCallback(on_batch=print)


def test_stop_training_from_a_batch_hook_ends_fit_after_that_step():
    x, y = _data(n=12)
    model = _compiled()

    class StopAtSecondStep(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    history = model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[StopAtSecondStep()])
    assert int(model.optimizer.iterations.value) == 2
    assert len(history.history["loss"]) == 1


def test_terminate_on_nan_stops_at_the_first_bad_loss():
    x, y = _data(n=8)
    y[5] = np.nan
    model = _compiled()
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[callbacks.TerminateOnNaN()],
    )
    assert int(model.optimizer.iterations.value) == 2  # the 2nd batch holds the NaN


def test_callback_list_rejects_other_objects():
    with pytest.raises(TrainingError, match="got function"):
        callbacks.CallbackList([lambda: None])


def test_docstring_examples_run():
    run_examples(callbacks)
