"""Default names (jmod/_naming.py): modules follow tf.Module, layers and losses follow Keras."""

import inspect
import os

import pytest

import jmod
from jmod._naming import keras_snake_case, tf_snake_case


@pytest.mark.parametrize(
    "cls, want",
    # Hand-derived from TensorFlow's `camel_to_snake` (tf.Module names).
    [("MySequentialModule", "my_sequential_module"), ("Conv2D", "conv2_d"),
     ("HTTPServer", "http_server"), ("ReLU", "re_lu"), ("Module", "module")],
)  # fmt: skip
def test_tf_rule_puts_an_underscore_before_each_capital_word(cls, want):
    assert tf_snake_case(cls) == want


def test_keras_rule_matches_keras_on_every_keras_layer_and_loss_name():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # as the other Keras tests run it
    keras = pytest.importorskip("keras")
    from keras.src.utils.naming import to_snake_case

    names = [
        n
        for mod in (keras.layers, keras.losses)
        for n, _ in inspect.getmembers(mod, inspect.isclass)
    ]
    assert len(names) > 100
    assert {n: keras_snake_case(n) for n in names} == {n: to_snake_case(n) for n in names}


def test_a_module_and_a_layer_of_the_same_class_name_follow_their_own_library():
    class Conv2D(jmod.Module):
        pass

    class Dense2D(jmod.layers.Layer):
        def call(self, x):
            return x

    assert Conv2D().name == "conv2_d"
    assert Dense2D().name.startswith("dense2d")
    assert jmod.losses.MeanSquaredError().name == "mean_squared_error"
