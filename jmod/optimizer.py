"""`Optimizer`: an optax transformation whose state lives in variables."""

import jax
import jax.numpy as jnp
import optax

from jmod.errors import OptimizerError
from jmod.module import Module
from jmod.variables import Variable


def _key_name(key):
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


class Optimizer(Module):
    """Applies an optax transformation to a module's trainable variables.

    The optax state is stored in non-trainable variables under `slots/...`,
    so it is checkpointed and threaded through `jmod.jit` like any other
    state, and a whole train step compiles to one computation.

    Example:
        >>> import optax
        >>> m = jmod.Module()
        >>> m.w = jmod.Variable(1.0)
        >>> opt = jmod.Optimizer(m, optax.sgd(0.1))
        >>> opt.update(jmod.grad(lambda m: m.w * 2.0)(m))
        >>> round(float(m.w), 4)
        0.8

    Args:
        model: the module whose trainable variables are optimized; if it
            builds its variables later, the optimizer builds on the first update.
        transformation: an `optax.GradientTransformation`.
    """

    _jmod_untracked = frozenset({"model"})

    def __init__(self, model, transformation, name=None):
        super().__init__(name=name)
        if not hasattr(transformation, "update") or not hasattr(transformation, "init"):
            raise OptimizerError(
                "Optimizer expects an optax.GradientTransformation, got "
                f"{type(transformation).__name__}"
            )
        self.model = model
        self.transformation = transformation
        self.iterations = Variable(0, trainable=False, name="iterations", dtype=jnp.int32)
        self.slots = {}
        self._jmod_paths = None
        if model.trainable_variables:
            self.build()

    def build(self, paths=None):
        """Creates the optax state for the model's trainable variables (or `paths`)."""
        named = dict(self.model.named_variables())
        if paths is None:
            paths = [p for p, v in self.model.named_variables() if v.trainable]
        params = {p: named[p].value for p in paths}
        state = self.transformation.init(params)
        flat, treedef = jax.tree_util.tree_flatten_with_path(state)
        slots = {}
        for keypath, leaf in flat:
            name = "/".join(_key_name(k) for k in keypath)
            slots[name] = Variable(leaf, trainable=False, name=name)
        self.slots = slots
        self.__dict__["_jmod_paths"] = list(paths)
        self.__dict__["_jmod_treedef"] = treedef

    @property
    def built(self):
        return self.__dict__.get("_jmod_paths") is not None

    def update(self, grads):
        """Applies gradients keyed by variable path (as `jmod.grad` returns them).

        Variables frozen since the optimizer was built (absent from `grads`)
        are left unchanged.
        """
        if not isinstance(grads, dict):
            raise OptimizerError(
                f"Optimizer.update expects a dict path -> gradient, got {type(grads).__name__}"
            )
        if not self.built:
            self.build(list(grads))
        paths = self._jmod_paths
        unknown = sorted(set(grads) - set(paths))
        if unknown:
            raise OptimizerError(
                f"optimizer {self.name!r}: gradients for variables it was not built for: "
                f"{unknown}; build a new Optimizer after adding or unfreezing variables"
            )
        named = dict(self.model.named_variables())
        missing = [p for p in paths if p not in named]
        if missing:
            raise OptimizerError(f"optimizer {self.name!r}: the model no longer has {missing}")
        params = {p: named[p].value for p in paths}
        full = {p: grads[p] if p in grads else jnp.zeros_like(params[p]) for p in paths}
        slot_vars = list(self.slots.values())
        state = jax.tree_util.tree_unflatten(self._jmod_treedef, [v.value for v in slot_vars])
        updates, new_state = self.transformation.update(full, state, params)
        new_params = optax.apply_updates(params, updates)
        for p in grads:
            named[p].assign(new_params[p])
        for var, leaf in zip(slot_vars, jax.tree_util.tree_leaves(new_state)):
            var.assign(leaf)
        self.iterations.assign_add(1)

    apply_gradients = update
