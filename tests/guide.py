"""The modules of the TensorFlow guide "Introduction to modules, layers, and models", in jmod."""

import jax
import jax.numpy as jnp

import jmod


class SimpleModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.a_variable = jmod.Variable(5.0, name="train_me")
        self.non_trainable_variable = jmod.Variable(5.0, trainable=False, name="do_not_train_me")

    def __call__(self, x):
        return self.a_variable * x + self.non_trainable_variable


class Dense(jmod.Module):
    def __init__(self, in_features, out_features, name=None):
        super().__init__(name=name)
        self.w = jmod.Variable(jmod.random.normal([in_features, out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([out_features]), name="b")

    def __call__(self, x):
        y = jnp.matmul(x, self.w) + self.b
        return jax.nn.relu(y)


class SequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = Dense(in_features=3, out_features=3)
        self.dense_2 = Dense(in_features=3, out_features=2)

    def __call__(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


class FlexibleDenseModule(jmod.Module):
    def __init__(self, out_features, name=None):
        super().__init__(name=name)
        self.is_built = False
        self.out_features = out_features

    def __call__(self, x):
        if not self.is_built:
            self.w = jmod.Variable(jmod.random.normal([x.shape[-1], self.out_features]), name="w")
            self.b = jmod.Variable(jnp.zeros([self.out_features]), name="b")
            self.is_built = True
        y = jnp.matmul(x, self.w) + self.b
        return jax.nn.relu(y)


class MySequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = Dense(in_features=3, out_features=3)
        self.dense_2 = Dense(in_features=3, out_features=2)

    @jmod.jit
    def __call__(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


class MyFlexibleSequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = FlexibleDenseModule(out_features=3)
        self.dense_2 = FlexibleDenseModule(out_features=2)

    @jmod.jit
    def __call__(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)
