"""compile / fit / evaluate / predict, checked against NumPy training loops."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from jmod.layers import Dense, Dropout, Layer
from jmod.training import TrainerMixin, TrainingError


class Linear(TrainerMixin, Layer):
    """y = x @ w + b with weights set from NumPy (a stand-in for jmod.Model)."""

    def __init__(self, w, b, **kwargs):
        super().__init__(**kwargs)
        self.w = jmod.Variable(np.asarray(w, np.float32), name="w")
        self.b = jmod.Variable(np.asarray(b, np.float32), name="b")
        self.built = True

    def call(self, x):
        return x @ self.w + self.b


class MLP(TrainerMixin, Layer):
    def __init__(self, units=3, rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden = Dense(8, activation="relu")
        self.drop = Dropout(rate)
        self.out = Dense(units)

    def call(self, x, training=None):
        return self.out(self.drop(self.hidden(x), training=training))


def _regression_data(n=10, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, 1)) + 0.5).astype(np.float32)
    return x, y


def _numpy_sgd(w, b, x, y, lr, batch_size, epochs):
    """Mini-batch SGD on mean squared error, the last batch short: the reference."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            err = xb @ w + b - yb
            w = w - lr * 2.0 / err.size * xb.T @ err
            b = b - lr * 2.0 / err.size * err.sum(axis=0)
    return w, b


def test_fit_matches_numpy_sgd_with_a_short_last_batch():
    x, y = _regression_data(n=10)
    w0, b0 = np.full((3, 1), 0.1, np.float32), np.zeros(1, np.float32)
    model = Linear(w0, b0)
    model.compile(optax.sgd(0.1), loss="mse")
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    w_ref, b_ref = _numpy_sgd(w0, b0, x, y, 0.1, 4, 3)
    np.testing.assert_allclose(np.asarray(model.w), w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.b), b_ref, rtol=1e-5, atol=1e-6)
    # 10 samples in batches of 4: three steps per epoch, one trace for all of them.
    assert model.train_function.trace_count == 1
    assert len(history.history["loss"]) == 3


@pytest.mark.parametrize("k", [1, 3])
def test_device_resident_data_gives_the_numpy_sgd_weights(monkeypatch, k):
    # On accelerators the rows are gathered on the device (on CPU NumPy slices them).
    monkeypatch.setattr(jmod.training.data, "_gather_on_device", lambda nbytes: True)
    x, y = _regression_data(n=10)
    w0, b0 = np.full((3, 1), 0.1, np.float32), np.zeros(1, np.float32)
    model = Linear(w0, b0)
    model.compile(optax.sgd(0.1), loss="mse", steps_per_execution=k)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    w_ref, _ = _numpy_sgd(w0, b0, x, y, 0.1, 4, 2)
    np.testing.assert_allclose(np.asarray(model.w), w_ref, rtol=1e-5, atol=1e-6)
    assert model.evaluate(x, y, batch_size=4, verbose=0) == pytest.approx(
        float(np.mean((x @ np.asarray(model.w) + np.asarray(model.b) - y) ** 2)), rel=1e-5
    )


def test_fit_again_and_early_stopping_do_not_retrace():
    x, y = _regression_data(n=10)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile("sgd", loss="mse")
    stop = jmod.training.EarlyStopping("loss", patience=0, min_delta=1e9)
    for _ in range(3):
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[stop])
    assert model.stop_training
    assert model.train_function.trace_count == 1


def test_epoch_loss_is_the_sample_weighted_mean_of_batch_losses():
    x, y = _regression_data(n=10)
    w0, b0 = np.zeros((3, 1), np.float32), np.zeros(1, np.float32)
    model = Linear(w0, b0)
    model.compile(optax.sgd(0.0), loss="mse")  # no update: every batch sees w0
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], np.mean(y**2), rtol=1e-6)


def test_evaluate_is_exact_over_padded_batches_with_sample_weights():
    x, y = _regression_data(n=13)
    w0, b0 = np.ones((3, 1), np.float32), np.full(1, 0.2, np.float32)
    model = Linear(w0, b0)
    model.compile("sgd", loss="mse", metrics=["mae"])
    weights = np.linspace(0.0, 2.0, 13).astype(np.float32)
    loss, mae = model.evaluate(x, y, batch_size=5, sample_weight=weights, verbose=0)
    err = (x @ w0 + b0 - y)[:, 0]
    # Per batch: sum(w * e^2) / batch size; epoch: batches weighted by their size.
    batches = [slice(0, 5), slice(5, 10), slice(10, 13)]
    per_batch = [np.sum(weights[s] * err[s] ** 2) / len(err[s]) for s in batches]
    expected_loss = sum(v * len(err[s]) for v, s in zip(per_batch, batches)) / 13
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(mae, np.sum(weights * np.abs(err)) / weights.sum(), rtol=1e-5)
    assert model.test_function.trace_count == 1


def test_evaluate_returns_loss_list_or_dict():
    x, y = _regression_data(n=6)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile("sgd", loss="mae")
    only_loss = model.evaluate(x, y, verbose=0)
    assert isinstance(only_loss, float)
    np.testing.assert_allclose(only_loss, np.mean(np.abs(y)), rtol=1e-6)
    model.compile("sgd", loss="mae", metrics=["mse"])
    assert model.evaluate(x, y, verbose=0) == pytest.approx(
        [np.mean(np.abs(y)), np.mean(y**2)], rel=1e-6
    )
    as_dict = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(as_dict) == ["loss", "mse"]


def test_predict_stacks_batches_and_drops_the_padding():
    x, _ = _regression_data(n=11)
    w, b = np.arange(3.0).reshape(3, 1), np.array([1.0])
    model = Linear(w, b)
    out = model.predict(x, batch_size=4, verbose=0)
    assert out.shape == (11, 1)
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-5, atol=1e-6)
    assert model.predict_function.trace_count == 1


def test_same_seed_gives_bit_identical_weights_with_dropout_and_shuffling():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=40)

    def run(seed):
        jmod.random.set_seed(seed)
        model = MLP(rate=0.3)
        model.compile("adam", loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        return [np.asarray(v) for v in model.variables]

    first, second = run(3), run(3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_steps_per_execution_gives_the_same_weights_as_single_steps():
    x, y = _regression_data(n=22)
    w0, b0 = np.full((3, 1), 0.1, np.float32), np.zeros(1, np.float32)
    single = Linear(w0, b0)
    single.compile(optax.sgd(0.05), loss="mse")
    single.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    scanned = Linear(w0, b0)
    # 6 steps per epoch in groups of 4: the last group has 2 empty steps, skipped.
    scanned.compile(optax.sgd(0.05), loss="mse", steps_per_execution=4)
    history = scanned.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(np.asarray(scanned.w), np.asarray(single.w), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(scanned.b), np.asarray(single.b), rtol=1e-5)
    assert scanned.train_function.trace_count == 1
    assert scanned.optimizer.iterations.value == 12
    assert len(history.history["loss"]) == 2


def test_evaluate_with_steps_per_execution_matches_single_steps():
    x, y = _regression_data(n=23)
    model = Linear(np.ones((3, 1)), np.zeros(1))
    model.compile("sgd", loss="mse", metrics=["mae"], steps_per_execution=3)
    loss, mae = model.evaluate(x, y, batch_size=4, verbose=0)
    err = x @ np.ones((3, 1)) - y
    assert loss == pytest.approx(np.mean(err**2), rel=1e-5)
    assert mae == pytest.approx(np.mean(np.abs(err)), rel=1e-5)


def test_sequential_model_trains_to_a_high_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32)  # XOR of the signs
    jmod.random.set_seed(0)
    model = jmod.Sequential([jmod.Input(shape=[2]), Dense(16, activation="relu"), Dense(2)])
    model.compile(
        jmod.training.optimizers.get("adam"),
        loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    jmod.training.set_learning_rate(model.optimizer, 0.05)
    history = model.fit(x, y, batch_size=32, epochs=30, verbose=0, validation_data=[x, y])
    assert history.history["val_accuracy"][-1] > 0.9
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_add_loss_terms_are_part_of_the_loss_and_the_gradient():
    class Penalized(Linear):
        def call(self, x):
            self.add_loss(0.5 * jnp.sum(self.w.value**2))
            return super().call(x)

    x, y = _regression_data(n=8)
    w0, b0 = np.ones((3, 1), np.float32), np.zeros(1, np.float32)
    model = Penalized(w0, b0)
    model.compile(optax.sgd(0.1), loss="mse")
    loss = model.train_on_batch(x, y)
    err = x @ w0 + b0 - y
    np.testing.assert_allclose(loss, np.mean(err**2) + 0.5 * np.sum(w0**2), rtol=1e-5)
    grad_w = 2.0 / err.size * x.T @ err + w0
    np.testing.assert_allclose(np.asarray(model.w), w0 - 0.1 * grad_w, rtol=1e-5)
    assert model.losses == []  # no tracer of the compiled step is left behind


def test_multi_input_dict_and_tuple_data():
    class TwoInputs(TrainerMixin, Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.k = jmod.Variable(np.float32(1.0))

        def call(self, inputs):
            a, b = (inputs["a"], inputs["b"]) if isinstance(inputs, dict) else inputs
            return self.k * a - b

    a = np.arange(6.0, dtype=np.float32).reshape(6, 1)
    b = np.ones((6, 1), np.float32)
    model = TwoInputs()
    model.compile("sgd", loss="mse")
    expected = np.mean((a - b) ** 2)
    assert model.evaluate({"a": a, "b": b}, np.zeros((6, 1)), verbose=0) == pytest.approx(expected)
    assert model.evaluate((a, b), np.zeros((6, 1)), batch_size=4, verbose=0) == pytest.approx(
        expected
    )
    np.testing.assert_allclose(model.predict((a, b), batch_size=4, verbose=0), a - b)


def test_multi_output_losses_are_weighted_and_logged_per_output():
    class TwoHeads(TrainerMixin, Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.s = jmod.Variable(np.float32(2.0))

        def call(self, x):
            return {"double": self.s * x, "same": x}

    x = np.arange(8.0, dtype=np.float32).reshape(8, 1)
    y = {"double": np.zeros((8, 1), np.float32), "same": np.ones((8, 1), np.float32)}
    model = TwoHeads()
    model.compile(
        "sgd",
        loss={"double": "mse", "same": "mae"},
        loss_weights={"double": 0.5, "same": 2.0},
        metrics={"same": ["mse"]},
    )
    logs = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    double, same = np.mean((2 * x) ** 2), np.mean(np.abs(x - 1))
    assert logs["double_loss"] == pytest.approx(double, rel=1e-6)
    assert logs["same_loss"] == pytest.approx(same, rel=1e-6)
    assert logs["loss"] == pytest.approx(0.5 * double + 2.0 * same, rel=1e-6)
    assert logs["same_mse"] == pytest.approx(np.mean((x - 1) ** 2), rel=1e-6)


def test_fit_on_a_generator_and_a_list_of_batches():
    x, y = _regression_data(n=10)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4)]  # 4, 4, 2
    w0, b0 = np.full((3, 1), 0.1, np.float32), np.zeros(1, np.float32)
    listed = Linear(w0, b0)
    listed.compile(optax.sgd(0.1), loss="mse")
    # A list is re-iterated each epoch; as validation_data it is batches too.
    history = listed.fit(batches, epochs=2, verbose=0, validation_data=batches)
    w_ref, b_ref = _numpy_sgd(w0, b0, x, y, 0.1, 4, 2)
    np.testing.assert_allclose(np.asarray(listed.w), w_ref, rtol=1e-5, atol=1e-6)
    assert listed.train_function.trace_count == 1
    assert len(history.history["loss"]) == 2
    err = x @ w_ref + b_ref - y
    assert history.history["val_loss"][-1] == pytest.approx(np.mean(err**2), rel=1e-4)

    def forever():
        while True:
            yield from batches

    generated = Linear(w0, b0)
    generated.compile(optax.sgd(0.1), loss="mse")
    generated.fit(forever(), epochs=2, steps_per_epoch=3, verbose=0)
    np.testing.assert_allclose(np.asarray(generated.w), w_ref, rtol=1e-5, atol=1e-6)


def test_a_one_shot_generator_without_steps_trains_one_epoch_and_warns():
    x, y = _regression_data(n=8)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile("sgd", loss="mse")
    gen = ((x[i : i + 4], y[i : i + 4]) for i in range(0, 8, 4))
    with pytest.warns(UserWarning, match="ran out"):
        history = model.fit(gen, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1


def test_class_weight_equals_the_matching_sample_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=(12, 1)).astype(np.float32)
    w0, b0 = np.full((3, 1), 0.1, np.float32), np.zeros(1, np.float32)
    results = []
    for kwargs in ({"class_weight": {0: 1.0, 1: 3.0}}, {"sample_weight": 1.0 + 2.0 * y[:, 0]}):
        model = Linear(w0, b0)
        model.compile(optax.sgd(0.1), loss="binary_crossentropy")
        model.fit(x, y, batch_size=5, shuffle=False, verbose=0, **kwargs)
        results.append(np.asarray(model.w))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_batch_norm_statistics_are_updated_by_fit():
    class Normed(TrainerMixin, Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bn = jmod.layers.BatchNormalization(momentum=0.0)
            self.out = Dense(1)

        def call(self, x, training=None):
            return self.out(self.bn(x, training=training))

    x = (np.random.default_rng(0).normal(size=(8, 2)) * 3 + 5).astype(np.float32)
    model = Normed()
    model.compile("sgd", loss="mse")
    model.fit(x, np.zeros((8, 1)), batch_size=8, verbose=0)
    # momentum 0: the moving mean is the last batch's mean.
    np.testing.assert_allclose(np.asarray(model.bn.moving_mean), x.mean(axis=0), rtol=1e-5)


def test_accuracy_follows_the_label_and_prediction_shapes():
    class Fixed(TrainerMixin, Layer):
        def __init__(self, out, **kwargs):
            super().__init__(**kwargs)
            self.table = jmod.Variable(np.asarray(out, np.float32), trainable=False)

        def call(self, x):
            return self.table + 0.0 * x[:, :1]

    probs = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    labels = np.array([1, 2, 2, 0])
    x = np.zeros((4, 1), np.float32)
    model = Fixed(probs)
    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.evaluate(x, labels, verbose=0)[1] == pytest.approx(0.5)
    model.compile("sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    assert model.evaluate(x, np.eye(3)[labels], verbose=0)[1] == pytest.approx(0.5)
    binary = Fixed(np.array([[0.9], [0.2], [0.6], [0.4]]))
    binary.compile("sgd", loss="binary_crossentropy", metrics=["accuracy"])
    assert binary.evaluate(x, np.array([[1], [1], [0], [0]]), verbose=0)[1] == pytest.approx(0.5)


def test_optimizer_names_transformations_and_optimizer_objects():
    x, y = _regression_data(n=8)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile("adam", loss="mse")
    assert jmod.training.get_learning_rate(model.optimizer) == pytest.approx(1e-3)
    model.compile(jmod.Optimizer(model, optax.sgd(0.5)), loss="mse")
    model.train_on_batch(x, y)
    grad_b = 2.0 * np.mean(-y)
    assert float(model.b[0]) == pytest.approx(-0.5 * grad_b, rel=1e-5)
    with pytest.raises(TrainingError, match="unknown optimizer 'adamm'"):
        model.compile("adamm", loss="mse")
    other = Linear(np.zeros((3, 1)), np.zeros(1))
    with pytest.raises(TrainingError, match="built for model"):
        model.compile(jmod.Optimizer(other, optax.sgd(0.1)), loss="mse")


def test_train_on_batch_and_test_on_batch_return_logs():
    x, y = _regression_data(n=6)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile(optax.sgd(0.0), loss="mse", metrics=["mae"])
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs == pytest.approx({"loss": np.mean(y**2), "mae": np.mean(np.abs(y))}, rel=1e-6)
    assert model.test_on_batch(x, y) == pytest.approx([np.mean(y**2), np.mean(np.abs(y))])


def test_a_custom_train_step_runs_inside_the_compiled_step():
    class CountingSteps(Linear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps_seen = jmod.Variable(np.int32(0), trainable=False)

        def train_step(self, data):
            self.steps_seen.assign_add(1)
            return super().train_step(data)

    x, y = _regression_data(n=10)
    model = CountingSteps(np.zeros((3, 1)), np.zeros(1))
    model.compile("sgd", loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert int(model.steps_seen.value) == 6
    assert model.train_function.trace_count == 1


def test_unbuilt_model_is_built_from_the_first_batch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 3, 20)
    jmod.random.set_seed(0)
    model = MLP()
    assert not model.variables
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y))
    assert model.hidden.kernel.shape == (5, 8)
    assert model.train_function.trace_count == 1
    assert model.test_function.trace_count == 1


def test_errors_say_what_is_wrong():
    x, y = _regression_data(n=6)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    with pytest.raises(TrainingError, match=r"call compile\(optimizer, loss, metrics\) before fit"):
        model.fit(x, y)
    model.compile("sgd", loss="mse")
    with pytest.raises(TrainingError, match=r"different numbers of samples \[5, 6\]"):
        model.fit(x, y[:5], verbose=0)
    with pytest.raises(TrainingError, match="unknown loss 'msee'"):
        model.compile("sgd", loss="msee")
    with pytest.raises(TrainingError, match="validation_split"):
        model.fit(x, y, validation_split=1.5, verbose=0)


def test_validation_split_takes_the_last_samples():
    x, y = _regression_data(n=10)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile(optax.sgd(0.0), loss="mse")
    history = model.fit(x, y, validation_split=0.3, epochs=1, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(np.mean(y[7:] ** 2), rel=1e-6)
    assert history.history["loss"][0] == pytest.approx(np.mean(y[:7] ** 2), rel=1e-6)


def test_callable_scalar_loss_is_exact_on_padded_batches():
    x, y = _regression_data(n=10)
    model = Linear(np.zeros((3, 1)), np.zeros(1))
    model.compile("sgd", loss=lambda t, p: jnp.mean(jnp.abs(t - p)))
    loss = model.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(loss, np.mean(np.abs(y)), rtol=1e-6)


def test_docstring_examples_run():
    from tests.test_losses import run_examples

    for module in (
        jmod.training,
        jmod.training.trainer,
        jmod.training.data,
        jmod.training.objectives,
        jmod.training.optimizers,
        jmod.training._errors,
    ):
        run_examples(module)


# -- labels that do not fit the loss: refused on the host before any step -----------------


def _classifier(units):
    return jmod.Sequential([jmod.Input(shape=[4]), Dense(units)])


X16 = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "loss, units, y, shapes",
    [
        ("mse", 5, np.zeros((16, 3), np.float32), r"\(16, 3\) do not fit the model output of "
         r"shape \(16, 5\)"),
        ("mse", 1, np.zeros((16, 5), np.float32), r"\(16, 5\) .* \(16, 1\)"),
        # Keras 3 raises here too: "Arguments `target` and `output` must have the same shape".
        ("binary_crossentropy", 1, np.zeros((16, 5), np.float32), r"\(16, 5\) .* \(16, 1\): "
         "this loss needs labels of the output's shape"),
        ("categorical_crossentropy", 5, np.zeros((16, 3), np.float32), r"\(16, 3\) .* \(16, 5\)"),
        ("sparse_categorical_crossentropy", 5, np.zeros((16, 2), np.int32), r"\(16, 2\) .* "
         r"\(16, 5\): integer labels need the output's shape without its class axis"),
    ],
    ids=["mse", "mse-wider-labels", "bce", "cce", "scce"],
)  # fmt: skip
def test_labels_that_do_not_fit_the_loss_fail_before_any_step(loss, units, y, shapes):
    model = _classifier(units)
    model.compile("sgd", loss=loss)
    with pytest.raises(TrainingError, match=f"^loss '{losses_name(loss)}': labels y of shape "):
        model.fit(X16, y, verbose=0)
    with pytest.raises(TrainingError, match=shapes):
        model.evaluate(X16, y, verbose=0)
    assert model.train_function is None and model.test_function is None  # never traced


def losses_name(loss):
    return jmod.losses.get(loss).name


def test_labels_that_fit_still_train_as_before():
    # (B,) labels against a (B, 1) output, and (B, 1) targets broadcast over a (B, 3) output.
    for units, y in [(1, np.ones(16, np.float32)), (3, np.ones((16, 1), np.float32))]:
        model = _classifier(units)
        model.compile("sgd", loss="mse")
        history = model.fit(X16, y, verbose=0)
        assert len(history.history["loss"]) == 1
        pred = np.asarray(model.predict(X16, verbose=0))
        expected = np.mean((pred - y.reshape(16, -1)) ** 2)
        np.testing.assert_allclose(model.evaluate(X16, y, verbose=0), expected, rtol=1e-5)


def test_sparse_labels_out_of_range_are_refused_for_arrays_and_each_batch_of_an_iterable():
    model = _classifier(5)
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    labels = np.arange(16, dtype=np.int32) % 5
    labels[7] = 12
    with pytest.raises(TrainingError, match=r"must lie in \[0, 5\) .* range over \[0, 12\]"):
        model.fit(X16, labels, batch_size=4, verbose=0)
    assert model.train_function is None
    with pytest.raises(TrainingError, match=r"range over \[-1, 4\]"):
        model.evaluate(X16, np.where(labels == 12, -1, labels), verbose=0)
    with pytest.raises(TrainingError, match=r"\(or are not whole numbers\)"):
        model.fit(X16, labels.clip(0, 4) + 0.5, verbose=0)
    seen = []

    def batches():
        for start in range(0, 16, 4):
            seen.append(start)
            yield X16[start : start + 4], labels[start : start + 4]

    with pytest.raises(TrainingError, match=r"range over \[0, 12\]"):  # the batch with the 12
        model.fit(batches(), verbose=0)
    assert seen == [0, 4]  # stopped at that batch, before stepping on it


def test_labels_are_checked_once_per_data_signature_not_per_step(monkeypatch):
    calls = []
    real = jmod.losses.check_labels
    monkeypatch.setattr(jmod.losses, "check_labels", lambda *a: calls.append(1) or real(*a))
    model = _classifier(1)
    model.compile("sgd", loss="mse")
    y = np.ones((16, 1), np.float32)
    model.fit(
        X16,
        y,
        batch_size=4,
        epochs=3,
        validation_data=(X16[:8], y[:8]),
        validation_batch_size=8,
        verbose=0,
    )
    assert len(calls) == 2  # the train batches' signature and the validation batches'
    model.evaluate(X16, y, batch_size=4, verbose=0)
    assert len(calls) == 2  # same signature as training: checked already
