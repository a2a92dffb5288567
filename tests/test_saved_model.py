"""jmod.saved_model: export with jax.export, load without the class (in fresh processes)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
import jmod.saved_model as sm
from jmod.checkpoint import Checkpoint
from jmod.saved_model import __main__ as cli
from tests.guide import MyFlexibleSequentialModule as MySequentialModule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

W1 = np.array([[0.1, 0.2, -0.3], [0.4, -0.5, 0.6], [0.7, 0.8, 0.9]], np.float32)
B1 = np.array([0.1, -0.2, 0.3], np.float32)
W2 = np.array([[1.0, -1.0], [0.5, 0.5], [-0.2, 0.3]], np.float32)
B2 = np.array([0.05, -0.05], np.float32)


def reference(x, w1=W1, b1=B1, w2=W2, b2=B2):
    """The guide's two relu layers, in NumPy."""
    h = np.maximum(np.asarray(x, np.float32) @ w1 + b1, 0)
    return np.maximum(h @ w2 + b2, 0)


# -- the guide's modules (tests/guide.py) --------------------------------------


def guide_model(*shapes):
    """The guide's model called once per shape, then given known weights."""
    jmod.random.set_seed(0)
    model = MySequentialModule(name="the_model")
    for shape in shapes:
        model(jnp.full(shape, 2.0))
    for dense, w, b in ((model.dense_1, W1, B1), (model.dense_2, W2, B2)):
        dense.w.assign(w)
        dense.b.assign(b)
    return model


class Linear(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.w = jmod.Variable([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]], name="w")
        self.b = jmod.Variable([0.1, -0.1], name="b")

    @jmod.jit
    def __call__(self, x):
        return x @ self.w + self.b


def python(code, *args):
    """Runs `code` in a fresh interpreter (which never imports this file); its last line is JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The guide's model saved after calls with (1, 3) and (1, 2, 3)."""
    path = str(tmp_path_factory.mktemp("guide") / "the_saved_model")
    model = guide_model((1, 3), (1, 2, 3))
    assert model.__call__.trace_count >= 2
    sm.save(model, path)
    return path


def fresh_copy(saved, tmp_path):
    path = str(tmp_path / "copy")
    shutil.copytree(saved, path)
    return path


# -- the guide's scenario, in a fresh process -----------------------------------
def test_guide_scenario_runs_in_a_fresh_process_without_the_class(saved):
    out = python(
        """
        import json, sys
        import numpy as np
        import jmod, jmod.saved_model
        loaded = jmod.saved_model.load(sys.argv[1])
        a = loaded([[2.0, 2.0, 2.0]])
        b = loaded([[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]])
        try:
            loaded(np.full((2, 3), 2.0, np.float32))
            refused = None
        except jmod.SignatureError as e:
            refused = str(e)
        print(json.dumps({
            "a": np.asarray(a).tolist(), "b": np.asarray(b).tolist(), "refused": refused,
            "type": type(loaded).__name__,
            "class_imported": any("test_saved_model" in m for m in sys.modules),
            "paths": [p for p, _ in loaded.named_variables()],
        }))
        """,
        saved,
    )
    np.testing.assert_allclose(out["a"], reference([[2.0, 2.0, 2.0]]), rtol=1e-6)
    np.testing.assert_allclose(out["b"], reference(np.full((1, 2, 3), 2.0)), rtol=1e-6)
    assert np.asarray(out["a"]).any()  # not the trivial all-zero relu output
    assert out["type"] == "LoadedModule" and not out["class_imported"]
    assert out["paths"] == ["dense_1/b", "dense_1/w", "dense_2/b", "dense_2/w"]
    message = out["refused"]
    assert "Array(shape=(2, 3), dtype=float32)" in message
    assert "2 option(s)" in message
    assert "TensorSpec(shape=(1, 3), dtype=float32, name='x')" in message
    assert "TensorSpec(shape=(1, 2, 3), dtype=float32, name='x')" in message


def test_loaded_model_is_not_an_instance_of_the_saved_class(saved):
    loaded = sm.load(saved)
    assert not isinstance(loaded, MySequentialModule)
    assert isinstance(loaded, jmod.Module)
    assert loaded.name == "the_model"
    assert loaded.saved_class.endswith("MyFlexibleSequentialModule")


def test_directory_layout(saved):
    assert sorted(os.listdir(saved)) == [
        "fingerprint.json",
        "functions",
        "saved_model.json",
        "variables",
    ]
    assert sorted(os.listdir(os.path.join(saved, "functions"))) == [
        "__call__.0.jax_export",
        "__call__.1.jax_export",
    ]
    assert sorted(os.listdir(os.path.join(saved, "variables"))) == [
        "variables.data-00000-of-00001",
        "variables.index",
    ]
    meta = json.load(open(os.path.join(saved, "saved_model.json")))
    assert meta["format_version"] == 1 and meta["jax_version"] == jax.__version__
    assert [v["path"] for v in meta["variables"]] == [
        "dense_1/b",
        "dense_1/w",
        "dense_2/b",
        "dense_2/w",
    ]
    # The variables are an ordinary checkpoint: restore them into the Python class.
    model = guide_model((1, 3))
    model.dense_1.w.assign(np.zeros((3, 3), np.float32))
    Checkpoint(model=model).read(os.path.join(saved, "variables", "variables"))
    np.testing.assert_array_equal(np.asarray(model.dense_1.w), W1)


def test_signature_error_is_a_value_error_and_lists_what_was_saved(saved):
    loaded = sm.load(saved)
    with pytest.raises(ValueError, match=r"Option 2:\n.*\n.*shape=\(1, 2, 3\)"):
        loaded(jnp.ones((2, 3)))
    with pytest.raises(jmod.SignatureError, match="dtype"):
        loaded.__call__(jnp.ones((1, 3), jnp.int32))
    with pytest.raises(jmod.SignatureError, match=r"Keyword arguments: \{'y'"):
        loaded(y=jnp.ones((1, 3)))


# -- shape polymorphism and platforms ---------------------------------------------
def test_none_dimension_serves_every_batch_size(tmp_path):
    model = guide_model((1, 3))
    path = str(tmp_path / "poly")
    sm.save(model, path, signatures={"__call__": (model.__call__, [sm.TensorSpec([None, 3])])})
    loaded = sm.load(path)
    for batch in (1, 5, 17):
        x = np.random.default_rng(batch).normal(size=(batch, 3)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(loaded(x)), reference(x), rtol=1e-5, atol=1e-6)
    assert os.listdir(os.path.join(path, "functions")) == ["__call__.0.jax_export"]
    with pytest.raises(jmod.SignatureError):
        loaded(jnp.ones((4, 4)))


def test_named_dimension_is_shared_between_arguments(tmp_path):
    class Add(jmod.Module):
        def __init__(self):
            super().__init__()
            self.k = jmod.Variable(2.0)

        @jmod.jit
        def __call__(self, x, y):
            return self.k * x + y

    model = Add()
    spec = sm.TensorSpec(["batch", 3])
    sm.save(model, tmp_path / "add", signatures={"__call__": (model.__call__, [spec, spec])})
    loaded = sm.load(tmp_path / "add")
    x, y = np.ones((4, 3), np.float32), np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(np.asarray(loaded(x, y=y)), 2 * x + y)
    with pytest.raises(jmod.SignatureError, match="batch"):
        loaded(np.ones((4, 3), np.float32), np.ones((5, 3), np.float32))


def test_export_for_cpu_and_cuda_on_a_cpu_machine_runs_the_cpu_part(tmp_path):
    model = guide_model((1, 3))
    path = str(tmp_path / "multi")
    sm.save(
        model,
        path,
        signatures={"__call__": (model.__call__, [sm.TensorSpec([None, 3])])},
        platforms=["cpu", "cuda"],
    )
    loaded = sm.load(path)
    assert loaded.platforms == ["cpu", "cuda"]
    assert loaded.__call__.signatures[0].exported.platforms == ("cpu", "cuda")
    x = np.full((2, 3), 2.0, np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), reference(x), rtol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="needs a CPU-only process")
def test_model_exported_only_for_another_platform_is_refused(tmp_path):
    model = guide_model((1, 3))
    sm.save(model, tmp_path / "gpu_only", platforms=["cuda"])
    with pytest.raises(sm.PlatformError, match="exported for cuda only; this process runs on cpu"):
        sm.load(tmp_path / "gpu_only")


# -- gradients, fine-tuning, re-saving -------------------------------------------
def test_gradients_through_a_function_saved_with_vjp_order_1(tmp_path):
    model = Linear()
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
    t = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    model(x)
    sm.save(model, tmp_path / "lin", vjp_order=1)
    loaded = sm.load(tmp_path / "lin")

    loss, grads = jmod.value_and_grad(lambda m, x, t: jnp.mean((m(x) - t) ** 2))(loaded, x, t)
    w, b = np.asarray(model.w), np.asarray(model.b)
    err = x @ w + b - t
    np.testing.assert_allclose(float(loss), np.mean(err**2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grads["w"]), 2 * x.T @ err / err.size, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads["b"]), 2 * err.sum(0) / err.size, rtol=1e-5)
    # jax.grad straight through the loaded call, with respect to the input.
    dx = jax.grad(lambda x: jnp.sum(loaded(x)))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(dx), np.tile(w.sum(1), (2, 1)), rtol=1e-6)


def test_loaded_variables_fine_tune_and_save_again(tmp_path):
    model = Linear()
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
    t = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    model(x)
    sm.save(model, tmp_path / "lin", vjp_order=1)
    loaded = sm.load(tmp_path / "lin")
    assert all(isinstance(v, jmod.Variable) for v in loaded.trainable_variables)
    assert [p for p, _ in loaded.named_variables()] == ["b", "w"]

    opt = jmod.Optimizer(loaded, optax.sgd(0.1))
    loss_fn = jmod.value_and_grad(lambda m, x, t: jnp.mean((m(x) - t) ** 2))
    w, b = np.asarray(model.w, np.float64), np.asarray(model.b, np.float64)
    for _ in range(3):
        _, grads = loss_fn(loaded, x, t)
        opt.update(grads)
        err = x @ w + b - t  # the same SGD steps in NumPy
        w, b = w - 0.1 * 2 * x.T @ err / err.size, b - 0.1 * 2 * err.sum(0) / err.size
    np.testing.assert_allclose(np.asarray(loaded.w), w, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loaded.b), b, rtol=1e-5)

    again = str(tmp_path / "tuned")
    sm.save(loaded, again)
    out = python(
        """
        import json, sys
        import numpy as np
        import jmod.saved_model
        loaded = jmod.saved_model.load(sys.argv[1])
        x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
        print(json.dumps(np.asarray(loaded(x)).tolist()))
        """,
        again,
    )
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-5)


def test_loaded_model_trains_inside_a_jmod_jit_step(tmp_path):
    model = Linear()
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
    t = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    model(x)
    sm.save(model, tmp_path / "lin", vjp_order=1)
    eager, compiled = sm.load(tmp_path / "lin"), sm.load(tmp_path / "lin")
    loss_fn = jmod.value_and_grad(lambda m, x, t: jnp.mean((m(x) - t) ** 2))
    eager_opt = jmod.Optimizer(eager, optax.sgd(0.1))
    opt = jmod.Optimizer(compiled, optax.sgd(0.1))

    @jmod.jit
    def step(m, x, t):
        loss, grads = loss_fn(m, x, t)
        opt.update(grads)
        return loss

    for _ in range(3):
        loss, grads = loss_fn(eager, x, t)
        eager_opt.update(grads)
        np.testing.assert_allclose(float(step(compiled, x, t)), float(loss), rtol=1e-6)
    assert step.trace_count == 1
    np.testing.assert_allclose(np.asarray(compiled.w), np.asarray(eager.w), rtol=1e-6)


def test_variables_assigned_by_a_saved_function_are_written_back(tmp_path):
    class Counter(jmod.Module):
        def __init__(self):
            super().__init__()
            self.calls = jmod.Variable(0, trainable=False)
            self.total = jmod.Variable(0.0, trainable=False)
            self.unused = jmod.Variable([1.0, 2.0])

        @jmod.jit
        def __call__(self, x):
            self.calls.assign_add(1)
            self.total.assign_add(jnp.sum(x))
            return 2 * x

    model = Counter()
    model(jnp.ones(3))
    sm.save(model, tmp_path / "counter")
    loaded = sm.load(tmp_path / "counter")
    assert int(loaded.calls) == 1 and float(loaded.total) == 3.0
    for _ in range(2):
        np.testing.assert_array_equal(np.asarray(loaded(jnp.arange(3.0))), [0.0, 2.0, 4.0])
    assert int(loaded.calls) == 3 and float(loaded.total) == 9.0
    signature = loaded.__call__.signatures[0]
    assert signature.assigns == ["calls", "total"]
    assert "unused" not in signature.state  # not an input, yet still a loaded variable
    np.testing.assert_array_equal(np.asarray(loaded.unused), [1.0, 2.0])


def test_python_arguments_select_their_saved_signature(tmp_path):
    class Scale(jmod.Module):
        def __init__(self):
            super().__init__()
            self.k = jmod.Variable(3.0)

        @jmod.jit
        def __call__(self, x, double=False):
            return 2 * self.k * x if double else self.k * x

    model = Scale()
    x = jnp.arange(3.0)
    model(x)
    model(x, double=True)
    sm.save(model, tmp_path / "scale")
    loaded = sm.load(tmp_path / "scale")
    np.testing.assert_array_equal(np.asarray(loaded(x)), [0.0, 3.0, 6.0])
    np.testing.assert_array_equal(np.asarray(loaded(x, double=True)), [0.0, 6.0, 12.0])
    np.testing.assert_array_equal(np.asarray(loaded(x, True)), [0.0, 6.0, 12.0])
    with pytest.raises(jmod.SignatureError, match="double"):
        loaded(x, double="yes")


def test_plain_modules_and_methods_are_compiled_for_explicit_signatures(tmp_path):
    class Norm(jmod.Module):  # Keras-style: not decorated with jmod.jit
        def __init__(self):
            super().__init__()
            self.mean = jmod.Variable(jnp.zeros(3), trainable=False)
            self.scale = jmod.Variable([1.0, 2.0, 4.0])

        def __call__(self, x, training=False):
            if training:
                self.mean.assign(0.5 * self.mean + 0.5 * jnp.mean(x, axis=0))
            return (x - self.mean) * self.scale

        def total(self, x):
            return jnp.sum(self.scale * x)

    model = Norm()
    spec = [sm.TensorSpec([None, 3])]
    sm.save(
        model,
        tmp_path / "norm",
        signatures={
            "serve": (model, spec, {"training": False}),
            "train": (model, spec, {"training": True}),
            "total": (model.total, [sm.TensorSpec([3])]),
        },
    )
    assert not any(k.startswith("_jmod_jit") for k in vars(model))  # nothing attached
    loaded = sm.load(tmp_path / "norm")
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], np.float32)
    np.testing.assert_allclose(np.asarray(loaded.serve(x, training=False)), x * [1, 2, 4])
    loaded.train(x, training=True)
    np.testing.assert_allclose(np.asarray(loaded.mean), [1.0, 1.5, 2.0])
    np.testing.assert_allclose(
        np.asarray(loaded.serve(x, training=False)), (x - [1.0, 1.5, 2.0]) * [1, 2, 4]
    )
    assert float(loaded.total(np.ones(3, np.float32))) == 7.0
    np.testing.assert_array_equal(np.asarray(model.mean), [0.0, 0.0, 0.0])  # save mutated nothing


def test_lists_of_modules_and_global_variables_keep_their_paths(tmp_path):
    offset = jmod.Variable(10.0, name="offset")

    class Stack(jmod.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Linear(), Linear()]
            self.layers[1].w = jmod.Variable(np.eye(2, 2, dtype=np.float32))

        @jmod.jit
        def predict(self, x):
            return self.layers[1](self.layers[0](x)) + offset

    model = Stack()
    x = np.ones((1, 3), np.float32)
    expected = np.asarray(model.predict(x))
    sm.save(model, tmp_path / "stack")
    loaded = sm.load(tmp_path / "stack")
    np.testing.assert_allclose(np.asarray(loaded.predict(x)), expected, rtol=1e-6)
    paths = [p for p, _ in loaded.named_variables()]
    captured = [p for p in paths if p.endswith("/offset")]
    assert len(captured) == 1 and float(dict(loaded.named_variables())[captured[0]]) == 10.0
    assert sorted(set(paths) - set(captured)) == sorted(p for p, _ in model.named_variables())
    assert loaded.layers[1].w.shape == (2, 2)
    with pytest.raises(sm.SavedModelError, match="no saved __call__; its functions: predict"):
        loaded(x)


# -- refusing damaged, newer and missing saved models ---------------------------
def test_modified_artifact_fails_the_fingerprint(saved, tmp_path):
    path = fresh_copy(saved, tmp_path)
    artifact = os.path.join(path, "functions", "__call__.1.jax_export")
    data = bytearray(open(artifact, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(artifact, "wb").write(bytes(data))
    with pytest.raises(sm.SavedModelError, match=r"__call__\.1\.jax_export: contents differ"):
        sm.load(path)


def test_modified_metadata_or_variables_are_refused(saved, tmp_path):
    path = fresh_copy(saved, tmp_path)
    meta_file = os.path.join(path, "saved_model.json")
    meta = json.load(open(meta_file))
    meta["functions"]["__call__"]["signatures"][0]["arguments"]["x"]["tensor"]["shape"] = [2, 3]
    open(meta_file, "w").write(json.dumps(meta))
    with pytest.raises(sm.SavedModelError, match="saved_model.json: contents differ"):
        sm.load(path)

    path = fresh_copy(saved, tmp_path / "v")
    data_file = os.path.join(path, "variables", "variables.data-00000-of-00001")
    data = bytearray(open(data_file, "rb").read())
    data[-3] ^= 0xFF
    open(data_file, "wb").write(bytes(data))
    with pytest.raises(jmod.JmodError, match="(?i)checksum"):
        sm.load(path)


def test_newer_format_version_is_refused(saved, tmp_path):
    path = fresh_copy(saved, tmp_path)
    meta_file = os.path.join(path, "saved_model.json")
    meta = json.load(open(meta_file))
    meta["format_version"] = 2
    open(meta_file, "w").write(json.dumps(meta))
    with pytest.raises(sm.SavedModelError, match="format version 2.*up to 1: upgrade jmod"):
        sm.load(path)


def test_missing_files_are_not_found_errors(saved, tmp_path):
    with pytest.raises(sm.SavedModelNotFoundError, match="no saved model directory"):
        sm.load(tmp_path / "nowhere")
    path = fresh_copy(saved, tmp_path)
    os.remove(os.path.join(path, "functions", "__call__.0.jax_export"))
    with pytest.raises(FileNotFoundError, match=r"__call__\.0\.jax_export: missing"):
        sm.load(path)
    os.remove(os.path.join(path, "fingerprint.json"))
    with pytest.raises(jmod.JmodError, match="fingerprint.json: missing"):
        sm.load(path)


# -- what save refuses ------------------------------------------------------------
def test_save_refuses_what_it_cannot_export(tmp_path):
    unbuilt = MySequentialModule()
    with pytest.raises(sm.SavedModelError, match="no traced jmod.jit function"):
        sm.save(unbuilt, tmp_path / "a")
    jmod.random.set_seed(0)
    spec = [sm.TensorSpec([1, 3])]
    with pytest.raises(sm.SavedModelError, match="creates variables"):
        sm.save(unbuilt, tmp_path / "b", signatures={"__call__": (unbuilt.__call__, spec)})
    model = guide_model((1, 3))
    with pytest.raises(sm.SavedModelError, match="one of its methods"):
        sm.save(model, tmp_path / "c", signatures={"f": (model.dense_1, spec)})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(sm.SavedModelError, match="not a jmod saved model; not overwriting"):
        sm.save(model, tmp_path / "d")
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporaries left


def test_saving_over_a_saved_model_replaces_it(tmp_path):
    path = tmp_path / "m"
    sm.save(guide_model((1, 3)), path)
    model = guide_model((1, 2, 3))
    sm.save(model, path)
    assert [s.arguments["x"].shape for s in sm.load(path).__call__.signatures] == [(1, 2, 3)]


# -- command line -----------------------------------------------------------------
def test_cli_show_prints_functions_specs_platforms_and_variables(saved, capsys):
    assert cli.main(["show", saved]) == 0
    out = capsys.readouterr().out
    assert "function '__call__' (parameters: x), 2 signature(s):" in out
    assert "x: TensorSpec(shape=(1, 2, 3), dtype=float32, name='x')" in out
    assert "output: float32[1, 2, 2]" in out
    assert "platforms: cpu" in out and "fingerprint: ok" in out
    assert "variables: 4 (20 parameters, 80 bytes)" in out
    assert "dense_1/w  float32[3, 3]" in out


def test_cli_run_calls_a_function_on_npy_inputs(saved, tmp_path):
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "jmod.saved_model", "run", saved]
    proc = subprocess.run(
        [*command, "--input", f"x={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "output: float32[1, 2]" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "out" / "output.npy"), reference(x), rtol=1e-6)


# -- malformed metadata, paths, artifacts (fingerprint recomputed: only validation stands) --
def rewrite(path, change=None, artifact=None):
    """Changes saved_model.json (or an artifact's bytes) and re-fingerprints, as an attacker can."""
    from jmod.saved_model import _format

    meta_file = os.path.join(path, "saved_model.json")
    if change is not None:
        meta = json.load(open(meta_file))
        change(meta)
        open(meta_file, "w").write(json.dumps(meta))
    if artifact is not None:
        name, damage = artifact
        target = os.path.join(path, "functions", name)
        open(target, "wb").write(damage(open(target, "rb").read()))
    record = _format.fingerprint(path)
    open(os.path.join(path, "fingerprint.json"), "wb").write(_format.encode_fingerprint(record))
    return path


def _sig(meta, k=0):
    return meta["functions"]["__call__"]["signatures"][k]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("functions"), "field functions: expected an object of functions by name, "
         "got nothing"),
        (lambda m: m.update(variables={}), r"field variables: expected a list of variable records, "
         r"got \{\}"),
        (lambda m: m.update(module=3), "field module: expected an object"),
        (lambda m: m.update(platforms=[]), "field platforms: expected at least one platform"),
        (lambda m: m["variables"][0].update(trainable="yes"),
         r'field variables\[0\].trainable: expected true or false, got "yes"'),
        (lambda m: m["variables"][0].update(dtype="object"),
         r"field variables\[0\].dtype: expected a dtype name"),
        (lambda m: m["variables"][1].update(path=m["variables"][0]["path"]),
         r"field variables\[1\].path: expected a path listed once"),
        (lambda m: m["variables"][0].update(path="__class__/w"), "none starting with '__'"),
        (lambda m: _sig(m).update(state=["no/such/variable"]),
         r"signatures\[0\].state: expected paths of listed variables, got \"no/such/variable\""),
        (lambda m: _sig(m).pop("outputs"), r"signatures\[0\].outputs: expected an output tree"),
        (lambda m: _sig(m)["arguments"].update(x={"tensor": {"shape": [-1], "dtype": "float32"}}),
         r"arguments\['x'\].tensor.shape: expected dimensions"),
        (lambda m: _sig(m)["arguments"].update(x={"code": "os.system('x')"}),
         r"arguments\['x'\]: expected a tree kind"),
        (lambda m: _sig(m).update(file="functions/../../outside.jax_export"),
         r"signatures\[0\].file: expected a relative path inside the saved model directory"),
        (lambda m: _sig(m).update(file="/tmp/outside.jax_export"),
         r"signatures\[0\].file: expected a path 'functions/NAME.K.jax_export'"),
        (lambda m: _sig(m, 1).update(file=_sig(m)["file"]), "expected a file used once"),
        (lambda m: m["variables"][0].update(shape=[1 << 40, 1 << 40]),
         r"variable dense_1/b: saved_model.json says float32\[1099511627776, 1099511627776\], "
         r"the checkpoint holds float32\[3\]"),
    ],
    ids=[
        "no-functions", "variables-dict", "module-int", "no-platforms", "trainable-str",
        "object-dtype", "duplicate-path", "dunder-path", "unknown-state", "no-outputs",
        "negative-dim", "unknown-tree", "dotdot-file", "absolute-file", "shared-file", "huge-shape",
    ],
)  # fmt: skip
def test_malformed_metadata_is_a_saved_model_error_naming_the_field(
    saved, tmp_path, change, message
):
    path = rewrite(fresh_copy(saved, tmp_path), change)
    with pytest.raises(sm.SavedModelError, match=message) as info:
        sm.load(path)
    assert path in str(info.value)
    if "checkpoint holds" not in message:  # show does not read the checkpoint
        assert cli.main(["show", path]) == 2  # the command line refuses it the same way


def test_a_function_file_linked_outside_the_directory_is_refused(saved, tmp_path):
    path = fresh_copy(saved, tmp_path)
    outside = tmp_path / "outside.jax_export"
    target = os.path.join(path, "functions", "__call__.0.jax_export")
    shutil.copy(target, outside)
    os.remove(target)
    os.symlink(outside, target)
    rewrite(path)
    with pytest.raises(sm.SavedModelError, match=r"__call__\.0\.jax_export' leads outside"):
        sm.load(path)


def test_a_damaged_artifact_fails_at_load_naming_its_file(saved, tmp_path):
    # The serialized StableHLO inside the artifact, damaged, with a fingerprint to match.
    exported = sm.load(saved).__call__.signatures[0].exported
    mlir = exported.mlir_module_serialized

    def damage(data):
        at = data.find(mlir) + 40
        return data[:at] + bytes(len(mlir) - 80) + data[at + len(mlir) - 80 :]

    path = rewrite(fresh_copy(saved, tmp_path), artifact=("__call__.0.jax_export", damage))
    with pytest.raises(sm.SavedModelError) as info:
        sm.load(path)  # not at the first call
    assert str(info.value).startswith(
        f"{path}: functions/__call__.0.jax_export: not a readable jax.export artifact"
    )


def test_cli_failures_are_one_line_and_exit_status_2(saved, tmp_path, capsys):
    regular = tmp_path / "model.txt"
    regular.write_text("not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = rewrite(fresh_copy(saved, tmp_path), lambda m: m.update(vjp_order="x"))
    for argv, message in [
        (["show", str(regular)], f"{regular}: not a saved model directory (a file)"),
        (["run", str(regular)], f"{regular}: not a saved model directory (a file)"),
        (["show", str(empty)], "saved_model.json: missing"),
        (["show", broken], "field vjp_order: expected an integer >= 0"),
        (["run", saved, "--input", "x"], "--input expects NAME=FILE.npy"),
        (["run", saved, "--input", f"x={tmp_path / 'none.npy'}"], "No such file"),
        (["run", saved, "--function", "nope"], "no function 'nope'"),
    ]:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    with pytest.raises(SystemExit) as info:
        cli.main(["show"])  # a usage error: one line too
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the following arguments are required: dir" in err


def test_cli_in_a_fresh_process_prints_no_traceback(tmp_path):
    regular = tmp_path / "model.txt"
    regular.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "jmod.saved_model", "show", str(regular)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr == f"error: SavedModelError: {regular}: not a saved model directory (a file)\n"
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(tree, prefix=()):
    """Every (path to a value) in a JSON tree."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


@pytest.fixture(scope="module")
def small_saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fuzz") / "m")
    sm.save(guide_model((1, 3)), path)
    return path, json.load(open(os.path.join(path, "saved_model.json")))


@hypothesis.settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(st.data())
def test_fuzzed_metadata_raises_saved_model_error_or_loads_a_working_model(
    small_saved, tmp_path_factory, data
):
    source, meta = small_saved
    paths = [p for p in _paths(meta) if p]
    where = data.draw(st.sampled_from(paths))
    how = data.draw(st.sampled_from(["replace", "delete"]))
    value = data.draw(_JSON) if how == "replace" else None

    def change(m):
        node = m
        for key in where[:-1]:
            node = node[key]
        if how == "delete":
            del node[where[-1]]
        else:
            node[where[-1]] = value

    path = rewrite(fresh_copy(source, tmp_path_factory.mktemp("f")), change)
    try:
        loaded = sm.load(path)
    except sm.SavedModelError:
        assert cli.main(["show", path]) in (0, 2)  # show reads less; it never crashes
        return
    x = np.ones((1, 3), np.float32)  # what loads runs the saved computation, or refuses the call
    try:
        out = loaded(x)
    except jmod.SignatureError:
        return
    np.testing.assert_allclose(np.asarray(out), reference(x), rtol=1e-6)
