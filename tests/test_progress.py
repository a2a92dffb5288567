"""The progress bar: one line per epoch off a terminal, a redrawn bar on one."""

import io

import numpy as np
import pytest

import jmod
from jmod.layers import Layer
from jmod.training import TrainerMixin, progress
from jmod.training.progress import Progbar, ProgbarLogger
from tests.test_losses import run_examples


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Linear(TrainerMixin, Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = jmod.Variable(np.zeros((2, 1), np.float32))
        self.built = True

    def call(self, x):
        return x @ self.w


@pytest.fixture(scope="module")
def model():
    model = Linear()
    model.compile("sgd", loss="mse", metrics=["mae"])
    return model


X = np.ones((10, 2), np.float32)
Y = np.ones((10, 1), np.float32)


def test_fit_off_a_terminal_prints_one_line_per_epoch(model, capsys):
    model.fit(X, Y, batch_size=4, epochs=3, validation_data=(X, Y), verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"Epoch {epoch}/3 - 3/3 - ")
        names = [part.split(":")[0] for part in line.split(" - ")[3:]]
        assert names == ["loss", "mae", "val_loss", "val_mae"]
    assert "\r" not in capsys.readouterr().out


def test_verbose_zero_prints_nothing_and_two_prints_lines(model, capsys):
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0)
    model.evaluate(X, Y, verbose=0)
    model.predict(X, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(X, Y, batch_size=4, epochs=2, verbose=2)
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_epoch_line_shows_the_logged_values(model):
    stream = io.StringIO()
    history = model.fit(
        X, Y, batch_size=5, epochs=1, verbose=0, callbacks=[ProgbarLogger(stream=stream)]
    )
    line = stream.getvalue().strip()
    assert f"loss: {history.history['loss'][0]:.4f}" in line
    assert f"mae: {history.history['mae'][0]:.4f}" in line


def test_evaluate_prints_one_line_with_steps(model, capsys):
    model.evaluate(X, Y, batch_size=4)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("3/3 - ")


def test_on_a_terminal_the_bar_redraws_in_place_with_an_eta(model):
    stream = Terminal()
    bar = Progbar(4, stream=stream, interval=0.0)
    for step in range(1, 5):
        bar.update(step, {"loss": 1.0 / step})
    out = stream.getvalue()
    assert out.count("\r") == 4 and out.endswith("\n")
    assert "1/4 [======>.......................] - ETA: " in out
    assert "4/4 [==============================] - " in out and "loss: 0.2500" in out
    stream = Terminal()
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0, callbacks=[ProgbarLogger(stream=stream)])
    out = stream.getvalue()
    assert out.startswith("Epoch 1/2\n") and "Epoch 2/2\n" in out
    assert out.count("\n") == 4  # header + final bar per epoch


def test_notebook_output_counts_as_interactive():
    OutStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    assert progress.is_interactive(OutStream())
    assert not progress.is_interactive(io.StringIO())


def test_redraws_are_throttled_by_the_interval():
    stream = Terminal()
    bar = Progbar(1000, stream=stream, interval=3600.0)
    for step in range(1, 1001):
        bar.update(step)
    # The first draw waits for the interval; only the final one comes.
    assert stream.getvalue().count("\r") == 1


def test_unknown_length_shows_unknown_then_the_count(model):
    stream = io.StringIO()
    batches = ((X[i : i + 4], Y[i : i + 4]) for i in range(0, 10, 4))
    model.fit(batches, verbose=0, callbacks=[ProgbarLogger(stream=stream)])
    assert stream.getvalue().startswith("Epoch 1/1 - 3/3 - ")
    bar = Progbar(None, stream=Terminal(), interval=0.0)
    bar.update(2)
    assert "2/Unknown" in bar.stream.getvalue()


def test_value_and_time_formats():
    assert progress.format_value(0.5) == "0.5000"
    assert progress.format_value(2e-5) == "2.0000e-05"
    assert progress.format_value(float("nan")) == "nan"
    assert progress.format_duration(3725) == "1:02:05"
    assert progress.format_rate(2.5e-4, "step") == "250us/step"


def test_docstring_examples_run():
    run_examples(progress)
