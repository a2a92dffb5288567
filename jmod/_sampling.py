"""Random draws that compile nothing per shape: one program per distribution and dtype.

`jax.random.uniform(key, (64, 67))` compiles a program for that one shape
(0.1-1.5 s on a CPU), so building a model whose weights all differ in
shape compiled once per weight. Here every eager draw runs one program
that makes a chunk of 2**16 values starting at a given flat index; a draw
of `n` values takes as many chunks as it needs, keeps the first `n` values
and reshapes them on the host.

The values are those of `jax.random` for the exact shape, bit for bit:
with `jax_threefry_partitionable` (JAX's default since 0.5) the bits of
element `i` are `threefry2x32(key, (0, i))`, a function of the key and the
flat index only. The chunk program draws through a PRNG implementation
(`jax.extend.random.define_prng_impl`) whose key carries the chunk's first
index, so `jax.random`'s own uniform/normal/truncated-normal transforms
turn those bits into floats. Scale and shift are applied on the host in
the dtype, as the separate eager ops of the per-shape path did (a fused
multiply-add inside the program would round differently). Anything else
(another PRNG, the flag off, inside a trace, an integer dtype, a draw over
2**24 values) takes `jax.random` directly.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl, threefry2x32_p

CHUNK = 1 << 16  # ~1 ms to draw on a CPU core
_LARGEST = 1 << 24  # above: one program for the shape costs little next to the draw
_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _offset_bits(key, bit_width, shape):
    # JAX's partitionable threefry bits (random/threefry2x32.py), with the
    # flat index counted from the key's third word.
    k1, k2, start = key[0], key[1], key[2]
    low = (start + lax.iota(np.uint32, math.prod(shape))).reshape(shape)
    bits1, bits2 = threefry2x32_p.bind(k1, k2, jnp.zeros(shape, np.uint32), low)
    if bit_width == 64:
        high = lax.convert_element_type(bits1, np.uint64)
        return lax.shift_left(high, np.uint64(32)) | lax.convert_element_type(bits2, np.uint64)
    return lax.convert_element_type(bits1 ^ bits2, _UINT[bit_width])


def _only_bits(*args):
    raise NotImplementedError("jmod's chunk keys only draw bits")


_CHUNK_KEYS = define_prng_impl(
    key_shape=(3,),
    seed=_only_bits,
    split=_only_bits,
    random_bits=_offset_bits,
    fold_in=_only_bits,
    name="jmod_threefry2x32_chunk",
    tag="jmodfry",
)


@functools.partial(jax.jit, static_argnames=("kind", "dtype"))
def _chunk(key_and_start, low, high, *, kind, dtype):
    key = jax.random.wrap_key_data(key_and_start, impl=_CHUNK_KEYS)
    return _direct(kind, key, (CHUNK,), dtype, low, high)


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


def _chunkable(key, n, dtype):
    return (
        0 < n <= _LARGEST
        and jnp.issubdtype(dtype, jnp.floating)
        and jax.config.jax_threefry_partitionable
        and isinstance(key, jax.Array)
        and not isinstance(key, jax.core.Tracer)
        and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.shape == ()
        and jax.random.key_impl(key) == "threefry2x32"
        and eager()
        and jax.sharding.get_abstract_mesh().empty
    )


def draw(kind, key, shape, dtype=jnp.float32, low=0.0, high=1.0):
    """`jax.random.{kind}(key, shape, dtype)`, as a NumPy array when drawn by chunks.

    `kind` is "uniform" (in [low, high)), "normal" or "truncated_normal"
    (cut at -2 and 2). Returns a NumPy array (chunked) or a JAX array (the
    per-shape path); `finish` turns either into a JAX array.
    """
    shape = tuple(int(d) for d in shape)
    dtype = jnp.dtype(dtype)
    n = math.prod(shape)
    if not _chunkable(key, n, dtype):
        return _direct(kind, key, shape, dtype, low, high)
    if kind == "uniform":
        low, high = np.asarray(low, dtype), np.asarray(high, dtype)
    k1, k2 = np.asarray(jax.random.key_data(key))
    chunks = [
        np.asarray(_chunk(np.array([k1, k2, start], np.uint32), low, high, kind=kind, dtype=dtype))
        for start in range(0, n, CHUNK)
    ]
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return flat[:n].reshape(shape)


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
