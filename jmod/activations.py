"""Activation functions, looked up by the names Keras gives them.

Each is a plain function over arrays (the math is `jax.nn`'s); `get` turns a
name, `None` or a callable into one, and `serialize` turns a built-in back
into its name, which is what layer configs store.

Example:
    >>> jmod.activations.get("relu")(jnp.array([-1.0, 2.0])).tolist()
    [0.0, 2.0]
"""

import jax
import jax.numpy as jnp

from jmod.errors import SerializationError


def linear(x):
    """The identity: `x` unchanged."""
    return x


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """`max(x, 0)`; optionally leaky below `threshold` and capped at `max_value` (Keras)."""
    if negative_slope == 0.0 and max_value is None and threshold == 0.0:
        return jax.nn.relu(x)
    below = negative_slope * (x - threshold) if negative_slope else jnp.zeros_like(x)
    out = jnp.where(x >= threshold, x, below)
    if max_value is not None:
        out = jnp.minimum(out, max_value)
    return out


def relu6(x):
    """`min(max(x, 0), 6)`."""
    return jax.nn.relu6(x)


def leaky_relu(x, negative_slope=0.2):
    """`x` for positives, `negative_slope * x` below zero (Keras' default slope 0.2)."""
    return jax.nn.leaky_relu(x, negative_slope)


def elu(x, alpha=1.0):
    """`x` for positives, `alpha * (exp(x) - 1)` below zero."""
    return jax.nn.elu(x, alpha)


def selu(x):
    """Scaled ELU with the self-normalizing constants."""
    return jax.nn.selu(x)


def gelu(x, approximate=False):
    """Gaussian error linear unit; exact (erf) by default, as in Keras."""
    return jax.nn.gelu(x, approximate=approximate)


def sigmoid(x):
    """`1 / (1 + exp(-x))`."""
    return jax.nn.sigmoid(x)


def hard_sigmoid(x):
    """Piecewise linear sigmoid: `relu6(x + 3) / 6`."""
    return jax.nn.hard_sigmoid(x)


def silu(x):
    """`x * sigmoid(x)`, also known as swish."""
    return jax.nn.silu(x)


swish = silu


def hard_silu(x):
    """`x * hard_sigmoid(x)`, also known as hard swish."""
    return jax.nn.hard_silu(x)


hard_swish = hard_silu


def mish(x):
    """`x * tanh(softplus(x))`."""
    return x * jnp.tanh(jax.nn.softplus(x))


def tanh(x):
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def softplus(x):
    """`log(1 + exp(x))`."""
    return jax.nn.softplus(x)


def softsign(x):
    """`x / (1 + |x|)`."""
    return jax.nn.soft_sign(x)


def exponential(x):
    """`exp(x)`."""
    return jnp.exp(x)


def softmax(x, axis=-1):
    """`exp(x) / sum(exp(x))` along `axis`, computed stably."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    """`log(softmax(x))` along `axis`, computed stably."""
    return jax.nn.log_softmax(x, axis=axis)


def celu(x, alpha=1.0):
    """`max(x, 0) + min(0, alpha * (exp(x / alpha) - 1))`."""
    return jax.nn.celu(x, alpha=alpha)


def glu(x, axis=-1):
    """Gated linear unit: `a * sigmoid(b)`, `a` and `b` the halves of `x` along `axis`."""
    return jax.nn.glu(x, axis=axis)


def hard_tanh(x):
    """`x` clipped to [-1, 1]."""
    return jax.nn.hard_tanh(x)


def log_sigmoid(x):
    """`log(sigmoid(x))`, computed stably."""
    return jax.nn.log_sigmoid(x)


def sparse_plus(x):
    """0 below -1, `(x + 1)**2 / 4` in (-1, 1), `x` above 1."""
    return jax.nn.sparse_plus(x)


def squareplus(x, b=4):
    """`(x + sqrt(x**2 + b)) / 2`, a smooth relu."""
    return jax.nn.squareplus(x, b=b)


def hard_shrink(x, threshold=0.5):
    """`x` where `|x| > threshold`, else 0."""
    return jnp.where(jnp.abs(x) > threshold, x, jnp.zeros((), x.dtype))


def soft_shrink(x, threshold=0.5):
    """`x` moved toward 0 by `threshold`, 0 inside [-threshold, threshold]."""
    zero = jnp.zeros((), x.dtype)
    return jnp.where(x > threshold, x - threshold, jnp.where(x < -threshold, x + threshold, zero))


def tanh_shrink(x):
    """`x - tanh(x)`."""
    return x - jnp.tanh(x)


def threshold(x, threshold=0.0, default_value=0.0):
    """`x` where `x > threshold`, else `default_value` (Keras requires both; 0 here by default)."""
    return jnp.where(x > threshold, x, jnp.asarray(default_value, x.dtype))


def sparsemax(x, axis=-1):
    """The Euclidean projection of `x` onto the simplex along `axis` (sparse probabilities).

    Example:
        >>> jmod.activations.sparsemax(jnp.array([2.0, 0.0, -1.0])).tolist()
        [1.0, 0.0, 0.0]
    """
    z = jnp.moveaxis(x, axis, -1)
    ordered = -jnp.sort(-z, axis=-1)
    cumsum = jnp.cumsum(ordered, axis=-1)
    r = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = ordered - (cumsum - 1) / r > 0
    k = jnp.sum(support, axis=-1, keepdims=True)
    tau = (jnp.sum(jnp.where(support, ordered, 0), axis=-1, keepdims=True) - 1) / k.astype(z.dtype)
    return jnp.moveaxis(jnp.maximum(z - tau, 0), -1, axis)


ALL = {
    f.__name__: f
    for f in (
        linear,
        relu,
        relu6,
        leaky_relu,
        elu,
        selu,
        gelu,
        sigmoid,
        hard_sigmoid,
        silu,
        hard_silu,
        mish,
        tanh,
        softplus,
        softsign,
        exponential,
        softmax,
        log_softmax,
        celu,
        glu,
        hard_tanh,
        log_sigmoid,
        sparse_plus,
        squareplus,
        hard_shrink,
        soft_shrink,
        tanh_shrink,
        threshold,
        sparsemax,
    )
}
_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def get(identifier):
    """An activation function from a name, `None` (linear), a config dict or a callable.

    Names are the built-ins' or those of functions registered with
    `@jmod.saving.register_serializable()` (`"Package>name"`).

    Example:
        >>> jmod.activations.get(None) is jmod.activations.linear
        True
        >>> jmod.activations.get("swish") is jmod.activations.silu
        True

    Raises:
        SerializationError: for an unknown name or a value of another type.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, dict) and "class_name" in identifier:
        identifier = identifier["class_name"]
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name not in ALL:
            registered = _registered(identifier)
            if registered is not None:
                return registered
            raise SerializationError(
                f"unknown activation {identifier!r}; expected one of {sorted([*ALL, *_ALIASES])}"
            )
        return ALL[name]
    if callable(identifier):
        return identifier
    raise SerializationError(
        f"an activation is a name, None or a callable, got {type(identifier).__name__} "
        f"{identifier!r:.60}"
    )


def serialize(activation):
    """The name of a built-in or registered activation (what layer configs store).

    Example:
        >>> jmod.activations.serialize(jmod.activations.get("swish"))
        'silu'

    Raises:
        SerializationError: for a callable that is not a built-in activation,
            which a config could not name.
    """
    if activation is None:
        return "linear"
    for name, fn in ALL.items():
        if fn is activation:
            return name
    # jax.nn's functions are the same math under other objects (not jax.nn.gelu,
    # which defaults to the tanh approximation).
    for name, fn in _JAX_NN.items():
        if fn is activation:
            return name
    saving = _saving()
    if saving is not None:
        name = saving.get_registered_name(activation)
        if saving.get_registered_object(name) is activation:
            return name
    raise SerializationError(
        f"cannot serialize activation {getattr(activation, '__name__', activation)!r}: "
        f"a config names built-in activations ({sorted(ALL)}) or functions registered "
        "with @jmod.saving.register_serializable()"
    )


def _saving():
    # jmod.saving imports layers, which import this module: look it up late.
    try:
        from jmod import saving
    except ImportError:
        return None
    return saving


def _registered(name):
    """A function registered with `jmod.saving` (or in a custom_object_scope) as `name`."""
    saving = _saving()
    fn = saving.get_registered_object(name) if saving is not None else None
    return fn if callable(fn) else None


_JAX_NN = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "silu": jax.nn.silu,
    "hard_silu": jax.nn.hard_silu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "exponential": jnp.exp,
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
}
