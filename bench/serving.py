"""Serving throughput: `python -m jmod.saved_model serve` against a FastAPI app around jax.jit.

Run: python bench/serving.py [--quick]   (needs the serving and bench extras: fastapi)

For the 784-512-512-10 MLP of bench/dispatch.py and a small CNN (28x28x1,
two 3x3 convolutions, dense 10), each request one instance as TF Serving's
row format (`{"instances": [x]}`), from 1, 8 and 32 concurrent keep-alive
clients (asyncio) for a few seconds: requests/s and p50/p99 latency of

    floor          the loaded saved model called in-process, one request after another
    fastapi+jit    a minimal FastAPI + uvicorn app around `jax.jit` (what a user would write)
    jmod serve     python -m jmod.saved_model serve
    jmod --batching  the same with --batching (max batch 32, no batch timeout)

Servers run one at a time in subprocesses on 127.0.0.1, with access logs off.
"""

import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import jmod  # noqa: E402

QUICK = "--quick" in sys.argv
SECONDS = 1.5 if QUICK else 4.0
CLIENTS = (1, 8, 32)


# -- models (one pure function over a params dict, shared by all variants) -----
def mlp_params(rng):
    sizes = [(784, 512), (512, 512), (512, 10)]
    out = {}
    for i, s in enumerate(sizes):
        out[f"w{i}"] = (rng.normal(size=s) * 0.05).astype(np.float32)
        out[f"b{i}"] = np.zeros(s[1], np.float32)
    return out


def mlp(params, x):
    for i in range(3):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < 2:
            x = jax.nn.relu(x)
    return x


def cnn_params(rng):
    return {
        "c1": (rng.normal(size=(3, 3, 1, 16)) * 0.2).astype(np.float32),
        "c2": (rng.normal(size=(3, 3, 16, 32)) * 0.05).astype(np.float32),
        "w": (rng.normal(size=(7 * 7 * 32, 10)) * 0.02).astype(np.float32),
        "b": np.zeros(10, np.float32),
    }


def cnn(params, x):
    dims = ("NHWC", "HWIO", "NHWC")
    for k in ("c1", "c2"):
        x = jax.lax.conv_general_dilated(x, params[k], (2, 2), "SAME", dimension_numbers=dims)
        x = jax.nn.relu(x)
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


MODELS = {
    "mlp 784-512-512-10": (mlp_params, mlp, (784,)),
    "cnn 28x28x1": (cnn_params, cnn, (28, 28, 1)),
}


class Served(jmod.Module):
    def __init__(self, params, forward):
        super().__init__()
        self.names = sorted(params)
        self.forward = forward
        for k in self.names:
            setattr(self, k, jmod.Variable(params[k]))

    @jmod.jit
    def __call__(self, x):
        return self.forward({k: jnp.asarray(getattr(self, k)) for k in self.names}, x)


# -- the FastAPI reference app (run as: bench/serving.py --fastapi PARAMS.npz MODEL PORT) --
def fastapi_app(params_file, model, port):
    import uvicorn
    from fastapi import FastAPI

    with np.load(params_file, allow_pickle=False) as data:
        params = {k: jnp.asarray(data[k]) for k in data.files}
    forward = jax.jit(MODELS[model][1])
    app = FastAPI()

    @app.post("/v1/models/m:predict")
    async def predict(body: dict):
        # np.asarray: jnp.asarray on nested lists converts element by element (10x slower).
        x = np.asarray(body["instances"], np.float32)
        return {"predictions": np.asarray(forward(params, x)).tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load generator ------------------------------------------------------------
async def _client(port, request, stop_at, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{head[:40]!r} {body[:200]!r}")
            latencies.append(time.perf_counter() - t)
    finally:
        writer.close()


def load_test(port, body, clients, seconds):
    """(requests/s, p50 ms, p99 ms) of `clients` keep-alive clients sending `body`."""
    request = (
        f"POST /v1/models/m:predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def run(duration):
        latencies = []
        stop_at = time.perf_counter() + duration
        await asyncio.gather(*(_client(port, request, stop_at, latencies) for _ in range(clients)))
        return latencies

    asyncio.run(run(0.3))  # warm up connections and compilations
    start = time.perf_counter()
    latencies = asyncio.run(run(seconds))
    elapsed = time.perf_counter() - start
    q = np.percentile(latencies, [50, 99]) * 1e3
    return len(latencies) / elapsed, q[0], q[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, port):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/m", timeout=5)
            return proc
        except urllib.error.HTTPError:  # FastAPI: 404/405 for GET means it is up
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{command} did not start")


def stop(proc):
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def floor(loaded, x, seconds):
    """The loaded saved model called in-process, one request (with its JSON) after another."""
    times = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        np.asarray(loaded(x))
        times.append(time.perf_counter() - t)
    q = np.percentile(times, [50, 99]) * 1e3
    return len(times) / sum(times), q[0], q[1]


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--fastapi":
        return fastapi_app(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    import fastapi
    import starlette
    import uvicorn

    print(
        f"# {platform.machine()} {os.cpu_count()} CPUs, {jax.default_backend()}, python "
        f"{platform.python_version()}, jax {jax.__version__}, uvicorn {uvicorn.__version__}, "
        f"starlette {starlette.__version__}, fastapi {fastapi.__version__}; {SECONDS:g} s per "
        "cell, one instance per request"
    )
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp(prefix="jmod-bench-serving-")
    rows = []
    for model, (make_params, forward, shape) in MODELS.items():
        params = make_params(rng)
        params_file = os.path.join(tmp, "params.npz")
        np.savez(params_file, **params)
        base = os.path.join(tmp, "m")
        module = Served(params, forward)
        jmod.saved_model.save(
            module,
            os.path.join(base, "1"),
            signatures={"__call__": (module.__call__, [jmod.TensorSpec([None, *shape])])},
        )
        x = np.round(rng.normal(size=(1, *shape)), 3).astype(np.float32)
        body = json.dumps({"instances": x.tolist()}).encode()
        loaded = jmod.saved_model.load(os.path.join(base, "1"))
        np.testing.assert_allclose(loaded(x), forward(params, x), rtol=1e-4, atol=1e-5)
        results = {"floor (in-process)": {c: floor(loaded, x, SECONDS) for c in (1,)}}
        serve = [sys.executable, "-m", "jmod.saved_model", "serve", base, "--model-name", "m"]
        variants = {
            "fastapi+jit": [sys.executable, __file__, "--fastapi", params_file, model],
            "jmod serve": serve,
            "jmod serve --batching": [*serve, "--batching"],
        }
        for name, command in variants.items():
            port = free_port()
            port_args = [str(port)] if name == "fastapi+jit" else ["--port", str(port)]
            proc = start([*command, *port_args], port)
            try:
                results[name] = {c: load_test(port, body, c, SECONDS) for c in CLIENTS}
            finally:
                stop(proc)
        ref = results["fastapi+jit"]
        for name, cells in results.items():
            for c, (rps, p50, p99) in cells.items():
                ratio = rps / ref[c][0]
                rows.append((model, name, c, rps, p50, p99, ratio))
                print(
                    f"{model:<20} {name:<22} {c:>3} clients {rps:9.0f} req/s  p50 {p50:7.2f} ms  "
                    f"p99 {p99:7.2f} ms  {ratio:5.2f}x fastapi",
                    flush=True,
                )
    print()
    print("| model | server | clients | req/s | p50 ms | p99 ms | vs fastapi+jit |")
    print("|---|---|---|---|---|---|---|")
    for model, name, c, rps, p50, p99, ratio in rows:
        print(f"| {model} | {name} | {c} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
