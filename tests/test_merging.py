import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import merging
from tests.layer_checks import call_jitted, config_round_trip, dtype_policy, run_docstring_examples

RNG = np.random.default_rng(4)
A, B, C = (RNG.normal(size=(2, 3)).astype(np.float32) for _ in range(3))

ELEMENTWISE = [
    (jmod.layers.Add, lambda xs: xs[0] + xs[1] + xs[2]),
    (jmod.layers.Multiply, lambda xs: xs[0] * xs[1] * xs[2]),
    (jmod.layers.Average, lambda xs: (xs[0] + xs[1] + xs[2]) / 3),
    (jmod.layers.Maximum, lambda xs: np.maximum(np.maximum(xs[0], xs[1]), xs[2])),
    (jmod.layers.Minimum, lambda xs: np.minimum(np.minimum(xs[0], xs[1]), xs[2])),
]


@pytest.mark.parametrize("cls, reference", ELEMENTWISE, ids=lambda v: getattr(v, "__name__", ""))
def test_elementwise_merge_matches_numpy(cls, reference):
    layer = cls()
    np.testing.assert_allclose(np.asarray(layer([A, B, C])), reference([A, B, C]), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(call_jitted(layer, [A, B, C])), reference([A, B, C]), rtol=1e-6
    )


def test_subtract_takes_exactly_two():
    np.testing.assert_allclose(np.asarray(jmod.layers.Subtract()([A, B])), A - B, rtol=1e-6)
    with pytest.raises(LayerCallError, match="Subtract.*exactly 2 inputs, got 3"):
        jmod.layers.Subtract()([A, B, C])


def test_add_broadcasts_size_1_axes():
    row = A[:1]
    np.testing.assert_allclose(np.asarray(jmod.layers.Add()([A, row])), A + row, rtol=1e-6)
    assert jmod.layers.Add().compute_output_shape([(None, 3), (1, 3)]) == (None, 3)


def test_add_of_incompatible_shapes_names_the_layer_and_shapes():
    layer = jmod.layers.Add(name="plus")
    with pytest.raises(LayerCallError) as info:
        layer([A, np.ones((2, 4), np.float32)])
    message = str(info.value)
    assert "'plus' (Add)" in message and "[(2, 3), (2, 4)]" in message
    assert "(shape=(2, 3), dtype=float32), " in message and "(shape=(2, 4)" in message


def test_merge_needs_a_list_of_at_least_two():
    with pytest.raises(LayerCallError, match="expected a list of inputs"):
        jmod.layers.Add()(A)
    with pytest.raises(LayerCallError, match="at least 2 inputs, got 1"):
        jmod.layers.Add()([A])


def test_concatenate_along_last_and_given_axis():
    wide = np.ones((2, 5), np.float32)
    np.testing.assert_array_equal(
        np.asarray(jmod.layers.Concatenate()([A, wide])), np.concatenate([A, wide], axis=-1)
    )
    np.testing.assert_array_equal(
        np.asarray(jmod.layers.Concatenate(axis=0)([A, B, C])), np.concatenate([A, B, C], axis=0)
    )


def test_concatenate_output_shape():
    layer = jmod.layers.Concatenate(axis=1)
    assert layer.compute_output_shape([(None, 3, 4), (None, 2, 4)]) == (None, 5, 4)
    assert layer.compute_output_shape([(None, 3), (None, None)]) == (None, None)


def test_concatenate_mismatch_names_the_axis_that_differs():
    with pytest.raises(LayerCallError, match="Concatenate.*axis 0 differs"):
        jmod.layers.Concatenate()([A, np.ones((3, 3), np.float32)])
    with pytest.raises(LayerCallError, match="cannot be concatenated along axis 2"):
        jmod.layers.Concatenate(axis=2)([A, B])


def test_concatenate_axis_must_be_an_int():
    with pytest.raises(SerializationError, match="Concatenate.*axis.*'x'"):
        jmod.layers.Concatenate(axis="x")


def test_mixed_bfloat16_output():
    with dtype_policy("mixed_bfloat16"):
        layers = [jmod.layers.Add(), jmod.layers.Concatenate()]
    for layer in layers:
        assert layer([A, B]).dtype == jnp.bfloat16


def test_config_round_trip():
    assert config_round_trip(jmod.layers.Concatenate(axis=1, name="cat")).axis == 1
    for cls, _ in ELEMENTWISE:
        config_round_trip(cls(name="m"))
    assert config_round_trip(jmod.layers.Subtract()).get_config()["trainable"] is True


def test_docstring_examples_run():
    run_docstring_examples(merging)
