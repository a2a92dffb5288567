"""The binding scope: which value a computation sees for each variable.

Every transformation over modules (`jmod.jit` tracing, `value_and_grad`,
`functional_call`, the train steps' scan, the functional model's symbolic
build) runs user code inside a `Scope`. The scope maps variables to the
values that code sees (tracers, or concrete values), records what it
assigned and created, and hands the assignments back to its caller, which
decides what to keep. Nothing a trace produces is stored in a shared
`Variable` except the final, concrete write-back (`commit`).

The active scope lives in a `contextvars.ContextVar`: it is per thread and
per asyncio task, so while one thread traces, every other thread reads the
variables' real values.

Real values change only through `commit` (under `lock`). Readers that need
several variables from the same moment (a `jmod.jit` call's inputs, a
checkpoint) read them under the lock too. A computation that donates its
input buffers copies first any buffer another reader has pinned (`pin`), so a
donated buffer is never deleted under a reader or a snapshot.
"""

import contextlib
import contextvars
import itertools
import threading

_current = contextvars.ContextVar("jmod_scope", default=None)
_MISSING = object()

# Guards every write of a variable's real value, and readers that need a
# consistent view of several variables. Re-entrant: a commit may happen
# while the same thread reads under it (a checkpoint of a model mid-build).
lock = threading.RLock()

# Grows on every committed write; `jmod.jit` reuses a cached list of input
# values while this has not moved.
epoch = 0

# Arrays other readers hold while a donating computation may run: ticket -> arrays.
_pins: dict[int, list] = {}
_tickets = itertools.count()
# Set once any donating computation ran: only then must readers pin what they read.
_donors = False


class Capture(Exception):
    """Raised inside a `jmod.jit` trace when a variable outside its inputs is touched.

    `jmod.jit` catches it, adds the variable to the inputs and traces again;
    the user never sees it.
    """

    def __init__(self, variable):
        super().__init__(variable)
        self.variable = variable


class Scope:
    """Values that variables take while code runs inside the scope.

    A strict scope (a `jmod.jit` trace) knows all the variables its
    computation may touch; touching another raises `Capture`. A lenient one
    reads through to the enclosing scope (or the real value) on first touch
    and remembers what it read, so later reads agree.

    Example:
        >>> v = jmod.Variable(1.0)
        >>> with jmod._scope.Scope([(v, jnp.asarray(5.0))]) as scope:
        ...     v.assign(v * 2)
        >>> float(v), [float(x) for _, x in scope.assignments()]
        (1.0, [10.0])
    """

    __slots__ = ("values", "vars", "assigned", "created", "strict", "names", "parent", "_token")

    def __init__(self, bound=(), *, strict=False, names=None):
        self.values = {}
        self.vars = {}
        for var, value in bound:
            self.values[id(var)] = value
            self.vars[id(var)] = var
        self.assigned = {}
        self.created = []
        self.strict = strict
        self.names = names
        self.parent = None
        self._token = None

    # -- what code inside sees -------------------------------------------------------------
    def read(self, var):
        value = self.values.get(id(var), _MISSING)
        if value is _MISSING:
            if self.strict:
                raise Capture(var)
            value = self.parent.read(var) if self.parent is not None else var._v
            self.values[id(var)] = value
            self.vars[id(var)] = var
        return value

    def write(self, var, value):
        key = id(var)
        if key not in self.values:
            if self.strict:
                raise Capture(var)
            self.vars[key] = var
        self.values[key] = value
        self.assigned[key] = var

    def create(self, var, value):
        # Enclosing computations learn of the new variable too, up to the
        # nearest trace, which hands its value back as an output (the value is
        # of that trace's level: it must not go further up than that).
        scope = self
        while scope is not None:
            scope.values[id(var)] = value
            scope.vars[id(var)] = var
            scope.created.append(var)
            scope = None if scope.strict else scope.parent

    def knows(self, var):
        return id(var) in self.values

    # -- what the caller gets back --------------------------------------------------------
    def assignments(self):
        """(variable, value) for every variable assigned inside, in assignment order."""
        return [(var, self.values[key]) for key, var in self.assigned.items()]

    def __enter__(self):
        self.parent = _current.get()
        if self.names is None and self.parent is not None:
            self.names = self.parent.names
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc):
        _current.reset(self._token)
        self._token = None
        return False


def current():
    """The active scope of this thread or task, or None."""
    return _current.get()


def write(var, value):
    """Assigns in the active scope, or commits the real value outside any scope."""
    scope = _current.get()
    if scope is None:
        commit([(var, value)])
    else:
        scope.write(var, value)


def commit(pairs):
    """Sets real values, atomically for readers that hold `lock`."""
    global epoch
    with lock:
        for var, value in pairs:
            var._v = value
        epoch += 1


@contextlib.contextmanager
def outside():
    """Runs the block as if no scope were active (real values, nothing recorded)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


# -- snapshots and donation ------------------------------------------------------------------


def snapshot(variables):
    """The real values of `variables` from one moment, pinned against donation.

    Returns `(values, ticket)`; pass the ticket to `unpin` when done with the values.

    Example:
        >>> v = jmod.Variable([1.0, 2.0])
        >>> values, ticket = jmod._scope.snapshot([v])
        >>> jmod._scope.unpin(ticket); values[0].tolist()
        [1.0, 2.0]
    """
    with lock:
        values = [v._v for v in variables]
        return values, pin(values)


def pin(arrays):
    """Keeps donating computations from deleting `arrays`; returns a ticket for `unpin`."""
    ticket = next(_tickets)
    _pins[ticket] = arrays
    return ticket


def unpin(ticket):
    _pins.pop(ticket, None)


def unpinned(leaves):
    """`leaves` with every pinned array replaced by a copy: safe to donate.

    Call under `lock`, so no reader pins a leaf between this and the donation.
    """
    if not _pins:
        return leaves
    import jax.numpy as jnp

    held = {id(x) for arrays in list(_pins.values()) for x in arrays}
    return [jnp.copy(x) if id(x) in held else x for x in leaves]
