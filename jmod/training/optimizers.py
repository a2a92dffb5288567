"""Optimizers by name, and the learning rate kept in an optimizer's state.

`compile(optimizer="adam")` builds the optax transformation with Keras'
defaults, wrapped in `optax.inject_hyperparams`: the learning rate is then a
value in the optimizer's state variables, so a callback can change it
between steps without recompiling the train step.

Example:
    >>> import optax
    >>> m = jmod.Module(); m.w = jmod.Variable(1.0)
    >>> from jmod.training.optimizers import get, get_learning_rate, set_learning_rate
    >>> opt = jmod.Optimizer(m, get("sgd"))
    >>> round(get_learning_rate(opt), 6)
    0.01
    >>> set_learning_rate(opt, 0.5); get_learning_rate(opt)
    0.5
"""

import optax

from jmod.optimizer import Optimizer
from jmod.training._errors import TrainingError

# Keras 3 defaults (learning rate, epsilon 1e-7 where Keras has one): optax function, arguments.
_DEFAULTS = {
    "sgd": (optax.sgd, {"learning_rate": 0.01}),
    "adam": (optax.adam, {"learning_rate": 1e-3, "eps": 1e-7}),
    "adamw": (optax.adamw, {"learning_rate": 1e-3, "eps": 1e-7, "weight_decay": 0.004}),
    "rmsprop": (optax.rmsprop, {"learning_rate": 1e-3, "decay": 0.9, "eps": 1e-7}),
    "adagrad": (
        optax.adagrad,
        {"learning_rate": 1e-3, "initial_accumulator_value": 0.1, "eps": 1e-7},
    ),
    "adamax": (optax.adamax, {"learning_rate": 1e-3, "eps": 1e-7}),
    "nadam": (optax.nadam, {"learning_rate": 1e-3, "eps": 1e-7}),
    "adadelta": (optax.adadelta, {"learning_rate": 1e-3, "rho": 0.95, "eps": 1e-7}),
    "lion": (optax.lion, {"learning_rate": 1e-3}),
}

# Keras argument names -> optax's (rmsprop's rho is optax's decay).
_RENAMES = {"beta_1": "b1", "beta_2": "b2", "epsilon": "eps"}

# The Keras 3 optimizer options `jmod.Optimizer` takes (see jmod/_optimizer_options.py).
OPTIONS = (
    "gradient_accumulation_steps",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "dynamic_loss_scale",
    "initial_scale",
    "dynamic_growth_steps",
)


def _build(name, overrides=None):
    fn, defaults = _DEFAULTS[name]
    arguments = dict(defaults)
    for key, value in (overrides or {}).items():
        key = "decay" if (name == "rmsprop" and key == "rho") else _RENAMES.get(key, key)
        arguments[key] = value
    try:
        return optax.inject_hyperparams(fn)(**arguments)
    except TypeError as e:
        raise TrainingError(f"optimizer {name!r}: {e}") from None


_LR_SUFFIX = "hyperparams/learning_rate"


def names():
    """The optimizer names `get` knows."""
    return sorted(_DEFAULTS)


def get(identifier):
    """An optax transformation from a name (`"adam"`, `"sgd"`, ...) or a transformation.

    Example:
        >>> import optax
        >>> isinstance(jmod.training.optimizers.get("adam"), optax.GradientTransformation)
        True
    """
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _DEFAULTS:
            raise TrainingError(
                f"unknown optimizer {identifier!r}; known names: {', '.join(names())}, "
                "or pass an optax.GradientTransformation"
            )
        return _build(key)
    if isinstance(identifier, OptimizerSpec):
        return identifier.transformation()
    if hasattr(identifier, "init") and hasattr(identifier, "update"):
        return identifier
    raise TrainingError(
        f"optimizer must be a name, an optax.GradientTransformation or a jmod.Optimizer, "
        f"got {type(identifier).__name__}"
    )


def _lr_variable(optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TrainingError(
            f"expected a jmod.Optimizer (model.optimizer after compile), got "
            f"{type(optimizer).__name__}"
        )
    if not optimizer.built:
        optimizer.build()
    for name, var in optimizer.slots.items():
        if name == _LR_SUFFIX or name.endswith("/" + _LR_SUFFIX):
            return var
    raise TrainingError(
        f"optimizer {optimizer.name!r}: its optax state holds no learning rate to change; "
        "compile with an optimizer name ('adam') or an "
        "optax.inject_hyperparams(optax.adam)(learning_rate=...) transformation"
    )


def get_learning_rate(optimizer):
    """The current learning rate of a `jmod.Optimizer` built with `inject_hyperparams`."""
    return float(_lr_variable(optimizer).value)


def set_learning_rate(optimizer, value):
    """Sets the learning rate in the optimizer's state; the compiled step is not retraced."""
    _lr_variable(optimizer).assign(float(value))


# -- Keras-style optimizer objects ------------------------------------------------------------


class OptimizerSpec:
    """An optimizer as Keras users write it: a name, hyperparameters and Keras' options.

    `compile` turns it into a `jmod.Optimizer` of the model. Hyperparameters
    take Keras' names (`beta_1`, `epsilon`, `rho`, `momentum`, ...); the
    options are `jmod.Optimizer`'s (`clipnorm`, `global_clipnorm`,
    `gradient_accumulation_steps`, `use_ema`, `loss_scale_factor`, ...).

    Example:
        >>> from jmod.training.optimizers import Adam, get_learning_rate
        >>> spec = Adam(learning_rate=1e-2, global_clipnorm=1.0, use_ema=True)
        >>> m = jmod.Module(); m.w = jmod.Variable([1.0])
        >>> opt = spec.build(m)
        >>> opt.options.global_clipnorm, opt.options.use_ema, round(get_learning_rate(opt), 6)
        (1.0, True, 0.01)
    """

    name = None

    def __init__(self, learning_rate=None, **kwargs):
        self.options = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIONS}
        self.hyperparameters = dict(kwargs)
        if learning_rate is not None:
            self.hyperparameters["learning_rate"] = learning_rate
        self.transformation()  # an unknown hyperparameter is an error now, not at compile

    def transformation(self):
        """The optax transformation (learning rate injected, so it can change)."""
        return _build(self.name, self.hyperparameters)

    def build(self, model):
        """The `jmod.Optimizer` of `model` with these hyperparameters and options."""
        return Optimizer(model, self.transformation(), **self.options)

    def __repr__(self):
        args = {**self.hyperparameters, **self.options}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _spec_class(class_name, key):
    doc = f"""`{key}` with Keras 3's defaults and options (an `OptimizerSpec` for `compile`).

    Example:
        >>> jmod.training.optimizers.{class_name}(learning_rate=0.1, clipnorm=1.0).options
        {{'clipnorm': 1.0}}
    """
    return type(class_name, (OptimizerSpec,), {"name": key, "__doc__": doc, "__module__": __name__})


SGD = _spec_class("SGD", "sgd")
Adam = _spec_class("Adam", "adam")
AdamW = _spec_class("AdamW", "adamw")
RMSprop = _spec_class("RMSprop", "rmsprop")
Adagrad = _spec_class("Adagrad", "adagrad")
Adamax = _spec_class("Adamax", "adamax")
Nadam = _spec_class("Nadam", "nadam")
Adadelta = _spec_class("Adadelta", "adadelta")
Lion = _spec_class("Lion", "lion")


def make(model, identifier, auto_scale_loss=True):
    """The `jmod.Optimizer` `compile` uses for `identifier` (a name, spec or transformation).

    Under the `mixed_float16` dtype policy the loss is scaled dynamically
    (Keras wraps the optimizer in a `LossScaleOptimizer`) unless
    `auto_scale_loss=False`.

    Example:
        >>> m = jmod.Module(); m.w = jmod.Variable(1.0)
        >>> from jmod.training.optimizers import SGD, make
        >>> type(make(m, "adam")).__name__, make(m, SGD(clipvalue=0.5)).options.clipvalue
        ('Optimizer', 0.5)
    """
    if isinstance(identifier, OptimizerSpec):
        transformation, options = identifier.transformation(), dict(identifier.options)
    else:
        transformation, options = get(identifier), {}
    policy = getattr(model, "dtype_policy", None)
    if (
        auto_scale_loss
        and getattr(policy, "name", None) == "mixed_float16"
        and "dynamic_loss_scale" not in options
    ):
        options["dynamic_loss_scale"] = True
    return Optimizer(model, transformation, **options)
