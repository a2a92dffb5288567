"""Keras 3's optimizer options for `jmod.Optimizer`, on optax.

- `clipnorm` (each gradient's norm), `clipvalue`, `global_clipnorm`: optax
  transformations chained before the optimizer (Keras allows one of them).
- `gradient_accumulation_steps=k`: `optax.MultiSteps`: the mean of k
  gradients is applied every k-th update; the others change nothing.
- `use_ema`: an exponential moving average of the trainable variables,
  `average = m * average + (1 - m) * variable` after each update (`m = 0`
  on the first one), optionally copied into the variables every
  `ema_overwrite_frequency` updates.
- `loss_scale_factor`: `scale_loss` multiplies the loss by it, `update`
  divides the gradients by it. `dynamic_loss_scale`: the factor adapts as
  Keras' `LossScaleOptimizer`'s: halved (and the update skipped) when a
  gradient is not finite, doubled after `dynamic_growth_steps` finite ones.

All of it is state in variables of the optimizer, so it is checkpointed and
a resumed run continues exactly (mid-accumulation too).
"""

import jax
import jax.numpy as jnp
import optax

from jmod.errors import OptimizerError


def clip_by_norm_each(max_norm):
    """An optax transformation scaling each gradient down to norm `max_norm` (Keras' clipnorm).

    Example:
        >>> from jmod._optimizer_options import clip_by_norm_each
        >>> tx = clip_by_norm_each(1.0)
        >>> g, _ = tx.update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3])}, tx.init(None))
        >>> [round(float(x), 4) for x in g["a"]], round(float(g["b"][0]), 4)
        ([0.6, 0.8], 0.3)
    """

    def update(updates, state, params=None):
        def clip(g):
            norm = jnp.sqrt(jnp.sum(jnp.square(g)))
            scale = max_norm / jnp.maximum(norm, max_norm)
            return (g * scale).astype(g.dtype)

        return jax.tree_util.tree_map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _positive(name, value, kind=float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise OptimizerError(f"{name} must be a positive number or None, got {value!r}")
    if kind is int and int(value) != value:
        raise OptimizerError(f"{name} must be a positive int or None, got {value!r}")
    return kind(value)


class Options:
    """The checked option values of one optimizer."""

    def __init__(
        self,
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
        self.gradient_accumulation_steps = _positive(
            "gradient_accumulation_steps", gradient_accumulation_steps, int
        )
        self.clipnorm = _positive("clipnorm", clipnorm)
        self.clipvalue = _positive("clipvalue", clipvalue)
        self.global_clipnorm = _positive("global_clipnorm", global_clipnorm)
        given = [n for n in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(self, n)]
        if len(given) > 1:
            raise OptimizerError(
                f"only one of clipnorm, clipvalue and global_clipnorm can be set, got {given}"
            )
        self.use_ema = bool(use_ema)
        if isinstance(ema_momentum, bool) or not (
            isinstance(ema_momentum, (int, float)) and 0 <= ema_momentum <= 1
        ):
            raise OptimizerError(f"ema_momentum must be a number in [0, 1], got {ema_momentum!r}")
        self.ema_momentum = float(ema_momentum)
        self.ema_overwrite_frequency = _positive(
            "ema_overwrite_frequency", ema_overwrite_frequency, int
        )
        if self.ema_overwrite_frequency and not self.use_ema:
            raise OptimizerError("ema_overwrite_frequency needs use_ema=True")
        self.loss_scale_factor = _positive("loss_scale_factor", loss_scale_factor)
        self.dynamic_loss_scale = bool(dynamic_loss_scale)
        self.initial_scale = _positive("initial_scale", initial_scale)
        self.dynamic_growth_steps = _positive("dynamic_growth_steps", dynamic_growth_steps, int)

    def wrap(self, transformation):
        """`transformation` behind the clipping, inside the accumulation."""
        clip = None
        if self.clipnorm:
            clip = clip_by_norm_each(self.clipnorm)
        elif self.global_clipnorm:
            clip = optax.clip_by_global_norm(self.global_clipnorm)
        elif self.clipvalue:
            clip = optax.clip(self.clipvalue)
        if clip is not None:
            transformation = optax.chain(clip, transformation)
        if self.gradient_accumulation_steps and self.gradient_accumulation_steps > 1:
            transformation = optax.MultiSteps(
                transformation, self.gradient_accumulation_steps
            ).gradient_transformation()
        return transformation


def scale(optimizer):
    """The factor the loss is multiplied by (a traced value under dynamic scaling), or None."""
    options = optimizer.__dict__["_jmod_options"]
    factor = options.loss_scale_factor
    if options.dynamic_loss_scale:
        dynamic = optimizer.loss_scale.value
        return dynamic if factor is None else dynamic * factor
    return factor


def unscale(optimizer, grads):
    """`(grads / scale, finite)`; `finite` is None unless the scale is dynamic."""
    factor = scale(optimizer)
    if factor is not None:
        grads = {p: (g / factor).astype(g.dtype) for p, g in grads.items()}
    if not optimizer.__dict__["_jmod_options"].dynamic_loss_scale:
        return grads, None
    leaves = jax.tree_util.tree_leaves(grads)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in leaves]))
    return grads, finite


def keep_if(finite, new, old):
    """`new` where `finite`, else `old`, leaf by leaf (a skipped update changes nothing)."""
    if finite is None:
        return new
    return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o).astype(o.dtype), new, old)


def adjust_scale(optimizer, finite):
    """Keras' LossScaleOptimizer rule: halve on a non-finite step, double after enough finite."""
    options = optimizer.__dict__["_jmod_options"]
    current = optimizer.loss_scale.value
    count = optimizer.loss_scale_steps.value
    grow = count == options.dynamic_growth_steps - 1
    new_scale = jnp.where(finite, jnp.where(grow, current * 2.0, current), current * 0.5)
    new_count = jnp.where(finite & ~grow, count + 1, 0)
    optimizer.loss_scale.assign(new_scale.astype(current.dtype))
    optimizer.loss_scale_steps.assign(new_count.astype(count.dtype))


def ema_step(optimizer, named):
    """Moves the averages toward the variables; overwrites the variables when it is time."""
    options = optimizer.__dict__["_jmod_options"]
    iterations = optimizer.iterations.value
    momentum = jnp.where(iterations == 0, 0.0, options.ema_momentum)
    for path, average in optimizer.ema.items():
        var = named[path]
        value = var.value
        m = momentum.astype(value.dtype)
        average.assign((m * average.value + (1 - m) * value).astype(average.dtype))
    if options.ema_overwrite_frequency:
        due = (iterations + 1) % options.ema_overwrite_frequency == 0
        for path, average in optimizer.ema.items():
            var = named[path]
            var.assign(jnp.where(due, average.value, var.value).astype(var.dtype))
