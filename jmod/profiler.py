"""Profiling: `jax.profiler` traces that TensorBoard's Profile tab reads.

A trace records what the host and the devices did between `start(logdir)`
and `stop()` into `logdir/plugins/profile/<run>/<host>.xplane.pb` (open it
with TensorBoard and the `tensorboard-plugin-profile` / XProf plugin, or with
`jax.profiler.ProfileData`). Annotations name spans of host time in it;
step annotations mark training steps so the profiler can split the trace
into steps.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> with trace(tempfile.mkdtemp()):
    ...     for step in range(2):
    ...         with annotate("train", step=step):
    ...             _ = (jnp.ones(3) * 2).block_until_ready()
"""

import contextlib
import os

import jax

from jmod.summary._errors import SummaryError

__all__ = ["annotate", "is_active", "start", "stop", "trace"]

# The logdir of the running trace. jax allows one trace per process.
_active_logdir = None


def start(logdir, *, create_perfetto_trace=False):
    """Starts recording a profile into `logdir`.

    Example:
        >>> import tempfile
        >>> start(tempfile.mkdtemp()); run_dir = stop()

    Args:
        logdir: the TensorBoard log directory (the profile goes under
            `plugins/profile/`).
        create_perfetto_trace: also write a `perfetto_trace.json.gz` that
            ui.perfetto.dev opens.

    Raises:
        SummaryError: a profile is already being recorded.
    """
    global _active_logdir
    if _active_logdir is not None:
        raise SummaryError(
            f"jmod.profiler.start({os.fspath(logdir)!r}): a profile is already being "
            f"recorded into {_active_logdir!r}; call jmod.profiler.stop() first"
        )
    logdir = os.fspath(logdir)
    jax.profiler.start_trace(logdir, create_perfetto_trace=create_perfetto_trace)
    _active_logdir = logdir


def stop():
    """Stops recording and writes the profile; returns its run directory.

    Raises:
        SummaryError: no profile is being recorded.
    """
    global _active_logdir
    if _active_logdir is None:
        raise SummaryError(
            "jmod.profiler.stop(): no profile is being recorded; "
            "call jmod.profiler.start(logdir) first"
        )
    logdir, _active_logdir = _active_logdir, None
    profile_root = os.path.join(logdir, "plugins", "profile")
    before = set(_listdir(profile_root))
    jax.profiler.stop_trace()
    # jax names each run by its time stamp; the new one is the one not there before.
    new_runs = sorted(set(_listdir(profile_root)) - before)
    return os.path.join(profile_root, new_runs[-1]) if new_runs else profile_root


def is_active():
    """Whether a profile is being recorded (by `start` or `trace`)."""
    return _active_logdir is not None


@contextlib.contextmanager
def trace(logdir, *, create_perfetto_trace=False):
    """Records a profile of the `with` block into `logdir`.

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> with trace(tempfile.mkdtemp()):
        ...     _ = (jnp.ones(3) + 1).block_until_ready()
    """
    start(logdir, create_perfetto_trace=create_perfetto_trace)
    try:
        yield
    finally:
        stop()


class annotate(contextlib.ContextDecorator):  # lower case: used like a function
    """Names a span of host time in the profile; a `with` block or a decorator.

    With `step=`, marks one training step (a `jax.profiler.StepTraceAnnotation`),
    which the profiler uses to split the trace into steps.

    Example:
        >>> with annotate("data_loading"):
        ...     pass
        >>> @annotate("preprocess")
        ... def preprocess(x):
        ...     return x
        >>> with annotate("train", step=3):
        ...     pass

    Args:
        name: the span's name in the trace viewer.
        step: the step number, for step annotations.
        **metadata: extra key=value pairs shown with the span.
    """

    def __init__(self, name, step=None, **metadata):
        self.name = name
        self.step = step
        self.metadata = metadata
        self._stack = []

    def __enter__(self):
        if self.step is None:
            annotation = jax.profiler.TraceAnnotation(self.name, **self.metadata)
        else:
            annotation = jax.profiler.StepTraceAnnotation(
                self.name, step_num=int(self.step), **self.metadata
            )
        annotation.__enter__()
        # A stack, so one annotate object may be re-entered (recursion, decorator).
        self._stack.append(annotation)
        return self

    def __exit__(self, *exc):
        self._stack.pop().__exit__(*exc)
        return False


def _listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
