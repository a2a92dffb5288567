"""Loading a .safetensors file into a model: jmod.interop against raw reads and safetensors.flax.

One file of N float32 arrays of 4096x1024 (16 MiB each: 64 for 1 GiB), keyed
by the model's variable paths. Each variant runs in its own process (a model
of the same structure already built and touched), interleaved, medians of
the repetitions:

- cold read: the file evicted from the page cache (posix_fadvise DONTNEED),
             then loaded into the model's variables (JAX arrays on the default device)
- warm read: the same again, the file now in the page cache
- GB/s and the ratio to the raw floor
- RSS: peak resident-memory growth during the load, in model sizes (sampled every 2 ms)

Variants: raw (preadv of the tensor bytes into aligned buffers, device_put: the
disk's limit, 1.00x), flax (`safetensors.flax.load_file` then assigning each
array to its variable: the usual manual port), jmod
(`jmod.interop.load_safetensors(model, path)`: checks every name, shape and
dtype from the header first, then reads and assigns one tensor at a time).
Needs the interop extra (safetensors) and flax for the anchor. Not run in CI.

Usage: python bench/interop.py [--mib 1024] [--reps 3] [--dir /tmp]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SHAPE = (4096, 1024)
ARRAY_BYTES = SHAPE[0] * SHAPE[1] * 4
VARIANTS = ["raw", "flax", "jmod"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PeakRSS:
    """Samples this process's resident memory on a thread; `.peak` is the growth in bytes."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.top = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.top = max(self.top, self.rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.top = max(self.top, self.rss())
        self.peak = self.top - self.base


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def worker(variant, path, n):
    import jax
    import numpy as np

    import jmod

    model = jmod.Module()
    model.params = [jmod.Variable(jax.numpy.zeros(SHAPE, np.float32)) for _ in range(n)]
    named = dict(model.named_variables())
    # Fresh memory costs 1-2.5 s per GiB the first time on this VM: touch it first.
    for _ in range(3):
        scratch = np.ones(3 * n * ARRAY_BYTES // 8, np.float64)
        del scratch

    if variant == "raw":
        from jmod.interop.safetensors import _header

        header = _header(path)  # name -> (dtype, shape, start, end), absolute offsets

        def load():
            fd = os.open(path, os.O_RDONLY)
            for k, (_, _, start, end) in sorted(header.items(), key=lambda kv: kv[1][2]):
                raw = np.empty(end - start + 64, np.uint8)
                first = -raw.ctypes.data % 64  # aligned: device_put takes it without a copy
                view = memoryview(raw[first : first + end - start])
                arr = raw[first : first + end - start].view(np.float32).reshape(SHAPE)
                offset = start
                while view:
                    got = os.preadv(fd, [view], offset)
                    view, offset = view[got:], offset + got
                named[k].assign(jax.device_put(arr))
            os.close(fd)

    elif variant == "flax":
        from safetensors.flax import load_file

        def load():
            loaded = load_file(path)
            for k, v in loaded.items():
                named[k].assign(v)

    else:
        from jmod.interop import load_safetensors

        def load():
            load_safetensors(model, path)

    out = {}
    for mode in ("cold", "warm"):
        if mode == "cold":
            evict(path)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            load()
            jax.block_until_ready([v.value for v in model.params])
            seconds = time.perf_counter() - t0
        out[mode] = seconds
        out[f"rss_{mode}"] = rss.peak
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return

    import jax
    import numpy as np
    import safetensors

    n = max(1, args.mib * 2**20 // ARRAY_BYTES)
    size = n * ARRAY_BYTES
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_version()}, jax {jax.__version__}, "
        f"safetensors {safetensors.__version__}; model {size / 2**30:.2f} GiB "
        f"({n} x float32 {SHAPE})"
    )
    path = os.path.join(args.dir, f"jmod-bench-interop-{os.getpid()}.safetensors")
    rng = np.random.default_rng(0)
    import safetensors.numpy

    tensors = {f"params/{i}": rng.random(SHAPE, np.float32) for i in range(n)}
    safetensors.numpy.save_file(tensors, path)
    del tensors
    try:
        results = {v: [] for v in VARIANTS}
        for _ in range(args.reps):
            for v in VARIANTS:
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", v, path, str(n)],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": ROOT},
                )
                if proc.returncode:
                    sys.exit(f"{v} failed:\n{proc.stderr}")
                results[v].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        os.remove(path)

    def med(v, key):
        return statistics.median(r[key] for r in results[v])

    print(
        f"{'variant':<8} {'cold s':>8} {'GB/s':>7} {'x raw':>7} {'warm s':>8} {'GB/s':>7} "
        f"{'x raw':>7} {'RSS cold':>9} {'RSS warm':>9}"
    )
    for v in VARIANTS:
        cold, warm = med(v, "cold"), med(v, "warm")
        raw_cold, raw_warm = med("raw", "cold"), med("raw", "warm")
        print(
            f"{v:<8} {cold:8.3f} {size / cold / 1e9:7.2f} {raw_cold / cold:7.2f} "
            f"{warm:8.3f} {size / warm / 1e9:7.2f} {raw_warm / warm:7.2f} "
            f"{med(v, 'rss_cold') / size:8.2f}x {med(v, 'rss_warm') / size:8.2f}x"
        )
    print("# x raw: speed as a fraction of the raw read (1.00 = the disk's limit);")
    print("# RSS: peak resident growth during the load, in model sizes.")


if __name__ == "__main__":
    main()
