"""Layer weights in Keras' order (get_weights/set_weights/weights), activity regularizers."""

import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError

X = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)


def test_batch_normalization_weights_are_gamma_beta_mean_variance():
    bn = jmod.layers.BatchNormalization()
    bn(X)
    assert [v.name for v in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    values = [np.full(3, i, np.float32) for i in (2.0, 3.0, 4.0, 5.0)]
    bn.set_weights(values)
    assert float(bn.gamma.value[0]) == 2.0 and float(bn.beta.value[0]) == 3.0
    # Checkpoint paths and `variables` keep jmod's sorted order.
    assert [p for p, _ in bn.named_variables()] == [
        "beta",
        "gamma",
        "moving_mean",
        "moving_variance",
    ]


def test_nested_layers_in_assignment_order_and_seed_keys_left_out():
    model = jmod.Sequential(
        [jmod.layers.Dense(2), jmod.layers.Dropout(0.5, seed=1), jmod.layers.LayerNormalization()]
    )
    model(X)
    assert [v.name for v in model.weights] == ["kernel", "bias", "gamma", "beta"]
    assert len(model.get_weights()) == 4


def test_set_weights_refuses_wrong_counts_and_shapes():
    layer = jmod.layers.Dense(2)
    layer(X)
    with pytest.raises(LayerCallError, match="got 1 arrays.*2 weights"):
        layer.set_weights([np.zeros((3, 2))])
    with pytest.raises(LayerCallError, match="array 0 has shape \\(2, 3\\).*'kernel'.*\\(3, 2\\)"):
        layer.set_weights([np.zeros((2, 3)), np.zeros(2)])


def test_activity_regularizer_adds_the_penalty_per_example():
    layer = jmod.layers.Dense(
        2, activity_regularizer=jmod.regularizers.L2(0.5), kernel_initializer="ones"
    )
    out = layer(X)
    expected = 0.5 * float(jnp.sum(out**2)) / X.shape[0]
    assert [float(v) for v in layer.losses] == pytest.approx([expected], rel=1e-6)
    config = layer.get_config()
    assert config["activity_regularizer"] == {"class_name": "L2", "config": {"l2": 0.5}}
    assert type(jmod.layers.Dense.from_config(config).activity_regularizer).__name__ == "L2"


def test_keras_config_keys_load():
    config = {
        "name": "d",
        "trainable": True,
        "units": 2,
        "dtype": {
            "module": "keras",
            "class_name": "DTypePolicy",
            "config": {"name": "float32"},
            "registered_name": None,
        },
        "kernel_constraint": {
            "module": "keras.constraints",
            "class_name": "MaxNorm",
            "config": {"max_value": 2, "axis": 0},
            "registered_name": None,
        },
        "bias_constraint": None,
        "activity_regularizer": None,
        "quantization_config": None,
    }
    layer = jmod.layers.Dense.from_config(config)
    assert layer.kernel_constraint.max_value == 2.0 and layer.dtype_policy.name == "float32"
