import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
from jmod.layers import repeat as repeat_module
from tests import layer_checks

WIDTH = 4


def dense_block(seed=0):
    init = layer_checks.numpy_initializer(seed)
    return lambda: jmod.layers.Dense(WIDTH, activation="tanh", kernel_initializer=init)


class Residual(jmod.layers.Layer):
    """x + dropout(batchnorm(dense(x))): weights, batch statistics and random draws."""

    def __init__(self, init, rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dense = jmod.layers.Dense(WIDTH, kernel_initializer=init, activation="tanh")
        self.norm = jmod.layers.BatchNormalization()
        self.drop = jmod.layers.Dropout(rate)

    def call(self, x, training=None):
        return x + self.drop(self.norm(self.dense(x)))


def residuals(seed=0, rate=0.0):
    """A `make_block` whose blocks get different initial weights (one NumPy stream)."""
    init = layer_checks.numpy_initializer(seed)
    return lambda: Residual(init, rate=rate)


class Plain(jmod.Module):
    """A hand-written list of blocks: the reference a Repeat must agree with."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = blocks

    def __call__(self, x, training=None):
        for block in self.blocks:
            x = block(x, training=training)
        return x


def batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, WIDTH)).astype("float32"), rng.normal(size=(n, WIDTH)).astype(
        "float32"
    )


def numpy_forward(stack, x):
    for block in stack.blocks:
        x = np.tanh(x @ np.asarray(block.kernel) + np.asarray(block.bias))
    return x


def primitives(jaxpr):
    """Names of every equation's primitive, nested jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out.extend(primitives(sub))
    return out


def test_forward_matches_numpy_scanned_and_not():
    x, _ = batch()
    scanned = jmod.layers.Repeat(dense_block(), 3)
    plain = jmod.layers.Repeat(dense_block(1), 3, scan=False)
    out = scanned(x)  # first call: builds block by block
    plain(x)
    plain.load_state(scanned.state())
    np.testing.assert_allclose(out, numpy_forward(scanned, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scanned(x), numpy_forward(scanned, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain(x), scanned(x), rtol=1e-6, atol=1e-6)
    # Distinct weights per block (the scan does not share one block's weights).
    assert not np.allclose(scanned.blocks[0].kernel, scanned.blocks[1].kernel)


def test_paths_are_per_block():
    stack = jmod.layers.Repeat(dense_block(), 3)
    stack(batch()[0])
    assert [p for p, _ in stack.named_variables()] == [
        f"blocks/{i}/{name}" for i in range(3) for name in ("bias", "kernel")
    ]
    assert stack.count_params() == 3 * (WIDTH * WIDTH + WIDTH)


def train(model, steps=3, remat_grads=False):
    opt = jmod.Optimizer(model, optax.sgd(0.1))

    @jmod.jit
    def step(model, opt, x, y):
        def loss_fn(m):
            return jnp.mean((m(x, training=True) - y) ** 2)

        loss, grads = jmod.value_and_grad(loss_fn)(model)
        opt.update(grads)
        return loss

    losses = []
    for i in range(steps):
        x, y = batch(i)
        losses.append(float(step(model, opt, x, y)))
    return losses, step


@pytest.mark.parametrize("remat", [None, "full"])
def test_training_matches_plain_list_of_blocks(remat):
    x, _ = batch()
    stack = jmod.layers.Repeat(residuals(), 3, scan=True, remat=remat)
    stack(x)
    plain = Plain([residuals(5)() for _ in range(3)])
    plain(x)
    plain.load_state(stack.state())  # same paths: blocks/i/...
    a, step = train(stack)
    b, _ = train(plain)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for (p, v), (q, w) in zip(stack.named_variables(), plain.named_variables()):
        assert p == q
        np.testing.assert_allclose(v, w, rtol=1e-5, atol=1e-6, err_msg=p)
    # Batch statistics were written back per block, and differ between blocks.
    means = [np.asarray(b.norm.moving_mean) for b in stack.blocks]
    assert not np.allclose(means[0], means[1]) and not np.allclose(means[0], 0)
    assert step.trace_count == 1


def test_jaxpr_has_one_scan_and_remat_when_asked():
    x, _ = batch()

    def grad_fn(model, x):
        return jmod.grad(lambda m: jnp.sum(m(x) ** 2))(model)

    names = {}
    for label, kwargs in {
        "scan": {},
        "scan_remat": {"remat": "full"},
        "plain": {"scan": False},
        "plain_remat": {"scan": False, "remat": "dots"},
    }.items():
        stack = jmod.layers.Repeat(dense_block(), 5, **kwargs)
        stack(x)
        forward = jmod.jit(lambda m, x: m(x)).jaxpr(stack, x).jaxpr
        backward = jmod.jit(grad_fn).jaxpr(stack, x).jaxpr
        names[label] = (primitives(forward), [e.primitive.name for e in forward.eqns])
        names[label + "_grad"] = primitives(backward)
    nested, top = names["scan"]
    assert top.count("scan") == 1 and top.count("dot_general") == 0
    assert nested.count("dot_general") == 1  # one block traced, not five
    assert names["plain"][1].count("dot_general") == 5 and "scan" not in names["plain"][0]
    assert "checkpoint" in names["scan_remat_grad"] or "remat2" in names["scan_remat_grad"]
    remats = [n for n in names["plain_remat_grad"] if n in ("checkpoint", "remat2")]
    assert len(remats) == 5
    assert not any(n in ("checkpoint", "remat2") for n in names["scan_grad"])


@pytest.mark.parametrize("first_scanned", [True, False])
def test_checkpoint_restores_across_scan_modes(tmp_path, first_scanned):
    x, _ = batch()
    source = jmod.layers.Repeat(residuals(), 2, scan=first_scanned)
    source(x, training=True)  # batch statistics move away from their initial values
    path = jmod.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
    listed = dict(jmod.checkpoint.list_variables(path))
    assert "model/blocks/1/dense/kernel" in listed and "model/blocks/0/norm/moving_mean" in listed
    # Restored into the other mode before it is built (deferred) ...
    target = jmod.layers.Repeat(residuals(9), 2, scan=not first_scanned)
    jmod.Checkpoint(model=target).restore(path)
    out = target(x)
    np.testing.assert_allclose(out, source(x), rtol=1e-6, atol=1e-6)
    # ... and into a built one.
    built = jmod.layers.Repeat(residuals(3), 2, scan=not first_scanned)
    built(x)
    jmod.Checkpoint(model=built).restore(path).assert_consumed()
    np.testing.assert_allclose(built(x), source(x), rtol=1e-6, atol=1e-6)


def test_dropout_draws_per_block_as_unscanned():
    x, _ = batch()
    scanned = jmod.layers.Repeat(lambda: jmod.layers.Dropout(0.5), 3)
    plain = jmod.layers.Repeat(lambda: jmod.layers.Dropout(0.5), 3, scan=False)
    scanned(x)
    fn = jmod.jit(lambda m, x: m(x, training=True))
    jmod.random.set_seed(3)
    a = fn(scanned, x)
    jmod.random.set_seed(3)
    b = fn(plain, x)
    # Three masks drawn one after another from the carried key, as the plain loop draws them.
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert set(np.round(np.unique(a / x), 4)) == {0.0, 8.0}
    assert [e.primitive.name for e in fn.jaxpr(scanned, x).jaxpr.eqns].count("scan") == 1
    c = fn(scanned, x)  # the global key advanced: new masks
    assert not np.allclose(a, c)


def test_deferred_build_inside_jit_then_scans():
    x, _ = batch()
    stack = jmod.layers.Repeat(dense_block(), 4)
    fn = jmod.jit(lambda m, x: m(x))
    out = fn(stack, x)  # builds inside the trace
    np.testing.assert_allclose(out, numpy_forward(stack, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn(stack, x), out, rtol=1e-5, atol=1e-6)
    assert [e.primitive.name for e in fn.jaxpr(stack, x).jaxpr.eqns].count("scan") == 1


def test_add_loss_terms_of_blocks_reach_the_repeat():
    x, _ = batch()

    def block():
        return jmod.layers.Dense(
            WIDTH, kernel_initializer=layer_checks.numpy_initializer(0), activity_regularizer="l2"
        )

    scanned = jmod.layers.Repeat(block, 3)
    plain = jmod.layers.Repeat(block, 3, scan=False)
    scanned(x)
    plain(x)
    plain.load_state(scanned.state())
    scanned(x)
    plain(x)
    expected, h = 0.0, x
    for b in scanned.blocks:
        h = h @ np.asarray(b.kernel) + np.asarray(b.bias)
        expected += 0.01 * np.sum(h**2) / h.shape[0]
    np.testing.assert_allclose(sum(float(t) for t in scanned.losses), expected, rtol=1e-5)
    np.testing.assert_allclose(sum(float(t) for t in plain.losses), expected, rtol=1e-5)


def test_fit_in_a_model_with_summary_and_steps_per_execution():
    x, y = batch(0, n=16)
    inputs = jmod.Input(shape=[WIDTH])
    outputs = jmod.layers.Repeat(dense_block(), 3, remat="dots")(inputs)
    model = jmod.Model(inputs, outputs)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Repeat" in text and f"{3 * (WIDTH * WIDTH + WIDTH)}" in text
    model.compile(optimizer=optax.sgd(0.1), loss="mse", steps_per_execution=2)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert losses[1] < losses[0]


def test_config_round_trip_and_saved_model_archive(tmp_path):
    stack = jmod.layers.Repeat(lambda: jmod.layers.Dense(WIDTH), 2, remat="dots")
    clone = layer_checks.config_round_trip(stack)
    assert clone.n == 2 and clone.remat == "dots" and len(clone.blocks) == 2
    assert clone.blocks[0] is not clone.blocks[1]
    inputs = jmod.Input(shape=[WIDTH])
    model = jmod.Model(inputs, jmod.layers.Repeat(lambda: jmod.layers.Dense(WIDTH), 2)(inputs))
    x, _ = batch()
    model.save(str(tmp_path / "m.jmod"))
    loaded = jmod.models.load_model(str(tmp_path / "m.jmod"))
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    json.dumps(stack.get_config())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(jmod.SerializationError, match="n must be"):
        jmod.layers.Repeat(dense_block(), 0)
    with pytest.raises(jmod.SerializationError, match="zero-argument callable"):
        jmod.layers.Repeat(3, 2)
    with pytest.raises(jmod.SerializationError, match="callable layer or module, got int"):
        jmod.layers.Repeat(lambda: 3, 2)
    shared = jmod.layers.Dense(WIDTH)
    with pytest.raises(jmod.SerializationError, match="same object twice"):
        jmod.layers.Repeat(lambda: shared, 2)
    with pytest.raises(jmod.ModuleError, match="unknown remat policy 'sometimes'"):
        jmod.layers.Repeat(dense_block(), 2, remat="sometimes")


def test_blocks_that_differ_or_change_shape_cannot_scan():
    x, _ = batch()
    widths = iter([WIDTH, WIDTH + 1])
    odd = jmod.layers.Repeat(lambda: jmod.layers.Dense(next(widths)), 2)
    assert odd(x).shape == (6, WIDTH + 1)  # the first call builds block by block
    with pytest.raises(jmod.LayerCallError, match="identical variables"):
        odd(x)
    widening = jmod.layers.Repeat(lambda: jmod.layers.Dense(WIDTH + 1), 1)
    widening(x)
    with pytest.raises(jmod.LayerCallError, match="input's structure, shape and dtype"):
        widening(x)


def test_docstring_examples():
    layer_checks.run_docstring_examples(repeat_module)
