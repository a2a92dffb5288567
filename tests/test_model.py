"""Subclassed models and the guide's Keras layers, written as the guide writes them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
import jmod.models
from jmod.layers import Dense
from jmod.models import Model
from tests.guide_layers import FlexibleDense, MyDense, MySequentialModel


def test_guide_my_dense_accepts_a_python_list():
    jmod.random.set_seed(0)
    simple_layer = MyDense(name="simple", in_features=3, out_features=3)
    out = simple_layer([[2.0, 2.0, 2.0]])
    want = np.maximum(np.full((1, 3), 2.0) @ np.asarray(simple_layer.w), 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    assert simple_layer.name == "simple"


def test_guide_flexible_dense_builds_once_from_first_input():
    flexible_dense = FlexibleDense(out_features=3)
    assert flexible_dense.variables == () and not flexible_dense.built
    x = jnp.array([[2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    out = flexible_dense(x)
    assert [v.shape for v in flexible_dense.variables] == [(3,), (3, 3)]  # b, w
    np.testing.assert_allclose(out, np.asarray(x) @ np.asarray(flexible_dense.w), rtol=1e-5)
    flexible_dense(x)
    assert flexible_dense.build_calls == [(2, 3)]


def test_guide_flexible_dense_rejects_incompatible_input_naming_layer_and_arguments():
    flexible_dense = FlexibleDense(out_features=3)
    flexible_dense(jnp.ones((2, 3)))
    with pytest.raises(jmod.LayerCallError) as info:
        flexible_dense(jnp.array([[2.0, 2.0, 2.0, 2.0]]))
    message = str(info.value)
    assert f"'{flexible_dense.name}' (FlexibleDense)" in message
    assert "inputs=Array(shape=(1, 4), dtype=float32)" in message


def test_guide_my_sequential_model_tracks_layers_and_swallows_name():
    model = MySequentialModel(name="the_model")
    assert model.name.startswith("my_sequential_model")  # the guide's __init__ drops name
    out = model(jnp.array([[2.0, 2.0, 2.0]]))
    d1, d2 = model.dense_1, model.dense_2
    want = (np.full((1, 3), 2.0) @ np.asarray(d1.w) + np.asarray(d1.b)) @ np.asarray(
        d2.w
    ) + np.asarray(d2.b)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    assert [type(m).__name__ for m in model.submodules] == ["FlexibleDense", "FlexibleDense"]
    assert model.layers == [d1, d2]
    assert len(model.variables) == 4 and model.count_params() == 3 * 3 + 3 + 3 * 2 + 2


def test_layers_keep_assignment_order_and_open_containers():
    class Tower(Model):
        def __init__(self):
            super().__init__()
            self.head = Dense(1, name="head")
            self.blocks = [Dense(2, name="b0"), Dense(2, name="b1")]

        def call(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    model = Tower()
    assert [layer.name for layer in model.layers] == ["head", "b0", "b1"]
    assert model.get_layer("b1") is model.blocks[1]
    assert model.get_layer(index=0) is model.head


def test_get_layer_lists_existing_names_when_missing():
    model = MySequentialModel()
    with pytest.raises(jmod.ModuleError, match="no layer named 'nope'.*flexible_dense"):
        model.get_layer("nope")


def test_layers_attribute_is_read_only():
    class Bad(Model):
        def __init__(self):
            super().__init__()
            self.layers = [Dense(1)]

    with pytest.raises(jmod.ModuleError, match="read-only"):
        Bad()


def test_model_without_call_says_what_to_implement():
    with pytest.raises(NotImplementedError, match="must implement call"):
        Model()(jnp.ones((1, 2)))


def test_build_creates_variables_from_input_shape():
    model = MySequentialModel()
    assert not model.built and model.variables == ()
    model.build((None, 5))
    assert model.built and model.dense_1.w.shape == (5, 3)
    assert model.get_build_config() == {"input_spec": {"shape": [None, 5], "dtype": "float32"}}


def test_subclass_build_runs_on_first_call_exactly_once():
    class WithBuild(Model):
        def __init__(self):
            super().__init__()
            self.calls = []
            self.dense = Dense(2)

        def build(self, input_shape):
            self.calls.append(input_shape)
            super().build(input_shape)  # Keras habit: harmless here

        def call(self, x):
            return self.dense(x)

    model = WithBuild()
    model(jnp.ones((3, 4)))
    model(jnp.ones((3, 4)))
    assert model.calls == [(3, 4)]


def test_subclassed_model_under_jit_matches_eager():
    class Jitted(MySequentialModel):
        @jmod.jit
        def predict_step(self, x):
            return self(x)

    model = Jitted()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    eager = model(x)
    np.testing.assert_allclose(model.predict_step(x), eager, rtol=1e-5)
    assert model.predict_step.trace_count == 1


def test_freezing_a_model_freezes_its_layers():
    model = MySequentialModel()
    model(jnp.ones((1, 3)))
    model.trainable = False
    assert model.trainable_variables == () and len(model.non_trainable_variables) == 4


def test_save_and_load_weights_restore_values(tmp_path):
    model = MySequentialModel()
    x = jnp.ones((2, 3))
    want = model(x)
    path = model.save_weights(str(tmp_path / "weights"))
    other = MySequentialModel()
    other.load_weights(path)  # deferred: values wait for the first call's build
    np.testing.assert_allclose(other(x), want, rtol=1e-6)


def test_load_weights_into_built_model_checks_shapes(tmp_path):
    model = MySequentialModel()
    model(jnp.ones((1, 3)))
    path = model.save_weights(str(tmp_path / "w"))
    wider = MySequentialModel()
    wider(jnp.ones((1, 4)))
    with pytest.raises(jmod.CheckpointError, match="dense_1/w"):
        wider.load_weights(path)


def test_losses_of_sublayers_are_collected():
    class Penalized(jmod.layers.Layer):
        def call(self, x):
            self.add_loss(jnp.sum(x))
            return x

    class Wrapper(Model):
        def __init__(self):
            super().__init__()
            self.inner = Penalized()

        def call(self, x):
            return self.inner(x)

    model = Wrapper()
    model(jnp.ones((2, 2)))
    assert [float(v) for v in model.losses] == [4.0]


def test_summary_of_subclassed_model_infers_shapes_when_call_only_calls_layers():
    model = MySequentialModel()
    model(jnp.ones((2, 3)))
    lines = []
    model.summary(print_fn=lines.append)
    rows = [line for line in lines if line.startswith(" flexible_dense")]
    assert len(rows) == 2
    assert "(None, 3)" in rows[0] and "(None, 2)" in rows[1]


def test_summary_of_subclassed_model_with_array_ops_says_multiple():
    class WithOps(Model):
        def __init__(self):
            super().__init__()
            self.dense = Dense(2)

        def call(self, x):
            return jax.nn.relu(self.dense(x))

    model = WithOps()
    model(jnp.ones((1, 3)))
    lines = []
    model.summary(print_fn=lines.append)
    assert any("multiple" in line and "(Dense)" in line for line in lines)


@pytest.mark.parametrize(
    "name",
    [
        "jmod.models",
        "jmod.models.model",
        "jmod.models.functional",
        "jmod.models.sequential",
        "jmod.models.summary",
        "jmod.models.archive",
        "jmod.saving",
    ],
)
def test_docstring_examples_exist(name):
    # pytest's --doctest-modules runs them (pyproject).
    import doctest
    import importlib

    module = importlib.import_module(name)
    assert [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
