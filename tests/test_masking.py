"""Keras masks: Embedding(mask_zero=True) through Sequential and functional models into RNNs,
global pooling and Softmax; gradients under jax.jit and jmod.jit ignore the padding."""

import jax
import jax.numpy as jnp
import numpy as np

import jmod
from tests.layer_checks import numpy_initializer

L = jmod.layers
IDS = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2], [5, 0, 0, 0, 0]], np.int32)


def _trimmed_reference(emb, rnn, ids):
    """Each sequence run without its padding, one at a time."""
    outs = []
    for row in ids:
        real = row[row != 0][None]
        outs.append(np.asarray(rnn(emb(real)))[0])
    return np.stack(outs)


def _layers():
    emb = L.Embedding(10, 4, mask_zero=True, embeddings_initializer=numpy_initializer(1))
    rnn = L.LSTM(
        3, kernel_initializer=numpy_initializer(2), recurrent_initializer=numpy_initializer(3)
    )
    return emb, rnn


def test_sequential_carries_the_embedding_mask_into_the_lstm():
    emb, rnn = _layers()
    model = jmod.Sequential([emb, L.Dropout(0.1), rnn])
    out = np.asarray(model(IDS))
    np.testing.assert_allclose(out, _trimmed_reference(emb, rnn, IDS), rtol=1e-5, atol=1e-6)
    # Padding more zeros changes nothing.
    padded = np.pad(IDS, ((0, 0), (0, 3)))
    np.testing.assert_allclose(np.asarray(model(padded)), out, rtol=1e-5, atol=1e-6)


def test_functional_model_carries_the_mask_and_pooling_ignores_padding():
    emb, _ = _layers()
    inputs = jmod.Input(shape=(None,), dtype="int32")
    x = emb(inputs)
    x = L.Dense(4)(x)  # supports_masking: the mask passes through
    pooled = L.GlobalAveragePooling1D()(x)
    model = jmod.Model(inputs, pooled)
    dense = model.layers[2]
    out = np.asarray(model(IDS))
    vectors = np.asarray(dense(emb(IDS)))
    ref = np.stack([vectors[i][IDS[i] != 0].mean(0) for i in range(len(IDS))])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_masked_gradient_under_jit_ignores_padding_embeddings():
    emb, rnn = _layers()
    model = jmod.Sequential([emb, rnn])
    model(IDS)

    def loss(m):
        return jnp.sum(m(IDS) ** 2)

    grads = jmod.jit(lambda m: jmod.grad(loss)(m))(model)
    table = [g for p, g in grads.items() if p.endswith("embeddings")][0]
    # Id 0 is only padding: its row gets no gradient; the used ids do.
    assert float(jnp.abs(table[0]).sum()) == 0.0
    assert float(jnp.abs(table[3]).sum()) > 0.0
    state = model.state()
    params = {p: v.value for p, v in model.named_variables() if v.trainable}

    def pure(params):
        out, _ = jmod.functional_call(model, {**state, **params}, IDS)
        return jnp.sum(out**2)

    jax_grads = jax.jit(jax.grad(pure))(params)
    for p, g in grads.items():
        np.testing.assert_allclose(np.asarray(g), np.asarray(jax_grads[p]), rtol=1e-5, atol=1e-6)


def test_functional_attention_gets_the_query_and_value_padding_masks():
    ids = IDS
    inputs = jmod.Input(shape=(None,), dtype="int32")
    emb = L.Embedding(10, 4, mask_zero=True, embeddings_initializer=numpy_initializer(4))
    x = emb(inputs)
    mha = L.MultiHeadAttention(2, 3)
    out = mha(x, x)
    pooled = L.GlobalAveragePooling1D()(out)  # the query's mask reaches the pooling
    model = jmod.Model(inputs, pooled)
    got = np.asarray(model(ids))
    keep = ids != 0
    vectors = emb(ids)
    attended = np.asarray(mha(vectors, vectors, query_mask=keep, value_mask=keep))
    ref = np.stack([attended[i][keep[i]].mean(0) for i in range(len(ids))])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # Without masks the padding would be attended to: the numbers differ.
    unmasked = np.asarray(mha(vectors, vectors)).mean(1)
    assert not np.allclose(unmasked, ref, atol=1e-3)
