"""The compiled train, test and predict steps behind `fit`, `evaluate` and `predict`.

One `StepFunctions` module per (model, data structure, kind): its `run`
method is one `jmod.jit` computation taking the flattened batch and the
padding mask, all positional arrays, so each call takes jmod.jit's fastest
path. The model, its optimizer and its compiled metrics are attributes, so
their variables are the computation's state (donated in the train step: the
update happens in place).

With `steps_per_execution=k` the batch arrays carry a leading `k` axis and
the k steps run in one `lax.scan`; a step whose mask is all zero (the tail of
an epoch not divisible by k) is skipped by a `lax.cond`.
"""

import jax
import jax.numpy as jnp

from jmod import _scope
from jmod import random as jrandom
from jmod.compiled import jit
from jmod.module import Module


class Context:
    """What the step being traced tells `compute_loss`: the number of real samples."""

    def __init__(self):
        self.count = None


def _clear_layer_losses(model):
    # add_loss terms hold tracers of the finished trace; none may outlive it.
    for module in (model, *model.submodules):
        losses = module.__dict__.get("_losses")
        if losses:
            list.clear(losses)


def _weights(mask, sample_weight):
    if sample_weight is None:
        return mask
    sample_weight = jnp.asarray(sample_weight, jnp.float32)
    while sample_weight.ndim > 1 and sample_weight.shape[-1] == 1:
        sample_weight = jnp.squeeze(sample_weight, -1)
    return sample_weight * mask.reshape(mask.shape + (1,) * (sample_weight.ndim - 1))


class StepFunctions(Module):
    """A compiled step of one kind (`"train"`, `"test"`, `"predict"`) for one data structure."""

    def __init__(self, kind, model, optimizer, objectives, treedef, k, context):
        super().__init__(name=kind)
        self.model = model
        if optimizer is not None:
            self.optimizer = optimizer
        if objectives is not None:
            self.objectives = objectives
        self.__dict__["_jmod_kind"] = kind
        self.__dict__["_jmod_treedef"] = treedef
        self.__dict__["_jmod_k"] = k
        self.__dict__["_jmod_context"] = context
        self.__dict__["_jmod_call"] = {
            "train": self.train,
            "test": self.test,
            "predict": self.predict,
        }[kind]

    @property
    def function(self):
        """The `jmod.jit` compiled function (`.trace_count`, `.lower`, `.jaxpr`, ...)."""
        return self.__dict__["_jmod_call"]

    def __call__(self, leaves, mask):
        return self.__dict__["_jmod_call"](*leaves, mask)

    # -- the compiled entry points --------------------------------------------------------
    @jit(donate_state=True)
    def train(self, *arrays):
        return self._steps(self.model.train_step, arrays, skip_empty=True)

    @jit
    def test(self, *arrays):
        return self._steps(self.model.test_step, arrays, skip_empty=True)

    @jit
    def predict(self, *arrays):
        *leaves, _ = arrays
        x, _, _ = jax.tree_util.tree_unflatten(self.__dict__["_jmod_treedef"], leaves)
        out = self.model.predict_step(x)
        _clear_layer_losses(self.model)
        return out

    # -- inside the trace -------------------------------------------------------------------
    def _one(self, step_fn, leaves, mask):
        x, y, sample_weight = jax.tree_util.tree_unflatten(self.__dict__["_jmod_treedef"], leaves)
        context = self.__dict__["_jmod_context"]
        context.count = jnp.sum(mask)
        try:
            logs = step_fn((x, y, _weights(mask, sample_weight)))
        finally:
            context.count = None
            _clear_layer_losses(self.model)
        return logs

    def _steps(self, step_fn, arrays, skip_empty):
        *leaves, mask = arrays
        if self.__dict__["_jmod_k"] == 1:
            return self._one(step_fn, leaves, mask)
        # The scan carries every variable the steps may assign: this module's
        # and the global generator's key (Dropout without a seed draws from it).
        carried = list(self.variables)
        key = jrandom.get_global_generator().key
        if all(v is not key for v in carried):
            carried.append(key)
        initial = [v.value for v in carried]

        def body(carry, xs):
            step_leaves, step_mask = xs

            def run(values):
                with _scope.Scope(zip(carried, values)):
                    self._one(step_fn, step_leaves, step_mask)
                    return [v.value for v in carried]

            if skip_empty:
                return jax.lax.cond(jnp.any(step_mask > 0), run, lambda c: list(c), carry), None
            return run(carry), None

        final, _ = jax.lax.scan(body, initial, (list(leaves), mask))
        for v, value in zip(carried, final):
            _scope.write(v, value)
        return self.model.get_metrics_result()
