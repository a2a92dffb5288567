"""`Checkpoint`: saves and restores the variables of modules by path.

Keys are the keyword a object was given under, then the variable's path in
it: `Checkpoint(model=m)` writes `model/dense_1/w` (and `save_counter`, once
`save()` or `restore()` created it, as in TensorFlow). A
restore matches keys to the variables of the objects it is given, which may be
other Python objects of the same structure, and fills variables that do not
exist yet (deferred build) when they are created.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
import warnings
import weakref
from collections.abc import Callable

import jax
import numpy as np

from jmod import _scope
from jmod import module as _module
from jmod.checkpoint import _format, _read, _sharded
from jmod.checkpoint._restore_plan import (
    SAVE_COUNTER,
    RestorePlan,
    check_compatible,
    plan_restore,
)
from jmod.errors import CheckpointError
from jmod.variables import Variable


class Checkpoint:
    """Groups modules and variables under names, to write and restore them together.

    Example:
        >>> import os, tempfile
        >>> model = jmod.Module()
        >>> model.w = jmod.Variable([1.0, 2.0])
        >>> ckpt = jmod.Checkpoint(model=model)
        >>> path = ckpt.write(os.path.join(tempfile.mkdtemp(), "my_checkpoint"))
        >>> jmod.checkpoint.list_variables(path)
        [('model/w', (2,))]
        >>> other = jmod.Module()
        >>> other.w = jmod.Variable([0.0, 0.0])
        >>> jmod.Checkpoint(model=other).restore(path).assert_consumed()
        <CheckpointLoadStatus ...: 1 restored>
        >>> other.w.numpy().tolist()
        [1.0, 2.0]

    Args:
        **objects: what to save, by name: modules (anything with
            `named_variables()`: optimizers, generators), `Variable`s, or
            dicts/lists/tuples of those.
    """

    def __init__(self, **objects):
        if SAVE_COUNTER in objects:
            raise CheckpointError(
                f"'{SAVE_COUNTER}' is the checkpoint's own counter; use another name"
            )
        for name, obj in objects.items():
            _check_savable(name, obj)
        self._objects = dict(sorted(objects.items()))
        # Created on first use (`save`, `restore`, reading the attribute), as
        # TensorFlow does: a checkpoint only ever `write`n has no counter.
        self._save_counter: Variable | None = None
        self._saved_counter = 0  # a value `read` found before the counter existed
        self._in_flight: WriteHandle | None = None
        self._status: CheckpointLoadStatus | None = None

    def __getattr__(self, name):
        objects = self.__dict__.get("_objects", {})
        if name in objects:
            return objects[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or object {name!r}")

    @property
    def save_counter(self) -> Variable:
        """The number of `save()` calls (restored with the checkpoint); created when first used.

        Example:
            >>> int(jmod.Checkpoint(v=jmod.Variable(1.0)).save_counter)
            0
        """
        if self._save_counter is None:
            self._save_counter = Variable(self._saved_counter, trainable=False, name=SAVE_COUNTER)
        return self._save_counter

    # -- saving ---------------------------------------------------------------
    def named_variables(self) -> list[tuple[str, Variable]]:
        """Every variable this checkpoint saves, as (key, Variable), each variable once."""
        named, seen = [], set()
        for name, obj in self._objects.items():
            for path, var in _named_variables(name, obj):
                if id(var) not in seen:
                    seen.add(id(var))
                    named.append((path, var))
        if self._save_counter is not None:
            named.append((SAVE_COUNTER, self._save_counter))
        return named

    def write(
        self, path, blocking: bool = True, *, on_written: Callable[[str], object] | None = None
    ):
        """Writes the variables' current values as the checkpoint `path`.

        Makes `path.index` and `path.data-00000-of-00001` (through temporary
        names, so an interrupted write never damages a checkpoint already at
        `path`) and returns `path`. With `blocking=False` it returns a
        `WriteHandle` at once: the values are copied to host memory first, so
        later updates do not leak into the file, and written on a thread;
        `handle.wait()` returns `path` or raises what the write raised.

        `on_written(path)`, if given, runs once the files are in place (on the
        writing thread when not blocking; `wait()` returns after it), as
        TensorFlow's write callbacks do: `CheckpointManager` records the new
        checkpoint there.
        """
        path = os.fspath(path)
        self.wait()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # Every value from the same moment (another thread may be training),
        # pinned so a donating train step copies instead of deleting them.
        named = self.named_variables()
        arrays, ticket = _scope.snapshot([v for _, v in named])
        try:
            work = _write_or_defer(path, dict(zip([k for k, _ in named], arrays)), blocking)
        finally:
            _scope.unpin(ticket)
        then = None if on_written is None else functools.partial(on_written, path)
        if blocking:
            if then is not None:
                then()
            return path
        self._in_flight = WriteHandle(path, work or (lambda: None), then)
        return self._in_flight

    def save(self, prefix, blocking: bool = True):
        """Increments `save_counter` and writes the checkpoint `prefix-N` (N counts from 1).

        Returns the path written (or a `WriteHandle` with `blocking=False`).

        Example:
            >>> import os, tempfile
            >>> ckpt = jmod.Checkpoint(v=jmod.Variable(1.0))
            >>> prefix = os.path.join(tempfile.mkdtemp(), "ckpt")
            >>> os.path.basename(ckpt.save(prefix)), os.path.basename(ckpt.save(prefix))
            ('ckpt-1', 'ckpt-2')
        """
        self.wait()
        self.save_counter.assign_add(1)
        return self.write(f"{os.fspath(prefix)}-{int(self.save_counter.value)}", blocking=blocking)

    def wait(self) -> None:
        """Blocks until a `write(..., blocking=False)` in flight has finished."""
        handle, self._in_flight = self._in_flight, None
        if handle is not None:
            handle.wait()

    # -- restoring ------------------------------------------------------------
    def read(self, path, partial: bool = False) -> CheckpointLoadStatus:
        """Restores the checkpoint at `path` (written by `write` or `save`); see `restore`.

        Unlike `restore`, it does not create `save_counter` (as in TensorFlow).
        """
        return self._restore_from(path, partial, create_counter=False)

    def restore(self, path, partial: bool = False) -> CheckpointLoadStatus:
        """Assigns the values of checkpoint `path` to the variables with the same keys.

        Variables that exist are assigned at once, each as soon as its value
        is read and verified (so the restore needs memory for about one
        variable beyond the model); those a module creates later (deferred
        build) are assigned when they are created. Shapes and dtypes of every
        match are checked against the index first, so a mismatch raises
        `CheckpointError` before any variable changes; a value found corrupt
        while reading stops the restore, and the error says how many values
        were already assigned. An existing variable the checkpoint has no
        value for is an error unless `partial=True`.
        Checkpoint keys nothing matched are reported by the returned status
        (`assert_consumed()`), or with a warning when the status is dropped
        unchecked, unless `expect_partial()` was called.

        `path=None` restores nothing (the status's assertions then fail), so
        `ckpt.restore(manager.latest_checkpoint)` works on a first run.
        """
        return self._restore_from(path, partial, create_counter=True)

    def _restore_from(self, path, partial, create_counter) -> CheckpointLoadStatus:
        if create_counter:
            self.save_counter  # noqa: B018 - created now, as TensorFlow's restore does
        self.wait()
        if self._status is not None:
            self._status._restore.cancel()  # its deferred assignments must not fire any more
        if path is None:
            self._status = CheckpointLoadStatus(self, None, (), {})
            return self._status
        path = os.fspath(path)
        index = _format.read_index(path)
        filename = _format.index_path(path)
        existing = dict(self.named_variables())
        # Deferred keys are those under a module that can still grow variables.
        roots = dict(r for name, obj in self._objects.items() for r in _module_roots(name, obj))
        plan = plan_restore(index.entries, existing, roots, partial=partial, filename=filename)
        status = CheckpointLoadStatus(self, path, index.entries.keys(), {})
        status._restore.report.unmatched = set(plan.unmatched)
        self._apply(path, index, plan, existing, status._restore)
        callbacks_by_root: dict[str, dict] = {}
        for key, root in plan.deferred.items():
            rel = key[len(root) + 1 :]
            callbacks_by_root.setdefault(root, {})[rel] = status._restore.deliverer(key, filename)
        for root, callbacks in callbacks_by_root.items():
            _module.on_variable_created(roots[root], callbacks)
        self._status = status
        return status

    def _apply(self, path, index, plan: RestorePlan, existing, restore: _Restore) -> None:
        """Reads the planned values and assigns them; deferred ones wait in `restore.pending`.

        Each value is assigned as soon as it is read and verified, so the old
        one can go: restoring into a built model needs memory for about one
        variable beyond the model, not a second model. Variables laid out over
        several devices are filled box by box: each process reads only what
        its devices hold.
        """
        laid_out = [k for k in plan.assign if _sharded.is_multi_device(existing[k].sharding)]
        whole = [k for k in plan.wanted if k not in laid_out]
        try:
            for key, value in _read.iter_arrays(path, index, whole):
                if key in existing and key != SAVE_COUNTER:
                    existing[key].assign(_to_device(value, existing[key]))
                    restore.restored.add(key)
                elif key == SAVE_COUNTER:
                    self._saved_counter = int(value)
                    if self._save_counter is not None:
                        self._save_counter.assign(value.astype(self._save_counter.dtype))
                else:
                    restore.pending[key] = value
            with _sharded.BoxReader(path, index) as reader:
                for key in laid_out:
                    variable = existing[key]
                    variable.assign(_sharded.read_onto(reader, key, variable))
                    restore.restored.add(key)
        except BaseException as err:
            restore.report.silenced = True  # the error is the report
            done = len(restore.restored - {SAVE_COUNTER})
            if not isinstance(err, CheckpointError) or not done:
                raise
            raise CheckpointError(
                f"{err} ({done} of {len(plan.wanted)} values were already assigned)"
            ) from None


class CheckpointLoadStatus:
    """What a restore matched, as `tf.train.Checkpoint`'s status objects report it.

    `assert_consumed()` passes when every checkpoint key was assigned to a
    variable and every variable got a value; `assert_existing_objects_matched()`
    when every variable that exists now got one (deferred ones may still be
    waiting). Both return the status, so calls chain. Unmatched keys that are
    never asserted on are reported with a warning when the status is dropped,
    unless `expect_partial()` was called.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "c")
        >>> _ = jmod.Checkpoint(a=jmod.Variable(1.0), b=jmod.Variable(2.0)).write(path)
        >>> status = jmod.Checkpoint(a=jmod.Variable(0.0)).restore(path)
        >>> status.unmatched_keys
        ['b']
        >>> status.expect_partial().assert_existing_objects_matched()
        <CheckpointLoadStatus ...: 1 restored>
    """

    def __init__(self, checkpoint, path, keys, values):
        self._checkpoint = checkpoint
        self.path = path
        self._restore = _Restore(path, keys, values)

    def __repr__(self):
        return f"<CheckpointLoadStatus {self.path!r}: {len(self._restore.restored)} restored>"

    @property
    def unmatched_keys(self) -> list[str]:
        """Checkpoint keys no variable has taken (yet: a deferred build may still take them)."""
        return sorted(self._restore.keys - self._restore.restored)

    @property
    def unrestored_variables(self) -> list[str]:
        """Keys of the checkpointed objects' variables, as they are now, that got no value."""
        named = {k for k, _ in self._checkpoint.named_variables()} - {SAVE_COUNTER}
        return sorted(named - self._restore.restored)

    def assert_consumed(self) -> CheckpointLoadStatus:
        """Raises `CheckpointError` unless every key and every variable was matched."""
        self._checked()
        unmatched, unrestored = self.unmatched_keys, self.unrestored_variables
        if unmatched or unrestored:
            raise CheckpointError(
                f"restore of {self.path!r} was partial: checkpoint keys never assigned: "
                f"{_list(unmatched)}; variables without a value: {_list(unrestored)}"
            )
        return self

    def assert_existing_objects_matched(self) -> CheckpointLoadStatus:
        """Raises `CheckpointError` if a variable that exists now got no value."""
        self._checked()
        unrestored = self.unrestored_variables
        if unrestored:
            raise CheckpointError(
                f"{self.path!r} has no value for existing variables: {_list(unrestored)}"
            )
        return self

    def assert_nontrivial_match(self) -> CheckpointLoadStatus:
        """Raises `CheckpointError` unless at least one variable was restored."""
        self._checked()
        if not self._restore.restored - {SAVE_COUNTER}:
            raise CheckpointError(f"restore of {self.path!r} matched no variable")
        return self

    def expect_partial(self) -> CheckpointLoadStatus:
        """Silences the warning about unmatched keys for this restore."""
        self._restore.report.silenced = True
        return self

    def _checked(self):
        self._restore.report.silenced = True  # the user is looking: no warning later
        if self.path is None:
            raise CheckpointError("no checkpoint was given (path=None); nothing was restored")


class _Restore:
    """One restore's shared state: the status and the deferred callbacks both hold it.

    Callbacks hold it strongly, so deferred values arrive even when the status
    is dropped right away (`ckpt.restore(path)` as a statement); it, and its
    warning about keys still unassigned, goes when the last holder does.
    """

    def __init__(self, path, keys, values):
        self.keys = set(keys)
        self.pending = values  # deferred key -> value, until its variable appears
        self.restored: set[str] = {SAVE_COUNTER} & self.keys
        self.lock = threading.Lock()
        self.cancelled = False
        self.report = _Report(path)
        weakref.finalize(self, self.report.emit)

    def cancel(self):
        self.cancelled = True
        self.report.silenced = True
        self.pending.clear()

    def deliverer(self, key: str, filename: str):
        self.report.waiting.add(key)

        def deliver(variable):
            if self.cancelled:
                return
            with self.lock:
                value = self.pending.pop(key, None)
            if value is None:
                return
            check_compatible(key, variable, value, filename)
            variable.assign(_to_device(value, variable))
            self.restored.add(key)
            self.report.waiting.discard(key)

        return deliver


class _Report:
    """The warning a restore gives when dropped with keys still unassigned."""

    def __init__(self, path):
        self.path = path
        self.silenced = False
        self.waiting: set[str] = set()
        self.unmatched: set[str] = set()

    def emit(self):
        keys = sorted(self.waiting | self.unmatched)
        if keys and not self.silenced:
            warnings.warn(
                f"checkpoint {self.path!r}: {len(keys)} key(s) were never assigned to a "
                f"variable: {_list(keys)}. Call expect_partial() on the restore status "
                "to silence this, or assert_consumed() to make it an error.",
                stacklevel=2,
            )


class WriteHandle:
    """A checkpoint write running on a thread: `wait()` returns its path.

    Example:
        >>> import os, tempfile
        >>> ckpt = jmod.Checkpoint(v=jmod.Variable(1.0))
        >>> handle = ckpt.write(os.path.join(tempfile.mkdtemp(), "c"), blocking=False)
        >>> os.path.basename(handle.wait())
        'c'
    """

    def __init__(self, path, work, then=None):
        self.path = path
        self._future: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            try:
                work()
                if then is not None:
                    then()
            except BaseException as err:  # handed to wait(), not lost on the thread
                self._future.set_exception(err)
            else:
                self._future.set_result(path)

        # Not a daemon: an interpreter that exits mid-write finishes the write first.
        self._thread = threading.Thread(target=run, name=f"jmod-checkpoint-write {path}")
        self._thread.start()

    def done(self) -> bool:
        """Whether the write has finished (successfully or not)."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> str:
        """Blocks until the write is on disk; returns its path or raises its error."""
        return self._future.result(timeout)

    def __repr__(self):
        state = "done" if self.done() else "writing"
        return f"<WriteHandle {self.path!r} {state}>"


# ---------------------------------------------------------------- helpers


def _write_or_defer(path: str, values: dict, blocking: bool):
    """Writes `values` now, or returns the work that writes host copies of them later.

    None when the write is done here: when blocking, and for a collective
    write across processes, which runs here even when not blocking (a thread
    could interleave its collectives with the training step's).
    """
    if _sharded.needs_sharded_write(values):
        # Several processes or sharded values: each process writes the blocks it holds.
        if blocking or jax.process_count() > 1:
            _sharded.write(path, values)
            return None
        return functools.partial(_sharded.write, path, _sharded.snapshot(values))
    if blocking:
        # Zero-copy on CPU: the arrays' own memory streams to the file.
        _format.write_checkpoint(path, values)
        return None
    return functools.partial(_format.write_checkpoint, path, _snapshot(values))


def _check_savable(name, obj):
    if isinstance(obj, Variable) or hasattr(obj, "named_variables"):
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            _check_savable(f"{name}/{key}", item)
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_savable(f"{name}/{i}", item)
        return
    raise CheckpointError(
        f"Checkpoint({name}=...): cannot save a {type(obj).__name__}; give a Module, a "
        "Variable, an object with named_variables(), or a dict/list of those"
    )


def _named_variables(prefix, obj):
    if isinstance(obj, Variable):
        yield prefix, obj
    elif hasattr(obj, "named_variables"):
        for path, var in obj.named_variables():
            yield f"{prefix}/{path}", var
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _named_variables(f"{prefix}/{key}", obj[key])
    else:
        for i, item in enumerate(obj):
            yield from _named_variables(f"{prefix}/{i}", item)


def _module_roots(prefix, obj):
    """(key prefix, Module) for the modules among a checkpoint's objects: restore targets."""
    if isinstance(obj, _module.Module):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from _module_roots(f"{prefix}/{key}", item)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _module_roots(f"{prefix}/{i}", item)


def _to_device(value: np.ndarray, variable: Variable):
    # The read buffers are 64-byte aligned, so on CPU device_put adopts them
    # without a copy; onto the variable's current sharding where it has one.
    sharding = variable.sharding
    if sharding is None:
        return jax.device_put(value)  # created mid-trace: no placement to follow yet
    return jax.device_put(value, sharding)


def _snapshot(values: dict) -> dict:
    """Host copies of `values`, so a write in the background sees them as they are now."""
    for value in values.values():
        if isinstance(value, jax.Array):
            value.copy_to_host_async()
    out = {}
    for key, value in values.items():
        on_cpu = isinstance(value, jax.Array) and all(d.platform == "cpu" for d in value.devices())
        # On CPU np.asarray is a view of the device buffer, which a donating
        # jit may reuse: copy. Elsewhere it is already a fresh host copy.
        out[key] = np.array(value, copy=True) if on_cpu else np.asarray(value)
    return out


def _list(keys, limit=10):
    if not keys:
        return "none"
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
