import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import reshaping
from tests.layer_checks import call_jitted, config_round_trip, dtype_policy, run_docstring_examples

X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)


def test_flatten_keeps_the_batch_axis_in_c_order():
    np.testing.assert_array_equal(np.asarray(jmod.layers.Flatten()(X)), X.reshape(2, 60))


def test_flatten_channels_first_orders_features_channels_last():
    out = jmod.layers.Flatten(data_format="channels_first")(X)
    np.testing.assert_array_equal(np.asarray(out), np.transpose(X, (0, 2, 3, 1)).reshape(2, 60))


def test_flatten_of_a_batch_of_scalars_gives_one_feature():
    assert jmod.layers.Flatten()(jnp.ones((4,))).shape == (4, 1)


def test_flatten_output_shape_with_unknown_sizes():
    flatten = jmod.layers.Flatten()
    assert flatten.compute_output_shape((None, 3, 4)) == (None, 12)
    assert flatten.compute_output_shape((None, None, 4)) == (None, None)


def test_reshape_to_target_shape():
    out = jmod.layers.Reshape((12, 5))(X)
    np.testing.assert_array_equal(np.asarray(out), X.reshape(2, 12, 5))


def test_reshape_infers_the_minus_one_entry():
    layer = jmod.layers.Reshape((-1, 10))
    np.testing.assert_array_equal(np.asarray(layer(X)), X.reshape(2, 6, 10))
    assert layer.compute_output_shape((None, 3, 4, 5)) == (None, 6, 10)
    assert layer.compute_output_shape((None, None, 4, 5)) == (None, None, 10)


def test_reshape_to_an_incompatible_size_names_the_layer_and_sizes():
    with pytest.raises(LayerCallError, match="'r' \\(Reshape\\).*60 elements.*\\(7, -1\\)"):
        jmod.layers.Reshape((7, -1), name="r")(X)
    with pytest.raises(LayerCallError, match="60 elements.*\\(7, 9\\)"):
        jmod.layers.Reshape((7, 9))(X)


@pytest.mark.parametrize("target", [(-1, -1), (0, 5), (2.5,), 5, ("a",), (True,)])
def test_bad_target_shape_is_a_serialization_error(target):
    with pytest.raises(SerializationError, match="Reshape.*target_shape"):
        jmod.layers.Reshape(target)


def test_jit_gives_the_eager_numbers():
    for layer in (jmod.layers.Flatten(), jmod.layers.Reshape((4, -1))):
        np.testing.assert_array_equal(np.asarray(call_jitted(layer, X)), np.asarray(layer(X)))


def test_mixed_bfloat16_output():
    with dtype_policy("mixed_bfloat16"):
        assert jmod.layers.Flatten()(X).dtype == jnp.bfloat16


def test_config_round_trip():
    clone = config_round_trip(jmod.layers.Reshape((3, -1), name="r"))
    assert clone.target_shape == (3, -1) and clone.get_config()["target_shape"] == [3, -1]
    assert config_round_trip(jmod.layers.Flatten(data_format="channels_first")).data_format == (
        "channels_first"
    )


def test_docstring_examples_run():
    run_docstring_examples(reshaping)
