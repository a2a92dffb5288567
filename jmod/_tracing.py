"""Process-wide bookkeeping shared by variables, modules and `jmod.jit`.

`version` grows whenever any module's structure or a variable's trainability
changes; `jmod.jit` compares it against the version its cached plan was built
at, so the hot path checks one integer instead of walking the object graph.
`ctx` is the active trace (None outside `jmod.jit` tracing).
"""

import itertools

_counter = itertools.count(1)
version = 0
ctx = None
# Grows on every variable value write (Variable._value's setter); a plan's
# cached list of input values is current while this has not moved.
write_epoch = 0


def bump():
    """Returns a new, globally unique version number and makes it current."""
    global version
    version = next(_counter)
    return version


class Capture(Exception):
    """Raised inside a trace when a variable outside the plan is touched.

    `jmod.jit` catches it, adds the variable to the function's inputs and
    traces again; the user never sees it.
    """

    def __init__(self, variable):
        super().__init__(variable)
        self.variable = variable


class TraceContext:
    """What the current `jmod.jit` trace knows about variables."""

    __slots__ = ("known", "created", "scope_names", "prev")

    def __init__(self, known, scope_names):
        self.known = known
        self.created = []
        self.scope_names = scope_names
        self.prev = None

    def touch(self, variable):
        if id(variable) not in self.known:
            raise Capture(variable)

    def add_created(self, variable):
        self.known.add(id(variable))
        self.created.append(variable)


class Recorder(TraceContext):
    """A context that records (instead of refusing) variables touched outside a plan.

    `functional_call` runs under one so that variables it does not own (the
    global random generator) can be put back if a JAX transformation left
    tracers in them.
    """

    __slots__ = ("touched",)

    def __init__(self, known):
        super().__init__(known, {})
        self.touched = {}

    def touch(self, variable):
        if id(variable) not in self.known:
            self.known.add(id(variable))
            self.touched[id(variable)] = (variable, variable._value)


def enter(new):
    global ctx
    new.prev = ctx
    ctx = new


def leave(old):
    global ctx
    ctx = old.prev


# Callbacks told about variables created anywhere (jmod.value_and_grad uses
# this to notice a deferred build inside the differentiated function).
creation_listeners = []


# Set by jmod.distributed while a mesh is active: (value, spec, name) -> value.
placement = None


def place(value, spec, name):
    if placement is None:
        import jax

        if isinstance(spec, jax.sharding.Sharding):
            return jax.device_put(value, spec)
        from jmod.errors import VariableError

        raise VariableError(
            f"variable {name!r}: sharding={spec!r} needs an active mesh "
            "(with jmod.distributed.mesh(...))"
        )
    return placement(value, spec, name)
