"""Epochs per second of `fit` against a raw JAX loop, Keras 3 (JAX backend) and Flax NNX.

Run: python bench/fit.py [--model mlp|cnn|lstm] [--quick] [--samples N] [--rounds R] [--no-keras]

`--model cnn`: Conv2D(16, 3, relu) - MaxPooling2D - Conv2D(32, 3, relu) -
MaxPooling2D - Flatten - Dense(10) on 28x28x1 images; `--model lstm`: an
LSTM text classifier, Embedding(1000, 32) - LSTM(64) - Dense(2) on 40-id
sequences. Both against the same raw JAX + optax loop (lax convolutions and
reduce_window / a lax.scan LSTM) and Keras 3 fit; Flax NNX runs the MLP only.

The same 784-512-512-10 MLP (ReLU, logits, sparse categorical crossentropy),
adam(1e-3), batch 128, on random data (N samples, N a multiple of 128, so no
loop needs a short last batch), shuffled every epoch:
  raw JAX (the floor): NumPy batches sliced by a permutation, one `jax.jit`
      step each that donates params and optimizer state (of the variants
      tried: the step gathering from device arrays, or a separate gather
      call, this was the fastest on CPU);
  jmod fit: `model.fit(x, y, batch_size=128)` on a `TrainerMixin` model (data
      on the device, rows gathered there per step);
  Flax NNX: an `nnx.jit` step fed like the floor;
  Keras 3: `model.fit(...)` in its own process (KERAS_BACKEND=jax), driven
      epoch by epoch so the rounds interleave with the others.
Epoch times come from epoch begin to epoch end with the loss on the host
(all work done); each variant runs one untimed epoch first (compilation).
Medians over the rounds; ratios are epochs/s over the floor's.
Keras is the `bench` extra's `keras` package (pip install keras).
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

BATCH = 128
SIZES = (784, 512, 512, 10)


def _arg(name, default):
    if name in sys.argv:
        return int(sys.argv[sys.argv.index(name) + 1])
    return default


QUICK = "--quick" in sys.argv
MODEL = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "mlp"
if MODEL not in ("mlp", "cnn", "lstm"):
    raise SystemExit(f"--model must be mlp, cnn or lstm, got {MODEL!r}")
SAMPLES = _arg("--samples", (12_800 if QUICK else 60_032) if MODEL == "mlp" else 6_400)
VOCAB, STEPS, EMBED, UNITS = 1000, 40, 32, 64
ROUNDS = _arg("--rounds", 3 if QUICK else 5)


def make_data(n=SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    if MODEL == "cnn":
        x = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
        return x, rng.integers(0, 10, size=n).astype(np.int32)
    if MODEL == "lstm":
        x = rng.integers(1, VOCAB, size=(n, STEPS)).astype(np.int32)
        return x, (x[:, : STEPS // 2].sum(1) > x[:, STEPS // 2 :].sum(1)).astype(np.int32)
    x = rng.normal(size=(n, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=n).astype(np.int32)
    return x, y


def keras_layers(layers):
    """The benchmark model's layers from a Keras-style `layers` module (Keras or jmod)."""
    if MODEL == "cnn":
        return [
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    if MODEL == "lstm":
        return [layers.Embedding(VOCAB, EMBED), layers.LSTM(UNITS), layers.Dense(2)]
    return [layers.Dense(n, activation="relu") for n in SIZES[1:-1]] + [layers.Dense(SIZES[-1])]


def input_shape():
    return {"cnn": (28, 28, 1), "lstm": (STEPS,)}.get(MODEL, (SIZES[0],))


# -- Keras 3, in its own process -------------------------------------------------------
def keras_worker():
    """Builds the Keras model, then runs one epoch per 'epoch' line on stdin."""
    import keras

    x, y = make_data()
    keras.utils.set_random_seed(0)
    dtype = "int32" if MODEL == "lstm" else "float32"
    model = keras.Sequential([keras.Input(input_shape(), dtype=dtype)] + keras_layers(keras.layers))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # the epoch's work is done once its loss is on the host
            times.append(time.perf_counter() - self.start)

    print(json.dumps({"keras": keras.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True, callbacks=[Clock()])
        print(json.dumps({"seconds": times[-1]}), flush=True)


class KerasProcess:
    def __init__(self):
        env = dict(os.environ, KERAS_BACKEND="jax")
        cmd = [sys.executable, os.path.abspath(__file__), "--keras-worker", *sys.argv[1:]]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.version = json.loads(self.proc.stdout.readline())["keras"]

    def epoch(self):
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["seconds"]

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# -- in-process variants -----------------------------------------------------------------
def init_params(seed=0):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        limit = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32)
        params.append({"w": jnp.asarray(w), "b": jnp.zeros(n_out, jnp.float32)})
    return params


def crossentropy(logits, labels):
    """Sparse categorical crossentropy from logits, as a one-hot product (Keras and jmod's
    form: the gather form's gradient is a scatter, ~1.5x slower on CPU)."""
    import jax

    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -(onehot * jax.nn.log_softmax(logits)).sum(-1).mean()


def _glorot(rng, shape, fan_in, fan_out):
    import jax.numpy as jnp

    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return jnp.asarray(rng.uniform(-limit, limit, size=shape).astype(np.float32))


def cnn_params_and_forward():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    params = [
        {"w": _glorot(rng, (3, 3, 1, 16), 9, 144), "b": jnp.zeros(16)},
        {"w": _glorot(rng, (3, 3, 16, 32), 144, 288), "b": jnp.zeros(32)},
        {"w": _glorot(rng, (800, 10), 800, 10), "b": jnp.zeros(10)},
    ]
    dims = ("NHWC", "HWIO", "NHWC")

    def pool(x):
        return jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def forward(params, xb):
        for layer in params[:2]:
            xb = jax.lax.conv_general_dilated(
                xb, layer["w"], (1, 1), "VALID", dimension_numbers=dims
            )
            xb = pool(jax.nn.relu(xb + layer["b"]))
        xb = xb.reshape(xb.shape[0], -1)
        return xb @ params[2]["w"] + params[2]["b"]

    return params, forward


def lstm_params_and_forward():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    u = UNITS
    params = {
        "emb": jnp.asarray(rng.uniform(-0.05, 0.05, (VOCAB, EMBED)).astype(np.float32)),
        "k": _glorot(rng, (EMBED, 4 * u), EMBED, 4 * u),
        "rk": _glorot(rng, (u, 4 * u), u, 4 * u),
        "b": jnp.concatenate([jnp.zeros(u), jnp.ones(u), jnp.zeros(2 * u)]),
        "w": _glorot(rng, (u, 2), u, 2),
        "wb": jnp.zeros(2),
    }

    def forward(params, ids):
        # The input projection inside the step: 2x faster on CPU than one product over
        # all steps before the scan.
        xs = jnp.take(params["emb"], ids, axis=0)

        def step(carry, x_t):
            h, c = carry
            z = x_t @ params["k"] + params["b"] + h @ params["rk"]
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((ids.shape[0], u))
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(xs, 0, 1))
        return h @ params["w"] + params["wb"]

    return params, forward


def raw_variant(x, y):
    import jax
    import optax

    tx = optax.adam(1e-3)
    steps = len(x) // BATCH
    if MODEL == "cnn":
        params, forward = cnn_params_and_forward()
    elif MODEL == "lstm":
        params, forward = lstm_params_and_forward()
    else:
        params = init_params()

        def forward(params, xb):
            for layer in params[:-1]:
                xb = jax.nn.relu(xb @ layer["w"] + layer["b"])
            return xb @ params[-1]["w"] + params[-1]["b"]

    opt_state = tx.init(params)

    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(lambda p: crossentropy(forward(p, xb), yb))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    rng = np.random.default_rng(1)
    state = {"params": params, "opt": opt_state}

    def epoch():
        perm = rng.permutation(len(x))
        start = time.perf_counter()
        p, o, loss = state["params"], state["opt"], None
        for i in range(steps):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            p, o, loss = step(p, o, x[idx], y[idx])
        float(loss)
        state["params"], state["opt"] = p, o
        return time.perf_counter() - start

    return epoch


def jmod_variant(x, y, steps_per_execution=1):
    import jmod
    from jmod.layers import Dense, Layer
    from jmod.training import TrainerMixin, callbacks

    class MLP(TrainerMixin, Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = [Dense(n, activation="relu") for n in SIZES[1:-1]]
            self.logits = Dense(SIZES[-1])

        def call(self, inputs):
            for layer in self.hidden:
                inputs = layer(inputs)
            return self.logits(inputs)

    jmod.random.set_seed(0)
    model = MLP() if MODEL == "mlp" else jmod.Sequential(keras_layers(jmod.layers))
    model.compile(
        "adam",
        loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    times = []

    class Clock(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            times.append(time.perf_counter() - self.start)

    def epoch():
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[Clock()])
        return times[-1]

    return epoch


def nnx_variant(x, y):
    import jax
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in zip(SIZES[:-1], SIZES[1:])]
            )

        def __call__(self, xb):
            for layer in self.layers[:-1]:
                xb = jax.nn.relu(layer(xb))
            return self.layers[-1](xb)

    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    steps = len(x) // BATCH

    @nnx.jit
    def step(model, optimizer, xb, yb):
        loss, grads = nnx.value_and_grad(lambda m: crossentropy(m(xb), yb))(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(1)

    def epoch():
        perm = rng.permutation(len(x))
        start = time.perf_counter()
        loss = None
        for i in range(steps):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            loss = step(model, optimizer, x[idx], y[idx])
        float(loss)
        return time.perf_counter() - start

    return epoch


def main():
    import flax
    import jax
    import optax

    import jmod

    x, y = make_data()
    variants = {
        "raw JAX jitted loop (floor)": raw_variant(x, y),
        "jmod fit": jmod_variant(x, y),
    }
    if not QUICK:
        variants["jmod fit, steps_per_execution=8"] = jmod_variant(x, y, 8)
    if MODEL == "mlp":
        variants["Flax NNX loop (nnx.jit)"] = nnx_variant(x, y)
    keras = None
    if "--no-keras" not in sys.argv:
        try:
            keras = KerasProcess()
            variants["Keras 3 fit (JAX backend)"] = keras.epoch
        except Exception as e:  # keras missing: the table goes on without it
            print(f"(Keras 3 skipped: {e})", file=sys.stderr)
    device = jax.devices()[0]
    print(
        f"{platform.machine()} {os.cpu_count()} CPUs, {device.platform} "
        f"({getattr(device, 'device_kind', '?')}); python {platform.python_version()}, "
        f"jax {jax.__version__}, optax {optax.__version__}, flax {flax.__version__}, "
        f"keras {keras.version if keras else '-'}, jmod {jmod.__version__}"
    )
    title = {
        "mlp": "784-512-512-10 MLP",
        "cnn": "CNN conv16-pool-conv32-pool-dense10 on 28x28x1",
        "lstm": f"LSTM({UNITS}) text classifier, {STEPS} ids, vocab {VOCAB}",
    }[MODEL]
    print(
        f"{title}, adam, batch {BATCH}, {len(x)} samples "
        f"({len(x) // BATCH} steps/epoch), {ROUNDS} rounds after 1 warm-up epoch each"
    )
    for run in variants.values():
        run()  # compile
    times = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():
            times[name].append(run())
    if keras is not None:
        keras.close()
    floor = statistics.median(times["raw JAX jitted loop (floor)"])
    print(f"{'variant':<34} {'s/epoch':>9} {'epochs/s':>9} {'ms/step':>8} {'vs floor':>9}")
    for name, values in times.items():
        t = statistics.median(values)
        print(
            f"{name:<34} {t:>9.3f} {1 / t:>9.3f} {1e3 * t / (len(x) // BATCH):>8.2f} "
            f"{floor / t:>8.2f}x"
        )


if __name__ == "__main__":
    if "--keras-worker" in sys.argv:
        keras_worker()
    else:
        main()
