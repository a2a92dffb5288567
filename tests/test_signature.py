import jax
import jax.numpy as jnp

from jmod.signature import Signature


def sig(x_shape, state, trainable=None, versions=None, training=False):
    return Signature(
        {"x": jax.ShapeDtypeStruct(x_shape, jnp.float32), "training": training},
        {p: jax.ShapeDtypeStruct(s, jnp.float32) for p, s in state.items()},
        trainable or {p: True for p in state},
        versions or {"": 1},
    )


def test_explains_argument_shape_and_static_value_changes():
    a = sig((1, 3), {"w": (3, 3)})
    b = sig((2, 3), {"w": (3, 3)}, training=True)
    assert a.explain_change(b) == [
        "argument x: float32[1, 3] -> float32[2, 3]",
        "argument training: False -> True",
    ]


def test_explains_state_added_removed_reshaped_and_frozen():
    a = sig((1, 3), {"w": (3, 3), "b": (3,), "gone": (1,)})
    b = sig(
        (1, 3),
        {"w": (3, 4), "b": (3,), "new": (2,)},
        trainable={"w": True, "b": False, "new": True},
    )
    reasons = a.explain_change(b)
    assert "state: variable w: float32[3, 3] -> float32[3, 4]" in reasons
    assert "state: variable gone removed" in reasons
    assert "state: variable new added (float32[2])" in reasons
    assert "state: variable b trainable -> False" in reasons


def test_explains_module_attribute_changes_when_nothing_else_differs():
    a = sig((1, 3), {"w": (3, 3)}, versions={"": 1, "dropout": 5})
    b = sig((1, 3), {"w": (3, 3)}, versions={"": 1, "dropout": 9})
    assert a.explain_change(b) == ["module attributes changed: dropout"]
