"""`Sequential`: layers in a row, built from an Input, an input_shape, build() or the first call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
import jmod.models
import jmod.saving
from jmod.layers import Dense
from jmod.models import Input, Sequential


def _mlp_np(model, x):
    for layer in model.layers:
        x = np.asarray(x) @ np.asarray(layer.kernel) + np.asarray(layer.bias)
        if layer.get_config()["activation"] == "relu":
            x = np.maximum(x, 0.0)
    return x


def test_computes_layers_in_order():
    model = Sequential([Dense(4, activation="relu"), Dense(2)])
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(model(x), _mlp_np(model, x), rtol=1e-5)


def test_first_call_builds_with_unknown_batch():
    model = Sequential([Dense(4), Dense(2)])
    assert not model.built
    model(jnp.ones((7, 3)))
    assert model.built and model.input_shape == (None, 3) and model.output_shape == (None, 2)
    assert model.layers[0].kernel.shape == (3, 4)
    model(jnp.ones((1, 3)))  # another batch size: same weights
    assert len(model.variables) == 4


def test_input_first_builds_at_once():
    model = Sequential([Input(shape=[3]), Dense(4), Dense(2)])
    assert model.built and model.count_params() == 3 * 4 + 4 + 4 * 2 + 2
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Dense"]


def test_input_shape_on_first_layer_builds_at_once():
    model = Sequential([Dense(4, input_shape=(3,)), Dense(2)])
    assert model.built and model.output_shape == (None, 2)


def test_build_with_input_shape():
    model = Sequential([Dense(2)])
    model.build((None, 6))
    assert model.layers[0].kernel.shape == (6, 2)


def test_add_and_pop_keep_the_model_consistent():
    model = Sequential()
    model.add(Input(shape=[3]))
    model.add(Dense(4, name="hidden"))
    model.add(Dense(2, name="out"))
    assert model.output_shape == (None, 2)
    popped = model.pop()
    assert popped.name == "out" and model.output_shape == (None, 4)
    assert [p for p, _ in model.named_variables()] == ["layers/hidden/bias", "layers/hidden/kernel"]


def test_add_refuses_non_layers_and_duplicate_names():
    model = Sequential([Dense(2, name="d")])
    with pytest.raises(jmod.ModuleError, match="takes a jmod.layers.Layer"):
        model.add(lambda x: x)
    with pytest.raises(jmod.ModuleError, match="'d' is already"):
        model.add(Dense(3, name="d"))
    with pytest.raises(jmod.ModuleError, match="Input can only be added first"):
        model.add(Input(shape=[2]))


def test_config_round_trip_keeps_input_and_layers():
    model = Sequential([Input(shape=[3]), Dense(4, activation="relu"), Dense(2)], name="mlp")
    clone = Sequential.from_config(model.get_config())
    assert clone.name == "mlp" and clone.built
    assert [layer.get_config() for layer in clone.layers] == [
        layer.get_config() for layer in model.layers
    ]
    clone.set_weights(model.get_weights())
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(clone(x), model(x), rtol=1e-6)


def test_nested_sequential_inside_functional_model():
    block = Sequential([Dense(3), Dense(3)], name="block")
    x = Input(shape=[3])
    model = jmod.models.Model(x, block(x))
    data = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(model(data), _mlp_np(block, data), rtol=1e-5)


def test_training_flag_reaches_dropout():
    jmod.random.set_seed(0)
    model = Sequential([jmod.layers.Dropout(0.5)])
    ones = np.ones((1, 500), np.float32)
    np.testing.assert_array_equal(model(ones), ones)
    assert (np.asarray(model(ones, training=True)) == 0).any()


def test_jit_of_sequential_matches_eager():
    model = Sequential([Dense(4, activation="relu"), Dense(2)])
    x = np.ones((2, 3), np.float32)
    eager = model(x)
    np.testing.assert_allclose(jmod.jit(lambda m, x: m(x))(model, x), eager, rtol=1e-5)


def test_subclass_with_its_own_constructor_saves_its_arguments():
    @jmod.saving.register_serializable(package="Test")
    class Stack(Sequential):
        def __init__(self, width, **kwargs):
            super().__init__([Input(shape=[3]), Dense(width)], **kwargs)

    model = Stack(5, name="stack")
    assert model.get_config() == {"name": "stack", "trainable": True, "width": 5}
    clone = jmod.saving.deserialize(jmod.saving.serialize(model))
    assert type(clone) is Stack and clone.output_shape == (None, 5)


# -- an eager call runs as one compiled computation -----------------------------------


class _Compilations:
    """Counts XLA backend compilations while active (a jax.monitoring listener)."""

    active = None

    def __enter__(self):
        self.count = 0
        _Compilations.active = self
        return self

    def __exit__(self, *exc):
        _Compilations.active = None


def _on_duration(event, seconds, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration" and _Compilations.active:
        _Compilations.active.count += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def test_first_call_of_builtin_layers_compiles_one_program():
    Sequential([Dense(2)])(jnp.ones((1, 2)))  # random-number programs, compiled once
    model = Sequential([Dense(w, activation="relu") for w in (5, 6, 7, 8, 9, 10)])
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    with _Compilations() as compiled:
        out = model(x)
    assert compiled.count == 1  # op by op: 18 programs (matmul, add, relu per layer)
    np.testing.assert_allclose(out, _mlp_np(model, x), rtol=1e-5, atol=1e-6)
    with _Compilations() as compiled:
        again = model(x + 1)
    assert compiled.count == 0
    np.testing.assert_allclose(again, _mlp_np(model, x + 1), rtol=1e-5, atol=1e-6)


def test_compiled_call_updates_batch_norm_statistics_like_numpy():
    model = Sequential([jmod.layers.BatchNormalization(momentum=0.5)])
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(16, 4)).astype(np.float32)
    out = np.asarray(model(x, training=True))
    bn = model.layers[0]
    mean, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.value, 0.5 * mean, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(model(x)),
        (x - 0.5 * mean) / np.sqrt(bn.moving_variance.value + 1e-3),
        rtol=1e-4,
        atol=1e-5,
    )


def test_ambient_training_flag_reaches_a_nested_compiled_sequential():
    inner = Sequential([jmod.layers.Dropout(0.5)])

    class Outer(jmod.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def call(self, x, training=None):
            return self.inner(x)

    outer, ones = Outer(), np.ones((1, 400), np.float32)
    assert (np.asarray(outer(ones, training=True)) == 0).any()
    np.testing.assert_array_equal(outer(ones, training=False), ones)
    assert (np.asarray(outer(ones, training=True)) == 0).any()


def test_custom_layers_keep_running_op_by_op():
    calls = []

    class Shout(jmod.layers.Layer):
        def call(self, x):
            calls.append(type(x).__name__)
            return x * 2.0

    model = Sequential([Dense(3), Shout()])
    model(jnp.ones((2, 3)))  # the build traces the layers symbolically first
    model(jnp.ones((2, 3)))
    eager = [kind for kind in calls if "Tracer" not in kind]
    assert len(eager) == 2
