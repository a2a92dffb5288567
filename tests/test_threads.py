"""Threads sharing modules, compiled functions and checkpoints (the binding scope's promises)."""

import concurrent.futures
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jmod
from tests.guide import MySequentialModule

TIMEOUT = 120


def _in_threads(fns):
    """Runs each callable on its own thread, started together; returns their results."""
    barrier = threading.Barrier(len(fns))

    def run(fn):
        barrier.wait(timeout=TIMEOUT)
        return fn()

    with concurrent.futures.ThreadPoolExecutor(len(fns)) as pool:
        futures = [pool.submit(run, fn) for fn in fns]
        return [f.result(timeout=TIMEOUT) for f in futures]


def _forward(model, x):
    """The guide model's math in NumPy, from its current weights."""
    h = np.maximum(x @ np.asarray(model.dense_1.w) + np.asarray(model.dense_1.b), 0)
    return np.maximum(h @ np.asarray(model.dense_2.w) + np.asarray(model.dense_2.b), 0)


def _no_tracers(module):
    return not any(isinstance(v._value, jax.core.Tracer) for v in module.variables)


def test_concurrent_first_calls_build_once_and_agree():
    jmod.random.set_seed(0)
    model = MySequentialModule()
    xs = [np.full((2, 3), i + 1.0, np.float32) for i in range(4)]
    outs = _in_threads([lambda x=x: model(x) for x in xs])
    assert _no_tracers(model)
    assert len(model.variables) == 4  # built once: no second set of weights
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(np.asarray(out), _forward(model, x), rtol=1e-6)
    # Later single-thread calls still work and agree.
    np.testing.assert_allclose(np.asarray(model(xs[0])), _forward(model, xs[0]), rtol=1e-6)


def test_steady_inference_while_another_thread_retraces_on_new_shapes():
    model = MySequentialModule()
    x = np.ones((2, 3), np.float32)
    model(x)
    expected = _forward(model, x)
    stop = threading.Event()

    def steady():
        count = 0
        while not stop.is_set() or count < 20:
            np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), expected, rtol=1e-6)
            count += 1
        return count

    def retracer():
        try:
            for n in range(3, 9):
                xn = np.ones((n, 3), np.float32)
                np.testing.assert_allclose(np.asarray(model(xn)), _forward(model, xn), rtol=1e-6)
        finally:
            stop.set()
        return model.__call__.trace_count

    a, b, traces = _in_threads([steady, steady, retracer])
    assert a >= 20 and b >= 20
    assert traces == 7  # one per batch size, none for the steady threads
    assert _no_tracers(model)


def test_one_compiled_function_serves_threads_with_different_models():
    @jmod.jit
    def apply(model, x):
        return model(x)

    models = []
    for seed in range(4):
        jmod.random.set_seed(seed)
        m = MySequentialModule()
        m(np.ones((1, 3), np.float32))  # built eagerly, different weights each
        models.append(m)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 6

    def work(m):
        return [np.asarray(apply(m, jnp.asarray(x))) for _ in range(30)]

    results = _in_threads([lambda m=m: work(m) for m in models])
    for m, outs in zip(models, results):
        for out in outs:
            np.testing.assert_allclose(out, _forward(m, x), rtol=1e-6)


def _readme_training(model, steps, x, y):
    opt = jmod.Optimizer(model, optax.sgd(0.1))

    @jmod.jit
    def train_step(model, opt, x, y):
        loss, grads = jmod.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(grads)
        return loss

    return [float(train_step(model, opt, x, y)) for _ in range(steps)]


def _fresh_guide_model(seed):
    model = MySequentialModule()
    rng = np.random.default_rng(seed)
    model(np.ones((1, 3), np.float32))
    for v in model.variables:
        v.assign(rng.normal(size=v.shape).astype(np.float32) * 0.5 + 0.5)
    return model


def test_free_train_steps_in_parallel_equal_training_alone():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    alone = [_readme_training(_fresh_guide_model(s), 10, x, y) for s in range(3)]
    models = [_fresh_guide_model(s) for s in range(3)]
    together = _in_threads([lambda m=m: _readme_training(m, 10, x, y) for m in models])
    np.testing.assert_allclose(np.array(together), np.array(alone), rtol=1e-6)


def _classifier(seed):
    model = jmod.Sequential([jmod.layers.Dense(8, activation="relu"), jmod.layers.Dense(3)])
    model.build((None, 4))
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(size=w.shape).astype(np.float32) * 0.3 for w in model.get_weights()]
    )
    model.compile(
        optimizer=optax.sgd(0.05), loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_fit_of_different_models_in_parallel_equals_fit_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=64)

    def fit(model):
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return [np.asarray(w) for w in model.get_weights()]

    alone = [fit(_classifier(s)) for s in range(2)]
    together = _in_threads([lambda s=s: fit(_classifier(s)) for s in range(2)])
    for a, b in zip(alone, together):
        for wa, wb in zip(a, b):
            np.testing.assert_allclose(wb, wa, rtol=1e-5, atol=1e-6)


class _Steps(jmod.Module):
    """Every variable holds the number of steps taken: a checkpoint mixing steps shows it."""

    def __init__(self):
        super().__init__()
        self.a = jmod.Variable(jnp.zeros((64, 64)))
        self.b = jmod.Variable(jnp.zeros((1000,)))
        self.c = [jmod.Variable(jnp.zeros((8,))) for _ in range(6)]

    @jmod.jit(donate_state=True)
    def step(self):
        for v in self.variables:
            v.assign(v + 1.0)


def _assert_one_step(values):
    firsts = {float(np.asarray(v).ravel()[0]) for v in values}
    assert len(firsts) == 1, f"a checkpoint holds several steps: {sorted(firsts)}"
    for v in values:
        assert np.all(np.asarray(v) == np.asarray(v).ravel()[0])


def test_checkpoints_written_while_training_with_donation_hold_one_step(tmp_path):
    model = _Steps()
    model.step()
    stop = threading.Event()

    def train():
        for _ in range(300):
            model.step()
        stop.set()
        return float(model.b[0])

    def save():
        paths = []
        ckpt = jmod.Checkpoint(model=model)
        while not stop.is_set() or not paths:
            paths.append(ckpt.write(os.fspath(tmp_path / f"c{len(paths)}")))
        return paths

    steps, paths = _in_threads([train, save])
    assert steps == 301
    assert len(paths) >= 2
    for path in paths:
        reader = jmod.checkpoint
        names = [n for n, _ in reader.list_variables(path)]
        _assert_one_step([reader.load_variable(path, n) for n in names])


def test_async_manager_saves_during_donated_training_hold_one_step(tmp_path):
    model = _Steps()
    model.step()
    manager = jmod.CheckpointManager(jmod.Checkpoint(model=model), tmp_path, max_to_keep=50)
    saved = []

    def train():
        for i in range(200):
            model.step()
            if i % 20 == 0:
                saved.append(manager.save(blocking=False))
        return [handle.wait() for handle in saved]

    paths = _in_threads([train])[0]
    assert len(paths) == 10
    for path in paths:
        names = [n for n, _ in jmod.checkpoint.list_variables(path)]
        _assert_one_step([jmod.checkpoint.load_variable(path, n) for n in names if "model/" in n])


def test_readers_of_a_donating_model_never_see_deleted_arrays():
    model = _Steps()
    model.step()

    @jmod.jit
    def total(m):
        return sum(jnp.sum(v) / v.size for v in m.variables) / len(m.variables)

    stop = threading.Event()

    def train():
        for _ in range(300):
            model.step()
        stop.set()

    def read():
        seen = []
        while not stop.is_set():
            value = float(total(model))
            assert value == int(value)  # all variables from one step
            seen.append(value)
        return seen

    _, seen = _in_threads([train, read])
    assert seen == sorted(seen)


def test_a_scope_binds_values_for_its_thread_only():
    v = jmod.Variable(1.0)
    inside, release = threading.Event(), threading.Event()

    def in_scope():
        with jmod._scope.Scope([(v, jnp.asarray(5.0))]):
            seen = float(v)
            inside.set()
            release.wait(TIMEOUT)
            return seen, float(v)

    def other():
        inside.wait(TIMEOUT)
        try:
            return float(v)
        finally:
            release.set()

    (seen, still), outside = _in_threads([in_scope, other])
    assert (seen, still, outside) == (5.0, 5.0, 1.0)


class _Outer(jmod.layers.Layer):
    """Calls its Dropout without `training`: the flag comes from the outer call's context."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drop = jmod.layers.Dropout(0.5, seed=0)

    def call(self, inputs):
        return self.drop(inputs)


def test_training_flag_of_the_outer_call_is_per_thread():
    layer = _Outer()
    x = np.ones((4, 64), np.float32)

    def call(training):
        outs = [np.asarray(layer(x, training=training)) for _ in range(20)]
        return all((o == x).all() for o in outs)

    flags = [True, False, True, False]
    assert _in_threads([lambda t=t: call(t) for t in flags]) == [not t for t in flags]


class _Noisy(jmod.Module):
    """A jitted call that draws from the global generator (noise, as Dropout does)."""

    def __init__(self):
        super().__init__()
        self.w = jmod.Variable(jnp.ones((3, 2)))

    @jmod.jit
    def __call__(self, x):
        return x @ self.w + 0.01 * jmod.random.normal((x.shape[0], 2))


def test_a_jitted_call_reading_the_global_generator_inside_a_compiled_train_step():
    # The inner call (jmod.jit inside value_and_grad inside the outer step)
    # touches the generator, which the outer trace does not know yet: the
    # outer trace must capture it, not the inner call retry forever.
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    jmod.random.set_seed(3)
    model = _Noisy()
    model(x)
    losses = _readme_training(model, 5, x, y)
    assert _no_tracers(model) and np.isfinite(losses).all() and losses[-1] < losses[0]
