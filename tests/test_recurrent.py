"""Recurrent layers against NumPy loops; gradients under jax.jit and jmod.jit (the harness)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from jmod.errors import LayerCallError, SerializationError
from jmod.layers import recurrent
from tests.layer_checks import check_layer, numpy_initializer, run_docstring_examples

RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 5, 4)).astype(np.float32)
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], bool)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _weights(layer):
    cell = layer.cell
    b = np.asarray(cell.bias.value, np.float64) if cell.use_bias else None
    return np.asarray(cell.kernel.value, np.float64), np.asarray(cell.recurrent_kernel.value), b


def _simple_step(layer, x_t, states):
    k, rk, b = _weights(layer)
    h = np.tanh(x_t @ k + states[0] @ rk + (0 if b is None else b))
    return h, [h]


def _lstm_step(layer, x_t, states):
    k, rk, b = _weights(layer)
    h, c = states
    z = x_t @ k + h @ rk + (0 if b is None else b)
    u = layer.cell.units
    i, f, g, o = (z[:, j * u : (j + 1) * u] for j in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    return h, [h, c]


def _gru_step(layer, x_t, states):
    k, rk, b = _weights(layer)
    h = states[0]
    u = layer.cell.units
    if layer.cell.reset_after:
        xz = x_t @ k + b[0]
        hz = h @ rk + b[1]
        z = _sigmoid(xz[:, :u] + hz[:, :u])
        r = _sigmoid(xz[:, u : 2 * u] + hz[:, u : 2 * u])
        cand = np.tanh(xz[:, 2 * u :] + r * hz[:, 2 * u :])
    else:
        xz = x_t @ k + b
        z = _sigmoid(xz[:, :u] + h @ rk[:, :u])
        r = _sigmoid(xz[:, u : 2 * u] + h @ rk[:, u : 2 * u])
        cand = np.tanh(xz[:, 2 * u :] + (r * h) @ rk[:, 2 * u :])
    h = z * h + (1 - z) * cand
    return h, [h]


STEPS = {"SimpleRNN": _simple_step, "LSTM": _lstm_step, "GRU": _gru_step}


def _loop_reference(layer, x, mask=None):
    """Keras' semantics by a Python loop: masked steps keep states and repeat the output."""
    x = np.asarray(x, np.float64)
    n, t, _ = x.shape
    step = STEPS[type(layer).__name__]
    states = [np.zeros((n, s)) for s in layer.cell.state_size]
    order = range(t - 1, -1, -1) if layer.go_backwards else range(t)
    prev = np.zeros((n, layer.cell.units))
    outs = []
    for i in order:
        out, new = step(layer, x[:, i], states)
        if mask is not None:
            keep = mask[:, i][:, None]
            new = [np.where(keep, a, b) for a, b in zip(new, states)]
            out = np.where(keep, out, 0.0 if layer.zero_output_for_mask else prev)
            prev = np.where(keep, out, prev)
        else:
            prev = out
        states = new
        outs.append(out)
    output = np.stack(outs, 1) if layer.return_sequences else prev
    return (output, *states) if layer.return_state else output


def _make(cls, **kwargs):
    init = dict(
        kernel_initializer=numpy_initializer(1),
        recurrent_initializer=numpy_initializer(2),
        bias_initializer=numpy_initializer(3, 0.1),
    )
    return lambda: cls(3, **init, **kwargs)


CASES = [
    (jmod.layers.SimpleRNN, {}),
    (jmod.layers.SimpleRNN, {"return_sequences": True, "go_backwards": True}),
    (jmod.layers.LSTM, {}),
    (jmod.layers.LSTM, {"return_sequences": True, "return_state": True}),
    (jmod.layers.LSTM, {"go_backwards": True, "unit_forget_bias": False}),
    (jmod.layers.GRU, {}),
    (jmod.layers.GRU, {"reset_after": False, "return_state": True}),
    (jmod.layers.GRU, {"return_sequences": True, "use_bias": True}),
]


@pytest.mark.parametrize("cls, kwargs", CASES, ids=str)
def test_recurrent_layer_harness(cls, kwargs):
    # Forward against the loop, gradients under jax.jit and jmod.jit, config, archive,
    # bfloat16 and a fit step; the archive and fit run once per class to keep this fast.
    first = kwargs == {}
    check_layer(
        _make(cls, **kwargs),
        X,
        lambda layer, x: _loop_reference(layer, x),
        archive=first,
        fit=first,
        bfloat16=first,
    )


@pytest.mark.parametrize("cls", [jmod.layers.SimpleRNN, jmod.layers.LSTM, jmod.layers.GRU])
@pytest.mark.parametrize("seqs", [False, True])
def test_masked_steps_keep_the_state(cls, seqs):
    layer = _make(cls, return_sequences=seqs)()
    # The masked gradient under jit once (LSTM with sequences); the forward pass for all.
    check_layer(
        lambda: layer,
        X,
        lambda lay, x: _loop_reference(lay, x, MASK),
        call_kwargs={"mask": MASK},
        gradients=cls is jmod.layers.LSTM and seqs,
        config=False,
        archive=False,
        bfloat16=False,
        fit=False,
    )
    if seqs:
        assert np.array_equal(np.asarray(layer.compute_mask(X, MASK)), MASK)
    else:
        assert layer.compute_mask(X, MASK) is None


def test_zero_output_for_mask():
    layer = _make(jmod.layers.GRU, return_sequences=True, zero_output_for_mask=True)()
    out = np.asarray(layer(X, mask=MASK))
    assert (out[~MASK] == 0).all()
    np.testing.assert_allclose(out, _loop_reference(layer, X, MASK), rtol=1e-5, atol=1e-5)


def test_initial_state_is_used():
    layer = _make(jmod.layers.LSTM)()
    h0 = RNG.normal(size=(3, 3)).astype(np.float32)
    c0 = RNG.normal(size=(3, 3)).astype(np.float32)
    out = layer(X, initial_state=[h0, c0])
    states = [h0.astype(np.float64), c0.astype(np.float64)]
    for i in range(X.shape[1]):
        h, states = _lstm_step(layer, X[:, i].astype(np.float64), states)
    np.testing.assert_allclose(np.asarray(out), h, rtol=1e-5, atol=1e-5)
    with pytest.raises(LayerCallError, match="initial_state has 1 arrays"):
        layer(X, initial_state=[h0])


def test_generic_rnn_runs_a_cell_step_by_step():
    cell = jmod.layers.LSTMCell(
        3, kernel_initializer=numpy_initializer(1), recurrent_initializer=numpy_initializer(2)
    )
    layer = jmod.layers.RNN(cell, return_sequences=True)
    fast = jmod.layers.LSTM(3, return_sequences=True)
    fast(X)
    out = layer(X)
    fast.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(out), np.asarray(fast(X)), rtol=1e-5, atol=1e-6)


class _UserCell(jmod.layers.Layer):
    """A cell of the user's own: a running sum through the generic (per-step) path."""

    state_size = [4]

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1],), numpy_initializer(5))

    def call(self, inputs, states):
        out = states[0] + inputs * self.w
        return out, [out]


def test_user_cell_through_rnn_harness():
    check_layer(
        lambda: jmod.layers.RNN(_UserCell(), return_sequences=True),
        X,
        lambda layer, x: np.cumsum(x * np.asarray(layer.cell.w.value), axis=1),
        config=False,
        archive=False,
        bfloat16=False,
    )


def test_cells_step_and_harness():
    for cls, step in (
        (jmod.layers.SimpleRNNCell, _simple_step),
        (jmod.layers.LSTMCell, _lstm_step),
        (jmod.layers.GRUCell, _gru_step),
    ):
        cell = cls(3, kernel_initializer=numpy_initializer(1))
        states = [RNG.normal(size=(3, 3)).astype(np.float32) for _ in cell.state_size]
        out, new = cell(X[:, 0], states)
        holder = type("H", (), {"cell": cell})
        ref_out, ref_new = step(holder, X[:, 0].astype(np.float64), states)
        np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-5, atol=1e-5)
        for a, b in zip(new, ref_new):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-5)
        # The cell's gradient under jit, through the harness's gradient check.
        from tests.layer_checks import check_gradients

        check_gradients(cell, X[:, 0], {"states": states})


def test_weights_in_keras_order_and_shapes():
    lstm = jmod.layers.LSTM(3)
    lstm(X)
    assert [v.name for v in lstm.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [v.shape for v in lstm.weights] == [(4, 12), (3, 12), (12,)]
    gru = jmod.layers.GRU(3)
    gru(X)
    assert [v.shape for v in gru.weights] == [(4, 9), (3, 9), (2, 9)]
    assert lstm.count_params() == 4 * 12 + 3 * 12 + 12
    assert lstm.units == 3 and lstm.cell.units == 3


def test_dropout_only_while_training():
    layer = jmod.layers.LSTM(3, dropout=0.5, recurrent_dropout=0.5, seed=1)
    a = layer(X)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(layer(X)))
    b = layer(X, training=True)
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_bad_arguments():
    with pytest.raises(SerializationError, match="LSTM.*units"):
        jmod.layers.LSTM(0)
    with pytest.raises(SerializationError, match="stateful"):
        jmod.layers.GRU(2, stateful=True)
    with pytest.raises(SerializationError, match="dropout"):
        jmod.layers.SimpleRNN(2, dropout=1.5)
    with pytest.raises(LayerCallError, match="rank 3"):
        jmod.layers.LSTM(2)(X[0])


def test_lstm_text_classifier_trains_with_fit():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 20, size=(64, 8))
    y = (ids[:, :4].sum(1) > ids[:, 4:].sum(1)).astype(np.int32)
    model = jmod.Sequential(
        [
            jmod.layers.Embedding(20, 8),
            jmod.layers.LSTM(8),
            jmod.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=optax.adam(1e-2), loss="sparse_categorical_crossentropy")
    losses = model.fit(ids, y, batch_size=32, epochs=5, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_jit_matches_eager():
    layer = jmod.layers.GRU(3, return_sequences=True)
    fn = jmod.jit(lambda m, x: m(x))
    np.testing.assert_allclose(np.asarray(fn(layer, X)), np.asarray(layer(X)), rtol=1e-6)
    assert jax.jit(lambda x: jnp.sum(x))(X).shape == ()


def test_docstring_examples_run():
    run_docstring_examples(recurrent)
