import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod


def test_python_float_is_stored_strongly_typed_float32():
    v = jmod.Variable(5.0)
    assert v.dtype == jnp.float32
    assert not v.value.weak_type


def test_explicit_dtype_is_kept():
    v = jmod.Variable([1, 2], dtype=jnp.bfloat16)
    assert v.dtype == jnp.bfloat16
    assert v.shape == (2,)


def test_arithmetic_and_comparison_follow_the_value():
    v = jmod.Variable([1.0, 2.0, 3.0])
    np.testing.assert_allclose(v * 2, [2, 4, 6])
    np.testing.assert_allclose(2 * v, [2, 4, 6])
    np.testing.assert_allclose(v - 1, [0, 1, 2])
    np.testing.assert_allclose(1 - v, [0, -1, -2])
    np.testing.assert_allclose(v / 2, [0.5, 1, 1.5])
    np.testing.assert_allclose(v**2, [1, 4, 9])
    np.testing.assert_allclose(-v, [-1, -2, -3])
    assert (v > 1.5).tolist() == [False, True, True]
    assert (v == 2.0).tolist() == [False, True, False]
    np.testing.assert_allclose(v + jmod.Variable([1.0, 1.0, 1.0]), [2, 3, 4])


def test_works_with_jnp_functions_matmul_and_numpy():
    w = jmod.Variable(np.arange(6.0).reshape(2, 3))
    x = jnp.ones((1, 2))
    np.testing.assert_allclose(jnp.matmul(x, w), [[3, 5, 7]])
    np.testing.assert_allclose(x @ w, [[3, 5, 7]])
    np.testing.assert_allclose(np.asarray(w), np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(jnp.sum(w), 15)
    assert w.T.shape == (3, 2)
    np.testing.assert_allclose(w[1], [3, 4, 5])
    assert w.reshape(3, 2).shape == (3, 2)
    assert float(w.sum()) == 15.0


def test_jax_jit_and_tree_functions_see_the_value_as_a_leaf():
    v = jmod.Variable([1.0, 2.0])
    np.testing.assert_allclose(jax.jit(lambda a: a * 2)(v), [2, 4])
    leaves = jax.tree_util.tree_leaves(v)
    assert len(leaves) == 1 and leaves[0] is v.value


def test_assign_and_assign_add():
    v = jmod.Variable([1.0, 2.0])
    v.assign([3.0, 4.0])
    v.assign_add(1.0)
    np.testing.assert_allclose(v, [4, 5])
    assert not v.value.weak_type


def test_assign_wrong_shape_names_the_variable():
    v = jmod.Variable([1.0, 2.0], name="myvar")
    with pytest.raises(jmod.VariableError, match=r"'myvar'.*shape \(3,\).*\(2,\) float32"):
        v.assign([1.0, 2.0, 3.0])
    np.testing.assert_allclose(v, [1, 2])


def test_assign_jax_array_of_other_dtype_is_an_error():
    v = jmod.Variable([1.0, 2.0], name="myvar")
    with pytest.raises(jmod.VariableError, match="dtype int32"):
        v.assign(jnp.array([1, 2], jnp.int32))
    assert isinstance(jmod.VariableError("x"), ValueError)


def test_repr_shows_name_shape_dtype_and_value():
    v = jmod.Variable([1.0, 2.0], name="w", trainable=False)
    text = repr(v)
    for part in ("'w'", "shape=(2,)", "float32", "trainable=False", "1.", "2."):
        assert part in text


def test_trainable_is_settable():
    v = jmod.Variable(1.0)
    v.trainable = False
    assert v.trainable is False


def test_bad_value_is_a_clear_error():
    with pytest.raises(jmod.VariableError, match="numbers"):
        jmod.Variable("hello")
