"""The Keras part of the TensorFlow guide "Introduction to modules, layers, and models", in jmod.

Written as the guide writes it, with jmod names: `tf.Variable` -> `jmod.Variable`,
`tf.random.normal` -> `jmod.random.normal`, `tf.keras` -> `jmod`,
`keras.saving.register_keras_serializable` -> `jmod.saving.register_serializable`.
"""

import jax
import jax.numpy as jnp

import jmod
import jmod.models
import jmod.saving


class MyDense(jmod.layers.Layer):
    # Adding **kwargs to support base Keras layer arguments
    def __init__(self, in_features, out_features, **kwargs):
        super().__init__(**kwargs)

        # This will soon move to the build step; see below
        self.w = jmod.Variable(jmod.random.normal([in_features, out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([out_features]), name="b")

    def call(self, x):
        y = jnp.matmul(x, self.w) + self.b
        return jax.nn.relu(y)


@jmod.saving.register_serializable()
class FlexibleDense(jmod.layers.Layer):
    # Note the added `**kwargs`, as Keras supports many arguments
    def __init__(self, out_features, **kwargs):
        super().__init__(**kwargs)
        self.out_features = out_features
        self.build_calls = []  # not in the guide: lets tests count build() runs

    def build(self, input_shape):  # Create the state of the layer (weights)
        self.build_calls.append(input_shape)
        self.w = jmod.Variable(jmod.random.normal([input_shape[-1], self.out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([self.out_features]), name="b")

    def call(self, inputs):  # Defines the computation from inputs to outputs
        return jnp.matmul(inputs, self.w) + self.b


@jmod.saving.register_serializable()
class MySequentialModel(jmod.models.Model):
    def __init__(self, name=None, **kwargs):
        super().__init__(**kwargs)

        self.dense_1 = FlexibleDense(out_features=3)
        self.dense_2 = FlexibleDense(out_features=2)

    def call(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


def functional_model():
    """The guide's functional model: Input(3) -> FlexibleDense(3) -> FlexibleDense(2)."""
    inputs = jmod.models.Input(shape=[3])
    x = FlexibleDense(3)(inputs)
    x = FlexibleDense(2)(x)
    return jmod.models.Model(inputs=inputs, outputs=x)
