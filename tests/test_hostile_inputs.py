"""Hostile files at full size, read in one child process under a memory limit (RLIMIT_DATA).

Each case is a small file on disk that claims far more than it holds: a
checkpoint whose 4096 blocks all point at the same MiB (a 4 GiB value), a
.jmod archive whose weights inflate to 512 MiB, a saved model whose index
claims a 4 TiB variable. The child reads each one and reports the error,
the time to fail and its peak memory; a regression fails the limit instead
of exhausting the machine.
"""

import json
import os
import resource
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from jmod.checkpoint import _format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 1 << 30  # the child's data segment: a quarter of any claimed value

CHILD = """
import json, resource, sys, time, traceback
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
import jmod, jmod.saved_model, numpy as np
cases = json.loads(sys.argv[2])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {}
for name, (kind, path) in cases.items():
    before, start = peak(), time.perf_counter()
    try:
        if kind == "checkpoint":
            jmod.checkpoint.load_variable(path, "w")
        elif kind == "archive":
            jmod.models.load_model(path)
        else:
            jmod.saved_model.load(path)
        error = None
    except BaseException as e:
        error = type(e).__name__ + ": " + str(e).splitlines()[0]
    out[name] = {"error": error, "seconds": time.perf_counter() - start,
                 "peak_growth": max(0, peak() - before), "peak": peak()}
print(json.dumps(out))
"""


def _overlapping_blocks(directory):
    """4096 blocks of (512, 512) float32 (1 MiB each) tiling a 4 GiB value, all at one offset."""
    path = str(directory / "blocks")
    _format.write_checkpoint(path, {"w": np.zeros((512, 512), np.float32)})
    index = _format.read_index(path)
    e = index.entries["w"]
    pieces = tuple(
        _format.Entry("w", "float32", (512, 512), 0, e.offset, e.length, e.crc32, start=(r, c))
        for r in range(0, 32768, 512)
        for c in range(0, 32768, 512)
    )
    whole = _format.Entry("w", "float32", (32768, 32768), -1, 0, 32768**2 * 4, (), pieces=pieces)
    data = bytearray(_format.encode_index(_format.Index(2, index.uid, 1, 1 << 24, {"w": whole})))
    with open(_format.index_path(path), "wb") as f:
        f.write(data)
    # The data file's header says version 1; the index version 2 (as a sharded write makes).
    with open(_format.data_path(path, 0, 1), "r+b") as f:
        f.seek(8)
        f.write((2).to_bytes(4, "little"))
    return path


def _zip_bomb(directory):
    import jmod

    model = jmod.Sequential([jmod.Input(shape=[2]), jmod.layers.Dense(2)])
    src = model.save(str(directory / "small.jmod"))
    dst = str(directory / "bomb.jmod")
    data = "model.weights.data-00000-of-00001"
    with (
        zipfile.ZipFile(src) as zf,
        zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out,
    ):
        for info in zf.infolist():
            if info.filename != data:
                out.writestr(info, zf.read(info))
                continue
            with out.open(data, "w", force_zip64=True) as f:
                f.write(zf.read(info))
                chunk = bytes(1 << 20)
                for _ in range(128):
                    f.write(chunk)
    return dst


def _huge_variable(directory):
    """A saved model whose metadata and checkpoint index agree on a 4 TiB variable."""
    import jmod
    import jmod.saved_model as sm
    from jmod.saved_model import _format as smf

    class M(jmod.Module):
        def __init__(self):
            super().__init__()
            self.w = jmod.Variable(np.ones(4, np.float32))

        @jmod.jit
        def __call__(self, x):
            return x * self.w

    m = M()
    m(np.ones(4, np.float32))
    path = sm.save(m, str(directory / "huge"))
    prefix = os.path.join(path, "variables", "variables")
    index = _format.read_index(prefix)
    e = index.entries["model/w"]
    big = (1 << 20, 1 << 20)
    length = (1 << 40) * 4
    crcs = (0,) * -(-length // index.chunk_bytes)
    entries = {
        **index.entries,
        "model/w": _format.Entry("model/w", "float32", big, 0, e.offset, length, crcs),
    }
    with open(_format.index_path(prefix), "wb") as f:
        f.write(_format.encode_index(_format.Index(1, index.uid, 1, index.chunk_bytes, entries)))
    meta_file = os.path.join(path, "saved_model.json")
    meta = json.load(open(meta_file))
    meta["variables"][0]["shape"] = list(big)
    open(meta_file, "w").write(json.dumps(meta))
    record = smf.fingerprint(path)
    open(os.path.join(path, "fingerprint.json"), "wb").write(smf.encode_fingerprint(record))
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    cases = {
        "overlapping_blocks": ("checkpoint", _overlapping_blocks(directory)),
        "zip_bomb": ("archive", _zip_bomb(directory)),
        "huge_variable": ("saved_model", _huge_variable(directory)),
    }
    sizes = {name: _size(path) for name, (_, path) in cases.items()}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(LIMIT), json.dumps(cases)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in out:
        out[name]["file_bytes"] = sizes[name]
    return out


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    if os.path.isfile(path + ".index"):  # a checkpoint prefix
        return sum(os.path.getsize(path + s) for s in (".index", ".data-00000-of-00001"))
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _bounded(result):
    assert result["seconds"] < 10
    assert result["peak_growth"] < 64 << 20  # nothing near the claimed size was allocated


def test_blocks_sharing_one_mib_cannot_claim_a_4_gib_value(results):
    r = results["overlapping_blocks"]
    assert r["file_bytes"] < 2 << 20
    assert r["error"].startswith("CheckpointError: ") and "overlap those of w" in r["error"]
    _bounded(r)


def test_a_zip_bomb_is_refused_by_its_declared_size(results):
    r = results["zip_bomb"]
    assert r["file_bytes"] < 2 << 20
    assert r["error"].startswith("SerializationError: ")
    assert "refusing entry 'model.weights.data-00000-of-00001': it declares 134,2" in r["error"]
    _bounded(r)


def test_a_4_tib_variable_is_refused_before_allocation(results):
    r = results["huge_variable"]
    assert (
        r["error"].startswith("SavedModelError: ") and "lie past the end of the file" in r["error"]
    )
    _bounded(r)


def test_the_child_really_runs_under_the_limit():
    # The limit is what keeps a regression from taking the machine: it must bite.
    code = (
        "import resource, numpy as np\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({LIMIT}, {LIMIT}))\n"
        f"try:\n    np.ones(2 * {LIMIT}, np.uint8)\nexcept MemoryError:\n    print('refused')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused"
    assert resource.getrlimit(resource.RLIMIT_DATA)[0] != LIMIT  # this process is not limited
