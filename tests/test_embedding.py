import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import embedding
from tests.layer_checks import (
    call_jitted,
    config_round_trip,
    dtype_policy,
    numpy_initializer,
    run_docstring_examples,
)

IDS = np.array([[0, 3, 3, 9], [5, 1, 0, 2]], dtype=np.int32)


def test_output_rows_are_table_rows_of_the_ids():
    layer = jmod.layers.Embedding(10, 4)
    out = np.asarray(layer(IDS))
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out, np.asarray(layer.embeddings)[IDS])


def test_table_shape_and_default_uniform_initializer():
    layer = jmod.layers.Embedding(50, 8)
    layer(IDS)
    table = np.asarray(layer.embeddings)
    assert table.shape == (50, 8) and layer.embeddings.trainable
    assert np.abs(table).max() <= 0.05 and table.std() > 0.01


def test_jit_gives_the_eager_numbers():
    layer = jmod.layers.Embedding(10, 3)
    np.testing.assert_array_equal(np.asarray(call_jitted(layer, IDS)), np.asarray(layer(IDS)))


def test_float_ids_are_used_as_integers():
    layer = jmod.layers.Embedding(10, 3)
    np.testing.assert_array_equal(np.asarray(layer(IDS.astype(np.float32))), np.asarray(layer(IDS)))


@pytest.mark.parametrize("bad", [10, -1])
def test_ids_out_of_range_name_the_layer_and_the_value(bad):
    layer = jmod.layers.Embedding(10, 3, name="emb")
    with pytest.raises(LayerCallError, match=f"'emb' \\(Embedding\\).*\\[0, 10\\).*{bad}"):
        layer(np.array([[1, bad]]))


def test_gradient_accumulates_per_id():
    layer = jmod.layers.Embedding(5, 2)
    ids = np.array([1, 1, 3])
    layer(ids)
    _, grads = jmod.value_and_grad(lambda m, i: jnp.sum(m(i)))(layer, ids)
    expected = np.zeros((5, 2), np.float32)
    np.add.at(expected, ids, 1.0)
    np.testing.assert_array_equal(np.asarray(grads["embeddings"]), expected)


def test_mask_zero_marks_padding():
    layer = jmod.layers.Embedding(10, 3, mask_zero=True)
    np.testing.assert_array_equal(np.asarray(layer.compute_mask(IDS)), IDS != 0)
    assert jmod.layers.Embedding(10, 3).compute_mask(IDS) is None


def test_mixed_bfloat16_output_float32_table():
    with dtype_policy("mixed_bfloat16"):
        layer = jmod.layers.Embedding(10, 3)
    out = layer(IDS)
    assert out.dtype == jnp.bfloat16 and layer.embeddings.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(out, np.float32), np.asarray(layer.embeddings)[IDS], rtol=1e-2
    )


def test_float_ids_keep_their_value_under_mixed_precision():
    with dtype_policy("mixed_bfloat16"):
        layer = jmod.layers.Embedding(2000, 2, embeddings_initializer=numpy_initializer())
    out = layer(np.array([[1001.0, 3.0]], np.float32))
    np.testing.assert_allclose(
        np.asarray(out, np.float32)[0, 0], np.asarray(layer.embeddings)[1001], rtol=1e-2
    )


def test_regularizer_penalizes_the_table():
    layer = jmod.layers.Embedding(4, 2, embeddings_regularizer=jmod.regularizers.L1(0.5))
    layer(IDS % 4)
    np.testing.assert_allclose(
        float(layer.losses[0]), 0.5 * np.abs(np.asarray(layer.embeddings)).sum(), rtol=1e-5
    )


@pytest.mark.parametrize("kwargs", [{"input_dim": 0}, {"output_dim": -2}, {"input_dim": 2.0}])
def test_bad_sizes_are_serialization_errors(kwargs):
    args = {"input_dim": 10, "output_dim": 3, **kwargs}
    with pytest.raises(SerializationError, match="Embedding"):
        jmod.layers.Embedding(**args)


def test_config_round_trip():
    layer = jmod.layers.Embedding(
        10, 3, embeddings_initializer=jmod.initializers.RandomNormal(seed=1), mask_zero=True
    )
    clone = config_round_trip(layer)
    assert clone.mask_zero and clone.get_config()["input_dim"] == 10
    np.testing.assert_array_equal(np.asarray(layer(IDS)), np.asarray(clone(IDS)))


def test_compute_output_shape():
    assert jmod.layers.Embedding(10, 3).compute_output_shape((None, 7)) == (None, 7, 3)


def test_docstring_examples_run():
    run_docstring_examples(embedding)
