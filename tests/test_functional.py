"""The functional API: symbolic inputs, graphs with several inputs/outputs, shared layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
import jmod.models
from jmod.layers import Dense
from jmod.models import Input, Model
from tests.guide_layers import MySequentialModel, functional_model


def _dense_np(layer, x):
    return np.asarray(x) @ np.asarray(layer.kernel) + np.asarray(layer.bias)


def test_input_is_symbolic_with_unknown_batch():
    x = Input(shape=[3])
    assert x.shape == (None, 3)
    assert x.dtype == jnp.float32
    assert Input(shape=(None, 8), batch_size=4, dtype="int32").shape == (4, None, 8)
    assert Input(batch_shape=(2, 5)).shape == (2, 5)


def test_guide_functional_model_builds_once_on_symbolic_shape():
    model = functional_model()
    first, second = model.layers[1], model.layers[2]
    assert first.build_calls == [(None, 3)] and second.build_calls == [(None, 3)]
    x = np.array([[2.0, 2.0, 2.0]], np.float32)
    want = (x @ np.asarray(first.w) + np.asarray(first.b)) @ np.asarray(second.w) + np.asarray(
        second.b
    )
    np.testing.assert_allclose(model(x), want, rtol=1e-5)
    model(np.ones((4, 3), np.float32))
    assert first.build_calls == [(None, 3)]  # batch sizes 1 and 4 did not rebuild
    assert model.count_params() == 20


def test_layer_outputs_have_inferred_shapes():
    x = Input(shape=(None, 6))  # a variable-length sequence
    y = Dense(4)(x)
    assert y.shape == (None, None, 4)
    z = jmod.layers.Reshape((-1,))(Input(shape=(2, 3)))
    assert z.shape == (None, 6)


def test_multiple_inputs_and_outputs_as_dicts():
    a, b = Input(shape=[3], name="a"), Input(shape=[2], name="b")
    da, db = Dense(2), Dense(2)
    total = jmod.layers.Add()([da(a), db(b)])
    model = Model(inputs={"a": a, "b": b}, outputs={"sum": total, "only_a": Dense(1)(a)})
    xa = np.arange(6, dtype=np.float32).reshape(2, 3)
    xb = np.ones((2, 2), np.float32)
    out = model({"a": xa, "b": xb})
    assert set(out) == {"sum", "only_a"}
    np.testing.assert_allclose(out["sum"], _dense_np(da, xa) + _dense_np(db, xb), rtol=1e-5)
    assert out["only_a"].shape == (2, 1)


def test_list_inputs_accept_list_or_dict_by_input_name():
    a, b = Input(shape=[3], name="left"), Input(shape=[3], name="right")
    model = Model([a, b], jmod.layers.Concatenate()([a, b]))
    xa, xb = np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(model([xa, xb]), np.concatenate([xa, xb], -1))
    np.testing.assert_array_equal(model({"right": xb, "left": xa}), np.concatenate([xa, xb], -1))


def test_shared_layer_is_one_set_of_weights():
    a, b = Input(shape=[3]), Input(shape=[3])
    shared = Dense(2, name="shared")
    model = Model([a, b], [shared(a), shared(b)])
    assert [p for p, _ in model.named_variables()] == [
        "layers/shared/bias",
        "layers/shared/kernel",
    ]
    xa, xb = np.ones((1, 3), np.float32), np.full((1, 3), 2.0, np.float32)
    ya, yb = model([xa, xb])
    np.testing.assert_allclose(ya, _dense_np(shared, xa), rtol=1e-5)
    np.testing.assert_allclose(yb, _dense_np(shared, xb), rtol=1e-5)


def test_jit_matches_eager_and_traces_once_per_signature():
    jmod.random.set_seed(1)
    model = functional_model()
    run = jmod.jit(lambda m, x: m(x))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(run(model, x), model(x), rtol=1e-5)
    run(model, x + 1)
    assert run.trace_count == 1


def test_jit_names_scopes_after_layers():
    model = functional_model()
    jaxpr = jmod.jit(lambda m, x: m(x)).jaxpr(model, np.ones((1, 3), np.float32))
    stacks = {str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns}
    assert any(model.layers[1].name in s for s in stacks)


def test_nested_functional_model_is_a_layer():
    inner_in = Input(shape=[3])
    inner = Model(inner_in, Dense(2)(inner_in), name="inner")
    outer_in = Input(shape=[3])
    outer = Model(outer_in, Dense(1)(inner(outer_in)), name="outer")
    x = np.ones((2, 3), np.float32)
    want = _dense_np(outer.layers[2], inner(x))
    np.testing.assert_allclose(outer(x), want, rtol=1e-5)
    assert [layer.name for layer in outer.layers][1] == "inner"


def test_training_flag_reaches_layers_in_the_graph():
    jmod.random.set_seed(0)
    x = Input(shape=[1000])
    model = Model(x, jmod.layers.Dropout(0.5)(x))
    ones = np.ones((1, 1000), np.float32)
    np.testing.assert_array_equal(model(ones), ones)  # inference: identity
    dropped = np.asarray(model(ones, training=True))
    assert 0.3 < (dropped == 0).mean() < 0.7
    np.testing.assert_allclose(dropped[dropped != 0], 2.0)


def test_batch_norm_statistics_do_not_leak_tracers_when_building():
    x = Input(shape=[2])
    bn = jmod.layers.BatchNormalization()
    model = Model(x, bn(x, training=True))  # updates statistics when run, not when built
    np.testing.assert_array_equal(bn.moving_mean.value, np.zeros(2))
    model(np.full((4, 2), 3.0, np.float32))
    assert not isinstance(bn.moving_mean.value, jax.core.Tracer)
    assert float(bn.moving_mean.value[0]) > 0.0


def test_layer_that_creates_sublayers_in_call_is_built_for_real():
    class Lazy(jmod.layers.Layer):
        def call(self, x):
            if not hasattr(self, "inner"):
                self.inner = Dense(2)
            return self.inner(x)

    x = Input(shape=[3])
    lazy = Lazy()
    model = Model(x, lazy(x))
    assert lazy.inner.kernel.shape == (3, 2)
    assert not isinstance(lazy.inner.kernel.value, jax.core.Tracer)
    np.testing.assert_allclose(
        model(np.ones((1, 3), np.float32)), _dense_np(lazy.inner, np.ones((1, 3))), rtol=1e-5
    )


def test_config_round_trip_rebuilds_the_graph():
    a, b = Input(shape=[3], name="a"), Input(shape=[3], name="b")
    shared = Dense(2, name="shared")
    merged = jmod.layers.Concatenate(name="cat")([shared(a), shared(b)])
    model = Model({"a": a, "b": b}, [merged, Dense(1, name="head")(merged)], name="two_heads")
    clone = Model.from_config(model.get_config())
    assert clone.name == "two_heads"
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    clone.set_weights(model.get_weights())
    x = {"a": np.ones((2, 3), np.float32), "b": np.zeros((2, 3), np.float32)}
    for got, want in zip(clone(x), model(x)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert clone.get_layer("shared") is not shared


def test_call_keyword_arguments_are_recorded_in_the_config():
    x = Input(shape=[4])
    frozen = jmod.layers.BatchNormalization(name="bn")(x, training=False)
    model = Model(x, frozen)
    node = model.get_config()["layers"][1]["inbound_nodes"][0]
    assert node["kwargs"] == {"training": False}


def test_graph_disconnected_names_the_missing_input():
    a, b = Input(shape=[3], name="a"), Input(shape=[3], name="b")
    out = jmod.layers.Add()([a, b])
    with pytest.raises(jmod.ModuleError, match="disconnected.*'b'"):
        Model(a, out)


def test_inputs_must_come_from_input():
    x = Input(shape=[3])
    hidden = Dense(2)(x)
    with pytest.raises(jmod.ModuleError, match="must come from jmod.Input"):
        Model(hidden, Dense(1)(hidden))


def test_duplicate_layer_names_are_refused():
    x = Input(shape=[3])
    with pytest.raises(jmod.ModuleError, match="unique"):
        Model(x, Dense(2, name="same")(Dense(3, name="same")(x)))


def test_wrong_input_shape_names_the_model_and_input():
    model = functional_model()
    with pytest.raises(
        jmod.LayerCallError,
        match=r"input 'input_\d+' expected shape \(None, 3\), got shape \(1, 4\)",
    ):
        model(np.ones((1, 4), np.float32))


def test_incompatible_symbolic_input_fails_at_graph_construction():
    x = Input(shape=[3])
    dense = Dense(2)
    dense(x)
    with pytest.raises(jmod.LayerCallError, match="dense"):
        dense(Input(shape=[4]))


def test_array_operations_on_symbolic_tensors_explain_what_to_do():
    x = Input(shape=[3])
    with pytest.raises(jmod.LayerCallError, match="only layers can be called"):
        jnp.asarray(x)
    with pytest.raises(jmod.LayerCallError, match="only layers can be called"):
        np.asarray(x)
    with pytest.raises(jmod.LayerCallError, match="jmod.layers.Add"):
        _ = x + x


def test_inputs_are_cast_to_the_input_dtype():
    tokens = Input(shape=[4], dtype="int32")
    model = Model(tokens, jmod.layers.Embedding(10, 2)(tokens))
    emb = model.layers[1]
    out = model(np.array([[1.0, 2.0, 3.0, 4.0]]))  # floats given: cast to int32 first
    np.testing.assert_allclose(out[0], np.asarray(emb.embeddings)[[1, 2, 3, 4]], rtol=1e-6)


def test_subclassed_model_called_on_input_builds_its_layers_with_unknown_batch():
    x = Input(shape=[3])
    inner = MySequentialModel()
    y = inner(x)
    assert y.shape == (None, 2)
    assert inner.dense_1.build_calls == [(None, 3)] and inner.dense_2.build_calls == [(None, 3)]
    model = Model(x, y)
    data = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(model(data), inner(data), rtol=1e-6)


def test_model_made_with_a_one_element_input_list_takes_the_array_alone():
    x = Input(shape=[2])
    model = Model([x], [jmod.layers.Activation("relu")(x)])
    out = model(np.array([[-1.0, 2.0]], np.float32))
    np.testing.assert_array_equal(out[0], [[0.0, 2.0]])
