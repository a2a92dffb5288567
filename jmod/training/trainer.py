"""`TrainerMixin`: Keras' `compile` / `fit` / `evaluate` / `predict` for jmod models.

`jmod.Model` inherits it. Each train step is one `jmod.jit` computation
(forward, losses including `add_loss` terms, gradients, the optax update,
metric updates) traced once per batch signature: a short last batch is
padded and masked, so it does not trace again (see `jmod.training.data`).
Override `train_step(data)`, `test_step(data)` or `predict_step(x)` to
customize a step; they run inside that computation.

Example:
    >>> from jmod.training import TrainerMixin
    >>> class Linear(TrainerMixin, jmod.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight("w", (input_shape[-1], 1))
    ...     def call(self, x):
    ...         return x @ self.w
    >>> jmod.random.set_seed(0)
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    >>> model = Linear()
    >>> model.compile(optimizer="adam", loss="mse")
    >>> history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    >>> len(history.history["loss"]), model.train_function.trace_count
    (3, 1)
"""

import jax
import numpy as np

from jmod import profiler
from jmod import random as jrandom
from jmod.distributed.batch import distribute_batch
from jmod.distributed.mesh import current_mesh
from jmod.gradients import value_and_grad
from jmod.optimizer import Optimizer
from jmod.training import data as data_lib
from jmod.training import optimizers
from jmod.training._errors import TrainingError
from jmod.training.callbacks import CallbackList, History
from jmod.training.objectives import Objectives
from jmod.training.progress import ProgbarLogger
from jmod.training.steps import Context, StepFunctions


class _TrainerState:
    """What `compile` set up, and the compiled steps made since (kept off the module walk)."""

    def __init__(self):
        self.optimizer = None
        self.objectives = None
        self.steps_per_execution = 1
        self.steps = {}
        self.context = Context()
        self.functions = {}
        self.stop_training = False
        self.label_checks = {}


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise TrainingError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return verbose


def _to_python(logs, order=()):
    # Compiled steps return dicts with sorted keys (pytree order): put the
    # compiled names first, in compile order (`loss` first).
    out = {}
    for key in [*[k for k in order if k in logs], *[k for k in logs if k not in order]]:
        array = np.asarray(logs[key])
        out[key] = float(array) if array.ndim == 0 else array
    return out


class TrainerMixin:
    """Adds Keras' training API to a `jmod.layers.Layer` subclass (`jmod.Model` has it).

    After `compile(optimizer, loss, metrics)`: `fit`, `evaluate`, `predict`,
    `train_on_batch`, `test_on_batch`. `model.optimizer` is the
    `jmod.Optimizer` (its state is variables: checkpoint it with
    `jmod.Checkpoint(model=model, optimizer=model.optimizer)`).
    """

    # -- state ---------------------------------------------------------------------
    def __setattr__(self, name, value):
        # Setting a module attribute changes its jmod.jit plan key and so
        # retraces every compiled step; these two are bookkeeping, not
        # structure, and are set at each fit (History) or by callbacks.
        if name in ("stop_training", "history"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _trainer(self):
        state = self.__dict__.get("_jmod_trainer")
        if state is None:
            state = self.__dict__["_jmod_trainer"] = _TrainerState()
        return state

    @property
    def optimizer(self):
        """The `jmod.Optimizer` made by `compile` (None before); settable, as in Keras."""
        return self._trainer().optimizer

    @optimizer.setter
    def optimizer(self, value):
        state = self._trainer()
        if value is not None and not isinstance(value, Optimizer):
            value = optimizers.make(self, value)
        state.optimizer = value
        state.steps, state.functions = {}, {}

    @property
    def compiled(self):
        """Whether `compile` was called."""
        return self._trainer().objectives is not None

    @property
    def stop_training(self):
        """Set True (from a callback) to end `fit` after the current step."""
        return self._trainer().stop_training

    @stop_training.setter
    def stop_training(self, value):
        self._trainer().stop_training = bool(value)

    @property
    def metrics(self):
        """The loss trackers and compiled metrics (`jmod.metrics.Metric` objects)."""
        objectives = self._trainer().objectives
        return [] if objectives is None else objectives.all_metrics()

    @property
    def metrics_names(self):
        """The names in the logs: `loss`, per-output losses, then the metrics."""
        objectives = self._trainer().objectives
        return ["loss"] if objectives is None else objectives.names

    @property
    def train_function(self):
        """The compiled train step last used (`.trace_count`, `.jaxpr(...)`), or None."""
        return self._trainer().functions.get("train")

    @property
    def test_function(self):
        """The compiled evaluation step last used, or None."""
        return self._trainer().functions.get("test")

    @property
    def predict_function(self):
        """The compiled prediction step last used, or None."""
        return self._trainer().functions.get("predict")

    def reset_metrics(self):
        """Resets the loss trackers and every compiled metric."""
        for metric in self.metrics:
            metric.reset_state()

    def get_metrics_result(self):
        """`{name: value}` of the loss trackers and metrics (works inside a step)."""
        objectives = self._trainer().objectives
        return {} if objectives is None else objectives.results()

    def _jmod_direction(self, log_name):
        objectives = self._trainer().objectives
        return None if objectives is None else objectives.direction(log_name)

    # -- compile -------------------------------------------------------------------
    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        loss_weights=None,
        steps_per_execution=1,
        auto_scale_loss=True,
    ):
        """Sets the optimizer, loss and metrics that `fit` and `evaluate` use.

        Example:
            >>> import optax
            >>> class Tiny(jmod.training.TrainerMixin, jmod.layers.Layer):
            ...     def call(self, x):
            ...         return x
            >>> model = Tiny()
            >>> model.compile(optax.sgd(0.1), loss="mse", metrics=["mae"])
            >>> model.metrics_names
            ['loss']

        Args:
            optimizer: a name (`"adam"`, `"sgd"`, `"rmsprop"`, ... with Keras'
                defaults, learning rate changeable by callbacks), an
                `optax.GradientTransformation`, or a `jmod.Optimizer` of this model.
            loss: a name, a `jmod.losses.Loss`, a callable `(y_true, y_pred)`
                returning per-sample values or their mean; a list/dict for
                several outputs; None to train on `add_loss` terms only.
            metrics: names (`"accuracy"` picks binary/sparse/categorical from
                the shapes), `jmod.metrics.Metric` objects or callables; per
                output as a dict or a list of lists.
            loss_weights: per-output weights of the total loss (list or dict).
            steps_per_execution: run this many train steps per compiled call
                (one `lax.scan`): less Python per step, callbacks see every k-th.
            auto_scale_loss: under the `mixed_float16` policy, scale the loss
                dynamically (as Keras' LossScaleOptimizer) unless the optimizer
                says otherwise. Keras' optimizer options (`clipnorm`,
                `gradient_accumulation_steps`, `use_ema`, ...) come with a
                `jmod.Optimizer(model, tx, ...)` or a Keras-style spec such as
                `jmod.training.optimizers.Adam(1e-3, global_clipnorm=1.0)`.
        """
        state = self._trainer()
        if isinstance(optimizer, Optimizer):
            if optimizer.model is not self:
                raise TrainingError(
                    f"model {self.name!r}: compile got a jmod.Optimizer built for model "
                    f"{optimizer.model.name!r}"
                )
            state.optimizer = optimizer
        else:
            state.optimizer = optimizers.make(self, optimizer, auto_scale_loss)
        if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
            raise TrainingError(
                f"steps_per_execution must be a positive int, got {steps_per_execution!r}"
            )
        state.objectives = Objectives(loss, loss_weights, metrics)
        state.steps_per_execution = steps_per_execution
        state.steps = {}
        state.functions = {}
        state.label_checks = {}

    def _require_compiled(self, what):
        if not self.compiled:
            raise TrainingError(
                f"model {self.name!r}: call compile(optimizer, loss, metrics) before {what}()"
            )

    # -- the default steps (run inside the compiled computation) ------------------------
    def _count(self, y_pred):
        count = self._trainer().context.count
        if count is None:
            count = jax.tree_util.tree_leaves(y_pred)[0].shape[0]
        return count

    def _losses_of(self, y, y_pred, sample_weight):
        objectives = self._trainer().objectives
        return objectives.compute_loss(
            y, y_pred, sample_weight, self._count(y_pred), list(self.losses)
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        """The total loss of a batch: compiled losses (weighted) plus `self.losses`.

        Inside `fit` the mean divides by the number of real (unpadded) samples.
        """
        self._require_compiled("compute_loss")
        return self._losses_of(y, y_pred, sample_weight)[0]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics with a batch; returns `get_metrics_result()`."""
        self._trainer().objectives.update_metrics(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def train_step(self, data):
        """One training step on `data = (x, y, sample_weight)`; returns the logs.

        `sample_weight` is 0 on padding rows. Runs inside the compiled step:
        override it for custom training (update `self.metrics` and use
        `self.optimizer.update(grads)`).
        """
        x, y, sample_weight = data
        objectives = self._trainer().objectives

        def loss_fn(model):
            y_pred = model(x, training=True)
            total, parts = model._losses_of(y, y_pred, sample_weight)
            # Differentiated scaled (loss scaling); the optimizer unscales the gradients.
            return self.optimizer.scale_loss(total), (total, y_pred, parts)

        (_, (total, y_pred, parts)), grads = value_and_grad(loss_fn, has_aux=True)(self)
        self.optimizer.update(grads)
        objectives.update_losses(total, parts, self._count(y_pred))
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        """One evaluation step on `data = (x, y, sample_weight)`; returns the logs."""
        x, y, sample_weight = data
        y_pred = self(x, training=False)
        total, parts = self._losses_of(y, y_pred, sample_weight)
        self._trainer().objectives.update_losses(total, parts, self._count(y_pred))
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def predict_step(self, x):
        """The model's outputs for one batch of inputs."""
        return self(x, training=False)

    # -- preparing -----------------------------------------------------------------
    def _prepare(self, data, kind, k=None):
        """Builds the model, optimizer and metrics from the first batch; the compiled step."""
        state = self._trainer()
        if data.treedef is None:
            data.first()  # an iterable's structure is known from its first batch
        if not getattr(self, "built", True) or not self.variables:
            x, _, _ = data.first()
            self(x)
            for module in (self, *self.submodules):
                if module.__dict__.get("_losses"):
                    list.clear(module.__dict__["_losses"])
        if kind != "predict":
            if state.optimizer is not None and not state.optimizer.built:
                state.optimizer.build()
            if not state.objectives.built:
                _, y, _ = data.first()
                state.objectives.build(y, getattr(self, "output_names", None))
            self._check_labels(data, kind)
        if k is None:
            k = state.steps_per_execution if kind != "predict" else 1
        return self._step_for(kind, data.treedef, k)

    def _check_labels(self, data, kind):
        """Labels that do not fit the compiled losses fail here, on the host, before any step.

        Shapes are checked once per data signature (the model and the losses
        traced abstractly); sparse labels' range over the whole array data
        now, or over each batch of an iterable as it is prepared.
        """
        state = self._trainer()
        default = TrainerMixin.train_step if kind == "train" else TrainerMixin.test_step
        custom = getattr(type(self), f"{kind}_step", default) is not default
        if custom or getattr(data, "labels_checked", False):
            return  # a custom step may use the labels its own way
        data.labels_checked = True
        x, y, _ = data.first()
        if y is None:
            return
        leaves = jax.tree_util.tree_leaves((x, y))
        key = (data.treedef, tuple((np.shape(a), np.dtype(a.dtype).name) for a in leaves))
        if key not in state.label_checks:
            state.label_checks[key] = _label_check(self, state.objectives, x, y)
        check = state.label_checks[key]
        if check is None:
            return
        if isinstance(data, data_lib.ArrayData):
            check(jax.tree_util.tree_unflatten(data.treedef, data.leaves)[1])
        else:
            data.batch_check = check

    def _step_for(self, kind, treedef, k):
        state = self._trainer()
        key = (kind, treedef, k)
        step = state.steps.get(key)
        if step is None:
            step = StepFunctions(
                kind,
                self,
                state.optimizer if kind == "train" else None,
                state.objectives if kind != "predict" else None,
                treedef,
                k,
                state.context,
            )
            state.steps[key] = step
        state.functions[kind] = step.function
        return step

    def _callbacks(self, callbacks, verbose, params, history=None):
        if isinstance(callbacks, CallbackList):
            return callbacks
        callbacks = list(callbacks or [])
        if verbose and not any(isinstance(cb, ProgbarLogger) for cb in callbacks):
            callbacks.insert(0, ProgbarLogger(verbose))
        if history is not None:
            callbacks.append(history)
        return CallbackList(callbacks, model=self, params={"verbose": verbose, **params})

    # -- fit -----------------------------------------------------------------------
    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """Trains for `epochs` epochs; returns a `History` (`.history`: name -> per-epoch list).

        Example:
            >>> class Scale(jmod.training.TrainerMixin, jmod.layers.Layer):
            ...     def build(self, input_shape):
            ...         self.k = self.add_weight("k", (), initializer="zeros")
            ...     def call(self, x):
            ...         return x * self.k
            >>> model = Scale()
            >>> model.compile("sgd", loss="mse")
            >>> x = np.ones((8, 1), "float32")
            >>> h = model.fit(x, 2 * x, batch_size=4, epochs=2, verbose=0)
            >>> sorted(h.history), len(h.history["loss"])
            (['loss'], 2)

        Args:
            x: inputs: an array, a dict/tuple/list of arrays (several inputs),
                or an iterable/generator of `(x, y)` or `(x, y, sample_weight)` batches.
            y: labels (an array, or a dict/list per output); None with an iterable.
            batch_size: samples per step (default 32) for array data.
            epochs: the epoch to stop after (counting from `initial_epoch`).
            verbose: 0 silent, 1 progress bar (one line per epoch when not a
                terminal), 2 one line per epoch, `"auto"` = 1.
            callbacks: `jmod.training.callbacks.Callback` objects.
            validation_split: the fraction of array data (taken from the end,
                before shuffling) to evaluate on after each epoch.
            validation_data: `(x_val, y_val)`, `(x_val, y_val, w_val)` or an
                iterable of batches, evaluated after each epoch (`val_` logs).
            shuffle: shuffle array data each epoch (seeded by `jmod.random.set_seed`).
            class_weight: `{class: weight}` multiplied into the sample weights.
            sample_weight: per-sample weights (array data).
            initial_epoch: the epoch to start at (resuming).
            steps_per_epoch: steps per epoch (default: the whole data).
            validation_steps: steps of each validation pass.
            validation_batch_size: default `batch_size`.
            validation_freq: validate every this many epochs.
        """
        self._require_compiled("fit")
        verbose = _verbosity(verbose)
        if validation_split and validation_data is None:
            (x, y, sample_weight), validation_data = data_lib.split_validation(
                x, y, sample_weight, validation_split
            )
        train_data = data_lib.adapt(
            x, y, sample_weight, batch_size, shuffle, steps_per_epoch, class_weight
        )
        val_data = None
        if validation_data is not None:
            if (
                isinstance(validation_data, (tuple, list))
                and 2 <= len(validation_data) <= 3
                and not data_lib.is_batches(validation_data)
            ):
                vx, vy, vw = data_lib.unpack(tuple(validation_data))
                val_data = data_lib.adapt(
                    vx, vy, vw, validation_batch_size or batch_size, False, validation_steps
                )
            else:
                val_data = data_lib.adapt(validation_data, steps=validation_steps)
        state = self._trainer()
        step = self._prepare(train_data, "train")
        history = History()
        cbs = self._callbacks(
            callbacks, verbose, {"epochs": epochs, "steps": train_data.steps}, history
        )
        k = state.steps_per_execution
        rng = None
        if getattr(train_data, "shuffle", False):
            seed = np.asarray(jax.random.key_data(jrandom.next_key())).astype(np.uint32)
            rng = np.random.default_rng(seed)
        begin_hooks = cbs._batch["on_train_batch_begin"]
        end_hooks = cbs._batch["on_train_batch_end"]
        state.stop_training = False
        cbs.on_train_begin()
        epoch_logs = {}
        global_step = 0
        for epoch in range(initial_epoch, epochs):
            state.objectives.reset()
            cbs.on_epoch_begin(epoch)
            logs = None
            batch = 0
            # Step annotations only while a profile is being recorded: the
            # context costs a few microseconds per step otherwise.
            profiling = profiler.is_active()
            for leaves, mask in train_data.epoch(rng, k):
                leaves, mask = _data_parallel(leaves, mask, k)
                if begin_hooks:
                    cbs.on_train_batch_begin(batch)
                if profiling:
                    with profiler.annotate("train", step=global_step):
                        logs = step(leaves, mask)
                else:
                    logs = step(leaves, mask)
                global_step += k
                batch = batch + k if not train_data.steps else min(batch + k, train_data.steps)
                if end_hooks:
                    cbs.on_train_batch_end(batch - 1, logs)
                if state.stop_training:
                    break
            if logs is None:
                if getattr(train_data, "exhausted", False):
                    _warn_exhausted(epoch)
                    break
                logs = state.objectives.results()
            epoch_logs = _to_python(logs, state.objectives.names)
            if val_data is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_loop(val_data, cbs)
                epoch_logs.update({f"val_{k_}": v for k_, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if state.stop_training:
                break
        if state.optimizer is not None and epochs > initial_epoch:
            state.optimizer.finalize_variable_values()  # EMA weights, as Keras' fit
        cbs.on_train_end(epoch_logs)
        return history

    # -- evaluate ------------------------------------------------------------------
    def _evaluate_loop(self, data, cbs):
        state = self._trainer()
        step = self._prepare(data, "test")
        k = state.steps_per_execution
        state.objectives.reset()
        cbs.on_test_begin()
        logs = None
        batch = 0
        begin_hooks = cbs._batch["on_test_batch_begin"]
        end_hooks = cbs._batch["on_test_batch_end"]
        for leaves, mask in data.epoch(None, k):
            leaves, mask = _data_parallel(leaves, mask, k)
            if begin_hooks:
                cbs.on_test_batch_begin(batch)
            logs = step(leaves, mask)
            batch = batch + k if not data.steps else min(batch + k, data.steps)
            if end_hooks:
                cbs.on_test_batch_end(batch - 1, logs)
        logs = _to_python(
            logs if logs is not None else state.objectives.results(), state.objectives.names
        )
        cbs.on_test_end(logs)
        return logs

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
    ):
        """The loss and metrics over the data: `loss`, `[loss, *metrics]`, or a dict.

        Example:
            >>> class Zero(jmod.training.TrainerMixin, jmod.layers.Layer):
            ...     def call(self, x):
            ...         return x * 0.0
            >>> model = Zero(); model.compile("sgd", loss="mae", metrics=["mse"])
            >>> model.evaluate(np.zeros((4, 1)), np.full((4, 1), 2.0), verbose=0)
            [2.0, 4.0]
        """
        self._require_compiled("evaluate")
        verbose = _verbosity(verbose)
        data = data_lib.adapt(x, y, sample_weight, batch_size, False, steps)
        cbs = self._callbacks(callbacks, verbose, {"steps": data.steps})
        logs = self._evaluate_loop(data, cbs)
        return _format(logs, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss and metrics of one batch (the metrics are reset first)."""
        self._require_compiled("test_on_batch")
        data = data_lib.ArrayData(x, y, sample_weight, batch_size=_batch_length(x))
        step = self._prepare(data, "test", k=1)
        self._trainer().objectives.reset()
        ((leaves, mask),) = data.epoch(None)
        logs = _to_python(step(leaves, mask), self.metrics_names)
        return _format(logs, return_dict)

    def train_on_batch(
        self,
        x,
        y=None,
        sample_weight=None,
        class_weight=None,
        return_dict=False,
        reset_metrics=True,
    ):
        """One train step on one batch; returns its loss and metrics like `evaluate`.

        Example:
            >>> class Bias(jmod.training.TrainerMixin, jmod.layers.Layer):
            ...     def build(self, input_shape):
            ...         self.b = self.add_weight("b", (), initializer="zeros")
            ...     def call(self, x):
            ...         return x + self.b
            >>> model = Bias(); model.compile("sgd", loss="mse")
            >>> model.train_on_batch(np.zeros((4, 1)), np.ones((4, 1)))
            1.0
            >>> round(float(model.b), 4)    # 0 - 0.01 * d/db mean((b - 1)^2)
            0.02
        """
        self._require_compiled("train_on_batch")
        data = data_lib.ArrayData(
            x, y, sample_weight, batch_size=_batch_length(x), class_weight=class_weight
        )
        step = self._prepare(data, "train", k=1)
        if reset_metrics:
            self._trainer().objectives.reset()
        ((leaves, mask),) = data.epoch(None)
        logs = _to_python(step(leaves, mask), self.metrics_names)
        return _format(logs, return_dict)

    # -- predict -------------------------------------------------------------------
    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs for `x`, batch by batch, stacked into NumPy arrays.

        Example:
            >>> class Double(jmod.training.TrainerMixin, jmod.layers.Layer):
            ...     def call(self, x):
            ...         return 2 * x
            >>> Double().predict(np.arange(5.0).reshape(5, 1), batch_size=2, verbose=0)[:, 0]
            array([0., 2., 4., 6., 8.], dtype=float32)
        """
        verbose = _verbosity(verbose)
        data = data_lib.adapt(x, batch_size=batch_size, steps=steps)
        step = self._prepare(data, "predict")
        cbs = self._callbacks(callbacks, verbose, {"steps": data.steps})
        cbs.on_predict_begin()
        outputs, masks = [], []
        end_hooks = cbs._batch["on_predict_batch_end"]
        for batch, (leaves, mask) in enumerate(data.epoch(None)):
            cbs.on_predict_batch_begin(batch)
            out = step(*_data_parallel(leaves, mask, 1))
            outputs.append(out)
            masks.append(mask)
            if end_hooks:
                cbs.on_predict_batch_end(batch, {"outputs": out})
        cbs.on_predict_end()
        if not outputs:
            raise TrainingError("predict: the data yielded no batches")
        keep = np.concatenate([np.asarray(m) for m in masks]) > 0
        return jax.tree_util.tree_map(
            lambda *parts: np.concatenate([np.asarray(p) for p in parts])[keep], *outputs
        )


def _label_check(model, objectives, x, y):
    """Checks labels like `y` against the compiled losses; returns the per-batch range check.

    The model's output shapes come from tracing it abstractly on `x` (no
    computation); None is returned when there is nothing to check per batch.
    """
    from jmod import losses
    from jmod.bridge import functional_call

    if not objectives.__dict__.get("_jmod_outputs"):
        return None
    try:
        state = model.state()
        pred = jax.eval_shape(lambda x: functional_call(model, state, x, training=False)[0], x)
    except Exception:  # what the model cannot do, its first step reports
        return None
    spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype)  # noqa: E731
    ranges = []
    for i, (out, t, p) in enumerate(objectives._pairs(jax.tree_util.tree_map(spec, y), pred)):
        if out.loss is None:
            continue
        losses.check_labels(out.loss, t, p)
        classes = losses.sparse_classes(out.loss, p.shape)
        if classes is not None:
            ranges.append((i, classes, out.loss.name))
    if not ranges:
        return None

    def check_ranges(y):
        pairs = objectives._pairs(y, pred)
        for i, classes, name in ranges:
            losses.check_label_range(pairs[i][1], classes, name)

    return check_ranges


def _data_parallel(leaves, mask, k):
    """Splits a batch along the "data" axis of the active `jmod.distributed.mesh`, if any.

    The compiled step then runs data parallel: jit partitions it over the
    mesh and reduces the gradients of the global batch. With
    `steps_per_execution > 1` the batch is the second axis.
    """
    mesh = current_mesh()
    if mesh is None or "data" not in mesh.shape:
        return leaves, mask
    return distribute_batch((leaves, mask), batch_dim=1 if k > 1 else 0)


def _batch_length(x):
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise TrainingError("the batch x is empty")
    return int(np.shape(leaves[0])[0])


def _format(logs, return_dict):
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def _warn_exhausted(epoch):
    import warnings

    warnings.warn(
        f"fit: the data iterator ran out at epoch {epoch + 1}; give steps_per_epoch, or "
        "pass a re-iterable object (a list, a dataset class) to train several epochs",
        stacklevel=3,
    )
