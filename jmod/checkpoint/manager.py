"""`CheckpointManager`: numbered checkpoints in one directory, the oldest deleted.

The directory holds `ckpt-N.index` / `ckpt-N.data-*` pairs and a `checkpoint`
state file (JSON) listing the managed ones, oldest first, with their save
times. A new manager on the same directory (after a restart) reads that file
back, and also adopts any `ckpt-N` whose write committed but whose state-file
update was cut short.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import jax

from jmod.checkpoint import _format, _io
from jmod.checkpoint.checkpoint import Checkpoint

STATE_FILE = "checkpoint"
_STATE_FORMAT = "jmod.checkpoint_state"

# The clock save times are taken from; tests move it to check keep_every_n_hours.
_now = time.time


class CheckpointManager:
    """Saves `checkpoint` as `directory/ckpt-N`, keeping the newest `max_to_keep`.

    Example:
        >>> import os, tempfile
        >>> ckpt = jmod.Checkpoint(step=jmod.Variable(0))
        >>> manager = jmod.CheckpointManager(ckpt, tempfile.mkdtemp(), max_to_keep=2)
        >>> manager.latest_checkpoint is None
        True
        >>> paths = [manager.save() for _ in range(3)]
        >>> [os.path.basename(p) for p in manager.checkpoints]
        ['ckpt-2', 'ckpt-3']

    Args:
        checkpoint: the `jmod.Checkpoint` to save and restore.
        directory: where the checkpoints live (created if missing).
        max_to_keep: how many recent checkpoints to keep; `None` keeps all.
        keep_every_n_hours: additionally keep, for good, one checkpoint per
            this many hours among those `max_to_keep` would delete.
        checkpoint_name: the file-name prefix (`ckpt` gives `ckpt-1`, ...).
        init_fn: called by `restore_or_initialize()` when there is nothing to restore.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        directory,
        max_to_keep: int | None,
        keep_every_n_hours: float | None = None,
        checkpoint_name: str = "ckpt",
        init_fn=None,
    ):
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be a positive int or None, got {max_to_keep!r}")
        if not checkpoint_name or "/" in checkpoint_name or os.sep in checkpoint_name:
            raise ValueError(f"checkpoint_name must be a plain file name, got {checkpoint_name!r}")
        self.checkpoint = checkpoint
        self.directory = os.fspath(directory)
        self.max_to_keep = max_to_keep
        self.keep_every_n_hours = keep_every_n_hours
        self.checkpoint_name = checkpoint_name
        self._init_fn = init_fn
        self._pattern = re.compile(re.escape(checkpoint_name) + r"-(\d+)\.index\Z")
        self._lock = threading.Lock()
        os.makedirs(self.directory, exist_ok=True)
        self._entries, self._preserved, self._last_preserved = self._load_state()

    # -- what is there ----------------------------------------------------------
    @property
    def checkpoints(self) -> list[str]:
        """The managed checkpoints' paths, oldest first."""
        with self._lock:
            return [os.path.join(self.directory, name) for name, _ in self._entries]

    @property
    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint's path, or `None` before the first save."""
        with self._lock:
            if not self._entries:
                return None
            return os.path.join(self.directory, self._entries[-1][0])

    # -- saving and restoring ---------------------------------------------------
    def save(self, step: int | None = None, blocking: bool = True):
        """Writes `directory/ckpt-N` and returns its path; deletes what falls out of `max_to_keep`.

        N is `step` when given, else the checkpoint's incremented
        `save_counter` (never below a number already in the directory, so a
        restarted process does not overwrite `ckpt-1`). With `blocking=False`
        it returns a `WriteHandle`; the bookkeeping happens when the write ends.
        """
        checkpoint = self.checkpoint
        checkpoint.wait()
        with self._lock:
            numbers = [int(name.rsplit("-", 1)[1]) for name, _ in self._entries]
        if step is None:
            counter = int(checkpoint.save_counter.value)
            if numbers and counter < max(numbers):
                checkpoint.save_counter.assign(max(numbers))
        checkpoint.save_counter.assign_add(1)
        number = int(checkpoint.save_counter.value) if step is None else int(step)
        name = f"{self.checkpoint_name}-{number}"
        path = os.path.join(self.directory, name)
        if blocking:
            checkpoint.write(path)
            self._record(name)
            return path
        # The bookkeeping runs on the write's thread: the handle is done when both are.
        return checkpoint.write(path, blocking=False, on_written=lambda _: self._record(name))

    def restore_or_initialize(self):
        """Restores the latest checkpoint and returns its path; or runs `init_fn`, returns None."""
        latest = self.latest_checkpoint
        if latest is not None:
            self.checkpoint.restore(latest)
            return latest
        if self._init_fn is not None:
            self._init_fn()
        return None

    def sync(self) -> None:
        """Waits for a `save(blocking=False)` in flight."""
        self.checkpoint.wait()

    # -- bookkeeping ------------------------------------------------------------
    def _record(self, name: str) -> None:
        with self._lock:
            self._entries = [(n, t) for n, t in self._entries if n != name]
            self._entries.append((name, _now()))
            doomed = self._sweep()
            # With several processes sharing the directory, process 0 keeps
            # the books; the others track the same list in memory.
            if jax.process_index() != 0:
                return
            self._write_state()
        for old in doomed:
            _format.delete_checkpoint(os.path.join(self.directory, old))

    def _sweep(self) -> list[str]:
        """Drops the oldest entries beyond max_to_keep; returns those to delete from disk."""
        doomed: list[str] = []
        if self.max_to_keep is None:
            return doomed
        while len(self._entries) > self.max_to_keep:
            name, saved_at = self._entries.pop(0)
            hours = self.keep_every_n_hours
            if hours is not None and saved_at - self._last_preserved >= hours * 3600:
                self._last_preserved = saved_at
                self._preserved.append(name)
            else:
                doomed.append(name)
        return doomed

    def _write_state(self) -> None:
        state = {
            "format": _STATE_FORMAT,
            "version": 1,
            "latest": self._entries[-1][0] if self._entries else None,
            "checkpoints": [{"name": n, "time": t} for n, t in self._entries],
            "preserved": self._preserved,
            "last_preserved_time": self._last_preserved,
        }
        data = json.dumps(state, indent=1).encode()
        _io.write_file_atomic(os.path.join(self.directory, STATE_FILE), data)

    def _load_state(self):
        """(entries, preserved, last_preserved_time) from the state file and the directory."""
        entries, preserved, last_preserved = _read_state(self.directory)
        if last_preserved is None:
            last_preserved = _now()
        names = {n for n, _ in entries}
        on_disk = {}
        for file in os.listdir(self.directory):
            match = self._pattern.match(file)
            if match:
                on_disk[file[: -len(".index")]] = int(match.group(1))
        # Keep the listed ones that still exist; adopt committed ones the file missed.
        entries = [(n, t) for n, t in entries if n in on_disk]
        for name, _ in sorted(on_disk.items(), key=lambda item: item[1]):
            if name not in names and name not in preserved:
                index = _format.index_path(os.path.join(self.directory, name))
                entries.append((name, os.path.getmtime(index)))
        entries.sort(key=lambda e: e[1])
        return entries, [p for p in preserved if p in on_disk], last_preserved


def _read_state(directory: str):
    """The state file's (entries, preserved, last_preserved_time); empty if absent or unreadable.

    A damaged state file is not fatal: the directory scan recovers the list.
    """
    try:
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            state = json.loads(f.read(1 << 24))
        if state.get("format") != _STATE_FORMAT:
            raise ValueError("not a jmod checkpoint state file")
        entries = [(str(e["name"]), float(e["time"])) for e in state["checkpoints"]]
        preserved = [str(p) for p in state.get("preserved", [])]
        last = state.get("last_preserved_time")
        return entries, preserved, float(last) if last is not None else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return [], [], None


def latest_checkpoint(directory) -> str | None:
    """The newest checkpoint a `CheckpointManager` recorded in `directory`, or None.

    Example:
        >>> import tempfile
        >>> jmod.checkpoint.latest_checkpoint(tempfile.mkdtemp()) is None
        True
    """
    directory = os.fspath(directory)
    entries, _, _ = _read_state(directory)
    for name, _ in reversed(entries):
        path = os.path.join(directory, name)
        if _format.checkpoint_exists(path):
            return path
    return None
