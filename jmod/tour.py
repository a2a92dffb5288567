"""A tour of jmod: the TensorFlow guide "Introduction to modules, layers, and models", on JAX.

Run: python -m jmod.tour

Each step prints what it did and what came out. Everything runs on the CPU
(or whatever JAX finds), on data made here: nothing is downloaded.
"""

import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import optax

import jmod

STEPS: list = []


def step(fn):
    STEPS.append(fn)
    return fn


def show(label, value):
    print(f"  {label:<38} {value}")


class SimpleModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.a_variable = jmod.Variable(5.0, name="train_me")
        self.non_trainable_variable = jmod.Variable(5.0, trainable=False, name="do_not_train_me")

    def __call__(self, x):
        return self.a_variable * x + self.non_trainable_variable


class Dense(jmod.Module):
    def __init__(self, in_features, out_features, name=None):
        super().__init__(name=name)
        self.w = jmod.Variable(jmod.random.normal([in_features, out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([out_features]), name="b")

    def __call__(self, x):
        return jax.nn.relu(jnp.matmul(x, self.w) + self.b)


class FlexibleDenseModule(jmod.Module):
    def __init__(self, out_features, name=None):
        super().__init__(name=name)
        self.is_built = False
        self.out_features = out_features

    def __call__(self, x):
        if not self.is_built:
            self.w = jmod.Variable(jmod.random.normal([x.shape[-1], self.out_features]), name="w")
            self.b = jmod.Variable(jnp.zeros([self.out_features]), name="b")
            self.is_built = True
        return jax.nn.relu(jnp.matmul(x, self.w) + self.b)


class MySequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = FlexibleDenseModule(out_features=3)
        self.dense_2 = FlexibleDenseModule(out_features=2)

    @jmod.jit
    def __call__(self, x):
        return self.dense_2(self.dense_1(x))


@step
def modules_and_variables():
    """Modules collect their variables."""
    m = SimpleModule(name="simple")
    show("simple_module(5.0)", m(jnp.asarray(5.0)))
    show("trainable_variables", [v.name for v in m.trainable_variables])
    show("variables", [v.name for v in m.variables])
    m.a_variable.trainable = False
    show("after freezing train_me: trainable", [v.name for v in m.trainable_variables])


@step
def deferred_build_and_jit():
    """Variables created on the first call; one compiled trace per input signature."""
    jmod.random.set_seed(7)
    model = MySequentialModule(name="the_model")
    show("variables before the first call", model.variables)
    show("model([[2.0, 2.0, 2.0]])", model([[2.0, 2.0, 2.0]]))
    show("variable paths", [p for p, _ in model.named_variables()])
    model([[2.0, 2.0, 2.0]])
    model([[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]])
    show("trace_count (build, then (1,3), (1,2,3))", model.__call__.trace_count)
    for reasons in model.__call__.retrace_reasons:
        show("retraced because", "; ".join(reasons)[:70])
    return model


@step
def pure_functions():
    """The bridge: state() is a pytree; functional_call composes with jax transforms."""
    jmod.random.set_seed(7)
    model = MySequentialModule()
    x = jnp.ones((4, 3))
    model(x)
    state = model.state()
    out, _ = jmod.functional_call(model, state, x)
    show("functional_call == call", bool(jnp.allclose(out, model(x))))
    grads = jax.grad(lambda s: jnp.sum(jmod.functional_call(model, s, x)[0]))(state)
    show("jax.grad over state: keys", sorted(grads))


@step
def train_step():
    """A whole train step (forward, grads, optax update) is one compiled computation."""
    jmod.random.set_seed(7)
    model = MySequentialModule()
    x = jmod.random.normal((64, 3))
    y = jnp.stack([x.sum(-1), -x.sum(-1)], axis=-1).clip(0)
    model(x)
    opt = jmod.Optimizer(model, optax.adam(0.05))

    @jmod.jit
    def train(model, opt, x, y):
        loss, grads = jmod.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(grads)
        return loss

    first = float(train(model, opt, x, y))
    for _ in range(200):
        last = float(train(model, opt, x, y))
    show("loss: first step -> after 200 steps", f"{first:.4f} -> {last:.4f}")
    show("train step traces", train.trace_count)


@step
def checkpoints(workdir):
    """Checkpoints: a path -> value map; restore fills a model built later, too."""
    jmod.random.set_seed(7)
    model = MySequentialModule()
    x = jnp.asarray([[2.0, 2.0, 2.0]])
    y = model(x)
    prefix = jmod.Checkpoint(model=model).write(os.path.join(workdir, "my_checkpoint"))
    show("files", sorted(os.listdir(workdir)))
    show("list_variables", jmod.checkpoint.list_variables(prefix))
    fresh = MySequentialModule()
    jmod.Checkpoint(model=fresh).restore(prefix)
    show("restored before build: variables", fresh.variables)
    show("same output after the first call", bool(jnp.array_equal(fresh(x), y)))
    manager = jmod.CheckpointManager(
        jmod.Checkpoint(model=model), os.path.join(workdir, "ckpts"), max_to_keep=3
    )
    for _ in range(5):
        manager.save()
    show("manager keeps", [os.path.basename(p) for p in manager.checkpoints])


_LOAD_IN_FRESH_PROCESS = """
import sys, jax.numpy as jnp, jmod
loaded = jmod.saved_model.load(sys.argv[1])
print(type(loaded).__name__, loaded([[2.0, 2.0, 2.0]]).tolist())
try:
    loaded(jnp.ones((2, 3)))
except jmod.SignatureError as e:
    print("SignatureError:", str(e).splitlines()[0])
"""


@step
def saved_model(workdir):
    """Export without the Python class: jax.export artifacts + a checkpoint."""
    jmod.random.set_seed(7)
    model = MySequentialModule()
    model([[2.0, 2.0, 2.0]])
    model([[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]])
    path = jmod.saved_model.save(model, os.path.join(workdir, "the_saved_model"))
    show("saved", sorted(os.listdir(path)))
    show("original output", model([[2.0, 2.0, 2.0]]).tolist())
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in (out.stdout or out.stderr).strip().splitlines():
        show("fresh process:", line[:80])


@step
def tensorboard(workdir):
    """TensorBoard: scalars and the compiled graph, named by module path."""
    logdir = os.path.join(workdir, "logs")
    try:
        writer = jmod.summary.create_file_writer(logdir)
    except ImportError as e:
        show("skipped", str(e)[:100])
        return
    jmod.random.set_seed(7)
    model = MySequentialModule(name="the_model")
    model([[2.0, 2.0, 2.0]])
    jmod.summary.trace_on(graph=True)
    model([[[2.0, 2.0, 2.0]]])
    with writer.as_default():
        jmod.summary.trace_export(name="my_func_trace", step=0)
        for step_ in range(3):
            jmod.summary.scalar("loss", 1.0 / (step_ + 1), step=step_)
    writer.close()
    graph = model.__call__.graph(jnp.ones((1, 3)))
    names = [n.name for n in graph.node if "dense_1" in n.name][:3]
    show("event files", len(os.listdir(logdir)))
    show("graph nodes (a few)", names)
    show("view with", "tensorboard --logdir <logdir> (the tour writes to a temp dir)")


class FlexibleDense(jmod.layers.Layer):
    def __init__(self, out_features, **kwargs):
        super().__init__(**kwargs)
        self.out_features = out_features

    def build(self, input_shape):
        self.w = jmod.Variable(jmod.random.normal([input_shape[-1], self.out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([self.out_features]), name="b")

    def call(self, inputs):
        return jnp.matmul(inputs, self.w) + self.b


@step
def keras_style(workdir):
    """Keras-style layers, the functional API, summary() and whole-model save."""
    jmod.saving.register_serializable(package="Tour")(FlexibleDense)
    jmod.layers.reset_names()
    jmod.random.set_seed(7)
    layer = FlexibleDense(out_features=3)
    show("before the first call: built, variables", (layer.built, layer.variables))
    layer(jnp.ones((2, 3)))
    show("after: variables", [(v.name, v.shape) for v in layer.variables])
    try:
        layer(jnp.ones((1, 4)))
    except jmod.LayerCallError as e:
        show("a (1, 4) input raises", type(e).__name__)
        for line in str(e).splitlines():
            print("    " + line)
    inputs = jmod.Input(shape=[3])
    x = FlexibleDense(3)(inputs)
    x = FlexibleDense(2)(x)
    model = jmod.Model(inputs=inputs, outputs=x)
    model.summary(print_fn=lambda line: print("    " + line))
    path = os.path.join(workdir, "model.jmod")
    model.save(path)
    again = jmod.models.load_model(path)
    data = jnp.ones((4, 3))
    show("load_model gives the same outputs", bool(jnp.array_equal(again(data), model(data))))


@step
def train_a_classifier():
    """fit: a small classifier on generated data, to a printed accuracy."""
    jmod.random.set_seed(0)
    centers = jnp.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
    labels = jmod.random.uniform((600,), 0, 3, dtype=jnp.int32)
    points = centers[labels] + jmod.random.normal((600, 2), stddev=0.7)
    model = jmod.Sequential(
        [jmod.Input(shape=[2]), jmod.layers.Dense(16, activation="relu"), jmod.layers.Dense(3)]
    )
    model.compile(
        optimizer="adam",
        loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(points[:500], labels[:500], batch_size=32, epochs=30, verbose=0)
    loss, accuracy = model.evaluate(points[500:], labels[500:], verbose=0)
    losses = history.history["loss"]
    show("train loss: epoch 1 -> 30", f"{losses[0]:.3f} -> {losses[-1]:.3f}")
    show("held-out accuracy", f"{accuracy:.3f}")
    show("train step traces", model.train_function.trace_count)


@step
def pytorch_weights():
    """interop: a PyTorch state_dict loads into the same model built in jmod."""
    try:
        import numpy as np
        import torch
    except ImportError:
        show("PyTorch", "not installed: step skipped (pip install torch to see it)")
        return
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = jmod.Sequential(
        [jmod.Input(shape=[3]), jmod.layers.Dense(8, activation="relu"), jmod.layers.Dense(2)]
    )
    report = jmod.interop.load_torch_state_dict(model, net.state_dict())
    key, path, shape, how = report.matched[0]
    show("paired by structure", f"{key} -> {path} {shape}, {how}")
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    show("same outputs as PyTorch", bool(np.allclose(model(x), want, atol=1e-5)))


def main():
    print(f"jmod {jmod.__version__} on {jax.devices()[0].platform}")
    steps = list(STEPS)
    with tempfile.TemporaryDirectory() as workdir:
        for i, fn in enumerate(steps, 1):
            print(f"\n{i}. {fn.__doc__}")
            fn(workdir) if fn.__code__.co_argcount else fn()
    print("\nDone.")


if __name__ == "__main__":
    main()
