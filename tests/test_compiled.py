import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from tests.guide import MyFlexibleSequentialModule, MySequentialModule


def test_trace_counts_follow_tf_table_for_tensors():
    m = MySequentialModule()
    calls = [
        (jnp.ones((1, 3)), 1),
        (jnp.full((1, 3), 2.0), 1),
        (jnp.ones((2, 3)), 2),
        (jnp.ones((1, 2, 3)), 3),
        (jnp.ones((1, 3)), 3),
    ]
    for x, expected in calls:
        m(x)
        assert m.__call__.trace_count == expected


def test_lists_of_same_shape_trace_once_whatever_the_values():
    m = MySequentialModule()
    m([[2.0, 2.0, 2.0]])
    m([[3.0, 3.0, 3.0]])
    m(jnp.asarray([[2.0, 2.0, 2.0]]))
    assert m.__call__.trace_count == 1
    m([[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]])
    assert m.__call__.trace_count == 2


def test_python_scalars_become_arrays_and_do_not_retrace():
    @jmod.jit
    def f(x, k):
        return x * k

    f(jnp.ones(2), 1.0)
    out = f(jnp.ones(2), 2.0)
    np.testing.assert_allclose(out, [2, 2])
    assert f.trace_count == 1


def test_jit_equals_eager():
    m = MySequentialModule()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    np.testing.assert_allclose(m(x), m.__call__._fn(m, x), rtol=1e-6)


def test_assigned_variables_are_written_back():
    class Counter(jmod.Module):
        def __init__(self):
            super().__init__()
            self.n = jmod.Variable(0.0)
            self.untouched = jmod.Variable(7.0)

        @jmod.jit
        def __call__(self, x):
            self.n.assign_add(x)
            return self.n + self.untouched

    c = Counter()
    assert float(c(1.0)) == 8.0
    assert float(c(2.0)) == 10.0
    assert float(c.n) == 3.0
    before = c.untouched.value
    c(1.0)
    assert c.untouched.value is before  # not written back: not assigned
    assert c.__call__.trace_count == 1


def test_deferred_creation_under_jit_matches_eager():
    jmod.random.set_seed(3)
    compiled = MyFlexibleSequentialModule()
    y_jit = compiled(jnp.ones((2, 3)))
    jmod.random.set_seed(3)
    eager = MyFlexibleSequentialModule()
    y_eager = eager.__call__._fn(eager, jnp.ones((2, 3)))
    np.testing.assert_allclose(y_jit, y_eager, rtol=1e-6)
    assert len(compiled.variables) == 4
    assert all(isinstance(v.value, jax.Array) for v in compiled.variables)
    # Later calls use the created variables as inputs.
    compiled.dense_1.w.assign(jnp.zeros((3, 3)))
    np.testing.assert_allclose(compiled(jnp.ones((2, 3))), jnp.zeros((2, 2)))


def test_exception_while_tracing_leaves_modules_as_before():
    class Fails(jmod.Module):
        def __init__(self):
            super().__init__()
            self.v = jmod.Variable(1.0)
            self.built = False

        @jmod.jit
        def __call__(self, x):
            self.w = jmod.Variable(jnp.ones(3))
            self.built = True
            self.v.assign(self.v * 5)
            raise RuntimeError("boom")

    m = Fails()
    before = dict(m.state())
    with pytest.raises(RuntimeError, match="boom"):
        m(jnp.ones(3))
    assert m.built is False
    assert not hasattr(m, "w")
    assert m.state().keys() == before.keys()
    assert float(m.v) == 1.0
    assert isinstance(m.v.value, jax.Array) and not isinstance(m.v.value, jax.core.Tracer)


def test_free_function_over_modules_and_train_step():
    jmod.random.set_seed(0)
    m = MySequentialModule()
    opt = jmod.Optimizer(m, optax.sgd(0.1))
    x = jnp.ones((4, 3))
    y = jnp.zeros((4, 2))

    def loss_fn(model, x, y):
        return jnp.mean((model(x) - y) ** 2)

    @jmod.jit
    def step(model, opt, x, y):
        loss, grads = jmod.value_and_grad(loss_fn)(model, x, y)
        opt.update(grads)
        return loss

    # Reference: the same step eagerly on a copy of the state.
    ref = MySequentialModule()
    ref.load_state(m.state())
    ref_opt = jmod.Optimizer(ref, optax.sgd(0.1))
    losses = [float(step(m, opt, x, y)) for _ in range(3)]
    ref_losses = []
    for _ in range(3):
        loss, grads = jmod.value_and_grad(
            lambda mm, x, y: jnp.mean((mm.__call__._fn(mm, x) - y) ** 2)
        )(ref, x, y)
        ref_opt.update(grads)
        ref_losses.append(float(loss))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert step.trace_count == 1
    assert int(opt.iterations) == 3


def test_random_generator_is_threaded_through_jit():
    class Noisy(jmod.Module):
        @jmod.jit
        def __call__(self, x):
            return x + jmod.random.normal(x.shape)

    jmod.random.set_seed(1)
    m = Noisy()
    a, b = m(jnp.zeros(3)), m(jnp.zeros(3))
    assert not np.allclose(a, b)
    assert m.__call__.trace_count == 1
    jmod.random.set_seed(1)
    m2 = Noisy()
    np.testing.assert_allclose(m2(jnp.zeros(3)), a)


def test_static_python_values_are_part_of_the_signature():
    @jmod.jit
    def f(x, training=False):
        return x * 2 if training else x

    np.testing.assert_allclose(f(jnp.ones(2), training=True), [2, 2])
    np.testing.assert_allclose(f(jnp.ones(2), training=False), [1, 1])
    f(jnp.ones(2), training=True)
    assert f.trace_count == 2


def test_static_argnames_keep_ints_static():
    @jmod.jit(static_argnames="n")
    def power(x, n):
        for _ in range(n - 1):
            x = x * x
        return x

    assert float(power(jnp.asarray(2.0), 3)) == 16.0
    assert float(power(jnp.asarray(2.0), n=2)) == 4.0


def test_retrace_reasons_name_the_argument_and_the_state():
    m = MySequentialModule()
    m(jnp.ones((1, 3)))
    m(jnp.ones((2, 3)))
    assert m.__call__.retrace_reasons[-1] == ["argument x: float32[1, 3] -> float32[2, 3]"]
    m.dense_1.b = jmod.Variable(jnp.zeros(3, jnp.float32), name="b")
    m.dense_1.extra = jmod.Variable(0.0)
    m(jnp.ones((2, 3)))
    assert any("dense_1/extra added" in r for r in m.__call__.retrace_reasons[-1])


def test_trainable_flip_retraces_compiled_gradients():
    class Lin(jmod.Module):
        def __init__(self):
            super().__init__()
            self.a = jmod.Variable(2.0)
            self.b = jmod.Variable(3.0)

    @jmod.jit
    def grads(m):
        return jmod.grad(lambda m: m.a * m.b)(m)

    m = Lin()
    assert set(grads(m)) == {"a", "b"}
    m.b.trainable = False
    assert set(grads(m)) == {"a"}


def test_signatures_lower_and_jaxpr():
    m = MySequentialModule(name="the_model")
    m(jnp.ones((1, 3)))
    sig = m.__call__.signatures[0]
    assert sig.arguments["x"].shape == (1, 3)
    assert list(sig.state) == ["dense_1/b", "dense_1/w", "dense_2/b", "dense_2/w"]
    jaxpr = m.__call__.jaxpr(jnp.ones((1, 3)))
    assert [tuple(v.aval.shape) for v in jaxpr.jaxpr.invars] == [(3,), (3, 3), (2,), (3, 2), (1, 3)]
    assert m.__call__.state_paths(jnp.ones((1, 3)))[1] == "dense_1/w"
    text = m.__call__.lower(jnp.ones((1, 3))).as_text()
    assert "dot_general" in text
    stacks = {str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns}
    assert "the_model/dense_1" in stacks
    assert m.__call__.trace_count == 1


def test_lower_before_first_call_does_not_build():
    m = MyFlexibleSequentialModule()
    m.__call__.lower(jnp.ones((1, 3)))
    assert m.variables == ()
    m(jnp.ones((1, 3)))
    assert len(m.variables) == 4


def test_unhashable_static_argument_is_a_clear_error():
    @jmod.jit
    def f(x, opts):
        return x

    with pytest.raises(jmod.TraceError, match="set"):
        f(jnp.ones(1), {1, 2})


def test_nested_jit_calls_write_back_through_the_outer_trace():
    class Inner(jmod.Module):
        def __init__(self):
            super().__init__()
            self.n = jmod.Variable(0.0)

        @jmod.jit
        def bump(self):
            self.n.assign_add(1.0)
            return self.n

    class Outer(jmod.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        @jmod.jit
        def __call__(self):
            self.inner.bump()
            return self.inner.bump()

    o = Outer()
    assert float(o()) == 2.0
    assert float(o()) == 4.0
    assert float(o.inner.n) == 4.0


def test_donate_state_train_step_matches_plain():
    def run(donate):
        jmod.random.set_seed(0)
        m = MySequentialModule()
        opt = jmod.Optimizer(m, optax.adam(0.01))

        @jmod.jit(donate_state=donate)
        def step(model, opt, x):
            loss, grads = jmod.value_and_grad(lambda mm, x: jnp.sum(mm(x) ** 2))(model, x)
            opt.update(grads)
            return loss

        for _ in range(3):
            step(m, opt, jnp.ones((2, 3)))
        return m.state()

    a, b = run(False), run(True)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)


def test_lowering_first_on_a_fresh_process_global_generator_leaves_no_tracer():
    code = """
import jax, jax.numpy as jnp, jmod
from tests.guide import MyFlexibleSequentialModule
m = MyFlexibleSequentialModule()
m.__call__.jaxpr(jnp.ones((1, 3)))
m.__call__.lower(jnp.ones((1, 3)))
print(m(jnp.ones((1, 3))).shape, len(m.variables))
"""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(1, 2) 4"


def test_two_compiled_functions_sharing_variables_see_each_others_writes():
    class Acc(jmod.Module):
        def __init__(self):
            super().__init__()
            self.total = jmod.Variable(0.0)

        @jmod.jit
        def add(self, x):
            self.total.assign_add(x)
            return self.total

        @jmod.jit
        def read(self, x):
            return self.total + x * 0

    a = Acc()
    z = jnp.zeros(())
    assert float(a.read(z)) == 0.0
    a.add(jnp.ones(()))
    assert float(a.read(z)) == 1.0
    a.total.assign(5.0)
    assert float(a.read(z)) == 5.0
    assert float(a.add(jnp.ones(()))) == 6.0
