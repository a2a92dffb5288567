"""The progress bar of `fit`, `evaluate` and `predict`.

On a terminal (or in a notebook) the bar redraws in place at most every
`interval` seconds: steps done, ETA, and the running loss and metrics.
Anywhere else (a log file, a pipe, CI) it prints one line when the epoch or
the evaluation ends, so logs stay readable. `verbose=0` prints nothing,
`verbose=2` prints the one-line form everywhere.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> bar = Progbar(4, stream=out)
    >>> for step in range(1, 5):
    ...     bar.update(step, {"loss": 0.5})
    >>> out.getvalue().startswith("4/4")
    True
"""

import math
import sys
import time

from jmod.training.callbacks import Callback


def format_value(value):
    """A log value as Keras prints it: 4 decimals, or 4 significant digits if tiny.

    Example:
        >>> format_value(0.123456), format_value(1.5e-5)
        ('0.1235', '1.5000e-05')
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if value != 0 and abs(value) < 1e-3 and math.isfinite(value):
        return f"{value:.4e}"
    return f"{value:.4f}"


def format_duration(seconds):
    """`"1:02:03"`, `"2:05"` or `"7s"`.

    Example:
        >>> format_duration(125), format_duration(7.2)
        ('2:05', '7s')
    """
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if seconds >= 60:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds}s"


def format_rate(seconds_per_unit, unit):
    """`"12ms/step"` and the like.

    Example:
        >>> format_rate(0.0123, "step")
        '12ms/step'
    """
    if seconds_per_unit >= 1:
        return f"{seconds_per_unit:.0f}s/{unit}"
    if seconds_per_unit >= 1e-3:
        return f"{seconds_per_unit * 1e3:.0f}ms/{unit}"
    return f"{seconds_per_unit * 1e6:.0f}us/{unit}"


def is_interactive(stream):
    """Whether `stream` redraws in place: a terminal, or a Jupyter kernel's stdout."""
    if type(stream).__module__.startswith("ipykernel"):  # a notebook cell's output
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


class Progbar:
    """A progress bar for `target` steps; `update(current, values)` after each step.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = Progbar(2, stream=out, prefix="Epoch 1/1 - ")
        >>> bar.update(1, {"loss": 1.0}); bar.update(2, {"loss": 0.25})
        >>> out.getvalue().split(" - ")[:2]
        ['Epoch 1/1', '2/2']

    Args:
        target: the number of steps, or None when unknown.
        width: characters in the bar.
        verbose: 1 (bar on a terminal, one final line elsewhere) or 2 (final line only).
        interval: the shortest time between redraws, in seconds.
        unit_name: what a step is called in the rate (`12ms/step`).
        stream: where to print; `sys.stdout` (looked up at each print) by default.
        prefix: text in front of the one-line form (`"Epoch 1/3 - "`).
    """

    def __init__(
        self,
        target,
        width=30,
        verbose=1,
        interval=0.05,
        unit_name="step",
        stream=None,
        prefix="",
    ):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self._stream = stream
        self.prefix = prefix
        self.dynamic = verbose == 1 and is_interactive(self.stream)
        self._start = time.perf_counter()
        self._last_draw = self._start
        self._last_width = 0
        self._values = {}
        self.finished = False
        # Names listed here come first, in this order (compiled names: loss first).
        self.order = []

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def update(self, current, values=None, finalize=None):
        """Records `current` steps done and the latest `values` (running means already).

        Draws when due: on a terminal every `interval` seconds and at the
        end; elsewhere only at the end (`current == target` or `finalize`).
        """
        if values:
            self._values.update(values)
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if self.finished or not self.verbose:
            return
        now = time.perf_counter()
        if finalize:
            self.finished = True
        elif not self.dynamic or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        if self.dynamic:
            self._draw_bar(current, now - self._start, finalize)
        else:
            self._write(self._line(current, now - self._start) + "\n")

    def _counter(self, current):
        if self.target is None:
            return f"{current}/Unknown"
        digits = len(str(self.target))
        return f"{current:>{digits}}/{self.target}"

    def _values_text(self):
        parts = []
        rank = {name: i for i, name in enumerate(self.order)}
        base = lambda name: name[4:] if name.startswith("val_") else name
        names = sorted(
            self._values,
            key=lambda n: (n.startswith("val_"), rank.get(base(n), len(rank))),
        )
        for name in names:
            value = self._values[name]
            if getattr(value, "ndim", 0) not in (0, None) and getattr(value, "size", 1) != 1:
                continue  # a vector metric (several thresholds) does not fit in a line
            parts.append(f"{name}: {format_value(value)}")
        return "".join(f" - {p}" for p in parts)

    def _rate(self, current, elapsed):
        per_step = elapsed / max(current, 1)
        return format_rate(per_step, self.unit_name)

    def _line(self, current, elapsed):
        text = f"{self.prefix}{self._counter(current)} - {format_duration(elapsed)}"
        text += f" {self._rate(current, elapsed)}"
        return text + self._values_text()

    def _draw_bar(self, current, elapsed, final):
        counter = self._counter(current)
        bar = ""
        if self.target:
            done = min(int(self.width * current / self.target), self.width)
            fill = "=" * done if done >= self.width else "=" * max(done - 1, 0) + ">" * (done > 0)
            bar = "[" + fill.ljust(self.width, ".") + "]"
        if final:
            timing = f"{format_duration(elapsed)} {self._rate(current, elapsed)}"
        elif self.target and current:
            eta = elapsed / current * (self.target - current)
            timing = f"ETA: {format_duration(eta)}"
        else:
            timing = format_duration(elapsed)
        text = f"{counter} {bar}".rstrip() + f" - {timing}{self._values_text()}"
        pad = max(self._last_width - len(text), 0)
        self._last_width = len(text)
        self._write("\r" + text + " " * pad + ("\n" if final else ""))

    def _write(self, text):
        stream = self.stream
        stream.write(text)
        stream.flush()


class ProgbarLogger(Callback):
    """The callback that draws `fit`'s, `evaluate`'s and `predict`'s progress bars.

    `fit(verbose=...)` adds it; there is no need to pass it. During `fit`
    the validation pass draws nothing of its own: its values join the
    epoch's final line.

    Example:
        >>> ProgbarLogger(verbose=2).verbose
        2
    """

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self._bar = None
        self._in_fit = False
        self._seen = 0

    def _steps(self):
        return self.params.get("steps")

    def _new_bar(self, target, prefix="", unit="step"):
        self._seen = 0
        bar = Progbar(
            target, verbose=self.verbose, stream=self.stream, prefix=prefix, unit_name=unit
        )
        bar.order = list(getattr(self.model, "metrics_names", None) or [])
        return bar

    # -- fit --------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._in_fit = True

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs", 1)
        header = f"Epoch {epoch + 1}/{epochs}"
        if self.verbose == 1 and is_interactive(self.stream or sys.stdout):
            stream = self.stream or sys.stdout
            stream.write(header + "\n")
            stream.flush()
            self._bar = self._new_bar(self._steps())
        else:
            self._bar = self._new_bar(self._steps(), prefix=header + " - ")

    def on_train_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        if self._bar is not None and self._bar.dynamic:
            self._bar.update(self._seen, logs, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            if self._bar.target is None:
                self._bar.target = self._seen
            self._bar.update(self._seen, logs, finalize=True)
            self._bar = None

    # -- evaluate ---------------------------------------------------------------------
    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._bar = self._new_bar(self._steps())

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit and self._bar is not None:
            self._seen = batch + 1
            if self._bar.dynamic:
                self._bar.update(self._seen, logs, finalize=False)

    def on_test_end(self, logs=None):
        if not self._in_fit and self._bar is not None:
            if self._bar.target is None:
                self._bar.target = self._seen
            self._bar.update(self._seen, logs, finalize=True)
            self._bar = None

    # -- predict ----------------------------------------------------------------------
    def on_predict_begin(self, logs=None):
        self._bar = self._new_bar(self._steps())

    def on_predict_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._seen = batch + 1
            if self._bar.dynamic:
                self._bar.update(self._seen, finalize=False)

    def on_predict_end(self, logs=None):
        if self._bar is not None:
            if self._bar.target is None:
                self._bar.target = self._seen
            self._bar.update(self._seen, finalize=True)
            self._bar = None
