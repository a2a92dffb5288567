import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod


def test_set_seed_makes_draws_reproducible():
    jmod.random.set_seed(42)
    a = jmod.random.normal((3,))
    b = jmod.random.uniform((3,), minval=2.0, maxval=3.0)
    jmod.random.set_seed(42)
    np.testing.assert_array_equal(jmod.random.normal((3,)), a)
    np.testing.assert_array_equal(jmod.random.uniform((3,), minval=2.0, maxval=3.0), b)
    assert np.all((np.asarray(b) >= 2.0) & (np.asarray(b) < 3.0))


def test_consecutive_draws_differ():
    jmod.random.set_seed(0)
    assert not np.allclose(jmod.random.normal((4,)), jmod.random.normal((4,)))


def test_normal_mean_and_stddev_are_applied():
    g = jmod.random.Generator(seed=0)
    x = np.asarray(g.normal((20000,), mean=3.0, stddev=2.0))
    assert abs(x.mean() - 3.0) < 0.05
    assert abs(x.std() - 2.0) < 0.05


def test_truncated_normal_stays_within_two_stddevs():
    g = jmod.random.Generator(seed=0)
    x = np.asarray(g.truncated_normal((5000,), stddev=0.5))
    assert np.abs(x).max() <= 1.0 + 1e-6


def test_generator_key_is_state_matching_jax_random():
    g = jmod.random.Generator(seed=7)
    assert [p for p, _ in g.named_variables()] == ["key"]
    key, sub = jax.random.split(jax.random.key(7))
    np.testing.assert_array_equal(g.next_key() == sub, True)
    np.testing.assert_array_equal(g.key.value, jax.random.key_data(key))


def test_generator_under_jit_draws_fresh_numbers_each_call_and_is_reproducible():
    g = jmod.random.Generator(seed=5)

    @jmod.jit
    def draw(gen):
        return gen.normal((2,))

    first, second = draw(g), draw(g)
    assert not np.allclose(first, second)
    g2 = jmod.random.Generator(seed=5)
    eager = [g2.normal((2,)), g2.normal((2,))]
    np.testing.assert_allclose(first, eager[0])
    np.testing.assert_allclose(second, eager[1])
    assert draw.trace_count == 1


def test_integer_uniform():
    g = jmod.random.Generator(seed=0)
    x = g.uniform((100,), minval=0, maxval=5, dtype=jnp.int32)
    assert x.dtype == jnp.int32 and int(x.min()) >= 0 and int(x.max()) < 5


# -- draws of any shape: jax.random's values, no compilation per shape ---------------


def _bits(x):
    x = np.asarray(x)
    return x.dtype, x.shape, x.reshape(-1).view(np.uint8).tobytes()


def _generator_draws(kind, seed, shape, dtype):
    g = jmod.random.Generator(seed=seed)
    if kind == "normal":
        return g.normal(shape, mean=0.5, stddev=0.25, dtype=dtype)
    if kind == "uniform":
        return g.uniform(shape, minval=-0.5, maxval=2.0, dtype=dtype)
    return g.truncated_normal(shape, mean=0.5, stddev=0.25, dtype=dtype)


def _jax_draws(kind, seed, shape, dtype):
    _, key = jax.random.split(jax.random.key(seed))
    if kind == "normal":
        return 0.5 + 0.25 * jax.random.normal(key, shape, dtype)
    if kind == "uniform":
        return jax.random.uniform(key, shape, dtype, -0.5, 2.0)
    return 0.5 + 0.25 * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


@pytest.mark.parametrize(
    "kind, shape, dtype",
    [
        ("normal", (7, 5), jnp.float32),
        ("uniform", (7, 5), jnp.float32),
        ("truncated_normal", (7, 5), jnp.float32),
        ("normal", (3, 2, 4), jnp.bfloat16),
        ("uniform", (300, 250), jnp.float32),  # more than one chunk
    ],
)
def test_draws_are_jax_random_of_the_exact_shape_bit_for_bit(kind, shape, dtype):
    got = _generator_draws(kind, 3, shape, dtype)
    assert isinstance(got, jax.Array)
    assert _bits(got) == _bits(_jax_draws(kind, 3, shape, dtype))


def test_module_level_draws_are_jax_random_of_the_exact_shape():
    jmod.random.set_seed(9)
    got = [jmod.random.normal((4, 6)), jmod.random.uniform((5,), 1.0, 3.0)]
    key = jax.random.key(9)
    key, first = jax.random.split(key)
    _, second = jax.random.split(key)
    assert _bits(got[0]) == _bits(jax.random.normal(first, (4, 6)))
    assert _bits(got[1]) == _bits(jax.random.uniform(second, (5,), jnp.float32, 1.0, 3.0))


class _Compilations:
    """Counts XLA backend compilations while active (a jax.monitoring listener)."""

    active = None

    def __init__(self):
        self.count = 0

    def __enter__(self):
        _Compilations.active = self
        return self

    def __exit__(self, *exc):
        _Compilations.active = None


def _on_duration(event, seconds, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration" and _Compilations.active:
        _Compilations.active.count += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def test_a_new_shape_compiles_nothing():
    g = jmod.random.Generator(seed=0)
    for kind in ("normal", "uniform", "truncated_normal"):
        getattr(g, kind)((40, 41))  # compiles the chunk program (and key splitting) once
    with _Compilations() as compiled:
        shapes = [(50, 60), (33, 99), (4, 5, 6, 7), (2048,), (300, 250)]
        draws = [getattr(g, kind)(s) for s in shapes for kind in ("normal", "uniform")]
        draws.append(g.truncated_normal((17, 19, 3)))
    assert compiled.count == 0
    assert [d.shape for d in draws[:2]] == [(50, 60), (50, 60)]
    assert np.abs(np.asarray(draws[-1])).max() <= 2.0


def test_with_threefry_partitionable_off_draws_stay_jax_random_of_the_exact_shape():
    # Without the flag the bits of an element depend on the draw's size, so
    # the generator draws the exact shape.
    with jax.threefry_partitionable(False):
        x = jmod.random.Generator(seed=2).uniform((6, 7))
        _, sub = jax.random.split(jax.random.key(2))
        ref = jax.random.uniform(sub, (6, 7))
        longer = jax.random.uniform(sub, (1024,))[:42].reshape(6, 7)
    assert _bits(x) == _bits(ref)
    assert _bits(x) != _bits(longer)


def test_seeding_gives_jax_random_key_without_compiling():
    jmod.random.Generator(seed=0)
    with _Compilations() as compiled:
        generators = [jmod.random.Generator(seed=s) for s in (1, 42, 2**31, 2**32 - 1)]
    assert compiled.count == 0
    for g, seed in zip(generators, (1, 42, 2**31, 2**32 - 1)):
        np.testing.assert_array_equal(g.key.value, jax.random.key_data(jax.random.key(seed)))
    big = jmod.random.Generator(seed=-5)  # outside the host rule: jax.random.key
    np.testing.assert_array_equal(big.key.value, jax.random.key_data(jax.random.key(-5)))


def test_set_seed_before_any_draw_never_uses_os_urandom(monkeypatch):
    # Inside a multi-process mesh an os.urandom key differs per process and cannot be
    # placed; set_seed must make the global generator from the seed directly.
    monkeypatch.setattr(jmod.random, "_global", None)

    def refuse(n):
        raise AssertionError("os.urandom called")

    monkeypatch.setattr(jmod.random.os, "urandom", refuse)
    jmod.random.set_seed(3)
    key = jax.random.key_data(jax.random.key(3))
    assert np.array_equal(np.asarray(jmod.random.get_global_generator().key.value), key)


def test_unseeded_global_generator_agrees_across_processes(monkeypatch):
    monkeypatch.setattr(jmod.random, "_global", None)
    from jax.experimental import multihost_utils

    calls = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(
        multihost_utils, "broadcast_one_to_all", lambda x: calls.append(x) or np.uint32(11)
    )
    generator = jmod.random.get_global_generator()
    assert len(calls) == 1  # the seed came from process 0
    key = jax.random.key_data(jax.random.key(11))
    assert np.array_equal(np.asarray(generator.key.value), key)
