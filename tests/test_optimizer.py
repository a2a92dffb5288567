import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from tests.guide import FlexibleDenseModule


def make():
    m = jmod.Module()
    m.w = jmod.Variable([1.0, -2.0])
    m.b = jmod.Variable(0.5)
    return m


def test_update_matches_optax_by_hand():
    m = make()
    opt = jmod.Optimizer(m, optax.adam(0.1))
    params = {"b": jnp.asarray(0.5), "w": jnp.asarray([1.0, -2.0])}
    tx = optax.adam(0.1)
    state = tx.init(params)
    for _ in range(3):
        grads = jmod.grad(lambda m: jnp.sum(m.w**2) + m.b**2)(m)
        opt.update(grads)
        g = {"b": 2 * params["b"], "w": 2 * params["w"]}
        upd, state = tx.update(g, state, params)
        params = optax.apply_updates(params, upd)
    np.testing.assert_allclose(m.w, params["w"], rtol=1e-6)
    np.testing.assert_allclose(m.b, params["b"], rtol=1e-6)
    assert int(opt.iterations) == 3


def test_optimizer_state_is_variables_with_paths():
    opt = jmod.Optimizer(make(), optax.adam(0.1))
    paths = [p for p, _ in opt.named_variables()]
    assert "slots/0/mu/w" in paths and "slots/0/nu/b" in paths and "iterations" in paths
    assert all(not v.trainable for v in opt.variables)
    # The model's variables are not the optimizer's.
    assert "w" not in paths


def test_frozen_variable_is_left_unchanged():
    m = make()
    opt = jmod.Optimizer(m, optax.sgd(0.1))
    m.b.trainable = False
    opt.update(jmod.grad(lambda m: jnp.sum(m.w) + m.b)(m))
    assert float(m.b) == 0.5
    np.testing.assert_allclose(m.w, [0.9, -2.1])


def test_unknown_gradient_path_is_an_error():
    opt = jmod.Optimizer(make(), optax.sgd(0.1))
    with pytest.raises(jmod.OptimizerError, match="not built for.*'zzz'"):
        opt.update({"zzz": jnp.zeros(())})


def test_deferred_model_builds_optimizer_on_first_update():
    m = FlexibleDenseModule(out_features=2)
    opt = jmod.Optimizer(m, optax.sgd(0.1))
    assert not opt.built
    opt.update(jmod.grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(m))
    assert opt.built and int(opt.iterations) == 1


def test_not_a_transformation_is_an_error():
    with pytest.raises(jmod.OptimizerError, match="GradientTransformation"):
        jmod.Optimizer(make(), "adam")
