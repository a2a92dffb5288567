"""`Optimizer`: an optax transformation whose state lives in variables."""

import jax
import jax.numpy as jnp
import optax

from jmod import _optimizer_options as options_lib
from jmod import constraints
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
        gradient_accumulation_steps: apply the mean of this many gradients
            every this many updates (`optax.MultiSteps`); the others only
            accumulate.
        clipnorm: clip each gradient to this norm; `clipvalue`: each element
            to [-v, v]; `global_clipnorm`: all gradients together to this
            global norm (one of the three, as in Keras).
        use_ema: keep an exponential moving average of the trainable
            variables (`ema/...`, momentum `ema_momentum`), copied into the
            variables every `ema_overwrite_frequency` updates if given, by
            `finalize_variable_values()` (which `fit` calls at its end) and
            swapped in by `swap_ema_weights()`.
        loss_scale_factor: `scale_loss` multiplies the loss by it and `update`
            divides the gradients by it.
        dynamic_loss_scale: adapt the loss scale (Keras' LossScaleOptimizer,
            starting at `initial_scale`, doubled after `dynamic_growth_steps`
            finite steps, halved and the update skipped on a non-finite one);
            `compile` turns it on for models under the `mixed_float16` policy.

    Example with options:
        >>> m = jmod.Module(); m.w = jmod.Variable([3.0, 4.0])
        >>> opt = jmod.Optimizer(m, optax.sgd(1.0), global_clipnorm=1.0, use_ema=True)
        >>> opt.update({"w": jnp.array([30.0, 40.0])})   # clipped to norm 1
        >>> [round(float(v), 4) for v in m.w], [round(float(v), 4) for v in opt.ema["w"]]
        ([2.4, 3.2], [2.4, 3.2])
    """

    _jmod_untracked = frozenset({"model"})

    def __init__(
        self,
        model: Module,
        transformation: optax.GradientTransformation,
        name: str | None = None,
        *,
        gradient_accumulation_steps=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        dynamic_loss_scale=False,
        initial_scale=2.0**15,
        dynamic_growth_steps=2000,
    ):
        super().__init__(name=name)
        options = options_lib.Options(
            gradient_accumulation_steps=gradient_accumulation_steps,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            dynamic_loss_scale=dynamic_loss_scale,
            initial_scale=initial_scale,
            dynamic_growth_steps=dynamic_growth_steps,
        )
        self.__dict__["_jmod_options"] = options
        if not hasattr(transformation, "update") or not hasattr(transformation, "init"):
            raise OptimizerError(
                "Optimizer expects an optax.GradientTransformation, got "
                f"{type(transformation).__name__}"
            )
        self.model = model
        self.transformation = options.wrap(transformation)
        self.iterations = Variable(0, trainable=False, name="iterations", dtype=jnp.int32)
        self.slots: dict[str, Variable] = {}
        self.ema: dict[str, Variable] = {}
        if options.dynamic_loss_scale:
            self.loss_scale = Variable(
                options.initial_scale, trainable=False, name="loss_scale", dtype=jnp.float32
            )
            self.loss_scale_steps = Variable(
                0, trainable=False, name="loss_scale_steps", dtype=jnp.int32
            )
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
        if self.__dict__["_jmod_options"].use_ema:
            self.ema = {
                p: Variable(
                    jnp.copy(named[p].value),  # its own buffer (donated separately)
                    trainable=False,
                    name=p.replace("/", "_") + "_average",
                )
                for p in paths
            }
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
        full, finite = options_lib.unscale(self, full)
        slot_vars = list(self.slots.values())
        state = jax.tree_util.tree_unflatten(self._jmod_treedef, [v.value for v in slot_vars])
        updates, new_state = self.transformation.update(full, state, params)
        new_params = optax.apply_updates(params, updates)
        # A non-finite step under dynamic loss scaling changes nothing but the scale.
        new_params = options_lib.keep_if(finite, new_params, params)
        new_state = options_lib.keep_if(finite, new_state, state)
        for p in grads:
            named[p].assign(new_params[p])
        # Keras applies weight constraints right after each update.
        constraints.apply(self.model, grads)
        for var, leaf in zip(slot_vars, jax.tree_util.tree_leaves(new_state)):
            var.assign(leaf)
        if finite is not None:
            options_lib.adjust_scale(self, finite)
        if self.__dict__["_jmod_options"].use_ema:
            options_lib.ema_step(self, named)
        if finite is None:
            self.iterations.assign_add(1)
        else:
            it = self.iterations.value
            self.iterations.assign(jnp.where(finite, it + 1, it))

    apply_gradients = update

    # -- Keras' optimizer options -----------------------------------------------------
    @property
    def options(self):
        """The option values (`clipnorm`, `use_ema`, ...) this optimizer was made with."""
        return self.__dict__["_jmod_options"]

    def scale_loss(self, loss):
        """`loss` times the loss scale (`loss_scale_factor`, dynamic scale), for the gradient.

        `update` divides the gradients by the same factor. The default train
        step calls it; a custom `train_step` differentiates
        `optimizer.scale_loss(loss)` to use loss scaling.

        Example:
            >>> m = jmod.Module(); m.w = jmod.Variable(1.0)
            >>> float(jmod.Optimizer(m, optax.sgd(0.1), loss_scale_factor=8.0).scale_loss(2.0))
            16.0
        """
        factor = options_lib.scale(self)
        return loss if factor is None else loss * factor

    def swap_ema_weights(self):
        """Swaps the model's trainable variables with their moving averages (again: back).

        Example:
            >>> m = jmod.Module(); m.w = jmod.Variable(1.0)
            >>> opt = jmod.Optimizer(m, optax.sgd(1.0), use_ema=True, ema_momentum=0.5)
            >>> opt.update({"w": jnp.array(1.0)}); opt.update({"w": jnp.array(1.0)})
            >>> opt.swap_ema_weights(); float(m.w)
            -0.5
            >>> opt.swap_ema_weights(); float(m.w)
            -1.0
        """
        self._require_ema("swap_ema_weights")
        named = dict(self.model.named_variables())
        for path, average in self.ema.items():
            current = named[path].value
            named[path].assign(average.value)
            average.assign(current)

    def finalize_variable_values(self):
        """With `use_ema`, copies the moving averages into the variables (`fit` does at its end)."""
        if not self.__dict__["_jmod_options"].use_ema or not self.built:
            return
        named = dict(self.model.named_variables())
        for path, average in self.ema.items():
            named[path].assign(average.value)

    def _require_ema(self, what):
        if not self.__dict__["_jmod_options"].use_ema:
            raise OptimizerError(f"optimizer {self.name!r}: {what} needs use_ema=True")
        if not self.built:
            raise OptimizerError(f"optimizer {self.name!r}: {what} before the first update")
