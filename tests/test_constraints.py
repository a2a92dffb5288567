"""jmod.constraints against NumPy, their configs, and their application after optimizer
updates (Optimizer.update and fit), as Keras applies them."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from jmod import constraints
from jmod.errors import SerializationError
from tests.layer_checks import numpy_initializer, run_docstring_examples

W = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32) * 2


def _norms(w, axis=0):
    return np.sqrt((w.astype(np.float64) ** 2).sum(axis=axis, keepdims=True))


CASES = [
    ("max_norm", lambda w: w * np.clip(_norms(w), 0, 2.0) / (1e-7 + _norms(w))),
    ("non_neg", lambda w: np.where(w >= 0, w, 0)),
    ("unit_norm", lambda w: w / (1e-7 + _norms(w))),
    ("min_max_norm", lambda w: w * np.clip(_norms(w), 0.0, 1.0) / (1e-7 + _norms(w))),
]


@pytest.mark.parametrize("name, reference", CASES, ids=[c[0] for c in CASES])
def test_constraint_matches_numpy(name, reference):
    con = constraints.get(name)
    np.testing.assert_allclose(np.asarray(con(jnp.asarray(W))), reference(W), rtol=1e-5, atol=1e-6)
    clone = constraints.get(constraints.serialize(con))
    assert type(clone) is type(con) and clone.get_config() == con.get_config()


def test_axis_and_rate():
    con = constraints.MinMaxNorm(min_value=3.0, max_value=4.0, rate=0.5, axis=1)
    n = _norms(W, 1)
    ref = W * (0.5 * np.clip(n, 3.0, 4.0) + 0.5 * n) / (1e-7 + n)
    np.testing.assert_allclose(np.asarray(con(jnp.asarray(W))), ref, rtol=1e-5)
    keras_config = {
        "module": "keras.constraints",
        "class_name": "MaxNorm",
        "config": {"max_value": 3, "axis": [0, 1]},
        "registered_name": None,
    }
    con = constraints.get(keras_config)
    assert np.linalg.norm(np.asarray(con(jnp.asarray(W)))) == pytest.approx(3.0, rel=1e-5)


@pytest.mark.parametrize(
    "value, match",
    [
        ("max_nrom", "unknown constraint 'max_nrom'"),
        (3, "got int"),
        ({"class_name": "Nope"}, "unknown constraint class"),
    ],
)
def test_bad_identifiers(value, match):
    with pytest.raises(SerializationError, match=match):
        constraints.get(value)
    with pytest.raises(SerializationError, match="MinMaxNorm: min_value"):
        constraints.MinMaxNorm(2.0, 1.0)


def test_optimizer_update_applies_the_layer_constraints():
    layer = jmod.layers.Dense(
        3,
        kernel_constraint=constraints.MaxNorm(0.5),
        bias_constraint="non_neg",
        kernel_initializer=numpy_initializer(1),
    )
    layer(W)
    opt = jmod.Optimizer(layer, optax.sgd(1.0))
    grads = jmod.grad(lambda m: jnp.sum(m(W) ** 2))(layer)
    expected_kernel = np.asarray(layer.kernel.value) - np.asarray(grads["kernel"])
    expected_bias = np.asarray(layer.bias.value) - np.asarray(grads["bias"])
    opt.update(grads)
    np.testing.assert_allclose(
        np.asarray(layer.kernel.value),
        expected_kernel
        * np.clip(_norms(expected_kernel), 0, 0.5)
        / (1e-7 + _norms(expected_kernel)),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(layer.bias.value), np.maximum(expected_bias, 0), atol=1e-6
    )


def test_fit_keeps_the_constraint_under_jit():
    model = jmod.Sequential(
        [
            jmod.layers.Dense(8, activation="relu", kernel_constraint="unit_norm"),
            jmod.layers.Dense(1, kernel_constraint="non_neg"),
        ]
    )
    model.compile(optimizer=optax.adam(0.1), loss="mse")
    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    model.fit(x, x.sum(1, keepdims=True), batch_size=16, epochs=2, verbose=0)
    first, second = model.layers
    np.testing.assert_allclose(_norms(np.asarray(first.kernel.value)), 1.0, rtol=1e-5)
    assert (np.asarray(second.kernel.value) >= 0).all()
    assert first.get_config()["kernel_constraint"] == {
        "class_name": "UnitNorm",
        "config": {"axis": 0},
    }


def test_docstring_examples_run():
    run_docstring_examples(constraints)
