"""A tour of jmod: the TensorFlow guide "Introduction to modules, layers, and models", on JAX.

Run: python -m jmod.tour

Each step prints what it did and what came out. Everything runs on the CPU
(or whatever JAX finds), on data made here: nothing is downloaded.
"""

import tempfile

import jax
import jax.numpy as jnp
import optax

import jmod

STEPS = []


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
    jmod.random.set_seed(0)
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
    jmod.random.set_seed(0)
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
    jmod.random.set_seed(0)
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
