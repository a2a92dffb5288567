import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from tests.guide import FlexibleDenseModule, SequentialModule, SimpleModule


def names(variables):
    return [v.name for v in variables]


def test_simple_module_call_and_collections():
    m = SimpleModule(name="simple")
    assert float(m(jnp.asarray(5.0))) == 30.0
    assert isinstance(m.variables, tuple)
    assert names(m.trainable_variables) == ["train_me"]
    assert names(m.variables) == ["train_me", "do_not_train_me"]
    assert names(m.non_trainable_variables) == ["do_not_train_me"]


def test_flipping_trainable_moves_a_variable_between_collections():
    m = SimpleModule()
    m.a_variable.trainable = False
    assert m.trainable_variables == ()
    assert len(m.non_trainable_variables) == 2


def test_default_name_is_snake_case_class_name_not_unique():
    m = SequentialModule()
    assert m.name == "sequential_module"
    assert [s.name for s in m.submodules] == ["dense", "dense"]


def test_sequential_module_orders_b_before_w():
    m = SequentialModule()
    assert [(p, v.shape) for p, v in m.named_variables()] == [
        ("dense_1/b", (3,)),
        ("dense_1/w", (3, 3)),
        ("dense_2/b", (2,)),
        ("dense_2/w", (3, 2)),
    ]
    assert len(m.submodules) == 2


def test_order_is_sorted_attribute_name_not_assignment_order():
    m = jmod.Module()
    m.z = jmod.Variable(1.0, name="z")
    m.a = jmod.Variable(1.0, name="a")
    m.m = jmod.Variable(1.0, name="m")
    assert names(m.variables) == ["a", "m", "z"]


class Leaf(jmod.Module):
    def __init__(self, tag):
        super().__init__(name=f"leaf_{tag}")
        self.v = jmod.Variable(0.0, name=f"v_{tag}")


def test_containers_shared_objects_and_order_match_tf_module():
    m = jmod.Module()
    shared = jmod.Variable(0.0, name="shared")
    shared_leaf = Leaf("shared_leaf")
    m.adict = {"y": Leaf("dy"), "b": Leaf("db")}
    m.s1 = shared
    m.s2 = shared
    m.shared_leaf = shared_leaf
    m.shared_leaf_again = shared_leaf
    m.tup = (jmod.Variable(0.0, name="t0"), jmod.Variable(0.0, name="t1"))
    m.zlist = [Leaf("l0"), Leaf("l1")]
    assert names(m.variables) == [
        "shared",
        "t0",
        "t1",
        "v_db",
        "v_dy",
        "v_shared_leaf",
        "v_l0",
        "v_l1",
    ]
    assert len(m.submodules) == 5
    paths = [p for p, _ in m.named_variables()]
    assert paths[:3] == ["s1", "tup/0", "tup/1"]
    assert "adict/b/v" in paths and "zlist/1/v" in paths


def test_submodules_breadth_first_variables_depth_first():
    class Mid(jmod.Module):
        def __init__(self, tag):
            super().__init__(name=f"mid_{tag}")
            self.mv = jmod.Variable(0.0, name=f"mv_{tag}")
            self.inner = Leaf(f"inner_{tag}")
            self.inner.v.name = f"iv_{tag}"

    top = jmod.Module()
    top.b_mid = Mid("b")
    top.a_mid = Mid("a")
    assert [s.name for s in top.submodules] == ["mid_a", "mid_b", "leaf_inner_a", "leaf_inner_b"]
    assert names(top.variables) == ["mv_a", "iv_a", "mv_b", "iv_b"]


def test_cycles_do_not_hang():
    a, b = jmod.Module(name="a"), jmod.Module(name="b")
    a.child = b
    b.parent = a
    b.v = jmod.Variable(1.0)
    lst = []
    lst.append(lst)
    a.loop = lst
    assert len(a.variables) == 1
    assert a.submodules == (b,)


def test_deferred_creation_has_no_variables_before_first_call():
    m = FlexibleDenseModule(out_features=3)
    assert m.variables == ()
    m(jnp.ones((2, 3)))
    assert [v.shape for v in m.variables] == [(3,), (3, 3)]


def test_in_place_list_append_is_collected():
    m = jmod.Module()
    m.layers = []
    _ = m.variables
    m.layers.append(Leaf("x"))
    assert names(m.variables) == ["v_x"]


def test_state_and_load_state_round_trip():
    m = SequentialModule()
    state = m.state()
    assert list(state) == ["dense_1/b", "dense_1/w", "dense_2/b", "dense_2/w"]
    other = SequentialModule()
    other.load_state(state)
    x = jnp.ones((1, 3))
    np.testing.assert_allclose(other(x), m(x))


def test_load_state_strict_reports_missing_and_unexpected():
    m = SequentialModule()
    state = m.state()
    state["dense_3/w"] = state.pop("dense_1/w")
    with pytest.raises(
        jmod.ModuleError, match=r"missing \['dense_1/w'\].*unexpected \['dense_3/w'\]"
    ):
        m.load_state(state)


def test_load_state_shape_mismatch_names_the_path():
    m = SequentialModule()
    state = m.state()
    state["dense_1/b"] = jnp.zeros(5)
    with pytest.raises(jmod.ModuleError, match="dense_1/b"):
        m.load_state(state)


def test_on_variable_created_fires_for_deferred_build_in_submodule():
    m = jmod.Module()
    m.flex = FlexibleDenseModule(out_features=2)
    got = {}
    jmod.module.on_variable_created(m, {"flex/w": lambda v: got.setdefault("w", v)})
    assert got == {}
    m.flex(jnp.ones((1, 3)))
    assert got["w"] is m.flex.w


def test_bad_name_is_an_error():
    with pytest.raises(jmod.ModuleError):
        jmod.Module(name="")
