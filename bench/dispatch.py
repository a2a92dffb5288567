"""Per-call overhead of jmod.jit against raw jax.jit, Flax NNX and Equinox.

Run: python bench/dispatch.py [--quick]
Prints medians (us per call, batch 1, no per-call blocking) and ratios to the
raw `jax.jit` floor, for the guide's 3->3->2 model (4 arrays) and a 50-layer
Dense(16,16) MLP (100 arrays); then train-step throughput for a 784-512-512-10
MLP (batch 128, adam) against a raw JAX loop with buffer donation; then
inference throughput with 4 threads calling one compiled model, against raw
`jax.jit` called from 4 threads.
"""

import os
import platform
import statistics
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jmod  # noqa: E402

QUICK = "--quick" in sys.argv


def timeit(fn, n):
    out = fn()
    jax.block_until_ready(out)
    t = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / n


def interleaved(variants, n, rounds):
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(timeit(fn, n))
    return {k: statistics.median(v) for k, v in times.items()}


def sizes_for(kind):
    return [(3, 3), (3, 2)] if kind == "tiny" else [(16, 16)] * 50


def raw_params(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"w": jnp.asarray(rng.normal(size=s), jnp.float32), "b": jnp.zeros(s[1], jnp.float32)}
        for s in sizes
    ]


def raw_forward(params, x):
    for p in params:
        x = jax.nn.relu(x @ p["w"] + p["b"])
    return x


# -- jmod -----------------------------------------------------------------------
class JDense(jmod.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w = jmod.Variable(w)
        self.b = jmod.Variable(b)

    def __call__(self, x):
        return jax.nn.relu(x @ self.w + self.b)


class JModel(jmod.Module):
    def __init__(self, params):
        super().__init__()
        self.layers = [JDense(p["w"], p["b"]) for p in params]

    @jmod.jit
    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def variants_for(kind):
    params = raw_params(sizes_for(kind))
    x = jnp.ones((1, params[0]["w"].shape[0]), jnp.float32)
    raw = jax.jit(raw_forward)
    out = {"raw jax.jit (floor)": lambda: raw(params, x)}
    jm = JModel(params)
    out["jmod.jit"] = lambda: jm(x)
    try:
        from flax import nnx

        class NDense(nnx.Module):
            def __init__(self, w, b):
                self.w = nnx.Param(w)
                self.b = nnx.Param(b)

            def __call__(self, x):
                return jax.nn.relu(x @ self.w + self.b)

        class NModel(nnx.Module):
            def __init__(self, params):
                self.layers = nnx.List([NDense(p["w"], p["b"]) for p in params])

            def __call__(self, x):
                for layer in self.layers:
                    x = layer(x)
                return x

        nm = NModel(params)
        f_default = nnx.jit(lambda m, x: m(x))
        f_tree = nnx.jit(lambda m, x: m(x), graph=False)
        gdef, state = nnx.split(nm)
        f_split = jax.jit(lambda s, x: nnx.merge(gdef, s)(x))
        f_partial = nnx.jit_partial(lambda m, x: m(x), nm, graph=False)
        out["nnx.jit (default)"] = lambda: f_default(nm, x)
        out["nnx.jit graph=False"] = lambda: f_tree(nm, x)
        out["nnx.split once + jax.jit"] = lambda: f_split(state, x)
        out["nnx.jit_partial graph=False"] = lambda: f_partial(x)
    except ImportError:
        pass
    try:
        import equinox as eqx

        class EModel(eqx.Module):
            params: list

            def __call__(self, x):
                return raw_forward(self.params, x)

        em = EModel(params)
        f_eqx = eqx.filter_jit(lambda m, x: m(x))
        out["equinox.filter_jit"] = lambda: f_eqx(em, x)
    except ImportError:
        pass
    return out


# -- train step -----------------------------------------------------------------
def train_variants(batch=128):
    rng = np.random.default_rng(0)
    sizes = [(784, 512), (512, 512), (512, 10)]
    params = [
        {"w": jnp.asarray(rng.normal(size=s) * 0.05, jnp.float32), "b": jnp.zeros(s[1])}
        for s in sizes
    ]
    x = jnp.asarray(rng.normal(size=(batch, 784)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=(batch,)))
    tx = optax.adam(1e-3)

    def mlp(params, x):
        for i, p in enumerate(params):
            x = x @ p["w"] + p["b"]
            if i < len(params) - 1:
                x = jax.nn.relu(x)
        return x

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y).mean()

    @jax.jit
    def raw_step(params, opt_state, x, y):
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    raw_donated = jax.jit(raw_step.__wrapped__, donate_argnums=(0, 1))
    state = {"p": jax.tree.map(jnp.copy, params)}
    state["o"] = tx.init(state["p"])

    def raw():
        state["p"], state["o"], loss = raw_donated(state["p"], state["o"], x, y)
        return loss

    class JMLP(jmod.Module):
        def __init__(self):
            super().__init__()
            self.layers = [JDense(jnp.copy(p["w"]), jnp.copy(p["b"])) for p in params]

        def __call__(self, x):
            for i, layer in enumerate(self.layers):
                x = x @ layer.w + layer.b
                if i < len(self.layers) - 1:
                    x = jax.nn.relu(x)
            return x

    def jloss(model, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    def make(donate):
        model = JMLP()
        opt = jmod.Optimizer(model, tx)

        @jmod.jit(donate_state=donate)
        def step(model, opt, x, y):
            loss, grads = jmod.value_and_grad(jloss)(model, x, y)
            opt.update(grads)
            return loss

        return lambda: step(model, opt, x, y)

    return {
        "raw jax.jit + donation (floor)": raw,
        "jmod.jit train step": make(False),
        "jmod.jit train step, donate_state": make(True),
    }


# -- threads --------------------------------------------------------------------
def threaded(fn, threads, n):
    """Seconds per call when `threads` threads each make `n` calls of `fn` at once."""
    barrier = threading.Barrier(threads + 1)

    def work():
        barrier.wait()
        out = None
        for _ in range(n):
            out = fn()
        jax.block_until_ready(out)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return (time.perf_counter() - t0) / (threads * n)


def threaded_variants(kind, threads=4, n=500, rounds=5):
    params = raw_params(sizes_for(kind))
    x = jnp.ones((1, params[0]["w"].shape[0]), jnp.float32)
    raw = jax.jit(raw_forward)
    jm = JModel(params)
    variants = {
        "raw jax.jit, 4 threads (floor)": lambda: raw(params, x),
        "jmod.jit, 4 threads": lambda: jm(x),
    }
    for fn in variants.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(threaded(fn, threads, n))
    return {k: statistics.median(v) for k, v in times.items()}


def table(title, results, unit, per_call=True):
    floor = next(iter(results.values()))
    print(f"\n{title}")
    print(f"{'variant':34s} {unit:>12s} {'ratio':>8s}")
    for k, v in results.items():
        if per_call:
            print(f"{k:34s} {v * 1e6:12.1f} {v / floor:7.2f}x")
        else:
            print(f"{k:34s} {1 / v:12.1f} {floor / v:7.2f}x")


def main():
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"{jax.devices()[0].device_kind}; python {platform.python_version()}, "
        f"jax {jax.__version__}, jmod {jmod.__version__}"
    )
    n, rounds = (200, 5) if QUICK else (2000, 15)
    for kind in ("tiny", "deep"):
        res = interleaved(variants_for(kind), n if kind == "tiny" else n // 4, rounds)
        label = "3->3->2 (4 arrays)" if kind == "tiny" else "50 x Dense(16,16) (100 arrays)"
        table(f"forward, batch 1, {label}", res, "us/call")
    res = interleaved(train_variants(), 20 if QUICK else 50, 3 if QUICK else 7)
    table("train step 784-512-512-10, batch 128, adam", res, "steps/s", per_call=False)
    for kind in ("tiny", "deep"):
        res = threaded_variants(kind, n=100 if QUICK else 500, rounds=3 if QUICK else 7)
        label = "3->3->2" if kind == "tiny" else "50 x Dense(16,16)"
        table(f"inference throughput, 4 threads, one model, {label}", res, "calls/s", False)


if __name__ == "__main__":
    main()
