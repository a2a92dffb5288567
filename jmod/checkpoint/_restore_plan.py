"""What a restore does, decided from the index and the variables alone (no file is read).

`plan_restore` matches checkpoint keys to the variables that exist now and
to the modules that may still create variables (deferred build), checks
every match's shape and dtype, and says which keys nothing takes.
`Checkpoint.restore` then reads the values and applies the plan.

Example:
    >>> import types
    >>> from jmod.checkpoint._restore_plan import plan_restore
    >>> entry = types.SimpleNamespace(shape=(2,), dtype="float32")
    >>> plan = plan_restore(
    ...     {"model/w": entry, "model/new": entry, "stale": entry},
    ...     {"model/w": jmod.Variable([1.0, 2.0])},
    ...     roots=["model"],
    ... )
    >>> plan.assign, plan.deferred, sorted(plan.unmatched)
    (('model/w',), {'model/new': 'model'}, ['stale'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from jmod.errors import CheckpointError

SAVE_COUNTER = "save_counter"


@dataclasses.dataclass(frozen=True)
class RestorePlan:
    """The outcome of matching a checkpoint's keys to variables, before any value is read.

    Attributes:
        assign: keys of variables that exist now and get a value, sorted.
        deferred: key -> the module root (key prefix) that may still create
            its variable; the value waits until then.
        unmatched: checkpoint keys nothing takes (reported, never an error).
        missing: existing variables the checkpoint has no value for (only
            with `partial=True`; otherwise planning raised).
        counter: whether the checkpoint holds a `save_counter` to read.
    """

    assign: tuple[str, ...]
    deferred: dict[str, str]
    unmatched: frozenset[str]
    missing: tuple[str, ...]
    counter: bool

    @property
    def wanted(self) -> list[str]:
        """Every key to read: assigned, then deferred, then `save_counter`."""
        return [*self.assign, *self.deferred, *([SAVE_COUNTER] if self.counter else [])]


def plan_restore(
    entries: Mapping,
    variables: Mapping,
    roots: Iterable[str] = (),
    *,
    partial: bool = False,
    filename: str = "<index>",
) -> RestorePlan:
    """Which checkpoint values go where; `CheckpointError` before anything is assigned.

    Args:
        entries: the checkpoint's entries by key (anything with `.shape` and
            a `.dtype` name, such as `_format.Entry`).
        variables: the variables that exist now, by key (anything with
            `.shape` and `.dtype`); `save_counter` among them is ignored.
        roots: key prefixes of the modules that can still create variables.
        partial: allow existing variables the checkpoint has no value for.
        filename: named in errors (the index file).

    Raises:
        CheckpointError: an existing variable has no value (unless
            `partial`), a match differs in shape or dtype, or the stored
            `save_counter` is not a scalar.
    """
    existing = {k: v for k, v in variables.items() if k != SAVE_COUNTER}
    missing = tuple(sorted(set(existing) - set(entries)))
    if missing and not partial:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise CheckpointError(
            f"{filename} has no value for {len(missing)} existing variable(s): {shown}; "
            "pass partial=True to restore the rest"
        )
    assign = tuple(sorted(existing.keys() & entries.keys()))
    for key in assign:
        check_compatible(key, existing[key], entries[key], filename)
    roots = list(roots)
    deferred = {}
    for key in entries:
        if key not in existing and key != SAVE_COUNTER:
            root = root_of(key, roots)
            if root is not None:
                deferred[key] = root
    counter = entries.get(SAVE_COUNTER)
    if counter is not None and tuple(counter.shape) != ():
        raise CheckpointError(f"{filename}: save_counter has shape {counter.shape}")
    unmatched = frozenset(entries.keys() - set(assign) - deferred.keys() - {SAVE_COUNTER})
    return RestorePlan(assign, deferred, unmatched, missing, counter is not None)


def root_of(key: str, roots: Iterable[str]) -> str | None:
    """The prefix in `roots` that `key` lies under (`prefix/...`), the longest if several.

    Example:
        >>> root_of("model/dense/w", ["model", "model/dense", "other"])
        'model/dense'
    """
    best = None
    for prefix in roots:
        if key.startswith(prefix + "/") and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def check_compatible(key: str, variable, entry, filename: str) -> None:
    """`CheckpointError` unless the stored `entry` has the `variable`'s shape and dtype."""
    want_shape, want_dtype = tuple(variable.shape), np.dtype(variable.dtype).name
    got_dtype = entry.dtype if isinstance(entry.dtype, str) else np.dtype(entry.dtype).name
    if (tuple(entry.shape), got_dtype) != (want_shape, want_dtype):
        raise CheckpointError(
            f"{key}: checkpoint has shape {tuple(entry.shape)} {got_dtype}, "
            f"the variable is {want_shape} {want_dtype} (file {filename})"
        )
