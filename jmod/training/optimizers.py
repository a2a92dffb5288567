"""Optimizers by name, and the learning rate kept in an optimizer's state.

`compile(optimizer="adam")` builds the optax transformation with Keras'
defaults, wrapped in `optax.inject_hyperparams`: the learning rate is then a
value in the optimizer's state variables, so a callback can change it
between steps without recompiling the train step.

Example:
    >>> import optax
    >>> m = jmod.Module(); m.w = jmod.Variable(1.0)
    >>> opt = jmod.Optimizer(m, get("sgd"))
    >>> round(get_learning_rate(opt), 6)
    0.01
    >>> set_learning_rate(opt, 0.5); get_learning_rate(opt)
    0.5
"""

import optax

from jmod.optimizer import Optimizer
from jmod.training._errors import TrainingError

# Keras 3 defaults (learning rate, epsilon 1e-7 where Keras has one).
_FACTORIES = {
    "sgd": lambda: optax.inject_hyperparams(optax.sgd)(learning_rate=0.01),
    "adam": lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, eps=1e-7),
    "adamw": lambda: optax.inject_hyperparams(optax.adamw)(
        learning_rate=1e-3, eps=1e-7, weight_decay=0.004
    ),
    "rmsprop": lambda: optax.inject_hyperparams(optax.rmsprop)(
        learning_rate=1e-3, decay=0.9, eps=1e-7
    ),
    "adagrad": lambda: optax.inject_hyperparams(optax.adagrad)(
        learning_rate=1e-3, initial_accumulator_value=0.1, eps=1e-7
    ),
    "adamax": lambda: optax.inject_hyperparams(optax.adamax)(learning_rate=1e-3, eps=1e-7),
    "nadam": lambda: optax.inject_hyperparams(optax.nadam)(learning_rate=1e-3, eps=1e-7),
    "adadelta": lambda: optax.inject_hyperparams(optax.adadelta)(
        learning_rate=1e-3, rho=0.95, eps=1e-7
    ),
    "lion": lambda: optax.inject_hyperparams(optax.lion)(learning_rate=1e-3),
}

_LR_SUFFIX = "hyperparams/learning_rate"


def names():
    """The optimizer names `get` knows."""
    return sorted(_FACTORIES)


def get(identifier):
    """An optax transformation from a name (`"adam"`, `"sgd"`, ...) or a transformation.

    Example:
        >>> import optax
        >>> isinstance(get("adam"), optax.GradientTransformation)
        True
    """
    if isinstance(identifier, str):
        factory = _FACTORIES.get(identifier.lower())
        if factory is None:
            raise TrainingError(
                f"unknown optimizer {identifier!r}; known names: {', '.join(names())}, "
                "or pass an optax.GradientTransformation"
            )
        return factory()
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
