"""jmod layers against Keras 3 itself (skipped when Keras is not installed; the `bench`
extra has it): a jmod layer built from the Keras layer's JSON config, Keras' weights copied
in with set_weights (Keras' order), gives the same outputs, and the same gradients under
jmod.jit as Keras' own under jax.jit."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip("Keras runs on another backend", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jmod  # noqa: E402

K = keras.layers
RNG = np.random.default_rng(0)
X2 = RNG.normal(size=(4, 6)).astype(np.float32)
X3 = RNG.normal(size=(2, 6, 4)).astype(np.float32)
X4 = RNG.normal(size=(2, 6, 5, 3)).astype(np.float32)
X5 = RNG.normal(size=(2, 4, 4, 4, 2)).astype(np.float32)
IDS = RNG.integers(0, 9, size=(3, 5)).astype(np.int32)

CASES = [
    ("Dense", lambda: K.Dense(3, activation="gelu", kernel_constraint="max_norm"), X2),
    ("EinsumDense", lambda: K.EinsumDense("abc,cd->abd", (6, 3), bias_axes="d"), X3),
    ("Conv1D", lambda: K.Conv1D(3, 3, strides=2, padding="same", dilation_rate=1), X3),
    ("Conv1D-causal", lambda: K.Conv1D(2, 3, padding="causal", dilation_rate=2), X3),
    ("Conv2D", lambda: K.Conv2D(4, (2, 3), padding="same", groups=1), X4),
    ("Conv3D", lambda: K.Conv3D(2, 2), X5),
    ("Conv1DTranspose", lambda: K.Conv1DTranspose(2, 3, strides=2), X3),
    ("Conv2DTranspose", lambda: K.Conv2DTranspose(2, 3, strides=2, padding="same"), X4),
    ("Conv2DTranspose-op", lambda: K.Conv2DTranspose(2, 3, strides=2, output_padding=1), X4),
    ("DepthwiseConv2D", lambda: K.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), X4),
    ("SeparableConv2D", lambda: K.SeparableConv2D(4, 3, strides=2), X4),
    ("MaxPooling2D", lambda: K.MaxPooling2D(2, padding="same"), X4),
    ("AveragePooling2D", lambda: K.AveragePooling2D(3, strides=2, padding="same"), X4),
    ("MaxPooling3D", lambda: K.MaxPooling3D(2), X5),
    ("AveragePooling3D", lambda: K.AveragePooling3D(2), X5),
    ("GlobalAveragePooling3D", lambda: K.GlobalAveragePooling3D(), X5),
    ("BatchNormalization", lambda: K.BatchNormalization(), X4),
    ("LayerNormalization", lambda: K.LayerNormalization(), X3),
    ("GroupNormalization", lambda: K.GroupNormalization(2), X3),
    ("RMSNormalization", lambda: K.RMSNormalization(), X3),
    ("UnitNormalization", lambda: K.UnitNormalization(), X3),
    ("Embedding", lambda: K.Embedding(9, 3), IDS),
    ("SimpleRNN", lambda: K.SimpleRNN(3, return_sequences=True), X3),
    ("GRU", lambda: K.GRU(3), X3),
    ("GRU-reset-before", lambda: K.GRU(3, reset_after=False, go_backwards=True), X3),
    ("LSTM", lambda: K.LSTM(3, return_sequences=True), X3),
    ("Bidirectional", lambda: K.Bidirectional(K.LSTM(2, return_sequences=True)), X3),
    ("TimeDistributed", lambda: K.TimeDistributed(K.Dense(2)), X3),
    ("MultiHeadAttention", lambda: K.MultiHeadAttention(2, 3), X3),
    ("PReLU", lambda: K.PReLU(alpha_initializer="random_normal"), X3),
    ("ReLU", lambda: K.ReLU(max_value=1.0, negative_slope=0.1), X3),
    ("LeakyReLU", lambda: K.LeakyReLU(), X3),
    ("ELU", lambda: K.ELU(), X3),
    ("Softmax", lambda: K.Softmax(), X3),
    ("Rescaling", lambda: K.Rescaling(0.5, offset=0.1), X3),
    ("ZeroPadding2D", lambda: K.ZeroPadding2D(((1, 0), (2, 1))), X4),
    ("Cropping2D", lambda: K.Cropping2D(((1, 0), (1, 2))), X4),
    ("UpSampling2D", lambda: K.UpSampling2D(2, interpolation="bilinear"), X4),
    ("UpSampling1D", lambda: K.UpSampling1D(2), X3),
    ("Permute", lambda: K.Permute((2, 1)), X3),
    ("RepeatVector", lambda: K.RepeatVector(3), X2),
    ("Flatten", lambda: K.Flatten(), X4),
]


def _call(layer, x):
    return layer(x, x) if type(layer).__name__ == "MultiHeadAttention" else layer(x)


@pytest.mark.parametrize("name, make, x", CASES, ids=[c[0] for c in CASES])
def test_same_outputs_and_gradients_as_keras(name, make, x):
    kl = make()
    k_out = np.asarray(_call(kl, x))
    config = json.loads(json.dumps(kl.get_config()))  # Keras' JSON, quantization_config too
    jl = getattr(jmod.layers, type(kl).__name__).from_config(config)
    _call(jl, x)
    weights = kl.get_weights()
    if name == "BatchNormalization":  # non-trivial moving statistics
        weights = [w + RNG.uniform(0.5, 1.0, w.shape).astype(w.dtype) for w in weights]
        kl.set_weights(weights)
        k_out = np.asarray(_call(kl, x))
    jl.set_weights(weights)
    assert [tuple(w.shape) for w in jl.get_weights()] == [w.shape for w in weights]
    np.testing.assert_allclose(np.asarray(_call(jl, x)), k_out, rtol=1e-5, atol=1e-5)
    assert jl.count_params() == kl.count_params()

    # Gradients w.r.t. the trainable weights (Keras' order) and the float inputs.
    g = RNG.normal(size=k_out.shape).astype(np.float32)
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    tv = [v.value for v in kl.trainable_variables]
    ntv = [v.value for v in kl.non_trainable_variables]

    def k_loss(tv, x_):
        args = (x_, x_) if name == "MultiHeadAttention" else (x_,)
        out, _ = kl.stateless_call(tv, ntv, *args)
        return jnp.sum(out * g)

    k_w, k_x = jax.jit(jax.grad(k_loss, argnums=(0, 1) if floating else (0,)))(tv, x) + (
        (None,) if not floating else ()
    )

    holder = jmod.Module()
    holder.layer = jl
    holder.x = jmod.Variable(x.astype(np.float32)) if floating else None

    def j_loss(m):
        inp = m.x.value if floating else x
        return jnp.sum(_call(m.layer, inp) * g)

    grads = jmod.jit(lambda m: jmod.grad(j_loss)(m))(holder)
    paths = {id(v): p for p, v in holder.named_variables()}
    trainable = [v for v in jl.weights if v.trainable]
    assert len(trainable) == len(k_w)
    for v, kg in zip(trainable, k_w):
        np.testing.assert_allclose(
            np.asarray(grads[paths[id(v)]]), np.asarray(kg), rtol=1e-4, atol=1e-5, err_msg=v.name
        )
    if floating:
        np.testing.assert_allclose(np.asarray(grads["x"]), np.asarray(k_x), rtol=1e-4, atol=1e-5)


def test_masked_lstm_matches_keras():
    ids = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], np.int32)
    k_model = keras.Sequential(
        [
            K.Input((5,), dtype="int32"),
            K.Embedding(9, 4, mask_zero=True),
            K.LSTM(3, return_sequences=True),
        ]
    )
    j_model = jmod.Sequential(
        [jmod.layers.Embedding(9, 4, mask_zero=True), jmod.layers.LSTM(3, return_sequences=True)]
    )
    j_model(ids)
    j_model.set_weights(k_model.get_weights())
    np.testing.assert_allclose(
        np.asarray(j_model(ids)), np.asarray(k_model(ids)), rtol=1e-5, atol=1e-6
    )


def test_summary_totals_match_keras():
    k_model = keras.Sequential(
        [K.Input((8, 8, 3)), K.Conv2D(16, 3), K.MaxPooling2D(), K.Flatten(), K.Dense(10)]
    )
    j_model = jmod.Sequential(
        [
            jmod.layers.Conv2D(16, 3),
            jmod.layers.MaxPooling2D(),
            jmod.layers.Flatten(),
            jmod.layers.Dense(10),
        ]
    )
    j_model.build((None, 8, 8, 3))
    lines = []
    j_model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    total = k_model.count_params()
    assert total > 1000
    assert f"Total params: {total:,} (" in text
