"""What a user types, checked by mypy (pyproject [tool.mypy] lists tests/typing).

`assert_type` fails the type check when an annotation of the public API
changes what a common call gives back. Also importable and runnable (it
runs as a test in tests/test_typing.py).
"""

from typing import Any, assert_type

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jmod


class Dense(jmod.Module):
    def __init__(self, units: int, name: str | None = None) -> None:
        super().__init__(name=name)
        self.units = units
        self.w: jmod.Variable | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.w is None:
            self.w = jmod.Variable(jnp.ones((x.shape[-1], self.units)))
        return x @ self.w.value


def run() -> float:
    v = jmod.Variable(1.0, name="v")
    assert_type(v.value, jax.Array)
    assert_type(v.shape, tuple[int, ...])
    assert_type(v.trainable, bool)
    assert_type(v.numpy(), np.ndarray)
    v.assign(2.0)
    v.assign_add(jnp.ones(()))

    model = Dense(2)
    y = model(jnp.ones((1, 3)))
    assert_type(y, jax.Array)
    assert_type(model.name, str)
    assert_type(model.trainable_variables, tuple[jmod.Variable, ...])
    assert_type(model.named_variables(), list[tuple[str, jmod.Variable]])
    assert_type(model.submodules, tuple[jmod.Module, ...])
    state = model.state()
    assert_type(state, dict[str, jax.Array])
    model.load_state(state)

    out, new_state = jmod.functional_call(model, state, jnp.ones((1, 3)))
    assert_type(new_state, dict[str, jax.Array])

    def loss_fn(m: Dense) -> jax.Array:
        return jnp.sum(m(jnp.ones((1, 3))) ** 2)

    loss, grads = jmod.value_and_grad(loss_fn)(model)
    assert_type(loss, Any)
    opt = jmod.Optimizer(model, optax.sgd(0.1))
    opt.update(grads)
    return float(loss)


if __name__ == "__main__":
    print(run())
