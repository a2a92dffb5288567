"""Deep models: compile time, step time and memory of scanned, rematerialized and plain stacks.

Run: python bench/large.py [--quick] [--depths 2,8,32] [--no-flax] [--no-keras]

A pre-norm transformer encoder block (LayerNorm, 4-head self-attention,
LayerNorm, 4x MLP, residuals), width 32, sequence 16, batch 8, stacked 2, 8
and 32 deep, trained with SGD on a mean-squared error. For each depth:

- jmod `Repeat(scan=True)`, `Repeat(scan=True, remat="full")` and
  `Repeat(scan=False)` (every block traced), the train step a `jmod.jit`
  function (forward, `value_and_grad`, optimizer update);
- Flax NNX: blocks made by `nnx.vmap`, run by `nnx.scan` (with `nnx.remat`
  around the block), and a plain Python list of blocks, the train step a
  `jax.jit` function over `nnx.split` state (the same shape of program).

Columns: trace+compile (s) of the train step (`lower(...).compile()`),
step (ms, median of timed steps), temp (MiB) and args (MiB) from XLA's
`compiled.memory_analysis()` (temporary buffers of the step, and its inputs).
Ratios printed below the table: compile time at the deepest vs the
shallowest depth (goal: scanned <= 1.5x), temp memory of plain / remat at
the deepest (goal: >= 2x), scanned step time / plain step time (goal: <= 1.1x).
Keras 3 (JAX backend) has no scan over layers: its "plain" row times the
first `train_on_batch` (trace, compile and one step) and later steps; it
has no memory analysis (nan).
"""

import os
import platform
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compile times are the measurement: no persistent compilation cache.
os.environ["JMOD_COMPILATION_CACHE"] = "0"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jmod  # noqa: E402

QUICK = "--quick" in sys.argv
DEPTHS = [2, 8, 32]
if "--depths" in sys.argv:
    DEPTHS = [int(n) for n in sys.argv[sys.argv.index("--depths") + 1].split(",")]
WIDTH, HEADS, SEQ, BATCH = 32, 4, 16, 8
STEPS = 5 if QUICK else 20
MIB = 1024 * 1024


# -- jmod -----------------------------------------------------------------------------


class Block(jmod.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ln1 = jmod.layers.LayerNormalization()
        self.attn = jmod.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)
        self.ln2 = jmod.layers.LayerNormalization()
        self.fc1 = jmod.layers.Dense(4 * WIDTH, activation="gelu")
        self.fc2 = jmod.layers.Dense(WIDTH)

    def call(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h)
        return x + self.fc2(self.fc1(self.ln2(x)))


def jmod_case(depth, scan, remat):
    model = jmod.layers.Repeat(Block, depth, scan=scan, remat=remat)
    x = np.random.default_rng(0).normal(size=(BATCH, SEQ, WIDTH)).astype("float32")
    y = np.random.default_rng(1).normal(size=(BATCH, SEQ, WIDTH)).astype("float32")
    model(x)  # build
    opt = jmod.Optimizer(model, optax.sgd(1e-3))

    @jmod.jit
    def step(model, opt, x, y):
        loss, grads = jmod.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(grads)
        return loss

    t0 = time.perf_counter()
    compiled = step.lower(model, opt, x, y).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    step(model, opt, x, y).block_until_ready()  # the call path's own compile, not timed
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        step(model, opt, x, y).block_until_ready()
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times) * 1e3, memory


# -- Flax NNX ---------------------------------------------------------------------------


def flax_case(depth, scan, remat):
    from flax import nnx

    class NBlock(nnx.Module):
        def __init__(self, rngs):
            self.ln1 = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(
                num_heads=HEADS, in_features=WIDTH, decode=False, rngs=rngs
            )
            self.ln2 = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.fc1 = nnx.Linear(WIDTH, 4 * WIDTH, rngs=rngs)
            self.fc2 = nnx.Linear(4 * WIDTH, WIDTH, rngs=rngs)

        def __call__(self, x):
            h = self.ln1(x)
            x = x + self.attn(h)
            return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))

    if scan:

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return NBlock(rngs)

        class Model(nnx.Module):
            def __init__(self):
                self.blocks = make(nnx.Rngs(0))

            def __call__(self, x):
                def body(block, x):
                    return block(x)

                if remat:
                    body = nnx.remat(body)

                @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
                def run(x, block):
                    return body(block, x)

                return run(x, self.blocks)

    else:

        class Model(nnx.Module):
            def __init__(self):
                rngs = nnx.Rngs(0)
                self.blocks = nnx.List([NBlock(rngs) for _ in range(depth)])

            def __call__(self, x):
                for block in self.blocks:
                    x = block(x)
                return x

    model = Model()
    graphdef, params = nnx.split(model, nnx.Param)
    x = np.random.default_rng(0).normal(size=(BATCH, SEQ, WIDTH)).astype("float32")
    y = np.random.default_rng(1).normal(size=(BATCH, SEQ, WIDTH)).astype("float32")
    tx = optax.sgd(1e-3)
    opt_state = tx.init(params)

    def loss_fn(params, x, y):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, x, y).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    params, opt_state, loss = compiled(params, opt_state, x, y)
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, x, y)
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times) * 1e3, memory


# -- Keras 3 (JAX backend; no scan over layers) -----------------------------------------------


def keras_case(depth, scan, remat):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not jax")
    inputs = keras.Input((SEQ, WIDTH))
    x = inputs
    for _ in range(depth):
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)(h, h)
        h = keras.layers.Dense(4 * WIDTH, activation="gelu")(keras.layers.LayerNormalization()(x))
        x = x + keras.layers.Dense(WIDTH)(h)
    model = keras.Model(inputs, x)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    xs = np.random.default_rng(0).normal(size=(BATCH, SEQ, WIDTH)).astype("float32")
    ys = np.random.default_rng(1).normal(size=(BATCH, SEQ, WIDTH)).astype("float32")
    t0 = time.perf_counter()
    model.train_on_batch(xs, ys)  # trace + compile + one step: no lower() to time apart
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        model.train_on_batch(xs, ys)
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times) * 1e3, None


# -- the table --------------------------------------------------------------------------

VARIANTS = [
    ("jmod", "scan", lambda d: jmod_case(d, True, None)),
    ("jmod", "scan+remat", lambda d: jmod_case(d, True, "full")),
    ("jmod", "plain", lambda d: jmod_case(d, False, None)),
    ("flax nnx", "scan", lambda d: flax_case(d, True, False)),
    ("flax nnx", "scan+remat", lambda d: flax_case(d, True, True)),
    ("flax nnx", "plain", lambda d: flax_case(d, False, False)),
    ("keras", "plain", lambda d: keras_case(d, False, False)),
]


def main():
    variants = [v for v in VARIANTS if not ("--no-flax" in sys.argv and v[0] == "flax nnx")]
    variants = [v for v in variants if not ("--no-keras" in sys.argv and v[0] == "keras")]
    print(
        f"jax {jax.__version__}, {platform.machine()} {os.cpu_count()} CPUs; width {WIDTH}, "
        f"seq {SEQ}, batch {BATCH}, {STEPS} timed steps"
    )
    header = f"{'library':9} {'stack':11} {'depth':>5} {'compile s':>10} {'step ms':>9}"
    print(header + f" {'temp MiB':>9} {'args MiB':>9}")
    results = {}
    jmod_case(2, True, None)  # warm-up: the process's first compile costs extra
    for library, label, run in variants:
        for depth in DEPTHS:
            try:
                compile_s, step_ms, mem = run(depth)
            except Exception as e:  # an anchor that cannot be built is reported, not fatal
                print(f"{library:9} {label:11} {depth:5d}  failed: {type(e).__name__}: {e}"[:160])
                continue
            temp = mem.temp_size_in_bytes / MIB if mem is not None else float("nan")
            args = mem.argument_size_in_bytes / MIB if mem is not None else float("nan")
            results[library, label, depth] = (compile_s, step_ms, temp)
            print(
                f"{library:9} {label:11} {depth:5d} {compile_s:10.2f} {step_ms:9.2f} "
                f"{temp:9.2f} {args:9.2f}",
                flush=True,
            )
    lo, hi = min(DEPTHS), max(DEPTHS)
    print()
    for library in sorted({v[0] for v in variants}):
        r = lambda label, d, library=library: results.get((library, label, d))  # noqa: E731
        parts = []
        for label in ("scan", "scan+remat", "plain"):
            if r(label, lo) and r(label, hi):
                parts.append(f"{label} {r(label, hi)[0] / r(label, lo)[0]:.2f}x")
        print(f"{library}: compile time depth {hi} / depth {lo}: " + ", ".join(parts))
        if r("plain", hi) and r("scan+remat", hi):
            print(
                f"{library}: temp memory at depth {hi}: plain / scan+remat "
                f"{r('plain', hi)[2] / r('scan+remat', hi)[2]:.2f}x, "
                f"scan / scan+remat {r('scan', hi)[2] / r('scan+remat', hi)[2]:.2f}x"
                if r("scan", hi)
                else ""
            )
        steps = [
            f"depth {d}: {r('scan', d)[1] / r('plain', d)[1]:.2f}x"
            for d in DEPTHS
            if r("scan", d) and r("plain", d)
        ]
        print(f"{library}: step time scan / plain: " + ", ".join(steps))
    for depth in DEPTHS:
        for label in ("scan", "scan+remat", "plain"):
            for anchor in ("flax nnx", "keras"):
                a, b = results.get(("jmod", label, depth)), results.get((anchor, label, depth))
                if a and b:
                    print(
                        f"jmod / {anchor}, {label}, depth {depth}: compile {a[0] / b[0]:.2f}x, "
                        f"step {a[1] / b[1]:.2f}x"
                    )


if __name__ == "__main__":
    main()
