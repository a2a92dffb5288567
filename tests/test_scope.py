"""The binding scope: what code inside sees, what it hands back, snapshots and donation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod import _scope


def test_code_inside_sees_bound_values_and_the_variable_keeps_its_own():
    v = jmod.Variable(1.0)
    with _scope.Scope([(v, jnp.asarray(5.0))]) as scope:
        assert float(v) == 5.0
        v.assign_add(1.0)
        assert float(v.value) == 6.0
    assert float(v) == 1.0
    assert [(var is v, float(x)) for var, x in scope.assignments()] == [(True, 6.0)]


def test_a_lenient_scope_reads_through_once_and_keeps_what_it_read():
    v = jmod.Variable(1.0)
    with _scope.Scope() as scope:
        first = float(v)
        _scope.commit([(v, jnp.asarray(7.0))])  # another writer, outside the computation
        assert float(v) == first == 1.0  # the computation's view does not change under it
    assert float(v) == 7.0 and scope.assignments() == []


def test_a_strict_scope_refuses_unknown_variables():
    known, other = jmod.Variable(1.0), jmod.Variable(2.0)
    with _scope.Scope([(known, jnp.asarray(1.0))], strict=True):
        with pytest.raises(_scope.Capture) as caught:
            float(other)
    assert caught.value.variable is other


def test_inner_scopes_read_and_write_through_their_parent():
    v = jmod.Variable(1.0)
    with _scope.Scope([(v, jnp.asarray(3.0))]) as outer:
        with _scope.Scope() as inner:
            assert float(v) == 3.0
            v.assign(4.0)
        assert float(v) == 3.0  # the inner assignment is handed back, not applied
        for var, value in inner.assignments():
            _scope.write(var, value)
        assert float(v) == 4.0
    assert float(v) == 1.0 and len(outer.assignments()) == 1


def test_variables_created_inside_are_recorded_up_to_the_nearest_trace():
    with _scope.Scope(strict=True) as trace:
        with _scope.Scope() as inner:
            w = jmod.Variable(jnp.ones(2))
    assert inner.created == [w] and trace.created == [w]
    # Created under a trace with a traced value: the object holds no tracer.
    seen = {}

    def f(x):
        with _scope.Scope(strict=True) as s:
            seen["var"] = jmod.Variable(x * 2)
            seen["inside"] = seen["var"].value
        return s.values[id(seen["var"])]

    out = jax.jit(f)(jnp.ones(3))
    assert isinstance(seen["var"]._value, jax.ShapeDtypeStruct)
    np.testing.assert_array_equal(np.asarray(out), 2 * np.ones(3))


def test_variables_rebuilt_by_jax_are_their_own_state():
    v = jmod.Variable(jnp.arange(3.0))
    doubled = jax.tree.map(lambda x: x * 2, v)
    with _scope.Scope(strict=True):  # a rebuilt variable is nobody's: no Capture
        assert doubled.value.tolist() == [0.0, 2.0, 4.0]
    assert jax.grad(lambda var: jnp.sum(var * var))(v).value.tolist() == [0.0, 2.0, 4.0]


def test_snapshot_values_survive_a_donating_step():
    class Counter(jmod.Module):
        def __init__(self):
            super().__init__()
            self.n = jmod.Variable(jnp.zeros(4))

        @jmod.jit(donate_state=True)
        def step(self):
            self.n.assign(self.n + 1.0)

    c = Counter()
    c.step()
    values, ticket = _scope.snapshot([c.n])
    c.step()
    c.step()
    assert values[0].tolist() == [1.0] * 4  # copied, not donated, while pinned
    _scope.unpin(ticket)
    c.step()
    assert c.n.value.tolist() == [4.0] * 4


def test_donation_after_unpinning_copies_nothing():
    x = jnp.ones(3)
    ticket = _scope.pin([x])
    assert _scope.unpinned([x])[0] is not x
    _scope.unpin(ticket)
    assert _scope.unpinned([x])[0] is x


def test_outside_hides_the_active_scope():
    v = jmod.Variable(1.0)
    with _scope.Scope([(v, jnp.asarray(9.0))]):
        with _scope.outside():
            assert _scope.current() is None and float(v) == 1.0
        assert float(v) == 9.0
