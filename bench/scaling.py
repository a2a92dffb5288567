"""Data-parallel train-step time on 1, 2 and 4 devices: jmod.distributed against raw JAX.

Run: python bench/scaling.py [--quick] [--devices 1,2,4]
On CPU the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count,
set here before JAX starts): they share the machine's cores, so the numbers
show the overhead of sharding, not a speed-up. On a machine with several
GPUs the same script times real devices.

Per device count: a 256-512-512-10 MLP, global batch 512, adam; the raw JAX
floor is a `jax.jit` step over a parameter pytree replicated on the mesh
with the batch split along "data"; jmod is `jmod.jit` over a model built
inside `jmod.distributed.mesh`, batch put by `distribute_batch`. Interleaved
rounds, medians, ms per step; ratio = jmod / raw JAX on the same devices.
"""

import os
import platform
import statistics
import sys
import time

QUICK = "--quick" in sys.argv
COUNTS = [1, 2, 4]
if "--devices" in sys.argv:
    COUNTS = [int(n) for n in sys.argv[sys.argv.index("--devices") + 1].split(",")]
if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(COUNTS)}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jmod  # noqa: E402
import jmod.distributed as jd  # noqa: E402

SIZES = [256, 512, 512, 10]
BATCH = 512


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.normal(size=(BATCH, SIZES[-1])).astype(np.float32)
    return x, y


def raw_step_fn(tx):
    def loss_fn(params, x, y):
        for i, p in enumerate(params):
            x = x @ p["w"] + p["b"]
            if i < len(params) - 1:
                x = jax.nn.relu(x)
        return jnp.mean((x - y) ** 2)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def raw_setup(mesh):
    rng = np.random.default_rng(1)
    replicated = NamedSharding(mesh, PartitionSpec())
    params = [
        {
            "w": jax.device_put(rng.normal(size=(a, b)).astype(np.float32) * 0.05, replicated),
            "b": jax.device_put(np.zeros(b, np.float32), replicated),
        }
        for a, b in zip(SIZES[:-1], SIZES[1:])
    ]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    split = NamedSharding(mesh, PartitionSpec("data"))
    x, y = (jax.device_put(a, split) for a in data())
    step = raw_step_fn(tx)
    state = {"params": params, "opt": opt_state}

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], x, y)
        return loss

    return run


class MLP(jmod.Module):
    def __init__(self):
        super().__init__()
        self.layers = [jmod.layers.Dense(n) for n in SIZES[1:]]

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


@jmod.jit
def jmod_step(model, opt, x, y):
    loss, grads = jmod.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    opt.update(grads)
    return loss


def jmod_setup(mesh):
    with jd.mesh(mesh):
        jmod.random.set_seed(1)
        model = MLP()
        model(jnp.zeros((2, SIZES[0])))
        opt = jmod.Optimizer(model, optax.adam(1e-3))
        x, y = jd.distribute_batch(data())

    def run():
        return jmod_step(model, opt, x, y)

    return run


def timeit(fn, n):
    jax.block_until_ready(fn())
    t = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / n


def main():
    steps, rounds = (5, 3) if QUICK else (20, 7)
    devices = jax.devices()
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"{len(devices)} x {devices[0].device_kind}; python {platform.python_version()}, "
        f"jax {jax.__version__}, optax {optax.__version__}, jmod {jmod.__version__}"
    )
    print(
        f"# data-parallel train step, MLP {'-'.join(map(str, SIZES))}, global batch {BATCH}, "
        f"adam; medians of {rounds} rounds x {steps} steps"
    )
    rows = []
    for n in COUNTS:
        if n > len(devices):
            print(f"# skipping {n} devices: only {len(devices)}")
            continue
        mesh = jd.make_mesh({"data": n}, devices=devices[:n])
        variants = {"raw": raw_setup(mesh), "jmod": jmod_setup(mesh)}
        times = {k: [] for k in variants}
        for _ in range(rounds):
            for k, fn in variants.items():
                times[k].append(timeit(fn, steps))
        rows.append((n, statistics.median(times["raw"]), statistics.median(times["jmod"])))
    base = rows[0][1]
    header = ("devices", "raw JAX ms", "jmod ms", "jmod/raw", "raw vs first")
    print("{:>7s} {:>11s} {:>9s} {:>9s} {:>13s}".format(*header))
    for n, raw, jm in rows:
        print(f"{n:7d} {raw * 1e3:11.2f} {jm * 1e3:9.2f} {jm / raw:8.2f}x {raw / base:12.2f}x")


if __name__ == "__main__":
    main()
