import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from tests.guide import FlexibleDenseModule, SequentialModule


def test_grads_are_keyed_by_path_and_match_hand_math():
    m = jmod.Module()
    m.w = jmod.Variable([1.0, 2.0])
    m.frozen = jmod.Variable(3.0, trainable=False)
    x = jnp.asarray([3.0, 4.0])
    loss, grads = jmod.value_and_grad(lambda m, x: jnp.sum(m.w * x) * m.frozen)(m, x)
    assert float(loss) == (3 + 8) * 3
    assert set(grads) == {"w"}
    np.testing.assert_allclose(grads["w"], np.asarray(x) * 3)


def test_frozen_variable_gets_no_gradient_until_unfrozen():
    m = SequentialModule()
    m.dense_1.w.trainable = False
    grads = jmod.grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(m)
    assert "dense_1/w" not in grads and "dense_2/w" in grads
    m.dense_1.w.trainable = True
    assert "dense_1/w" in jmod.grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(m)


def test_grad_matches_finite_differences():
    jmod.random.set_seed(0)
    m = SequentialModule()
    x = jnp.asarray([[0.5, -1.0, 2.0]])

    def loss(m):
        return jnp.sum(m(x) ** 2)

    grads = jmod.grad(loss)(m)
    eps = 1e-3
    w = np.asarray(m.dense_2.w.value).copy()
    w[0, 0] += eps
    up = m.state() | {"dense_2/w": w}
    w[0, 0] -= 2 * eps
    down = m.state() | {"dense_2/w": w}
    fd = (
        float(jmod.functional_call(m, up, x)[0].__pow__(2).sum())
        - float(jmod.functional_call(m, down, x)[0].__pow__(2).sum())
    ) / (2 * eps)
    assert abs(float(grads["dense_2/w"][0, 0]) - fd) < 1e-2


def test_non_trainable_assignments_inside_are_kept():
    m = jmod.Module()
    m.w = jmod.Variable(2.0)
    m.stat = jmod.Variable(0.0, trainable=False)

    def loss(m):
        m.stat.assign(m.w * 10)
        return m.w**2

    grads = jmod.grad(loss)(m)
    assert float(grads["w"]) == 4.0
    assert float(m.stat) == 20.0
    assert float(m.w) == 2.0


def test_has_aux_returns_aux():
    m = jmod.Module()
    m.w = jmod.Variable(2.0)
    (loss, aux), grads = jmod.value_and_grad(lambda m: (m.w**2, "hi"), has_aux=True)(m)
    assert aux == "hi" and float(grads["w"]) == 4.0


def test_deferred_build_inside_grad_gets_gradients():
    m = FlexibleDenseModule(out_features=2)
    grads = jmod.grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(m)
    assert set(grads) == {"b", "w"}


def test_bad_target_is_a_clear_error():
    with pytest.raises(jmod.ModuleError, match="Module or Variable"):
        jmod.grad(lambda x: x)(3.0)
