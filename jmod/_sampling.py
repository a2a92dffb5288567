"""Random draws that cost no compilation per shape: one program per size bucket.

`jax.random.uniform(key, (64, 67))` compiles a program for that one shape
(0.1-0.7 s on a CPU), so building a model whose weights all differ in
shape compiled once per weight. Here a draw of `n` values runs the program
of the smallest bucket that holds `n` (one compiled per distribution,
dtype and bucket), keeps the first `n` values and reshapes them on the
host.

The values are those of `jax.random` for the exact shape, bit for bit:
with `jax_threefry_partitionable` (JAX's default since 0.5) the bits of
element `i` depend only on the key and the flat index `i`, so the first
`n` values of a longer draw are the draw of `n`. Scale and shift are
applied on the host in the dtype, as the separate eager ops of the
per-shape path did (a fused multiply-add inside the program would round
differently). Anything else (another PRNG, the flag off, inside a trace,
an integer dtype, a huge draw) takes `jax.random` directly.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# Buckets are powers of 4 up to 2**20 values (drawing up to 4x too many
# costs microseconds there, and fewer buckets mean fewer compilations), then
# powers of 2; draws above 2**24 values take the per-shape program, whose
# compilation is small next to the draw itself.
_SMALLEST = 1 << 10
_COARSE_UP_TO = 1 << 20
_LARGEST = 1 << 24


def bucket(n):
    """The number of values the bucketed program draws for `n` values."""
    size = _SMALLEST
    while size < n:
        size *= 4 if size < _COARSE_UP_TO else 2
    return size


@functools.partial(jax.jit, static_argnames=("kind", "size", "dtype"))
def _flat(key, low, high, *, kind, size, dtype):
    if kind == "uniform":
        return jax.random.uniform(key, (size,), dtype, low, high)
    if kind == "normal":
        return jax.random.normal(key, (size,), dtype)
    return jax.random.truncated_normal(key, -2.0, 2.0, (size,), dtype)


def _direct(kind, key, shape, dtype, low, high):
    if kind == "uniform":
        return jax.random.uniform(key, shape, dtype, low, high)
    if kind == "normal":
        return jax.random.normal(key, shape, dtype)
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def eager():
    """Whether no JAX trace is active (values are concrete, ops run one by one)."""
    try:
        from jax._src import core
    except ImportError:  # pragma: no cover - a JAX without the private module
        return False
    return core.trace_state_clean()


def _bucketable(key, n, dtype):
    return (
        0 < n <= _LARGEST
        and jnp.issubdtype(dtype, jnp.floating)
        and jax.config.jax_threefry_partitionable
        and not isinstance(key, jax.core.Tracer)
        and eager()
        and jax.sharding.get_abstract_mesh().empty
        and jax.random.key_impl(key) == "threefry2x32"
    )


def draw(kind, key, shape, dtype=jnp.float32, low=0.0, high=1.0):
    """`jax.random.{kind}(key, shape, dtype)`, as a NumPy array when drawn by bucket.

    `kind` is "uniform" (in [low, high)), "normal" or "truncated_normal"
    (cut at -2 and 2). Returns a NumPy array (bucketed) or a JAX array (the
    per-shape path); `finish` turns either into a JAX array.
    """
    shape = tuple(int(d) for d in shape)
    dtype = jnp.dtype(dtype)
    n = math.prod(shape)
    if not _bucketable(key, n, dtype):
        return _direct(kind, key, shape, dtype, low, high)
    if kind == "uniform":
        low, high = np.asarray(low, dtype), np.asarray(high, dtype)
    flat = _flat(key, low, high, kind=kind, size=bucket(n), dtype=dtype)
    return np.asarray(flat)[:n].reshape(shape)


def scale_shift(x, scale=1.0, shift=0.0):
    """`shift + scale * x` rounded as JAX's eager ops round it (in `x`'s dtype)."""
    if isinstance(x, np.ndarray):
        if scale is not None:
            x = np.asarray(scale, x.dtype) * x
        if shift is not None:
            x = np.asarray(shift, x.dtype) + x
        return x
    if scale is not None:
        x = scale * x
    if shift is not None:
        x = shift + x
    return x


def finish(x):
    """A JAX array (host values are put on the default device; no compilation)."""
    return jax.device_put(x) if isinstance(x, np.ndarray) else x


def filled(shape, value, dtype):
    """`jnp.full(shape, value, dtype)` without compiling a program per shape when eager."""
    shape = tuple(int(d) for d in shape)
    if not eager() or isinstance(value, jax.core.Tracer):
        return jnp.full(shape, value, dtype)
    return jax.device_put(np.full(shape, np.asarray(value, jnp.dtype(dtype))))
