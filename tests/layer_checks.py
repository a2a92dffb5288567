"""Checks shared by the built-in layer tests (config round trips, docstring examples)."""

import contextlib
import doctest
import json

import jax
import jax.numpy as jnp
import numpy as np

import jmod


def config_round_trip(layer):
    """Rebuilds `layer` from its config sent through JSON; asserts the configs are equal."""
    config = layer.get_config()
    text = json.dumps(config)  # JSON-serializable, or this raises
    clone = type(layer).from_config(json.loads(text))
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    return clone


def run_docstring_examples(module):
    """Asserts `module` has docstring examples.

    pytest runs them itself (`--doctest-modules` over jmod/, pyproject), once
    per suite; running them here too would double their cost.
    """
    tests = [t for t in doctest.DocTestFinder().find(module, module.__name__) if t.examples]
    assert tests, f"{module.__name__} has no examples"


@contextlib.contextmanager
def dtype_policy(name):
    """Sets the global dtype policy inside the block."""
    previous = jmod.layers.dtype_policy()
    jmod.layers.set_dtype_policy(name)
    try:
        yield
    finally:
        jmod.layers.set_dtype_policy(previous)


def call_jitted(layer, *args, **kwargs):
    """`layer(*args, **kwargs)` through `jmod.jit` (a fresh compiled function)."""
    fn = jmod.jit(lambda layer, *a, **k: layer(*a, **k))
    return fn(layer, *args, **kwargs)


def numpy_initializer(seed=0, scale=0.5):
    """An initializer callable drawing NumPy normals.

    XLA compiles jax.random's sampler once per weight shape (about a second
    each on a busy CPU), so tests that need many shapes of random weights
    use this instead; layers accept any `(shape, dtype) -> array` callable.
    """
    rng = np.random.default_rng(seed)

    def init(shape, dtype=np.float32):
        return (scale * rng.normal(size=shape)).astype(dtype)

    return init


# -- the layer-check harness ---------------------------------------------------------------
#
# `check_layer(make, x, reference)` runs, on a layer built from `make()`:
#   forward       the output against `reference(layer, x)` (NumPy / jax.lax math of its own)
#   gradient      w.r.t. the trainable weights and the inputs, under jax.jit (through
#                 jmod.functional_call) and under jmod.jit, against the eager gradient, and
#                 the eager gradient against central finite differences along random
#                 directions (an independent check of the backward pass)
#   config        from_config(get_config()) through JSON rebuilds an equal layer
#   archive       a model holding the layer survives model.save(".jmod") / load_model
#   bfloat16      under "mixed_bfloat16" the output is bfloat16 and close to float32's
#   fit           one epoch of fit changes the weights and gives a finite loss
# Each part can be switched off for layers it does not apply to (say why at the call).


def _leaves(out):
    return [o for o in jax.tree_util.tree_leaves(out) if jnp.issubdtype(o.dtype, jnp.floating)]


def _cotangents(out, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=o.shape).astype(np.float32) for o in _leaves(out)]


def _objective(out, cots):
    return sum(jnp.sum(o.astype(jnp.float32) * g) for o, g in zip(_leaves(out), cots))


def _as_inputs(x):
    return x if isinstance(x, (list, tuple)) else [x]


def _float_inputs(xs):
    return [i for i, x in enumerate(xs) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]


def check_gradients(layer, x, call_kwargs=None, fd_rtol=2e-2, rtol=1e-4, atol=1e-5):
    """Gradients of a random projection of `layer(x)` w.r.t. its trainable weights and inputs.

    Computed under jax.jit (a pure function through `jmod.functional_call`) and
    under jmod.jit (`jmod.grad` and `jax.grad` inside), which must agree, and
    checked against central finite differences along random directions.
    Returns the gradients `(weight_grads, input_grads)`.
    """
    kw = dict(call_kwargs or {})
    xs = [jnp.asarray(v) for v in _as_inputs(x)]
    multi = isinstance(x, (list, tuple))
    cots = _cotangents(layer(list(xs) if multi else xs[0], **kw))
    diff = _float_inputs(xs)

    def with_inputs(dx):
        inputs = list(xs)
        for i, d in zip(diff, dx):
            inputs[i] = d
        return list(inputs) if multi else inputs[0]

    def loss(layer_, dx):
        return _objective(layer_(with_inputs(dx), **kw), cots)

    dx0 = [xs[i] for i in diff]
    trainable = sorted(p for p, v in layer.named_variables() if v.trainable)
    state = layer.state()

    def pure(params, dx):
        out, _ = jmod.functional_call(layer, {**state, **params}, with_inputs(dx), **kw)
        return _objective(out, cots)

    params = {p: state[p] for p in trainable}
    pure_jit = jax.jit(pure)
    w_jax, x_jax = jax.jit(jax.grad(pure, argnums=(0, 1)))(params, dx0)

    # jmod.jit around jmod.grad of a module holding the layer and the inputs as variables
    # (jmod.grad, not jax.grad, keeps state updates such as batch statistics in variables).
    pair = jmod.Module()
    pair.layer = layer
    pair.inputs = [jmod.Variable(d) for d in dx0]
    grads = jmod.jit(lambda m: jmod.grad(lambda m: loss(m.layer, [v.value for v in m.inputs]))(m))(
        pair
    )
    w_jmod = {p.split("/", 1)[1]: g for p, g in grads.items() if p.startswith("layer/")}
    x_jmod = [grads[f"inputs/{i}"] for i in range(len(dx0))]
    layer.load_state(state)

    assert set(w_jmod) == set(trainable) == set(w_jax)
    for p in trainable:
        np.testing.assert_allclose(
            np.asarray(w_jmod[p]), np.asarray(w_jax[p]), rtol=rtol, atol=atol, err_msg=p
        )
    for a, b in zip(x_jax, x_jmod):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol, atol=atol)

    # Central differences along two random directions of (weights, inputs).
    rng = np.random.default_rng(7)
    eps = 1e-3
    for _ in range(2):
        dw = {p: rng.normal(size=np.shape(state[p])).astype(np.float32) for p in trainable}
        dxs = [rng.normal(size=np.shape(v)).astype(np.float32) for v in dx0]
        predicted = sum(float(jnp.vdot(w_jax[p], dw[p])) for p in trainable)
        predicted += sum(float(jnp.vdot(g, d)) for g, d in zip(x_jax, dxs))

        def at(sign, dw=dw, dxs=dxs):
            moved = {p: params[p] + sign * eps * dw[p] for p in trainable}
            return float(pure_jit(moved, [v + sign * eps * d for v, d in zip(dx0, dxs)]))

        numeric = (at(1.0) - at(-1.0)) / (2 * eps)
        assert abs(numeric - predicted) <= fd_rtol * max(1.0, abs(predicted)), (
            numeric,
            predicted,
        )
    assert any(float(jnp.abs(g).sum()) > 0 for g in [*w_jax.values(), *x_jax]), "all-zero grads"
    return w_jax, x_jax


def check_layer(
    make,
    x,
    reference=None,
    *,
    call_kwargs=None,
    rtol=1e-5,
    atol=1e-5,
    gradients=True,
    config=True,
    archive=True,
    bfloat16=True,
    fit=True,
    fd_rtol=2e-2,
):
    """Runs the harness's checks on `make()` called on `x`; returns the layer.

    `reference(layer, x)` computes the expected output from the layer's
    weights with NumPy or jax.lax (a tuple/list for several outputs).
    """
    kw = dict(call_kwargs or {})
    layer = make()
    out = layer(x, **kw)
    if reference is not None:
        expected = reference(layer, x)
        got = jax.tree_util.tree_leaves(out)
        want = jax.tree_util.tree_leaves(expected)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert tuple(g.shape) == tuple(np.shape(w)), (g.shape, np.shape(w))
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol)
    if gradients:
        check_gradients(layer, x, kw, fd_rtol=fd_rtol)
    _nameable_initializers(layer)
    if config:
        clone = config_round_trip(layer)
        clone(x, **kw)
        clone.set_weights(layer.get_weights())
        for g, w in zip(jax.tree_util.tree_leaves(clone(x, **kw)), jax.tree_util.tree_leaves(out)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
    if archive:
        check_archive(layer, x)
    if bfloat16:
        with dtype_policy("mixed_bfloat16"):
            low = make()
        low(x, **kw)
        low.set_weights(layer.get_weights())
        low_out = low(x, **kw)
        for g, w in zip(_leaves(low_out), _leaves(out)):
            assert g.dtype == jnp.bfloat16, g.dtype
            scale = float(jnp.max(jnp.abs(w))) + 1.0
            np.testing.assert_allclose(
                np.asarray(g, np.float32), np.asarray(w), atol=0.05 * scale, rtol=0.05
            )
        for v in low.weights:
            assert v.dtype in (jnp.float32, jnp.int32, jnp.uint32), v.dtype
    if fit:
        check_fit(make, x, kw)
    return layer


def _nameable_initializers(layer):
    # Layers made with `numpy_initializer` (a plain callable a config cannot name) get
    # a nameable one once built: configs and archives then work, and the weights
    # themselves are copied by value anyway.
    for m in [layer, *layer.submodules]:
        for key, value in list(vars(m).items()):
            if key.endswith("_initializer") and callable(value):
                if not isinstance(value, jmod.initializers.Initializer):
                    m.__dict__[key] = jmod.initializers.Zeros()


def check_archive(layer, x):
    """A functional model around `layer` saved as `.jmod` and loaded gives the same outputs."""
    import os
    import tempfile

    xs = _as_inputs(x)
    inputs = [jmod.Input(shape=np.shape(v)[1:], dtype=jnp.asarray(v).dtype.name) for v in xs]
    out = layer(inputs if isinstance(x, (list, tuple)) else inputs[0])
    model = jmod.Model(inputs, out)
    before = model(list(xs) if isinstance(x, (list, tuple)) else xs[0])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.jmod")
        model.save(path)
        loaded = jmod.models.load_model(path)
    after = loaded(list(xs) if isinstance(x, (list, tuple)) else xs[0])
    for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(before)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert [w.shape for w in loaded.get_weights()] == [w.shape for w in model.get_weights()]


def check_fit(make, x, call_kwargs=None):
    """One epoch of `fit` on a model `[layer, Flatten, Dense(1)]` lowers nothing to NaN
    and moves the layer's trainable weights."""
    import optax

    layer = make()
    xs = _as_inputs(x)
    multi = isinstance(x, (list, tuple))
    inputs = [jmod.Input(shape=np.shape(v)[1:], dtype=jnp.asarray(v).dtype.name) for v in xs]
    out = layer(inputs if multi else inputs[0], **dict(call_kwargs or {}))
    out = jax.tree_util.tree_leaves(out, is_leaf=lambda t: hasattr(t, "shape"))[0]
    if len(out.shape) > 2:
        out = jmod.layers.Flatten()(out)
    out = jmod.layers.Dense(1, kernel_initializer="ones")(out)
    model = jmod.Model(inputs if multi else inputs[0], out)
    model.compile(optimizer=optax.sgd(1e-2), loss="mse")
    before = [np.asarray(v.value) for v in layer.trainable_weights]
    n = np.shape(xs[0])[0]
    y = np.linspace(-1, 1, n).astype(np.float32)[:, None]
    history = model.fit(list(xs) if multi else xs[0], y, batch_size=n, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = [np.asarray(v.value) for v in layer.trainable_weights]
    assert all(np.isfinite(a).all() for a in after)
    if before:
        assert any(not np.array_equal(a, b) for a, b in zip(after, before)), "fit moved nothing"
