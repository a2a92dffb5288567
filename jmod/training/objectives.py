"""What `compile` sets up: the loss of each output, loss weights, and metrics.

`Objectives` is a module: its loss trackers and metrics are `jmod.metrics`
objects whose state is variables, so the compiled train step updates them
and `fit` resets them each epoch. The losses it computes are exact on
padded batches: padding rows carry weight 0 and the mean divides by the
number of real samples only.

Example:
    >>> obj = Objectives("mse", None, ["mae"])
    >>> obj.build(np.zeros((4, 1)))
    >>> obj.names
    ['loss', 'mae']
"""

import jax
import jax.numpy as jnp

from jmod import losses, metrics
from jmod.module import Module
from jmod.training._errors import TrainingError


def per_sample_values(loss, y_true, y_pred):
    """`loss`'s values per sample: `(B, ...)`, never a scalar.

    A callable that returns the batch mean as a scalar is evaluated sample
    by sample (`jax.vmap`), so weights and padding apply to it exactly.
    """
    values = jnp.asarray(loss.call(y_true, y_pred))
    if values.ndim == 0 and jnp.ndim(y_pred) > 0:
        one = lambda t, p: jnp.asarray(loss.call(t[None], p[None])).reshape(())
        values = jax.vmap(one)(jnp.asarray(y_true), jnp.asarray(y_pred))
    return values


class _AutoAccuracy(metrics.MeanMetricWrapper):
    """`"accuracy"` in `compile`: binary, sparse or categorical, chosen from the shapes.

    The choice is made when the step is traced (shapes are known there); the
    state (total, count) is the same for all three, so nothing is retraced.
    """

    def __init__(self, name, loss):
        super().__init__(metrics.accuracy, name=name)
        self.__dict__["_jmod_loss"] = loss

    def update_state(self, y_true, y_pred, sample_weight=None):
        # Set without Module.__setattr__: a function is not structure to track.
        fn = _accuracy_fn(jnp.shape(y_true), jnp.shape(y_pred), self.__dict__["_jmod_loss"])
        self.__dict__["fn"] = fn
        super().update_state(y_true, y_pred, sample_weight)


def _accuracy_fn(true_shape, pred_shape, loss):
    if isinstance(loss, losses.BinaryCrossentropy) or (pred_shape and pred_shape[-1] == 1):
        return metrics.binary_accuracy
    if len(pred_shape) <= 1:
        return metrics.binary_accuracy
    if isinstance(loss, losses.SparseCategoricalCrossentropy):
        return metrics.sparse_categorical_accuracy
    if len(true_shape) < len(pred_shape) or (true_shape and true_shape[-1] == 1):
        return metrics.sparse_categorical_accuracy
    return metrics.categorical_accuracy


def _output_names(y_true, model_names):
    flat, _ = jax.tree_util.tree_flatten_with_path(y_true)
    if len(flat) == 1 and not flat[0][0]:
        return [""]
    names = []
    for i, (path, _) in enumerate(flat):
        key = path[-1] if path else None
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif model_names is not None and len(model_names) == len(flat):
            names.append(str(model_names[i]))
        else:
            names.append(f"output_{i + 1}")
    return names


def _per_output(config, names, what):
    """`config` (one value, a list, or a dict by output name) as a list, one per output."""
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise TrainingError(
                f"compile: {what} names outputs {unknown} the labels do not have; "
                f"outputs are {names}"
            )
        return [config.get(name) for name in names]
    if isinstance(config, (list, tuple)) and len(names) > 1:
        if len(config) != len(names):
            raise TrainingError(
                f"compile: {what} has {len(config)} entries for {len(names)} outputs {names}"
            )
        return list(config)
    return [config] * len(names)


class _Output:
    __slots__ = ("name", "loss", "weight", "metrics", "tracker")

    def __init__(self, name, loss, weight):
        self.name, self.loss, self.weight = name, loss, weight
        self.metrics = []
        self.tracker = None


class Objectives(Module):
    """The compiled losses and metrics of a model, resolved against its labels.

    Args:
        loss: a loss (name, `jmod.losses.Loss`, callable), or a list/dict of
            them for several outputs; `None` to train on `add_loss` terms only.
        loss_weights: per-output loss weights (list or dict), default 1.0.
        metrics: a list of metrics (names, `jmod.metrics.Metric`s, callables),
            or per output: a list of lists or a dict of lists.
    """

    def __init__(self, loss=None, loss_weights=None, metrics_config=None):
        super().__init__(name="compiled")
        self.__dict__["_jmod_config"] = (loss, loss_weights, metrics_config)
        # Fail at compile time on a bad identifier, not at the first step.
        for item in jax.tree_util.tree_leaves(loss, is_leaf=callable):
            losses.get(item)
        self.loss_tracker = metrics.Mean(name="loss")
        self.output_trackers = []
        self.metric_list = []
        self.__dict__["_jmod_outputs"] = None
        self.__dict__["_jmod_names"] = ["loss"]

    @property
    def built(self):
        return self.__dict__["_jmod_outputs"] is not None

    @property
    def names(self):
        """The log names, in order: `loss`, per-output losses, metrics."""
        return list(self.__dict__["_jmod_names"])

    def build(self, y_true, output_names=None):
        """Matches the configuration to the labels' structure and creates the metrics."""
        loss, loss_weights, metrics_config = self.__dict__["_jmod_config"]
        if y_true is None:
            if loss is not None or metrics_config:
                raise TrainingError(
                    "compile: a loss or metrics were given, but the data has no labels y"
                )
            self.__dict__["_jmod_outputs"] = []
            return
        names = _output_names(y_true, output_names)
        loss_list = _per_output(loss, names, "loss")
        weights = _per_output(
            loss_weights if loss_weights is not None else 1.0, names, "loss_weights"
        )
        if isinstance(metrics_config, dict):
            metric_lists = _per_output(metrics_config, names, "metrics")
        elif (
            isinstance(metrics_config, (list, tuple))
            and len(names) > 1
            and metrics_config
            and all(isinstance(m, (list, tuple)) for m in metrics_config)
        ):
            metric_lists = _per_output(list(metrics_config), names, "metrics")
        else:
            metric_lists = [metrics_config] * len(names)
        outputs, log_names, trackers, metric_objects = [], ["loss"], [], []
        for name, loss_id, weight, metric_ids in zip(names, loss_list, weights, metric_lists):
            out = _Output(name, losses.get(loss_id), float(1.0 if weight is None else weight))
            prefix = f"{name}_" if name else ""
            if len(names) > 1 and out.loss is not None:
                out.tracker = metrics.Mean(name=f"{prefix}loss")
                trackers.append(out.tracker)
                log_names.append(f"{prefix}loss")
            if isinstance(metric_ids, (str, metrics.Metric)) or callable(metric_ids):
                metric_ids = [metric_ids]
            for metric_id in metric_ids or ():
                if (
                    isinstance(metric_id, metrics.Metric)
                    and len(names) > 1
                    and (
                        not isinstance(metrics_config, dict)
                        and not isinstance((metrics_config or [None])[0], (list, tuple))
                    )
                ):
                    raise TrainingError(
                        "compile: a Metric object cannot be shared by several outputs; give "
                        "metrics per output (a dict or a list of lists) or use names"
                    )
                metric = self._make_metric(metric_id, out.loss)
                log_name = prefix + self._log_name(metric_id, metric)
                while log_name in log_names:
                    log_name += "_1"
                log_names.append(log_name)
                out.metrics.append((log_name, metric))
                metric_objects.append(metric)
            outputs.append(out)
        self.output_trackers = trackers
        self.metric_list = metric_objects
        self.__dict__["_jmod_outputs"] = outputs
        self.__dict__["_jmod_names"] = log_names

    @staticmethod
    def _make_metric(metric_id, loss):
        if metric_id in ("accuracy", "acc"):
            return _AutoAccuracy(metric_id, loss)
        return metrics.get(metric_id)

    @staticmethod
    def _log_name(metric_id, metric):
        return metric_id if isinstance(metric_id, str) else metric.name

    # -- inside the compiled step ------------------------------------------------------
    def _pairs(self, y_true, y_pred):
        outputs = self.__dict__["_jmod_outputs"]
        if len(outputs) == 1 and outputs[0].name == "":
            pred_leaves = jax.tree_util.tree_leaves(y_pred)
            if len(pred_leaves) != 1:
                raise TrainingError(
                    f"the model returned {len(pred_leaves)} outputs but the labels y are one "
                    "array; give y with one entry per output"
                )
            return [(outputs[0], y_true, pred_leaves[0])]
        true_flat = [leaf for _, leaf in jax.tree_util.tree_flatten_with_path(y_true)[0]]
        if isinstance(y_pred, dict) and isinstance(y_true, dict):
            missing = [o.name for o in outputs if o.name not in y_pred]
            if missing:
                raise TrainingError(
                    f"the labels have outputs {missing} the model did not return "
                    f"(it returned {sorted(y_pred)})"
                )
            preds = [y_pred[o.name] for o in outputs]
        else:
            preds = jax.tree_util.tree_leaves(y_pred)
        if len(preds) != len(outputs):
            raise TrainingError(
                f"the model returned {len(preds)} outputs, the labels y have {len(outputs)} "
                f"({[o.name for o in outputs]})"
            )
        return list(zip(outputs, true_flat, preds))

    def compute_loss(self, y_true, y_pred, sample_weight, count, extra_losses=()):
        """(total loss, [each output's loss]); `count` is the number of real samples."""
        parts = []
        total = jnp.zeros((), jnp.float32)
        if self.__dict__["_jmod_outputs"]:
            for out, t, p in self._pairs(y_true, y_pred):
                if out.loss is None:
                    parts.append(None)
                    continue
                values = per_sample_values(out.loss, t, p)
                per_sample = values.size // max(values.shape[0], 1) if values.ndim else 1
                value = losses.reduce_values(
                    values, sample_weight, out.loss.reduction, count=count * per_sample
                )
                if value.ndim:
                    raise TrainingError(
                        f"loss {out.loss.name!r} has reduction 'none'; training needs a scalar"
                    )
                parts.append(value.astype(jnp.float32))
                total = total + out.weight * value.astype(jnp.float32)
        for extra in extra_losses:
            total = total + jnp.sum(jnp.asarray(extra, jnp.float32))
        return total, parts

    def update_losses(self, total, parts, count):
        """Adds a batch's losses to the running means, weighted by its real sample count."""
        self.loss_tracker.update_state(total, sample_weight=count)
        outputs = self.__dict__["_jmod_outputs"] or []
        for out, part in zip(outputs, parts):
            if out.tracker is not None and part is not None:
                out.tracker.update_state(part, sample_weight=count)

    def update_metrics(self, y_true, y_pred, sample_weight):
        """Updates every compiled metric with a batch."""
        if not self.metric_list:
            return
        for out, t, p in self._pairs(y_true, y_pred):
            for _, metric in out.metrics:
                metric.update_state(t, p, sample_weight=sample_weight)

    def results(self):
        """`{log name: value}` for the loss trackers and metrics."""
        out = {"loss": self.loss_tracker.result()}
        for output in self.__dict__["_jmod_outputs"] or []:
            if output.tracker is not None:
                out[output.tracker.name] = output.tracker.result()
        for output in self.__dict__["_jmod_outputs"] or []:
            for name, metric in output.metrics:
                out[name] = metric.result()
        return out

    def all_metrics(self):
        """The loss trackers then the metrics, as `model.metrics` lists them."""
        return [self.loss_tracker, *self.output_trackers, *self.metric_list]

    def reset(self):
        for metric in self.all_metrics():
            metric.reset_state()

    def direction(self, log_name):
        """`"up"`/`"down"` for a log name (`val_` prefix allowed), or None if unknown."""
        name = log_name[4:] if log_name.startswith("val_") else log_name
        if name == "loss" or name.endswith("_loss"):
            return "down"
        for output in self.__dict__["_jmod_outputs"] or []:
            for metric_name, metric in output.metrics:
                if metric_name == name:
                    return metric.direction
        return None
