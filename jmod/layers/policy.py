"""Dtype policies: the dtype variables are stored in vs. the dtype math runs in."""

import jax.numpy as jnp

from jmod.errors import SerializationError


class DTypePolicy:
    """A variable dtype and a compute dtype, named as Keras names them.

    `"mixed_bfloat16"` keeps variables in float32 and computes in bfloat16.

    Example:
        >>> p = jmod.layers.DTypePolicy("mixed_bfloat16")
        >>> p.variable_dtype, p.compute_dtype
        ('float32', 'bfloat16')

    Args:
        name: `"float32"`, `"bfloat16"`, `"float16"`, `"float64"`,
            `"mixed_bfloat16"` or `"mixed_float16"`.
    """

    def __init__(self, name="float32"):
        if isinstance(name, DTypePolicy):
            name = name.name
        if not isinstance(name, str):
            name = jnp.dtype(name).name
        if name.startswith("mixed_"):
            compute, variable = name[len("mixed_") :], "float32"
        else:
            compute = variable = name
        try:
            jnp.dtype(compute)
        except TypeError:
            raise SerializationError(
                f"unknown dtype policy {name!r}; expected a dtype name or mixed_bfloat16/"
                "mixed_float16"
            ) from None
        self.name = name
        self.variable_dtype = jnp.dtype(variable).name
        self.compute_dtype = jnp.dtype(compute).name

    def __eq__(self, other):
        return isinstance(other, DTypePolicy) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"<DTypePolicy {self.name!r}>"


_global_policy = DTypePolicy("float32")


def set_dtype_policy(policy):
    """Sets the policy layers use when none is given (`"mixed_bfloat16"` for mixed precision)."""
    global _global_policy
    _global_policy = DTypePolicy(policy)


def dtype_policy():
    """The policy layers use when none is given."""
    return _global_policy
