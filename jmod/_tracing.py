"""The structure version, and where new variables are placed.

`version` grows whenever any module's structure or a variable's trainability
changes; `jmod.jit` compares it against the version its cached plan was built
at, so the hot path checks one integer instead of walking the object graph.
It is the one truly global fact: the structure is shared by all threads.

What a computation sees for each variable is the binding scope's business
(`jmod._scope`); the active mesh placement is per thread and task, like it.
"""

import contextvars
import itertools

_counter = itertools.count(1)
version = 0


def bump():
    """Returns a new, globally unique version number and makes it current."""
    global version
    version = next(_counter)
    return version


# Set by jmod.distributed while a mesh is active: (value, spec, name) -> value.
placement = contextvars.ContextVar("jmod_placement", default=None)


def place(value, spec, name):
    placer = placement.get()
    if placer is None:
        import jax

        if isinstance(spec, jax.sharding.Sharding):
            return jax.device_put(value, spec)
        from jmod.errors import VariableError

        raise VariableError(
            f"variable {name!r}: sharding={spec!r} needs an active mesh "
            "(with jmod.distributed.mesh(...))"
        )
    return placer(value, spec, name)
