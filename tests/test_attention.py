import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import attention
from tests.layer_checks import (
    config_round_trip,
    dtype_policy,
    numpy_initializer,
    run_docstring_examples,
)

RNG = np.random.default_rng(5)
Q = RNG.normal(size=(2, 3, 8)).astype(np.float32)
V = RNG.normal(size=(2, 5, 6)).astype(np.float32)
K = RNG.normal(size=(2, 5, 4)).astype(np.float32)


def _weights(layer, name):
    kernel = np.asarray(getattr(layer, f"{name}_kernel"), np.float64)
    bias = np.asarray(getattr(layer, f"{name}_bias"), np.float64) if layer.use_bias else 0.0
    return kernel, bias


def _reference(layer, query, value, key=None, mask=None):
    """Multi-head attention with an explicit, row-by-row softmax (3-D inputs)."""
    key = value if key is None else key
    wq, bq = _weights(layer, "query")
    wk, bk = _weights(layer, "key")
    wv, bv = _weights(layer, "value")
    wo, bo = _weights(layer, "output")
    q = np.einsum("btf,fnh->btnh", query, wq) + bq
    k = np.einsum("bsf,fnh->bsnh", key, wk) + bk
    v = np.einsum("bsf,fnh->bsnh", value, wv) + bv
    batch, t, heads, key_dim = q.shape
    s = k.shape[1]
    probs = np.zeros((batch, heads, t, s))
    for b in range(batch):
        for n in range(heads):
            for i in range(t):
                allowed = np.ones(s, bool) if mask is None else mask[b, i]
                if not allowed.any():
                    continue
                logits = np.array([q[b, i, n] @ k[b, j, n] for j in range(s)]) / np.sqrt(key_dim)
                e = np.where(allowed, np.exp(logits - logits[allowed].max()), 0.0)
                probs[b, n, i] = e / e.sum()
    heads_out = np.einsum("bnts,bsnh->btnh", probs, v)
    return np.einsum("btnh,nho->bto", heads_out, wo) + bo, probs


def _layer(**kwargs):
    return jmod.layers.MultiHeadAttention(
        kernel_initializer=numpy_initializer(1), bias_initializer=numpy_initializer(2), **kwargs
    )


def test_self_attention_matches_reference():
    layer = _layer(num_heads=2, key_dim=4)
    out, scores = layer(Q, Q, return_attention_scores=True)
    ref, ref_scores = _reference(layer, Q, Q)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), ref_scores, rtol=1e-4, atol=1e-6)


def test_cross_attention_with_separate_key_value_dim_and_output_shape():
    layer = _layer(num_heads=3, key_dim=2, value_dim=5, output_shape=7)
    out, scores = layer(Q, V, key=K, return_attention_scores=True)
    assert out.shape == (2, 3, 7) and scores.shape == (2, 3, 3, 5)
    ref, ref_scores = _reference(layer, Q, V, K)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), ref_scores, rtol=1e-4, atol=1e-6)


def test_weight_shapes_follow_keras():
    layer = _layer(num_heads=3, key_dim=2, value_dim=5)
    layer(Q, V, key=K)
    shapes = {p: v.shape for p, v in layer.named_variables()}
    assert shapes == {
        "query_kernel": (8, 3, 2),
        "query_bias": (3, 2),
        "key_kernel": (4, 3, 2),
        "key_bias": (3, 2),
        "value_kernel": (6, 3, 5),
        "value_bias": (3, 5),
        "output_kernel": (3, 5, 8),
        "output_bias": (8,),
    }


def test_attention_mask_restricts_each_query_step():
    layer = _layer(num_heads=2, key_dim=3)
    mask = RNG.uniform(size=(2, 3, 5)) > 0.4
    mask[:, :, 0] = True
    out, scores = layer(Q, V, attention_mask=mask, return_attention_scores=True)
    ref, ref_scores = _reference(layer, Q, V, mask=mask)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), ref_scores, rtol=1e-4, atol=1e-6)
    assert (np.asarray(scores)[np.broadcast_to(~mask[:, None], scores.shape)] == 0).all()


def test_query_step_with_nothing_allowed_attends_to_nothing():
    layer = _layer(num_heads=1, key_dim=2)
    mask = np.ones((2, 3, 5), bool)
    mask[0, 1] = False
    out, scores = layer(Q, V, attention_mask=mask, return_attention_scores=True)
    assert (np.asarray(scores)[0, :, 1] == 0).all()
    # Only the output bias is left for that step.
    np.testing.assert_allclose(np.asarray(out)[0, 1], np.asarray(layer.output_bias), rtol=1e-6)


def test_causal_mask_equals_explicit_lower_triangle():
    layer = _layer(num_heads=2, key_dim=4)
    x = RNG.normal(size=(2, 4, 8)).astype(np.float32)
    causal = layer(x, x, use_causal_mask=True)
    tril = np.broadcast_to(np.tril(np.ones((4, 4), bool)), (2, 4, 4))
    ref, _ = _reference(layer, x, x, mask=tril)
    np.testing.assert_allclose(np.asarray(causal), ref, rtol=1e-4, atol=1e-5)


def test_several_step_axes_attend_together():
    layer = _layer(num_heads=2, key_dim=3)
    q = RNG.normal(size=(1, 2, 3, 8)).astype(np.float32)
    v = RNG.normal(size=(1, 2, 2, 6)).astype(np.float32)
    out, scores = layer(q, v, return_attention_scores=True)
    assert out.shape == (1, 2, 3, 8) and scores.shape == (1, 2, 2, 3, 2, 2)
    ref, _ = _reference(layer, q.reshape(1, 6, 8), v.reshape(1, 4, 6))
    np.testing.assert_allclose(np.asarray(out).reshape(1, 6, 8), ref, rtol=1e-4, atol=1e-5)


def test_jit_gives_the_eager_numbers():
    layer = _layer(num_heads=2, key_dim=4)
    step = jmod.jit(lambda layer, q, v, m: layer(q, v, attention_mask=m))
    mask = np.ones((2, 3, 5), bool)
    mask[:, :, -1] = False
    jitted = step(layer, Q, V, mask)
    np.testing.assert_allclose(
        np.asarray(jitted), np.asarray(layer(Q, V, attention_mask=mask)), rtol=1e-5, atol=1e-6
    )


def test_dropout_only_when_training_and_fresh_under_jit():
    layer = _layer(num_heads=2, key_dim=4, dropout=0.5, seed=1)
    a, b = layer(Q, V), layer(Q, V, training=False)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    step = jmod.jit(lambda layer, q, v: layer(q, v, training=True))
    c, d = step(layer, Q, V), step(layer, Q, V)
    assert not np.allclose(np.asarray(c), np.asarray(a))
    assert not np.allclose(np.asarray(c), np.asarray(d))


def test_returned_scores_are_before_dropout():
    layer = _layer(num_heads=2, key_dim=4, dropout=0.5, seed=1)
    _, scores = layer(Q, V, return_attention_scores=True, training=True)
    np.testing.assert_allclose(np.asarray(scores).sum(-1), 1.0, rtol=1e-5)


def test_mixed_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        layer = _layer(num_heads=2, key_dim=4)
    out, scores = layer(Q, V, return_attention_scores=True)
    assert out.dtype == jnp.bfloat16 and scores.dtype == jnp.bfloat16
    assert all(v.dtype == jnp.float32 for v in layer.variables)
    ref, _ = _reference(layer, Q, V)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=0.1, atol=0.1)


def test_wrong_value_features_name_the_layer():
    layer = _layer(num_heads=2, key_dim=4, name="mha")
    layer(Q, V)
    with pytest.raises(LayerCallError, match="'mha' \\(MultiHeadAttention\\).*value.*6.*7"):
        layer(Q, np.ones((2, 5, 7), np.float32))


def test_key_and_value_steps_must_agree():
    with pytest.raises(LayerCallError, match="key and value their steps"):
        _layer(num_heads=1, key_dim=2)(Q, V, key=np.ones((2, 4, 4), np.float32))


def test_mask_that_does_not_broadcast_is_refused():
    with pytest.raises(LayerCallError, match="attention_mask of shape \\(3, 4\\)"):
        _layer(num_heads=1, key_dim=2)(Q, V, attention_mask=np.ones((3, 4), bool))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"key_dim": -1}, "key_dim"),
        ({"value_dim": 0}, "value_dim"),
        ({"dropout": 1.0}, "dropout.*1.0"),
        ({"output_shape": "x"}, "output_shape"),
        ({"seed": "a"}, "seed"),
    ],
)
def test_bad_arguments_are_serialization_errors(kwargs, match):
    args = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises(SerializationError, match=f"MultiHeadAttention.*{match}"):
        jmod.layers.MultiHeadAttention(**args)


def test_config_round_trip():
    # The docstring example's weight shapes, so the initializer compiles once.
    layer = jmod.layers.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        value_dim=4,
        dropout=0.1,
        use_bias=False,
        output_shape=(8,),
        kernel_initializer=jmod.initializers.GlorotUniform(seed=2),
        seed=4,
    )
    clone = config_round_trip(layer)
    assert clone.get_config()["output_shape"] == [8]
    value = RNG.normal(size=(2, 5, 16)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer(Q, value)), np.asarray(clone(Q, value)))


def test_compute_output_shape():
    assert _layer(num_heads=2, key_dim=4).compute_output_shape((None, 3, 8)) == (None, 3, 8)
    assert _layer(num_heads=2, key_dim=4, output_shape=6).compute_output_shape((None, 3, 8)) == (
        None,
        3,
        6,
    )


def test_docstring_examples_run():
    run_docstring_examples(attention)


def test_query_and_value_masks_equal_the_explicit_attention_mask_with_jit_gradients():
    rng = np.random.default_rng(5)
    q = rng.normal(size=(2, 3, 4)).astype(np.float32)
    v = rng.normal(size=(2, 5, 4)).astype(np.float32)
    q_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    v_mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], bool)
    mha = jmod.layers.MultiHeadAttention(2, 3)
    explicit = q_mask[:, :, None] & v_mask[:, None, :]
    out = mha(q, v, query_mask=q_mask, value_mask=v_mask)
    ref = mha(q, v, attention_mask=explicit)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6)
    # Masked value steps get no gradient, under jax.jit.
    grad = jax.jit(jax.grad(lambda v_: jnp.sum(mha(q, v_, value_mask=v_mask) ** 2)))(v)
    assert (np.asarray(grad)[~v_mask] == 0).all() and np.abs(np.asarray(grad)[v_mask]).sum() > 0
