import importlib

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from tests import layer_checks

# `jmod.remat` is the function; its module is jmod.remat in sys.modules.
remat_module = importlib.import_module("jmod.remat")


def primitives(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out.extend(primitives(sub))
    return out


def remat_count(jaxpr):
    return sum(name in ("checkpoint", "remat2") for name in primitives(jaxpr))


class MLP(jmod.Module):
    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = jmod.Variable(rng.normal(size=(3, 5)).astype("float32"))
        self.w2 = jmod.Variable(rng.normal(size=(5, 2)).astype("float32"))

    def __call__(self, x):
        return jnp.tanh(jnp.sin(x @ self.w1) @ self.w2)


def numpy_grads(m, x):
    # d/dw of sum(tanh(sin(x w1) w2)), by hand.
    w1, w2 = np.asarray(m.w1), np.asarray(m.w2)
    a = x @ w1
    s = np.sin(a)
    t = np.tanh(s @ w2)
    dz = 1 - t**2
    dw2 = s.T @ dz
    ds = dz @ w2.T
    dw1 = x.T @ (ds * np.cos(a))
    return {"w1": dw1, "w2": dw2}


X = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")


@pytest.mark.parametrize("policy", ["full", "dots", "dots_with_no_batch_dims"])
def test_gradients_of_a_rematerialized_call_match_numpy(policy):
    m = MLP()
    fn = jmod.remat(lambda m, x: jnp.sum(m(x)), policy=policy)
    loss, grads = jmod.value_and_grad(fn)(m, X)
    expected = numpy_grads(m, X)
    np.testing.assert_allclose(loss, np.sum(np.tanh(np.sin(X @ m.w1) @ m.w2)), rtol=1e-5)
    for k in expected:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-4, atol=1e-5)


def test_jaxpr_has_the_remat_equation_and_the_policy():
    m = MLP()
    plain = jmod.jit(lambda m, x: jmod.grad(lambda m: jnp.sum(m(x)))(m))
    wrapped = jmod.remat(lambda m, x: jnp.sum(m(x)), policy="dots")
    rematted = jmod.jit(lambda m, x: jmod.grad(lambda m: wrapped(m, x))(m))
    assert remat_count(plain.jaxpr(m, X).jaxpr) == 0
    jaxpr = rematted.jaxpr(m, X).jaxpr
    assert remat_count(jaxpr) == 1
    assert "Dots" in str(jaxpr)  # the policy reached jax.checkpoint
    for k, g in rematted(m, X).items():
        np.testing.assert_allclose(g, numpy_grads(m, X)[k], rtol=1e-4, atol=1e-5)


def test_decorated_method_and_module_wrapper():
    class Block(jmod.Module):
        def __init__(self):
            super().__init__()
            self.inner = MLP()

        @jmod.remat(policy="full")
        def __call__(self, x):
            return self.inner(x)

    block = Block()
    grads = jmod.grad(lambda b: jnp.sum(b(X)))(block)
    expected = numpy_grads(block.inner, X)
    np.testing.assert_allclose(grads["inner/w1"], expected["w1"], rtol=1e-4, atol=1e-5)
    assert (
        remat_count(jmod.jit(lambda b, x: jmod.grad(lambda b: b(x).sum())(b)).jaxpr(block, X).jaxpr)
        == 1
    )

    wrapper = jmod.remat(MLP(), policy="dots")
    assert isinstance(wrapper, remat_module.Remat)
    assert [p for p, _ in wrapper.named_variables()] == ["module/w1", "module/w2"]
    grads = jmod.grad(lambda w: jnp.sum(w(X)))(wrapper)
    np.testing.assert_allclose(
        grads["module/w2"], numpy_grads(wrapper.module, X)["w2"], rtol=1e-4, atol=1e-5
    )


def test_unbuilt_layer_builds_on_the_first_call_then_rematerializes():
    layer = jmod.remat(
        jmod.layers.Dense(2, kernel_initializer=layer_checks.numpy_initializer(0)), policy="full"
    )
    fn = jmod.jit(lambda m, x: jmod.grad(lambda m: jnp.sum(m(x) ** 2))(m))
    grads = fn(layer, X)  # builds inside the first trace
    assert layer.module.built and sorted(grads) == ["module/bias", "module/kernel"]
    k, b = np.asarray(layer.module.kernel), np.asarray(layer.module.bias)
    y = X @ k + b
    np.testing.assert_allclose(fn(layer, X)["module/kernel"], X.T @ (2 * y), rtol=1e-4)
    assert remat_count(fn.jaxpr(layer, X).jaxpr) == 1


def test_state_updates_and_random_draws_come_out_of_the_checkpoint():
    class Noisy(jmod.layers.Layer):
        def __init__(self):
            super().__init__()
            self.norm = jmod.layers.BatchNormalization()
            self.drop = jmod.layers.Dropout(0.5)

        def call(self, x, training=None):
            return self.drop(self.norm(x))

    a, b = Noisy(), Noisy()
    a(X)
    b(X)
    wrapped = jmod.remat(a)
    step = jmod.jit(lambda m, x: jmod.grad(lambda m: jnp.sum(m(x, training=True)))(m))
    jmod.random.set_seed(7)
    ga = step(wrapped, X)
    jmod.random.set_seed(7)
    gb = step(b, X)
    np.testing.assert_allclose(a.norm.moving_mean, b.norm.moving_mean, rtol=1e-6)
    assert not np.allclose(a.norm.moving_mean, 0)
    np.testing.assert_allclose(ga["module/norm/gamma"], gb["norm/gamma"], rtol=1e-5, atol=1e-6)
    # The generator's key advanced as without remat: the next draws differ.
    assert not np.allclose(step(wrapped, X)["module/norm/gamma"], ga["module/norm/gamma"])


def test_bad_policies_are_clear_errors():
    with pytest.raises(jmod.ModuleError, match="unknown remat policy 'some'"):
        jmod.remat(MLP(), policy="some")
    with pytest.raises(jmod.ModuleError, match="policy must name"):
        jmod.remat(MLP(), policy=None)
    with pytest.raises(jmod.ModuleError, match="module or a function, got int"):
        jmod.remat(3)
    assert remat_module.resolve_policy(jax.checkpoint_policies.nothing_saveable)[0]


def test_docstring_examples():
    layer_checks.run_docstring_examples(remat_module)
