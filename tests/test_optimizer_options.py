"""Keras 3's optimizer options on jmod.Optimizer, compile and fit (jmod/_optimizer_options.py)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from jmod import _optimizer_options
from jmod.training import ema, optimizers
from tests import layer_checks

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 3)).astype("float32")
Y = (X @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3).astype("float32")


class Linear(jmod.Module):
    def __init__(self):
        super().__init__()
        self.w = jmod.Variable(np.array([[0.1], [0.2], [-0.3]], "float32"))
        self.b = jmod.Variable(np.zeros((1,), "float32"))

    def __call__(self, x):
        return x @ self.w + self.b


def mse(m, x, y):
    return jnp.mean((m(x) - y) ** 2)


def numpy_grads(w, b, x, y):
    r = x @ w + b - y
    return {"w": 2 * x.T @ r / len(x), "b": 2 * r.sum(0) / len(x)}


@jmod.jit
def train_step(model, opt, x, y):
    loss, grads = jmod.value_and_grad(mse)(model, x, y)
    opt.update(grads)
    return loss


def test_accumulation_equals_one_step_on_the_concatenated_batch():
    k = 3
    acc, full = Linear(), Linear()
    acc_opt = jmod.Optimizer(acc, optax.sgd(0.1), gradient_accumulation_steps=k)
    full_opt = jmod.Optimizer(full, optax.sgd(0.1))
    w0 = np.asarray(acc.w)
    for i, (x, y) in enumerate(zip(np.split(X, k), np.split(Y, k))):
        train_step(acc, acc_opt, x, y)
        if i < k - 1:  # micro-steps only accumulate
            np.testing.assert_array_equal(acc.w, w0)
    train_step(full, full_opt, X, Y)
    np.testing.assert_allclose(acc.w, full.w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(acc.b, full.b, rtol=1e-5, atol=1e-7)
    # ... and both are NumPy's SGD step.
    g = numpy_grads(w0, np.zeros(1, "float32"), X, Y)
    np.testing.assert_allclose(full.w, w0 - 0.1 * g["w"], rtol=1e-5)


def test_ema_follows_the_formula_and_overwrites():
    m = Linear()
    opt = jmod.Optimizer(
        m, optax.sgd(0.05), use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3
    )
    w, b = np.asarray(m.w), np.asarray(m.b)
    avg = None
    for i in range(5):
        x, y = X[4 * i : 4 * i + 4], Y[4 * i : 4 * i + 4]
        train_step(m, opt, x, y)
        g = numpy_grads(w, b, x, y)
        w, b = w - 0.05 * g["w"], b - 0.05 * g["b"]
        momentum = 0.0 if i == 0 else 0.9
        avg = w if avg is None else avg
        avg = momentum * avg + (1 - momentum) * w
        if (i + 1) % 3 == 0:  # overwritten: the variables take the average
            w = avg
            b_avg = np.asarray(opt.ema["b"])
            b = b_avg
        np.testing.assert_allclose(opt.ema["w"], avg, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(m.w, w, rtol=1e-5, atol=1e-7)
    assert [p for p, _ in opt.named_variables() if p.startswith("ema/")] == ["ema/b", "ema/w"]


@pytest.mark.parametrize(
    "option, check",
    [
        ("clipnorm", lambda g, c: [np.clip(np.linalg.norm(v), 0, c) for v in g.values()]),
        ("global_clipnorm", None),
        ("clipvalue", None),
    ],
)
def test_clipping_bounds_the_update(option, check):
    m = Linear()
    bound = 0.5
    opt = jmod.Optimizer(m, optax.sgd(1.0), **{option: bound})
    before = {"w": np.asarray(m.w), "b": np.asarray(m.b)}
    grads = numpy_grads(before["w"], before["b"], X, Y - 10.0)  # large gradients
    opt.update({k: jnp.asarray(v) for k, v in grads.items()})
    update = {k: before[k] - np.asarray(getattr(m, k)) for k in before}
    if option == "clipnorm":
        expected = {k: g * bound / max(np.linalg.norm(g), bound) for k, g in grads.items()}
        for k in update:
            assert np.linalg.norm(update[k]) <= bound + 1e-6
    elif option == "global_clipnorm":
        total = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
        expected = {k: g * bound / max(total, bound) for k, g in grads.items()}
        assert np.sqrt(sum(np.sum(u**2) for u in update.values())) <= bound + 1e-6
    else:
        expected = {k: np.clip(g, -bound, bound) for k, g in grads.items()}
        assert max(np.abs(u).max() for u in update.values()) <= bound + 1e-6
    for k in update:
        np.testing.assert_allclose(update[k], expected[k], rtol=1e-5, atol=1e-7)


def test_resume_mid_accumulation_gives_the_same_trajectory(tmp_path):
    def run(model, opt, steps):
        for i in steps:
            x, y = X[4 * (i % 6) : 4 * (i % 6) + 4], Y[4 * (i % 6) : 4 * (i % 6) + 4]
            train_step(model, opt, x, y)

    def make():
        m = Linear()
        return m, jmod.Optimizer(
            m,
            optax.inject_hyperparams(optax.adam)(learning_rate=0.05),
            gradient_accumulation_steps=3,
            use_ema=True,
        )

    straight, straight_opt = make()
    run(straight, straight_opt, range(8))

    first, first_opt = make()
    run(first, first_opt, range(4))  # one update and one micro-step into the next
    path = jmod.Checkpoint(model=first, optimizer=first_opt).write(str(tmp_path / "ckpt"))
    resumed, resumed_opt = make()
    jmod.Checkpoint(model=resumed, optimizer=resumed_opt).restore(path).assert_consumed()
    assert int(resumed_opt.slots["mini_step"]) == 1
    run(resumed, resumed_opt, range(4, 8))
    for a, b in [(straight.w, resumed.w), (straight_opt.ema["w"], resumed_opt.ema["w"])]:
        np.testing.assert_array_equal(a, b)


def test_static_loss_scale_factor_scales_the_loss_not_the_step():
    plain, scaled = Linear(), Linear()
    plain_opt = jmod.Optimizer(plain, optax.sgd(0.1))
    scaled_opt = jmod.Optimizer(scaled, optax.sgd(0.1), loss_scale_factor=64.0)
    assert float(scaled_opt.scale_loss(jnp.float32(2.0))) == 128.0
    grads = jmod.grad(lambda m: scaled_opt.scale_loss(mse(m, X, Y)))(scaled)
    np.testing.assert_allclose(
        grads["w"], 64.0 * numpy_grads(np.asarray(scaled.w), 0.0, X, Y)["w"], rtol=1e-5
    )
    scaled_opt.update(grads)
    plain_opt.update(jmod.grad(lambda m: mse(m, X, Y))(plain))
    np.testing.assert_allclose(scaled.w, plain.w, rtol=1e-6)


def test_dynamic_loss_scale_skips_non_finite_steps_and_grows():
    m = Linear()
    opt = jmod.Optimizer(
        m, optax.sgd(1.0), dynamic_loss_scale=True, initial_scale=8.0, dynamic_growth_steps=2
    )
    w0 = np.asarray(m.w)
    bad = {"w": jnp.full((3, 1), jnp.inf), "b": jnp.zeros(1)}
    opt.update(bad)
    np.testing.assert_array_equal(m.w, w0)
    assert float(opt.loss_scale) == 4.0 and int(opt.iterations) == 0
    good = {"w": jnp.full((3, 1), 4.0), "b": jnp.zeros(1)}
    opt.update(good)  # unscaled by 4: a step of 1.0
    np.testing.assert_allclose(m.w, w0 - 1.0)
    assert float(opt.loss_scale) == 4.0 and int(opt.loss_scale_steps) == 1
    opt.update(good)
    assert float(opt.loss_scale) == 8.0 and int(opt.loss_scale_steps) == 0
    np.testing.assert_allclose(m.w, w0 - 2.0)
    assert int(opt.iterations) == 2


def test_mixed_float16_compile_scales_the_loss_dynamically():
    with layer_checks.dtype_policy("mixed_float16"):
        inputs = jmod.Input(shape=[3])
        dense = jmod.layers.Dense(1, kernel_initializer=layer_checks.numpy_initializer(0))
        model = jmod.Model(inputs, dense(inputs))
        model.compile(optimizer="sgd", loss="mse")
    assert model.optimizer.options.dynamic_loss_scale
    assert float(model.optimizer.loss_scale) == 2.0**15
    history = model.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][1] < history.history["loss"][0]
    # 6 steps; float16 gradients of the loss scaled by 2**15 may overflow: such a step
    # is skipped (not counted) and halves the scale; finite ones count toward growth.
    opt = model.optimizer
    skipped = 6 - int(opt.iterations)
    assert int(opt.loss_scale_steps) <= int(opt.iterations) and int(opt.iterations) >= 3
    assert float(opt.loss_scale) == 2.0 ** (15 - skipped)
    manual = jmod.Model(inputs, dense(inputs))
    manual.compile(optimizer="sgd", loss="mse", auto_scale_loss=False)
    assert not manual.optimizer.options.dynamic_loss_scale


def make_model():
    inputs = jmod.Input(shape=[3])
    dense = jmod.layers.Dense(1, kernel_initializer=layer_checks.numpy_initializer(0))
    return jmod.Model(inputs, dense(inputs))


def test_fit_with_options_same_with_steps_per_execution_and_ends_on_ema():
    results = []
    for k in (1, 2):
        model = make_model()
        model.compile(
            optimizer=optimizers.SGD(
                0.1,
                gradient_accumulation_steps=2,
                use_ema=True,
                ema_momentum=0.5,
                global_clipnorm=5.0,
            ),
            loss="mse",
            steps_per_execution=k,
        )
        model.fit(X, Y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        opt = model.optimizer
        # fit ends by copying the averages into the variables (Keras' finalize_variable_values).
        for path, average in opt.ema.items():
            np.testing.assert_array_equal(dict(model.named_variables())[path], average)
        results.append(model.get_weights())
        assert int(opt.iterations) == 12 and int(opt.slots["gradient_step"]) == 6
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_swap_ema_weights_evaluates_with_the_averages():
    model = make_model()
    model.compile(optimizer=optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9), loss="mse")
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    opt = model.optimizer
    opt.update({p: jnp.ones_like(v.value) for p, v in model.named_variables()})
    raw = model.evaluate(X, Y, verbose=0)
    opt.swap_ema_weights()
    averaged = model.evaluate(X, Y, verbose=0)
    opt.swap_ema_weights()
    assert raw != averaged
    assert model.evaluate(X, Y, verbose=0) == raw
    history = model.fit(
        X,
        Y,
        batch_size=24,
        epochs=1,
        verbose=0,
        validation_data=(X, Y),
        callbacks=[jmod.callbacks.SwapEMAWeights()],
    )
    # validation ran on the averages; the variables after fit are the averages too.
    np.testing.assert_allclose(
        history.history["val_loss"][0], model.evaluate(X, Y, verbose=0), rtol=1e-5
    )


def test_keras_style_specs_and_errors():
    spec = optimizers.Adam(learning_rate=0.01, beta_1=0.5, clipvalue=1.0)
    opt = spec.build(Linear())
    assert opt.options.clipvalue == 1.0
    assert any(p.endswith("hyperparams/b1") for p in opt.slots)
    b1 = [v for p, v in opt.slots.items() if p.endswith("hyperparams/b1")][0]
    assert float(b1) == 0.5
    with pytest.raises(jmod.TrainingError, match="'adam'.*bogus"):
        optimizers.Adam(bogus=1)
    with pytest.raises(jmod.OptimizerError, match="only one of clipnorm"):
        jmod.Optimizer(Linear(), optax.sgd(0.1), clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(jmod.OptimizerError, match="gradient_accumulation_steps must be a pos"):
        jmod.Optimizer(Linear(), optax.sgd(0.1), gradient_accumulation_steps=1.5)
    with pytest.raises(jmod.OptimizerError, match="ema_momentum must be"):
        jmod.Optimizer(Linear(), optax.sgd(0.1), use_ema=True, ema_momentum=2)
    with pytest.raises(jmod.OptimizerError, match="needs use_ema=True"):
        jmod.Optimizer(Linear(), optax.sgd(0.1)).swap_ema_weights()


@pytest.mark.parametrize("module", [_optimizer_options, optimizers, ema])
def test_docstring_examples(module):
    layer_checks.run_docstring_examples(module)
