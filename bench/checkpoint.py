"""Checkpoint speed and memory: jmod against raw file I/O and its peers.

Writes and reads N float32 arrays of 4096x1024 (16 MiB each: 16 for 256 MiB,
64 for 1 GiB), each variant in its own process, interleaved, medians of the
repetitions. Reported per variant:

- save s:      save until durable (fsync included; added for peers that skip it)
- durable:     model bytes / save s, and as a ratio of the raw floor
- cold read:   files evicted from the page cache (posix_fadvise DONTNEED after
               fsync), then read into JAX arrays on the default device
- warm read:   the same read again, files now in the page cache
- RSS write/read: peak resident-memory growth during the operation, as a
               multiple of the model size (sampled every 2 ms)

Variants: raw (os.write + fsync of the same bytes, read into 64-byte-aligned
buffers: the disk's limit, 1.00x), jmod (Checkpoint.write / restore), numpy
(np.save / np.load per array), flax (flax.serialization msgpack), orbax and
orbax-nocomp (StandardCheckpointer with and without zstd; bench extra).

Fresh memory on this VM costs 1-2.5 s per GiB the first time it is touched
(freed memory goes back to the host), so every worker touches and frees three times
the model size before timing anything. Not run in CI.

Usage: python bench/checkpoint.py [--sizes 256 1024] [--reps 3] [--dir /tmp]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SHAPE = (4096, 1024)
ARRAY_BYTES = SHAPE[0] * SHAPE[1] * 4
VARIANTS = ["raw", "jmod", "numpy", "flax", "orbax", "orbax-nocomp"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- in the worker


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


def evict(paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def files_under(path):
    if os.path.isfile(path):
        return [path]
    out = []
    for directory, _, names in os.walk(path):
        out += [os.path.join(directory, n) for n in names]
    return out


def fsync_tree(path):
    for name in files_under(path):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def variant_ops(variant, arrays, path):
    """(write(), read() -> list of jax arrays, files()) for one variant."""
    import jax
    import numpy as np

    if variant == "raw":
        from jmod.checkpoint._io import aligned_empty

        def write():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for a in arrays:
                view = memoryview(np.asarray(a)).cast("B")
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.close(fd)

        def read():
            fd = os.open(path, os.O_RDONLY)
            out, offset = [], 0
            for _ in arrays:
                buf = aligned_empty(ARRAY_BYTES)
                view = memoryview(buf)
                while view:
                    n = os.preadv(fd, [view], offset)
                    view, offset = view[n:], offset + n
                out.append(jax.device_put(buf.view(np.float32).reshape(SHAPE)))
            os.close(fd)
            return out

        return write, read, lambda: [path]

    if variant == "jmod":
        import jmod
        from jmod.checkpoint import Checkpoint

        model = jmod.Module()
        model.params = [jmod.Variable(a) for a in arrays]

        def write():
            Checkpoint(model=model).write(path)

        # The same-structure model to restore into, built before any clock starts;
        # each restore replaces the values the previous one put there.
        target = jmod.Module()
        target.params = [jmod.Variable(jax.numpy.zeros(SHAPE, np.float32)) for _ in arrays]

        def read():
            Checkpoint(model=target).restore(path).assert_consumed()
            return [v.value for v in target.params]

        return write, read, lambda: files_under(os.path.dirname(path))

    if variant == "numpy":
        os.makedirs(path, exist_ok=True)
        names = [os.path.join(path, f"{i}.npy") for i in range(len(arrays))]

        def write():
            for name, a in zip(names, arrays, strict=True):
                with open(name, "wb") as f:
                    np.save(f, np.asarray(a))
                    f.flush()
                    os.fsync(f.fileno())

        def read():
            return [jax.device_put(np.load(name)) for name in names]

        return write, read, lambda: names

    if variant == "flax":
        import flax.serialization

        tree = {str(i): a for i, a in enumerate(arrays)}

        def write():
            data = flax.serialization.to_bytes(tree)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        def read():
            with open(path, "rb") as f:
                restored = flax.serialization.from_bytes(tree, f.read())
            return [jax.device_put(restored[str(i)]) for i in range(len(arrays))]

        return write, read, lambda: [path]

    if variant.startswith("orbax"):
        import orbax.checkpoint as ocp

        tree = {str(i): a for i, a in enumerate(arrays)}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
        compress = variant == "orbax"
        state = {"n": 0}

        def current():
            return os.path.join(path, f"step{state['n']}")

        if compress:  # the StandardCheckpointer default: zstd

            def checkpointer():
                return ocp.StandardCheckpointer()

            def save(ckptr):
                ckptr.save(current(), tree)

            def restore(ckptr):
                return ckptr.restore(current(), abstract)

        else:  # the same PyTree handler StandardCheckpointer wraps, compression off
            restore_tree = ocp.checkpoint_utils.construct_restore_args(abstract)

            def checkpointer():
                return ocp.AsyncCheckpointer(ocp.PyTreeCheckpointHandler(use_compression=False))

            def save(ckptr):
                ckptr.save(current(), args=ocp.args.PyTreeSave(tree))

            def restore(ckptr):
                args = ocp.args.PyTreeRestore(item=abstract, restore_args=restore_tree)
                return ckptr.restore(current(), args=args)

        def write():
            state["n"] += 1
            with checkpointer() as ckptr:
                save(ckptr)
                ckptr.wait_until_finished()
            fsync_tree(current())  # durability on par with the others

        def read():
            with checkpointer() as ckptr:
                restored = restore(ckptr)
            return [restored[str(i)] for i in range(len(arrays))]

        return write, read, lambda: files_under(current())

    raise ValueError(variant)


def worker(variant, size_mib, directory):
    import jax
    import numpy as np

    n = size_mib * (1 << 20) // ARRAY_BYTES
    rng = np.random.default_rng(0)
    arrays = [jax.device_put(rng.random(SHAPE, dtype=np.float32)) for _ in range(n)]
    jax.block_until_ready(arrays)
    model_bytes = n * ARRAY_BYTES
    # Pre-touch and free: see the module docstring.
    touch = np.ones(3 * model_bytes // 8)
    del touch

    path = os.path.join(directory, "ckpt")
    write, read, files = variant_ops(variant, arrays, path)
    with PeakRSS() as write_rss:
        t0 = time.perf_counter()
        write()
        save_s = time.perf_counter() - t0
    evict(files())
    with PeakRSS() as read_rss:
        t0 = time.perf_counter()
        got = jax.block_until_ready(read())
        cold_s = time.perf_counter() - t0
    for i in (0, n - 1):
        assert np.array_equal(np.asarray(got[i]), np.asarray(arrays[i])), f"{variant}: wrong data"
    del got
    t0 = time.perf_counter()
    got = jax.block_until_ready(read())
    warm_s = time.perf_counter() - t0
    del got
    result = {
        "save_s": save_s,
        "cold_s": cold_s,
        "warm_s": warm_s,
        "rss_write": write_rss.peak / model_bytes,
        "rss_read": read_rss.peak / model_bytes,
        "bytes": model_bytes,
    }
    if variant == "jmod":
        import jmod.checkpoint

        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            jmod.checkpoint.list_variables(path)
            times.append(time.perf_counter() - t0)
        result["list_ms"] = 1000 * statistics.median(times)
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- the driver


def versions():
    import importlib.metadata as md

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pkgs = []
    for p in ["jax", "numpy", "msgpack", "flax", "orbax-checkpoint"]:
        try:
            pkgs.append(f"{p} {md.version(p)}")
        except md.PackageNotFoundError:
            pkgs.append(f"{p} -")
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, " + ", ".join(pkgs)
    )


def run_worker(variant, size, base):
    directory = tempfile.mkdtemp(prefix=f"bench-{variant}-", dir=base)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("JAX_PLATFORMS", "cpu")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", variant, str(size), directory],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    print(f"  {variant} failed:\n{proc.stderr[-1500:]}", file=sys.stderr)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="MiB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: the temp dir)")
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "MIB", "DIR"))
    args = parser.parse_args()
    if args.worker:
        variant, size, directory = args.worker
        worker(variant, int(size), directory)
        return

    print(versions())
    for size in args.sizes:
        results = {v: [] for v in args.variants}
        for rep in range(args.reps):
            order = (
                args.variants[rep % len(args.variants) :]
                + args.variants[: rep % len(args.variants)]
            )
            for variant in order:  # interleaved, rotated each repetition
                r = run_worker(variant, size, args.dir)
                if r is not None:
                    results[variant].append(r)
        print_table(size, results, args.reps)


def print_table(size, results, reps):
    def med(variant, key):
        values = [r[key] for r in results[variant] if key in r]
        return statistics.median(values) if values else float("nan")

    gb = size * (1 << 20) / 1e9
    floor_w = gb / med("raw", "save_s") if results.get("raw") else float("nan")
    floor_r = gb / med("raw", "cold_s") if results.get("raw") else float("nan")
    print(
        f"\n{size} MiB ({size * (1 << 20) // ARRAY_BYTES} x float32[4096,1024]), median of {reps}"
    )
    head = (
        f"{'variant':<13}{'save s':>8}{'durable GB/s':>14}{'x raw':>7}"
        f"{'cold GB/s':>11}{'x raw':>7}{'warm GB/s':>11}{'RSS write':>11}{'RSS read':>10}"
    )
    print(head)
    print("-" * len(head))
    for variant, runs in results.items():
        if not runs:
            print(f"{variant:<13}  failed")
            continue
        w = gb / med(variant, "save_s")
        c = gb / med(variant, "cold_s")
        print(
            f"{variant:<13}{med(variant, 'save_s'):>8.3f}{w:>14.2f}{w / floor_w:>6.2f}x"
            f"{c:>11.2f}{c / floor_r:>6.2f}x{gb / med(variant, 'warm_s'):>11.2f}"
            f"{med(variant, 'rss_write'):>10.2f}x{med(variant, 'rss_read'):>9.2f}x"
        )
    if results.get("jmod"):
        print(f"jmod list_variables: {med('jmod', 'list_ms'):.3f} ms")
    print("RSS = peak resident-memory growth during the operation / model size")


if __name__ == "__main__":
    main()
