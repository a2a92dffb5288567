import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jmod
from tests.guide import FlexibleDenseModule, MySequentialModule, SequentialModule

floats = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=20, deadline=None)
@given(arrays(np.float32, (3, 3), elements=floats), arrays(np.float32, (2, 3), elements=floats))
def test_load_state_of_state_is_identity_and_functional_call_equals_call(w, x):
    m = SequentialModule()
    m.dense_1.w.assign(w)
    state = m.state()
    other = SequentialModule()
    other.load_state(state)
    for k, v in other.state().items():
        np.testing.assert_array_equal(v, state[k])
    out, new_state = jmod.functional_call(other, state, x)
    np.testing.assert_allclose(out, m(x), rtol=1e-6)
    assert new_state.keys() == state.keys()


@settings(max_examples=15, deadline=None)
@given(arrays(np.float32, (4, 3), elements=floats))
def test_jit_equals_eager_property(x):
    m = MySequentialModule()
    np.testing.assert_allclose(m(x), m.__call__._fn(m, jnp.asarray(x)), rtol=1e-5, atol=1e-5)


def test_functional_call_does_not_mutate_and_returns_new_state():
    class Acc(jmod.Module):
        def __init__(self):
            super().__init__()
            self.total = jmod.Variable(0.0)

        def __call__(self, x):
            self.total.assign_add(x)
            return self.total * 1.0

    m = Acc()
    out, new = jmod.functional_call(m, {"total": 5.0}, 2.0)
    assert float(out) == 7.0 and float(new["total"]) == 7.0
    assert float(m.total) == 0.0


def test_composes_with_grad_vmap_scan_and_jax_jit():
    m = SequentialModule()
    state = m.state()
    x = jnp.ones((5, 3))

    def loss(s, x):
        return jnp.sum(jmod.functional_call(m, s, x)[0])

    g = jax.jit(jax.grad(loss))(state, x)
    assert g.keys() == state.keys()
    per_example = jax.vmap(lambda xi: jmod.functional_call(m, state, xi[None])[0])(x)
    assert per_example.shape == (5, 1, 2)

    def body(s, xi):
        out, s = jmod.functional_call(m, s, xi[None])
        return s, out

    _, outs = jax.lax.scan(body, state, x)
    np.testing.assert_allclose(outs[:, 0], m(x), rtol=1e-6)


def test_wrong_state_is_a_clear_error():
    m = SequentialModule()
    with pytest.raises(jmod.ModuleError, match="missing"):
        jmod.functional_call(m, {}, jnp.ones((1, 3)))


def test_deferred_build_under_transformation_is_refused_and_rolled_back():
    m = FlexibleDenseModule(out_features=2)
    with pytest.raises(jmod.ModuleError, match="build it first"):
        jax.jit(lambda x: jmod.functional_call(m, {}, x)[0])(jnp.ones((1, 3)))
    assert m.variables == () and m.is_built is False


class NoisyScale(jmod.Module):
    def __init__(self):
        super().__init__()
        self.k = jmod.Variable(1.0)

    def __call__(self, x):
        return self.k * x + jmod.random.normal(x.shape)


def test_global_generator_keeps_no_tracer_after_functional_call_under_jax_jit():
    m = NoisyScale()
    jax.jit(lambda s, x: jmod.functional_call(m, s, x)[0])(m.state(), jnp.ones(2))
    key = jmod.random.get_global_generator().key.value
    assert isinstance(key, jax.Array) and not isinstance(key, jax.core.Tracer)
    jmod.random.normal((2,))  # still usable


def test_functional_call_inside_jmod_jit_threads_the_global_generator():
    m = NoisyScale()

    @jmod.jit
    def f(x):
        return jmod.functional_call(m, {"k": 2.0}, x)[0]

    a, b = f(jnp.zeros(2)), f(jnp.zeros(2))
    assert not np.allclose(a, b)
    assert f.trace_count == 1
