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
