"""Recording the graphs of `jmod.jit` functions for TensorBoard's Graphs tab.

As with `tf.summary.trace_on` / `trace_export`: between `trace_on()` and
`trace_export(name, step)`, every trace `jmod.jit` makes (a first call, or a
call with a new input signature) is recorded; `trace_export` writes their
graphs to the default writer under the tag `name`. A `jmod.jit` function
called inside another is drawn inside its caller's graph. Functions already
traced before `trace_on()` are not traced again, so call a fresh model (or a
new signature) while tracing is on.

With `profiler=True`, a `jmod.profiler` trace runs from `trace_on` to
`trace_export`, which saves it in `profiler_outdir` (default: the default
writer's log directory) for TensorBoard's Profile tab.
"""

import os
import shutil
import tempfile
import threading
import warnings

from jmod import _scope
from jmod import profiler as _profiler
from jmod.summary import _events, _graph
from jmod.summary._errors import SummaryError
from jmod.summary.writer import get_default_writer

__all__ = ["trace_export", "trace_off", "trace_on"]

_lock = threading.Lock()
_state = None  # a _TraceState while tracing is on


class _TraceState:
    def __init__(self, graph, profile_dir):
        self.graph = graph
        self.profile_dir = profile_dir  # temporary logdir of the profile, or None
        self.records = []

    def hook(self, record):
        # A jmod.jit function called inside another one's trace is drawn inside
        # the caller's graph; only outermost traces get graphs of their own.
        if self.graph and _scope.current() is None:
            self.records.append(record)


def trace_on(graph=True, profiler=False):
    """Starts recording the graphs of `jmod.jit` traces (and a profile).

    Example:
        >>> import tempfile, jax.numpy as jnp, jmod
        >>> @jmod.jit
        ... def f(x):
        ...     return x * 2
        >>> writer = jmod.summary.create_file_writer(tempfile.mkdtemp())
        >>> trace_on(graph=True)
        >>> _ = f(jnp.ones(3))
        >>> with writer.as_default():
        ...     trace_export("f_trace", step=0)
        True

    Args:
        graph: record the graphs of traced functions.
        profiler: also record a `jmod.profiler` profile until `trace_export`.

    Raises:
        SummaryError: tracing is already on.
    """
    global _state
    from jmod import compiled as _compiled

    with _lock:
        if _state is not None:
            raise SummaryError(
                "jmod.summary.trace_on(): tracing is already on; "
                "call trace_export() or trace_off() first"
            )
        profile_dir = None
        if profiler:
            # jax needs the directory when the profile starts; trace_export
            # learns where it goes, so record into a scratch directory.
            profile_dir = tempfile.mkdtemp(prefix="jmod_profile_")
            _profiler.start(profile_dir)
        _state = _TraceState(graph, profile_dir)
        _compiled.TRACE_HOOKS.append(_state.hook)


def trace_off():
    """Stops tracing and discards what was recorded (and the profile).

    Example:
        >>> trace_on(); trace_off()
    """
    state = _stop()
    if state is not None and state.profile_dir is not None:
        _profiler.stop()
        shutil.rmtree(state.profile_dir, ignore_errors=True)


def trace_export(name, step=None, profiler_outdir=None):
    """Writes the recorded graphs to the default writer and stops tracing.

    The graphs appear in TensorBoard's Graphs tab under the tag `name`, one
    per traced function (`graph_1`, `graph_2`, ... when there are several),
    with operations grouped by module path.

    Args:
        name: the tag.
        step: the step (default: the writer's default step).
        profiler_outdir: where a profile started by `trace_on(profiler=True)`
            goes (default: the default writer's log directory).

    Returns:
        True if the graphs were written; False (with a warning) when there is
        no default writer.

    Raises:
        SummaryError: tracing is off.
    """
    state = _stop()
    if state is None:
        raise SummaryError(
            f"jmod.summary.trace_export({name!r}): tracing is off; call "
            "jmod.summary.trace_on() before calling the jmod.jit function"
        )
    writer = get_default_writer()
    if state.profile_dir is not None:
        run_dir = _profiler.stop()
        outdir = profiler_outdir or (writer.logdir if writer is not None else None)
        if outdir is None:
            warnings.warn(
                f"trace_export({name!r}): no profiler_outdir and no default "
                "writer; the profile is discarded",
                stacklevel=2,
            )
        else:
            _move_profile(run_dir, os.fspath(outdir))
        shutil.rmtree(state.profile_dir, ignore_errors=True)
    if writer is None:
        warnings.warn(
            f"trace_export({name!r}): no default summary writer; use "
            "`with writer.as_default():`; nothing was written",
            stacklevel=2,
        )
        return False
    if not state.graph:
        return True
    graphs = [
        _graph.graph_def_from_jaxpr(
            record.jaxpr(),
            record.input_names,
            state_inputs=getattr(record, "state_count", 0),
        )
        for record in state.records
    ]
    return writer.write(_events.graph_summary(name, graphs), step)


def _stop():
    global _state
    from jmod import compiled as _compiled

    with _lock:
        state, _state = _state, None
    if state is not None and state.hook in _compiled.TRACE_HOOKS:
        _compiled.TRACE_HOOKS.remove(state.hook)
    return state


def _move_profile(run_dir, outdir):
    target_root = os.path.join(outdir, "plugins", "profile")
    os.makedirs(target_root, exist_ok=True)
    target = os.path.join(target_root, os.path.basename(run_dir))
    if os.path.exists(target):
        shutil.copytree(run_dir, target, dirs_exist_ok=True)
    else:
        shutil.move(run_dir, target)
