"""TensorBoard event-file writers and the default-writer context.

A `SummaryWriter` appends `Event` protos to one event file in its log
directory through TensorBoard's own `EventFileWriter` (TFRecord framing with
masked CRC32C, a background thread, periodic flushes). The module-level
`scalar`/`histogram`/`text`/`image` write to the writer made default with
`writer.as_default()`, as `tf.summary` does, and do nothing (returning
False) when there is none.
"""

import contextlib
import contextvars
import os
import time
import weakref

from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from jmod.summary import _events
from jmod.summary._errors import SummaryError

__all__ = [
    "SummaryWriter",
    "create_file_writer",
    "flush",
    "get_default_writer",
    "get_step",
    "graph",
    "histogram",
    "image",
    "scalar",
    "set_step",
    "text",
]

# Context variables rather than globals: each thread (and asyncio task) starts
# without a default writer, as in TensorFlow.
_default_writer = contextvars.ContextVar("jmod_summary_writer", default=None)
_default_step = contextvars.ContextVar("jmod_summary_step", default=None)


class SummaryWriter:
    """Writes summaries to an event file in `logdir` for TensorBoard.

    Made with `create_file_writer`. Each writer owns one new event file;
    several writers (runs) may share a parent directory.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> writer.scalar("loss", 0.5, step=1)
        True
        >>> with writer.as_default(step=2):
        ...     scalar("loss", 0.25)
        True
        >>> writer.close()
    """

    def __init__(self, logdir, max_queue=10, flush_millis=120_000, filename_suffix=".v2"):
        self._logdir = os.fspath(logdir)
        self._events = EventFileWriter(
            self._logdir,
            max_queue_size=max_queue,
            flush_secs=flush_millis / 1000,
            filename_suffix=filename_suffix,
        )
        self._closed = False
        # Flush and close at garbage collection or interpreter exit, so
        # summaries written without an explicit close() still reach the disk.
        self._finalizer = weakref.finalize(self, self._events.close)

    @property
    def logdir(self):
        """The directory this writer's event file is in."""
        return self._logdir

    @property
    def closed(self):
        """Whether `close()` was called."""
        return self._closed

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return f"<jmod.summary.SummaryWriter {self._logdir!r} ({state})>"

    @contextlib.contextmanager
    def as_default(self, step=None):
        """Makes this the writer module-level summaries go to, inside a `with`.

        Args:
            step: if given, the default step inside the block (an int or an
                int-valued variable/array, read at each write).
        """
        writer_token = _default_writer.set(self)
        step_token = _default_step.set(step) if step is not None else None
        try:
            yield self
        finally:
            if step_token is not None:
                _default_step.reset(step_token)
            _default_writer.reset(writer_token)

    def set_as_default(self, step=None):
        """Makes this the default writer from now on (outside any `with`)."""
        _default_writer.set(self)
        if step is not None:
            _default_step.set(step)

    def scalar(self, name, data, step=None, description=None):
        """Writes one number; shown in TensorBoard's Scalars dashboard."""
        return self.write(_events.scalar_summary(name, data, description), step)

    def histogram(self, name, data, step=None, buckets=None, description=None):
        """Writes the distribution of an array's values (30 buckets by default)."""
        return self.write(_events.histogram_summary(name, data, buckets, description), step)

    def text(self, name, data, step=None, description=None):
        """Writes a string (or array of strings), rendered as Markdown."""
        return self.write(_events.text_summary(name, data, description), step)

    def image(self, name, data, step=None, max_outputs=3, description=None):
        """Writes up to `max_outputs` images of a `[k, h, w, c]` batch as PNG."""
        return self.write(_events.image_summary(name, data, max_outputs, description), step)

    def graph(self, graph_def):
        """Writes a `GraphDef` (e.g. from `fn.graph(x)`) as this run's graph."""
        self._check_open()
        event = event_pb2.Event(wall_time=time.time(), graph_def=graph_def.SerializeToString())
        self._events.add_event(event)
        return True

    def write(self, summary, step=None):
        """Writes a `summary_pb2.Summary` proto at `step` (default: the context's step)."""
        self._check_open()
        tag = summary.value[0].tag if summary.value else "?"
        event = event_pb2.Event(
            wall_time=time.time(), step=_resolve_step(tag, step), summary=summary
        )
        self._events.add_event(event)
        return True

    def flush(self):
        """Blocks until everything written so far is on disk."""
        if not self._closed:
            self._events.flush()

    def close(self):
        """Flushes and closes the event file; later writes raise `SummaryError`."""
        if not self._closed:
            self._closed = True
            self._finalizer()

    def _check_open(self):
        if self._closed:
            raise SummaryError(
                f"summary writer for {self._logdir!r} is closed; "
                "create a new one with jmod.summary.create_file_writer"
            )


def create_file_writer(logdir, max_queue=10, flush_millis=120_000, filename_suffix=".v2"):
    """Creates a `SummaryWriter` writing a new event file under `logdir`.

    Example:
        >>> import tempfile
        >>> writer = create_file_writer(tempfile.mkdtemp())
        >>> writer.text("note", "hello", step=0)
        True
        >>> writer.close()

    Args:
        logdir: directory (created if missing); TensorBoard shows each
            directory holding event files as one run.
        max_queue: summaries buffered before a write blocks.
        flush_millis: longest time a summary stays in memory.
        filename_suffix: appended to the event file's name.
    """
    return SummaryWriter(logdir, max_queue, flush_millis, filename_suffix)


def get_default_writer():
    """The writer module-level summaries go to, or None."""
    return _default_writer.get()


def get_step():
    """The default step set by `as_default(step=...)` or `set_step`, or None."""
    return _default_step.get()


def set_step(step):
    """Sets the default step used when a summary is written without one.

    Example:
        >>> set_step(3); get_step()
        3
        >>> set_step(None)
    """
    _default_step.set(step)


def scalar(name, data, step=None, description=None):
    """Writes a scalar to the default writer; False if there is none.

    Example:
        >>> import tempfile
        >>> with create_file_writer(tempfile.mkdtemp()).as_default():
        ...     scalar("loss", 0.5, step=0)
        True
    """
    writer = _default_writer.get()
    return False if writer is None else writer.scalar(name, data, step, description)


def histogram(name, data, step=None, buckets=None, description=None):
    """Writes a histogram to the default writer; False if there is none.

    Example:
        >>> histogram("weights", [1.0, 2.0], step=0)  # no default writer
        False
    """
    writer = _default_writer.get()
    return False if writer is None else writer.histogram(name, data, step, buckets, description)


def text(name, data, step=None, description=None):
    """Writes text to the default writer; False if there is none.

    Example:
        >>> text("note", "hi", step=0)  # no default writer
        False
    """
    writer = _default_writer.get()
    return False if writer is None else writer.text(name, data, step, description)


def image(name, data, step=None, max_outputs=3, description=None):
    """Writes images to the default writer; False if there is none.

    Example:
        >>> import numpy as np
        >>> image("digits", np.zeros((1, 8, 8, 1)), step=0)  # no default writer
        False
    """
    writer = _default_writer.get()
    return False if writer is None else writer.image(name, data, step, max_outputs, description)


def graph(graph_def):
    """Writes a `GraphDef` as the default writer's run graph; False if none.

    Example:
        >>> from tensorboard.compat.proto import graph_pb2
        >>> graph(graph_pb2.GraphDef())  # no default writer
        False
    """
    writer = _default_writer.get()
    return False if writer is None else writer.graph(graph_def)


def flush():
    """Flushes the default writer, if any."""
    writer = _default_writer.get()
    if writer is not None:
        writer.flush()


def _resolve_step(tag, step):
    if step is None:
        step = _default_step.get()
    if step is None:
        raise SummaryError(
            f"summary {tag!r}: no step given; pass step=..., or set a default with "
            "writer.as_default(step=...) or jmod.summary.set_step(...)"
        )
    value = _events.to_host(tag, step, "step")
    if value.shape != () or value.dtype.kind not in "iu":
        if value.shape == () and value.dtype.kind == "f" and float(value).is_integer():
            return int(value)
        raise SummaryError(f"summary {tag!r}: step must be an integer, got {step!r}")
    return int(value)
