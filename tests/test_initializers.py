import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod import initializers


def test_constant_zeros_ones():
    np.testing.assert_array_equal(initializers.get("zeros")((2, 2)), np.zeros((2, 2)))
    np.testing.assert_array_equal(initializers.get("ones")((3,)), np.ones(3))
    np.testing.assert_array_equal(initializers.Constant(2.5)((2,)), [2.5, 2.5])


@pytest.mark.parametrize(
    "name, limit_or_std, uniform",
    [
        ("glorot_uniform", np.sqrt(6 / (300 + 200)), True),
        ("he_uniform", np.sqrt(6 / 300), True),
        ("lecun_uniform", np.sqrt(3 / 300), True),
        ("glorot_normal", np.sqrt(2 / (300 + 200)), False),
        ("he_normal", np.sqrt(2 / 300), False),
        ("lecun_normal", np.sqrt(1 / 300), False),
    ],
)
def test_variance_scaling_variants_have_keras_statistics(name, limit_or_std, uniform):
    jmod.random.set_seed(0)
    x = np.asarray(initializers.get(name)((300, 200)))
    if uniform:
        assert np.abs(x).max() <= limit_or_std
        assert np.abs(x).max() > 0.95 * limit_or_std
    else:
        assert abs(x.std() - limit_or_std) / limit_or_std < 0.05


def test_seeded_initializer_repeats_unseeded_follows_global_seed():
    a = initializers.RandomNormal(seed=3)((4,))
    b = initializers.RandomNormal(seed=3)((4,))
    np.testing.assert_array_equal(a, b)
    jmod.random.set_seed(1)
    c = initializers.RandomNormal()((4,))
    jmod.random.set_seed(1)
    np.testing.assert_array_equal(initializers.RandomNormal()((4,)), c)


def test_vector_shapes_use_size_as_fan():
    x = np.asarray(initializers.get("he_uniform")((10000,)))
    assert np.abs(x).max() <= np.sqrt(6 / 10000)


def test_serialize_round_trip_and_unknown_names():
    init = initializers.TruncatedNormal(mean=1.0, stddev=0.1, seed=2)
    again = initializers.get(initializers.serialize(init))
    np.testing.assert_array_equal(init((3,)), again((3,)))
    with pytest.raises(jmod.SerializationError, match="unknown initializer 'nope'"):
        initializers.get("nope")


def test_orthogonal_is_orthogonal():
    q = np.asarray(initializers.Orthogonal(seed=0)((5, 5)))
    np.testing.assert_allclose(q @ q.T, np.eye(5), atol=1e-5)


# -- the values are jax.nn.initializers' and jax.random's, bit for bit ------------------


def _bits(x):
    x = np.asarray(x)
    return x.dtype, x.shape, x.reshape(-1).view(np.uint8).tobytes()


_KEY = 11


def _jax_reference(init, shape, dtype):
    """What the initializer's math gives through jax for exactly `shape` (eager ops)."""
    key = jax.random.key(_KEY)
    if isinstance(init, initializers.TruncatedNormal):
        x = jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
        return init.mean + init.stddev * x
    if isinstance(init, initializers.RandomNormal):
        return init.mean + init.stddev * jax.random.normal(key, shape, dtype)
    if isinstance(init, initializers.RandomUniform):
        return jax.random.uniform(key, shape, dtype, init.minval, init.maxval)
    if isinstance(init, initializers.Orthogonal):
        return jax.nn.initializers.orthogonal(init.gain)(key, shape, dtype)
    distribution = {"untruncated_normal": "normal"}.get(init.distribution, init.distribution)
    return jax.nn.initializers.variance_scaling(init.scale, init.mode, distribution)(
        key, shape, dtype
    )


_SEEDED = [
    initializers.RandomNormal(0.3, 0.07, seed=_KEY),
    initializers.TruncatedNormal(0.3, 0.07, seed=_KEY),
    initializers.RandomUniform(-0.2, 0.9, seed=_KEY),
    initializers.GlorotUniform(seed=_KEY),
    initializers.GlorotNormal(seed=_KEY),
    initializers.HeUniform(seed=_KEY),
    initializers.HeNormal(seed=_KEY),
    initializers.LecunUniform(seed=_KEY),
    initializers.LecunNormal(seed=_KEY),
    initializers.VarianceScaling(1.7, "fan_out", "untruncated_normal", seed=_KEY),
    initializers.VarianceScaling(0.6, "fan_avg", "truncated_normal", seed=_KEY),
    initializers.Orthogonal(1.3, seed=_KEY),
]


@pytest.mark.parametrize("init", _SEEDED, ids=lambda i: type(i).__name__)
def test_seeded_initializers_equal_jax_for_the_exact_shape_bit_for_bit(init):
    got = init((9, 7), jnp.float32)
    assert isinstance(got, jax.Array)
    assert _bits(got) == _bits(_jax_reference(init, (9, 7), jnp.float32))


def test_bfloat16_kernels_equal_jax_bit_for_bit():
    for init in (initializers.GlorotUniform(seed=_KEY), initializers.HeNormal(seed=_KEY)):
        got = init((6, 4), jnp.bfloat16)
        assert _bits(got) == _bits(_jax_reference(init, (6, 4), jnp.bfloat16))


def test_conv_kernel_equals_jax_bit_for_bit():
    init = initializers.GlorotUniform(seed=_KEY)
    assert _bits(init((3, 3, 2, 4))) == _bits(_jax_reference(init, (3, 3, 2, 4), jnp.float32))


def test_vector_variance_scaling_uses_size_as_fan_with_jax_random_values():
    key = jax.random.key(_KEY)
    std = (2.0 / 6) ** 0.5
    expected = {
        "he_uniform": jax.random.uniform(key, (6,), jnp.float32, -(3**0.5) * std, 3**0.5 * std),
        "he_normal": std / 0.87962566 * jax.random.truncated_normal(key, -2.0, 2.0, (6,)),
    }
    for name, ref in expected.items():
        got = type(initializers.get(name))(seed=_KEY)((6,))
        assert _bits(got) == _bits(ref)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int32])
def test_constant_initializers_equal_jnp_full(dtype):
    for init, value in [
        (initializers.Zeros(), 0),
        (initializers.Ones(), 1),
        (initializers.Constant(0.1), 0.1),
    ]:
        got = init((2, 3), dtype)
        assert isinstance(got, jax.Array)
        assert _bits(got) == _bits(jnp.full((2, 3), value, dtype))


def test_constant_inside_jit_is_traced():
    out = jax.jit(lambda x: x + initializers.Constant(2.0)((3,)))(jnp.ones(3))
    np.testing.assert_array_equal(out, [3.0, 3.0, 3.0])
