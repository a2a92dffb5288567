"""Time to first output of a fresh model: jmod against raw JAX, Keras 3 and Flax NNX.

Each measurement is a fresh Python process, timed from its first line
(before `import jax`) to the first output on the host: import, build
(random initial weights), compile and run. Cases:

  mlp          24 Dense layers whose widths all differ, batch 8
  cnn          3 x (Conv2D, BatchNorm, ReLU, pooling) + Dense (inference)
  transformer  4 pre-norm encoder blocks (MultiHeadAttention, LayerNorm, Dense), batch 8
  fit          the 24-layer MLP with a 10-way head: one epoch of `fit` (16 steps of 32)

Rows: raw JAX (`jax.random` init per shape, one `jax.jit` forward or train
step), jmod cold (an empty persistent compilation cache, so its writes are
counted), jmod warm (the same script again: its second start), Keras 3
(JAX backend, eager call / `fit`), Flax NNX (eager init, `nnx.jit`).
Keras and NNX run without a persistent cache (their default). The
transformer is a jmod functional model; it is also timed called through
`jmod.jit` (a functional model's eager call runs op by op).

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/first_output.py --reps 3
    .venv/bin/python bench/first_output.py --cases mlp --reps 1
"""

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

WIDTHS = [64 + 3 * i for i in range(24)]
BATCH, FEATURES, CLASSES = 8, 32, 10
FIT_SAMPLES, FIT_BATCH = 512, 32
IMAGE = (8, 32, 32, 3)
CNN_FILTERS = (16, 32, 64)
SEQ = (8, 16, 64)  # batch, tokens, model width
HEADS, KEY_DIM, FF, BLOCKS = 4, 16, 128, 4


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "mlp": rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
        "cnn": rng.normal(size=IMAGE).astype(np.float32),
        "transformer": rng.normal(size=SEQ).astype(np.float32),
        "fit": (
            rng.normal(size=(FIT_SAMPLES, FEATURES)).astype(np.float32),
            rng.integers(0, CLASSES, FIT_SAMPLES).astype(np.int32),
        ),
    }


# -- raw JAX -------------------------------------------------------------------------


def _jax_mlp_params(key, widths):
    import jax
    import jax.numpy as jnp

    params, d = [], FEATURES
    for w in widths:
        key, k = jax.random.split(key)
        params.append((jax.nn.initializers.glorot_uniform()(k, (d, w)), jnp.zeros((w,))))
        d = w
    return params


def _jax_mlp_forward(params, x, last_linear=False):
    import jax

    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if not (last_linear and i == len(params) - 1):
            x = jax.nn.relu(x)
    return x


def jax_mlp(data):
    import jax

    params = _jax_mlp_params(jax.random.key(0), WIDTHS)
    return jax.jit(_jax_mlp_forward)(params, data["mlp"])


def jax_cnn(data):
    import jax
    import jax.numpy as jnp

    glorot = jax.nn.initializers.glorot_uniform()
    key, params, cin = jax.random.key(0), [], IMAGE[-1]
    for f in CNN_FILTERS:
        key, k = jax.random.split(key)
        params.append(
            {
                "kernel": glorot(k, (3, 3, cin, f)),
                "bias": jnp.zeros((f,)),
                "gamma": jnp.ones((f,)),
                "beta": jnp.zeros((f,)),
                "mean": jnp.zeros((f,)),
                "var": jnp.ones((f,)),
            }
        )
        cin = f
    key, k = jax.random.split(key)
    head = (glorot(k, (cin, CLASSES)), jnp.zeros((CLASSES,)))

    @jax.jit
    def forward(params, head, x):
        for i, p in enumerate(params):
            x = jax.lax.conv_general_dilated(
                x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = x + p["bias"]
            x = (x - p["mean"]) / jnp.sqrt(p["var"] + 1e-3) * p["gamma"] + p["beta"]
            x = jax.nn.relu(x)
            if i < len(params) - 1:
                x = jax.lax.reduce_window(
                    x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
        x = x.mean(axis=(1, 2))
        return x @ head[0] + head[1]

    return forward(params, head, data["cnn"])


def jax_transformer(data):
    import jax
    import jax.numpy as jnp

    glorot = jax.nn.initializers.glorot_uniform()
    d = SEQ[-1]
    key, blocks = jax.random.key(0), []
    for _ in range(BLOCKS):
        keys = jax.random.split(key, 7)
        key = keys[0]
        blocks.append(
            {
                "ln1": (jnp.ones((d,)), jnp.zeros((d,))),
                "ln2": (jnp.ones((d,)), jnp.zeros((d,))),
                "q": (glorot(keys[1], (d, HEADS, KEY_DIM)), jnp.zeros((HEADS, KEY_DIM))),
                "k": (glorot(keys[2], (d, HEADS, KEY_DIM)), jnp.zeros((HEADS, KEY_DIM))),
                "v": (glorot(keys[3], (d, HEADS, KEY_DIM)), jnp.zeros((HEADS, KEY_DIM))),
                "o": (glorot(keys[4], (HEADS, KEY_DIM, d)), jnp.zeros((d,))),
                "ff1": (glorot(keys[5], (d, FF)), jnp.zeros((FF,))),
                "ff2": (glorot(keys[6], (FF, d)), jnp.zeros((d,))),
            }
        )

    def norm(x, p):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-3) * p[0] + p[1]

    @jax.jit
    def forward(blocks, x):
        for p in blocks:
            h = norm(x, p["ln1"])
            q, k, v = (jnp.einsum("btd,dhk->bthk", h, p[n][0]) + p[n][1] for n in "qkv")
            att = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q, k) / KEY_DIM**0.5, axis=-1)
            h = jnp.einsum("bhqs,bshk->bqhk", att, v)
            x = x + jnp.einsum("bqhk,hkd->bqd", h, p["o"][0]) + p["o"][1]
            h = jax.nn.relu(norm(x, p["ln2"]) @ p["ff1"][0] + p["ff1"][1])
            x = x + h @ p["ff2"][0] + p["ff2"][1]
        return x

    return forward(blocks, data["transformer"])


def jax_fit(data):
    import jax
    import optax

    params = _jax_mlp_params(jax.random.key(0), [*WIDTHS, CLASSES])
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y):
        def loss_fn(p):
            logits = _jax_mlp_forward(p, x, last_linear=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    x, y = data["fit"]
    for i in range(0, FIT_SAMPLES, FIT_BATCH):
        params, state, loss = step(params, state, x[i : i + FIT_BATCH], y[i : i + FIT_BATCH])
    return loss


# -- jmod ----------------------------------------------------------------------------


def _jmod_mlp(jmod, head=False):
    layers = [jmod.layers.Dense(w, activation="relu") for w in WIDTHS]
    if head:
        layers.append(jmod.layers.Dense(CLASSES))
    return jmod.Sequential(layers)


def jmod_mlp(data):
    import jmod

    return _jmod_mlp(jmod)(data["mlp"])


def jmod_cnn(data):
    import jmod

    L = jmod.layers
    layers = []
    for i, f in enumerate(CNN_FILTERS):
        layers += [L.Conv2D(f, 3, padding="same"), L.BatchNormalization(), L.Activation("relu")]
        layers.append(L.MaxPooling2D(2) if i < len(CNN_FILTERS) - 1 else L.GlobalAveragePooling2D())
    return jmod.Sequential([*layers, L.Dense(CLASSES)])(data["cnn"])


def _jmod_transformer(jmod):
    L = jmod.layers
    inputs = jmod.Input(shape=SEQ[1:])
    x = inputs
    for _ in range(BLOCKS):
        h = L.LayerNormalization()(x)
        x = L.Add()([x, L.MultiHeadAttention(HEADS, KEY_DIM)(h, h)])
        h = L.Dense(FF, activation="relu")(L.LayerNormalization()(x))
        x = L.Add()([x, L.Dense(SEQ[-1])(h)])
    return jmod.Model(inputs, x)


def jmod_transformer(data):
    import jmod

    return _jmod_transformer(jmod)(data["transformer"])


def jmod_transformer_jit(data):
    import jmod

    return jmod.jit(lambda model, x: model(x))(_jmod_transformer(jmod), data["transformer"])


def jmod_fit(data):
    import optax

    import jmod

    model = _jmod_mlp(jmod, head=True)
    model.compile(
        optimizer=optax.adam(1e-3),
        loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data["fit"]
    history = model.fit(x, y, batch_size=FIT_BATCH, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][-1]


# -- Keras 3 (JAX backend) ------------------------------------------------------------


def keras_mlp(data):
    import keras

    layers = [keras.layers.Dense(w, activation="relu") for w in WIDTHS]
    return keras.Sequential([keras.Input((FEATURES,)), *layers])(data["mlp"])


def keras_cnn(data):
    import keras

    L = keras.layers
    layers = [keras.Input(IMAGE[1:])]
    for i, f in enumerate(CNN_FILTERS):
        layers += [L.Conv2D(f, 3, padding="same"), L.BatchNormalization(), L.Activation("relu")]
        layers.append(L.MaxPooling2D(2) if i < len(CNN_FILTERS) - 1 else L.GlobalAveragePooling2D())
    return keras.Sequential([*layers, L.Dense(CLASSES)])(data["cnn"])


def keras_transformer(data):
    import keras

    L = keras.layers
    inputs = keras.Input(SEQ[1:])
    x = inputs
    for _ in range(BLOCKS):
        h = L.LayerNormalization()(x)
        x = L.Add()([x, L.MultiHeadAttention(HEADS, KEY_DIM)(h, h)])
        h = L.Dense(FF, activation="relu")(L.LayerNormalization()(x))
        x = L.Add()([x, L.Dense(SEQ[-1])(h)])
    return keras.Model(inputs, x)(data["transformer"])


def keras_fit(data):
    import keras

    layers = [keras.layers.Dense(w, activation="relu") for w in WIDTHS]
    model = keras.Sequential([keras.Input((FEATURES,)), *layers, keras.layers.Dense(CLASSES)])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data["fit"]
    history = model.fit(x, y, batch_size=FIT_BATCH, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][-1]


# -- Flax NNX -------------------------------------------------------------------------


def _nnx_mlp(nnx, head=False):
    rngs, layers, d = nnx.Rngs(0), [], FEATURES
    for w in [*WIDTHS, *([CLASSES] if head else [])]:
        layers.append(nnx.Linear(d, w, rngs=rngs))
        d = w

    class MLP(nnx.Module):
        def __init__(self):
            self.layers = nnx.List(layers)

        def __call__(self, x):
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if not (head and i == len(self.layers) - 1):
                    x = nnx.relu(x)
            return x

    return MLP()


def nnx_mlp(data):
    from flax import nnx

    return nnx.jit(lambda m, x: m(x))(_nnx_mlp(nnx), data["mlp"])


def nnx_cnn(data):
    from flax import nnx

    rngs = nnx.Rngs(0)

    class CNN(nnx.Module):
        def __init__(self):
            convs, norms, cin = [], [], IMAGE[-1]
            for f in CNN_FILTERS:
                convs.append(nnx.Conv(cin, f, (3, 3), padding="SAME", rngs=rngs))
                norms.append(nnx.BatchNorm(f, use_running_average=True, rngs=rngs))
                cin = f
            self.convs, self.norms = nnx.List(convs), nnx.List(norms)
            self.head = nnx.Linear(cin, CLASSES, rngs=rngs)

        def __call__(self, x):
            for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
                x = nnx.relu(norm(conv(x)))
                if i < len(self.convs) - 1:
                    x = nnx.max_pool(x, (2, 2), (2, 2))
            return self.head(x.mean(axis=(1, 2)))

    return nnx.jit(lambda m, x: m(x))(CNN(), data["cnn"])


def nnx_transformer(data):
    from flax import nnx

    rngs, d = nnx.Rngs(0), SEQ[-1]

    class Block(nnx.Module):
        def __init__(self):
            self.ln1, self.ln2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
            self.att = nnx.MultiHeadAttention(
                HEADS, d, qkv_features=HEADS * KEY_DIM, decode=False, rngs=rngs
            )
            self.ff1, self.ff2 = nnx.Linear(d, FF, rngs=rngs), nnx.Linear(FF, d, rngs=rngs)

        def __call__(self, x):
            x = x + self.att(self.ln1(x))
            return x + self.ff2(nnx.relu(self.ff1(self.ln2(x))))

    class Encoder(nnx.Module):
        def __init__(self):
            self.blocks = nnx.List([Block() for _ in range(BLOCKS)])

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    return nnx.jit(lambda m, x: m(x))(Encoder(), data["transformer"])


def nnx_fit(data):
    import jax
    import optax
    from flax import nnx

    model = _nnx_mlp(nnx, head=True)
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    x, y = data["fit"]
    for i in range(0, FIT_SAMPLES, FIT_BATCH):
        loss = step(model, opt, x[i : i + FIT_BATCH], y[i : i + FIT_BATCH])
    return jax.block_until_ready(loss)


# -- the runner ------------------------------------------------------------------------

CASES = ["mlp", "cnn", "transformer", "fit"]
ROWS = [  # (label, function prefix, cache)
    ("raw JAX", "jax", None),
    ("jmod (cold cache)", "jmod", "cold"),
    ("jmod (warm cache)", "jmod", "warm"),
    ("Keras 3", "keras", None),
    ("Flax NNX", "nnx", None),
]


_FRAMEWORK = {"jax": "jax", "jmod": "jmod", "keras": "keras", "nnx": "flax.nnx"}


def _child(name):
    import importlib

    import numpy as np

    importlib.import_module(_FRAMEWORK[name.split("_")[0]])
    imported = time.perf_counter() - _T0
    data = _data()
    out = globals()[name](data)
    np.asarray(out)  # on the host: the first output exists
    print(json.dumps({"seconds": time.perf_counter() - _T0, "import": imported}))


def _measure(name, cache_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION")}
    env["KERAS_BACKEND"] = "jax"
    env["JMOD_COMPILATION_CACHE"] = cache_dir or "0"
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"  {name} failed: {tail[0]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _versions():
    import importlib.metadata as md

    parts = []
    for pkg in ("jax", "keras", "flax"):
        try:
            parts.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            parts.append(f"{pkg} -")
    return ", ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return _child(args.child)

    cpus = os.cpu_count()
    print(f"# {platform.processor() or platform.machine()}, {cpus} CPUs, {_versions()}")
    print(f"# fresh process each; median of {args.reps} (min in brackets); seconds\n")
    rows = list(ROWS)
    if "transformer" in args.cases:
        rows.insert(3, ("jmod (cold, jmod.jit call)", "jmod_jit", "cold"))
    times = {}  # (row label, case) -> [seconds]
    for rep in range(args.reps):
        for case in args.cases:
            cache = tempfile.mkdtemp(prefix="jmod-first-output-")
            try:
                for label, prefix, mode in rows:
                    if prefix == "jmod_jit":
                        if case != "transformer":
                            continue
                        name = "jmod_transformer_jit"
                    else:
                        name = f"{prefix}_{case}"
                    cache_dir = None
                    if mode is not None:
                        cache_dir = os.path.join(cache, "jit" if prefix == "jmod_jit" else "seq")
                    got = _measure(name, cache_dir)
                    seconds = None if got is None else got["seconds"]
                    if got is not None:
                        times.setdefault((label, case), []).append(seconds)
                        after = got["seconds"] - got["import"]
                        times.setdefault((label + " after import", case), []).append(after)
                    print(f"  rep {rep + 1} {case:12s} {label:28s} {seconds}", file=sys.stderr)
            finally:
                shutil.rmtree(cache, ignore_errors=True)

    width = 30
    print("| " + " | ".join([" " * width, *[f"{c:>18s}" for c in args.cases]]) + " |")
    print("|" + "|".join(["-" * (width + 2), *["-" * 20 for _ in args.cases]]) + "|")
    for label, _, _ in rows:
        cells = []
        for case in args.cases:
            got = times.get((label, case))
            cells.append(f"{statistics.median(got):7.2f} [{min(got):6.2f}]" if got else "")
        print("| " + " | ".join([f"{label:{width}s}", *[f"{c:>18s}" for c in cells]]) + " |")

    print("\nRatios to raw JAX (medians; goal: jmod cold <= 0.25x, ahead of Keras and NNX):")
    print("| " + " | ".join([" " * width, *[f"{c:>12s}" for c in args.cases]]) + " |")
    print("|" + "|".join(["-" * (width + 2), *["-" * 14 for _ in args.cases]]) + "|")
    for label, _, _ in rows:
        cells = []
        for case in args.cases:
            got, base = times.get((label, case)), times.get(("raw JAX", case))
            ratio = statistics.median(got) / statistics.median(base) if got and base else None
            cells.append(f"{ratio:.2f}x" if ratio else "")
        print("| " + " | ".join([f"{label:{width}s}", *[f"{c:>12s}" for c in cells]]) + " |")
    print("\nSecond start (warm cache / cold cache, goal <= 0.10x); the same after the import:")
    for case in args.cases:
        ratios = []
        for suffix in ("", " after import"):
            cold = times.get(("jmod (cold cache)" + suffix, case))
            warm = times.get(("jmod (warm cache)" + suffix, case))
            if cold and warm:
                cold, warm = statistics.median(cold), statistics.median(warm)
                ratios.append(f"{warm / cold:.2f}x ({warm:.2f} s / {cold:.2f} s)")
        if ratios:
            print(f"  {case:12s} whole: {ratios[0]}   after import: {ratios[-1]}")


if __name__ == "__main__":
    main()
