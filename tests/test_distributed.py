"""jmod.distributed: meshes, sharded variables, data and model parallel training, processes.

Meshes of several devices need `XLA_FLAGS=--xla_force_host_platform_device_count=N`
before JAX starts, so those sessions run in fresh processes (`session`);
each prints one JSON line the test checks against NumPy or a one-device run.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmod
import jmod.distributed as jd
from jmod.distributed import _slices, _specs, batch, exchange, layout, mesh, runtime
from tests.layer_checks import run_docstring_examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELUDE = """
import json
import jax, jax.numpy as jnp, numpy as np, optax
import jmod, jmod.distributed as jd

def specs(module):
    return {p: str(tuple(v.sharding.spec)) for p, v in module.named_variables()}

def shard_shapes(x):
    return sorted({tuple(s.data.shape) for s in getattr(x, "value", x).addressable_shards})
"""


def env_for(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(var, None)
    return env


def start(code, devices, extra_env=None):
    env = env_for(devices)
    env.update(extra_env or {})
    source = PRELUDE + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", source],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout):
    """Waits for `proc` at most `timeout` s (then kills it by PID); returns its last JSON line."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"process {proc.pid} ran past {timeout} s\n{err[-3000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"process {proc.pid} exited {proc.returncode}\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def session(code, devices=4, timeout=90):
    """Runs `code` in a fresh process seeing `devices` CPU devices; returns its JSON line."""
    return finish(start(code, devices), timeout)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- pure parts: specs, layout maps, meshes (this process has one device) ----------------


def test_partition_specs_normalize_from_tuples_names_and_none():
    P = jax.sharding.PartitionSpec
    assert _specs.as_partition_spec(None) == P()
    assert _specs.as_partition_spec("data") == P("data")
    assert _specs.as_partition_spec([None, ["data", "model"]]) == P(None, ("data", "model"))
    with pytest.raises(jd.ShardingError, match=r"variable 'w'.*got 3"):
        _specs.as_partition_spec((None, 3), "variable 'w'")
    with pytest.raises(jd.ShardingError, match="got dict"):
        _specs.as_partition_spec({"data": 1})


@pytest.mark.parametrize(
    "spec, shape, message",
    [
        (
            ("model", None, None),
            (4, 8),
            r"3 entries, the value has 2 dimensions \(shape \(4, 8\)\)",
        ),
        (
            (None, "modle"),
            (4, 8),
            r"names mesh axis 'modle', the mesh has axes \('data', 'model'\)",
        ),
        (("model", "model"), (4, 8), "uses mesh axis 'model' twice"),
        (
            (None, "data"),
            (4, 6),
            "dimension 1 of shape \\(4, 6\\) has size 6, not divisible by the 4",
        ),
        (
            (("data", "model"),),
            (4, 8),
            r"size 4, not divisible by the 8 devices along \('data', 'model'\)",
        ),
    ],
)
def test_check_spec_names_the_variable_and_the_misfit(spec, shape, message):
    with pytest.raises(jd.ShardingError, match=message) as info:
        _specs.check_spec(
            _specs.as_partition_spec(spec), shape, {"data": 4, "model": 2}, "variable 'k'"
        )
    assert str(info.value).startswith("variable 'k': ")
    assert isinstance(info.value, jmod.VariableError)


def test_check_spec_accepts_even_splits():
    _specs.check_spec(
        _specs.as_partition_spec((("data", "model"), None)), (8, 3), {"data": 4, "model": 2}
    )


class FakeDevice:
    def __init__(self, process_index):
        self.process_index = process_index


class FakeSharding:
    """Four devices on two processes, rows split in two, each half held by both processes."""

    def devices_indices_map(self, shape):
        top, bottom = (slice(0, shape[0] // 2),), (slice(shape[0] // 2, shape[0]),)
        return {
            FakeDevice(0): top,
            FakeDevice(1): top,
            FakeDevice(0): bottom,
            FakeDevice(1): bottom,
        }


def test_blocks_list_each_distinct_box_once_with_every_holder():
    found = _slices.blocks(FakeSharding(), (6, 3))
    assert [(b.start, b.shape, b.holders) for b in found] == [
        ((0, 0), (3, 3), (0, 1)),
        ((3, 0), (3, 3), (0, 1)),
    ]


def test_writers_are_holders_and_balance_bytes():
    blocks = [
        _slices.Block((0,), (100,), (0, 1)),
        _slices.Block((0,), (60,), (0, 1)),
        _slices.Block((0,), (50,), (0, 1)),
        _slices.Block((0,), (10,), (1,)),
    ]
    assert _slices.assign_writers(blocks, 2) == [0, 1, 1, 1]  # loads 100 / 120
    assert _slices.assign_writers(blocks[:1], 2) == [0]


def test_boxes_intersect_and_slice_relative_to_a_block():
    assert _slices.box_of((slice(2, 4), slice(None)), (8, 3)) == ((2, 0), (2, 3))
    assert _slices.intersect(((0, 0), (4, 3)), ((2, 1), (4, 4))) == ((2, 1), (2, 2))
    assert _slices.intersect(((0,), (4,)), ((4,), (4,))) is None
    assert _slices.intersect(((), ()), ((), ())) == ((), ())
    block = np.arange(12).reshape(4, 3) + 100  # holds rows 2..5 of a global (8, 3)
    global_ = np.arange(24).reshape(8, 3) + 94
    part = _slices.relative(((3, 1), (2, 2)), ((2, 0), (4, 3)))
    np.testing.assert_array_equal(block[part], global_[3:5, 1:3])


def test_layout_map_looks_up_exact_path_then_the_one_matching_regex():
    lm = jd.LayoutMap({r"dense.*/kernel$": (None, "model"), r"embedding": ("model", None)})
    lm["dense_1/kernel"] = ("model", None)
    assert lm["dense_1/kernel"] == ("model", None)  # exact key wins over the regex
    assert lm["dense_2/kernel"] == (None, "model")
    assert lm["layers/0/embedding/embeddings"] == ("model", None)
    assert lm["dense_2/bias"] is None
    assert len(lm) == 3 and list(lm) == [r"dense.*/kernel$", "embedding", "dense_1/kernel"]


def test_layout_map_refuses_ambiguous_matches_and_bad_keys():
    lm = jd.LayoutMap([("kernel", (None, "model")), ("dense", ("model",))])
    with pytest.raises(jd.ShardingError, match=r"'dense/kernel' matches several LayoutMap keys"):
        lm["dense/kernel"]
    with pytest.raises(jd.ShardingError, match="not a regular expression"):
        lm["dense(("] = None
    with pytest.raises(jd.ShardingError, match="regexes"):
        lm[3] = None


def test_make_mesh_fills_the_minus_one_axis_and_explains_missing_devices():
    m = jd.make_mesh({"data": -1, "model": 1})
    assert dict(m.shape) == {"data": jax.device_count(), "model": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
    with pytest.raises(jd.ShardingError, match="needs 64 devices, there are 1.*device_count=N"):
        jd.make_mesh({"data": 8, "model": 8})
    with pytest.raises(jd.ShardingError, match="only one axis"):
        jd.make_mesh({"data": -1, "model": -1})
    with pytest.raises(jd.ShardingError, match="non-empty dict"):
        jd.make_mesh({})


def test_mesh_context_nests_and_restores_the_previous_mesh():
    assert jd.current_mesh() is None
    with jd.mesh({"data": 1}) as outer:
        with jd.mesh({"model": 1}) as inner:
            assert jd.current_mesh() is inner
        assert jd.current_mesh() is outer
    assert jd.current_mesh() is None
    v = jmod.Variable(jnp.ones(3))  # outside: no placement
    assert not isinstance(v.sharding, jax.sharding.NamedSharding)


def test_a_sharding_without_a_mesh_is_a_variable_error():
    with pytest.raises(jmod.VariableError, match=r"variable 'w'.*needs an active mesh"):
        jmod.Variable(jnp.ones((2, 2)), sharding=(None, "model"), name="w")


def test_distribute_batch_without_a_mesh_returns_the_batch_unchanged():
    x = {"a": np.ones((3, 2)), "b": jnp.zeros(5)}
    out = jd.distribute_batch(x)
    assert out["a"] is x["a"] and out["b"] is x["b"]


def test_distribute_batch_needs_the_data_axis():
    with jd.mesh({"model": 1}), pytest.raises(jd.ShardingError, match="no 'data' axis"):
        jd.distribute_batch(jnp.ones((2, 2)))


def test_initialize_checks_the_process_id_before_touching_jax():
    with pytest.raises(
        jd.DistributedError, match=r"process_id must be in 0\.\.1 for 2 processes, got 5"
    ):
        jd.initialize("127.0.0.1:1", num_processes=2, process_id=5)


def test_initialize_reads_bad_environment_values_as_a_clear_error(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(jd.DistributedError, match="JAX_NUM_PROCESSES='two' is not a valid int"):
        jd.initialize("127.0.0.1:1", process_id=0)


def test_process_index_and_count_in_a_single_process():
    assert (jd.process_index(), jd.process_count()) == (0, 1)


@pytest.mark.parametrize(
    "module", [jd, _slices, _specs, batch, exchange, layout, mesh, runtime, jd._errors]
)
def test_docstring_examples(module):
    run_docstring_examples(module)


def test_shard_module_on_one_device_changes_layouts_not_values():
    jmod.random.set_seed(0)
    model = jmod.layers.Dense(4)
    x = jnp.arange(6.0).reshape(2, 3)
    before = np.asarray(model(x))
    with jd.mesh({"model": 1}):
        applied = jd.shard_module(model, jd.LayoutMap({"kernel": (None, "model")}))
    assert applied == {"bias": None, "kernel": (None, "model")}
    assert model.kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    with pytest.raises(jd.ShardingError, match="needs a mesh"):
        jd.shard_module(model, {})


# -- several devices (fresh processes) ---------------------------------------------------


def test_variables_in_a_mesh_are_split_by_their_spec_and_replicated_without_one():
    out = session(
        """
        with jd.mesh({"data": 2, "model": 2}) as m:
            k = jmod.Variable(jnp.arange(32.0).reshape(4, 8), sharding=(None, "model"), name="k")
            r = jmod.Variable(jnp.ones(3), name="r")
            s = jmod.Variable(jnp.ones((4, 4)), sharding=jax.sharding.NamedSharding(
                m, jax.sharding.PartitionSpec("data", "model")))
            try:
                jmod.Variable(jnp.ones((4, 5)), sharding=(None, "data"), name="odd")
                error = None
            except jd.ShardingError as e:
                error = str(e)
        print(json.dumps({
            "k": [str(tuple(k.sharding.spec)), shard_shapes(k), len(k.value.addressable_shards)],
            "r": [r.value.is_fully_replicated, len(r.sharding.device_set)],
            "s": shard_shapes(s),
            "k_value": np.asarray(k).tolist(),
            "error": error,
        }))
        """
    )
    assert out["k"] == ["(None, 'model')", [[4, 4]], 4]
    assert out["r"] == [True, 4]
    assert out["s"] == [[2, 2]]
    np.testing.assert_array_equal(out["k_value"], np.arange(32.0).reshape(4, 8))
    assert out["error"] == (
        "variable 'odd': dimension 1 of shape (4, 5) has size 5, not divisible by the 2 "
        "devices along 'data'"
    )


def test_sharded_variables_keep_their_layout_through_jit_and_optimizer_updates():
    out = session(
        """
        with jd.mesh({"data": 2, "model": 2}):
            model = jmod.Module()
            model.w = jmod.Variable(jnp.ones((4, 8)), sharding=(None, "model"))
            model.b = jmod.Variable(jnp.zeros(8))  # replicated: jit alone would split it
            opt = jmod.Optimizer(model, optax.adam(0.1))
            before = {**specs(model), **specs(opt)}

            @jmod.jit
            def step(model, opt, x, y):
                def loss_fn(m):
                    return jnp.mean((jnp.tanh(x @ m.w + m.b) - y) ** 2)
                loss, grads = jmod.value_and_grad(loss_fn)(model)
                opt.update(grads)
                return loss

            x = jd.distribute_batch(jnp.linspace(-1, 1, 32).reshape(8, 4))
            y = jd.distribute_batch(jnp.full((8, 8), 0.5))
            losses = [float(step(model, opt, x, y)) for _ in range(3)]
            after = {**specs(model), **specs(opt)}
        print(json.dumps({"before": before, "after": after, "losses": losses,
                          "traces": step.trace_count, "w": np.asarray(model.w).tolist()}))
        """
    )
    assert out["after"] == out["before"]
    assert out["after"]["w"] == "(None, 'model')" and out["after"]["b"] == "()"
    assert out["after"]["slots/0/mu/w"] == "(None, 'model')"
    assert out["traces"] == 1
    # The same three steps on one device, in this process.
    model = jmod.Module()
    model.w = jmod.Variable(jnp.ones((4, 8)))
    model.b = jmod.Variable(jnp.zeros(8))
    opt = jmod.Optimizer(model, optax.adam(0.1))
    x, y = jnp.linspace(-1, 1, 32).reshape(8, 4), jnp.full((8, 8), 0.5)
    losses = []
    for _ in range(3):
        loss, grads = jmod.value_and_grad(lambda m: jnp.mean((jnp.tanh(x @ m.w + m.b) - y) ** 2))(
            model
        )
        opt.update(grads)
        losses.append(float(loss))
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-5)
    np.testing.assert_allclose(out["w"], np.asarray(model.w), rtol=1e-5, atol=1e-6)


DATA_PARALLEL = """
def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 1)) + 0.1).astype(np.float32)
    return x, y

class MLP(jmod.Module):
    def __init__(self):
        super().__init__()
        self.hidden = jmod.layers.Dense(16, activation="tanh")
        self.out = jmod.layers.Dense(1)

    def __call__(self, x):
        return self.out(self.hidden(x))

def train(steps=4):
    jmod.random.set_seed(0)
    model = MLP()
    x, y = make_data()
    model(jnp.asarray(x[:2]))
    opt = jmod.Optimizer(model, optax.adam(1e-2))

    @jmod.jit
    def step(model, opt, xb, yb):
        loss, grads = jmod.value_and_grad(lambda m: jnp.mean((m(xb) - yb) ** 2))(model)
        opt.update(grads)
        return loss

    losses = []
    for i in range(steps):
        rows = slice(16 * (i % 4), 16 * (i % 4) + 16)
        xb, yb = jd.distribute_batch((x[rows], y[rows]))
        losses.append(float(step(model, opt, xb, yb)))
    return model, losses, (xb, yb), opt
"""


def test_data_parallel_training_on_8_devices_equals_the_one_device_run():
    out = session(
        DATA_PARALLEL
        + textwrap.dedent(
            """
        single, single_losses, _, _ = train()
        with jd.mesh({"data": 8}):
            model, losses, (xb, yb), _ = train()
        print(json.dumps({
            "losses": losses, "single_losses": single_losses,
            "state": {p: np.asarray(v).tolist() for p, v in model.state().items()},
            "single": {p: np.asarray(v).tolist() for p, v in single.state().items()},
            "batch_rows": shard_shapes(xb),
            "replicated": all(v.value.is_fully_replicated for v in model.variables),
            "devices": sorted({len(v.sharding.device_set) for v in model.variables}),
        }))
        """
        ),
        devices=8,
    )
    assert out["batch_rows"] == [[2, 5]]  # 16 rows over 8 devices
    assert out["replicated"] and out["devices"] == [8]
    np.testing.assert_allclose(out["losses"], out["single_losses"], rtol=1e-5)
    assert out["state"].keys() == out["single"].keys()
    for path in out["state"]:
        np.testing.assert_allclose(out["state"][path], out["single"][path], rtol=1e-5, atol=1e-6)


def test_one_data_parallel_sgd_step_matches_the_numpy_gradient():
    out = session(
        """
        with jd.mesh({"data": 4}):
            model = jmod.Module()
            model.w = jmod.Variable(jnp.array([[0.5], [-1.0], [2.0]]))
            opt = jmod.Optimizer(model, optax.sgd(0.1))

            @jmod.jit
            def step(model, opt, x, y):
                loss, g = jmod.value_and_grad(lambda m: jnp.mean((x @ m.w - y) ** 2))(model)
                opt.update(g)
                return loss

            x = np.arange(24.0, dtype=np.float32).reshape(8, 3) / 10
            y = np.linspace(0, 1, 8, dtype=np.float32).reshape(8, 1)
            loss = step(model, opt, *jd.distribute_batch((x, y)))
        print(json.dumps({"loss": float(loss), "w": np.asarray(model.w).tolist()}))
        """
    )
    x = np.arange(24.0).reshape(8, 3) / 10
    y = np.linspace(0, 1, 8).reshape(8, 1)
    w = np.array([[0.5], [-1.0], [2.0]])
    residual = x @ w - y
    grad = 2 * x.T @ residual / 8  # the mean over the global batch, not a sum over devices
    np.testing.assert_allclose(out["loss"], np.mean(residual**2), rtol=1e-5)
    np.testing.assert_allclose(out["w"], w - 0.1 * grad, rtol=1e-5)


def test_model_parallel_dense_kernel_split_along_model():
    out = session(
        """
        jmod.random.set_seed(1)
        x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
        with jd.mesh({"data": 2, "model": 2}):
            layer = jmod.layers.Dense(8, activation="relu")
            layer(jnp.asarray(x))
            kernel0, bias0 = np.asarray(layer.kernel), np.asarray(layer.bias)
            layout = jd.LayoutMap({r"kernel$": (None, "model"), r"bias$": ("model",)})
            jd.shard_module(layer, layout)
            opt = jmod.Optimizer(layer, optax.sgd(0.5))

            @jmod.jit
            def step(layer, opt, xb):
                loss, g = jmod.value_and_grad(lambda m: jnp.sum(m(xb) ** 2))(layer)
                opt.update(g)
                return loss

            out = jmod.jit(lambda m, xb: m(xb))(layer, jd.distribute_batch(x))
            loss = step(layer, opt, jd.distribute_batch(x))
            result = {
                "kernel0": kernel0.tolist(), "bias0": bias0.tolist(),
                "out": np.asarray(out).tolist(), "loss": float(loss),
                "kernel": np.asarray(layer.kernel).tolist(),
                "kernel_shards": shard_shapes(layer.kernel), "specs": specs(layer),
                "hlo_all_reduce": "all-reduce" in step.lower(layer, opt, jd.distribute_batch(x))
                    .compile().as_text(),
            }
        print(json.dumps(result))
        """
    )
    x = np.linspace(-1, 1, 24).reshape(4, 6)
    kernel, bias = np.array(out["kernel0"]), np.array(out["bias0"])
    assert out["kernel_shards"] == [[6, 4]]  # each device holds half the output units
    assert out["specs"] == {"bias": "('model',)", "kernel": "(None, 'model')"}
    pre = x @ kernel + bias
    np.testing.assert_allclose(out["out"], np.maximum(pre, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["loss"], np.sum(np.maximum(pre, 0) ** 2), rtol=1e-5)
    grad_pre = 2 * np.maximum(pre, 0) * (pre > 0)
    np.testing.assert_allclose(out["kernel"], kernel - 0.5 * x.T @ grad_pre, rtol=1e-5, atol=1e-6)
    assert out["hlo_all_reduce"]  # the kernel gradient sums over the data axis


def test_distribute_batch_splits_rows_and_refuses_uneven_batches():
    out = session(
        """
        with jd.mesh({"data": 4}):
            xb = jd.distribute_batch({"x": np.arange(16.0).reshape(8, 2), "n": np.float32(3)})
            try:
                jd.distribute_batch(np.ones((6, 2)))
                error = None
            except jd.ShardingError as e:
                error = str(e)
            inside = jax.jit(lambda x: jd.distribute_batch(x) * 2)(jnp.ones((8, 2)))
            stacked = jd.distribute_batch(np.ones((3, 8, 2)), batch_dim=1)
        print(json.dumps({
            "rows": [np.asarray(s.data).tolist() for s in xb["x"].addressable_shards],
            "n": [xb["n"].is_fully_replicated, float(xb["n"])],
            "error": error, "inside": str(tuple(inside.sharding.spec)),
            "stacked": [str(tuple(stacked.sharding.spec)), shard_shapes(stacked)],
        }))
        """
    )
    expected = np.arange(16.0).reshape(4, 2, 2).tolist()
    assert out["rows"] == expected
    assert out["n"] == [True, 3.0]
    assert out["error"] == (
        "distribute_batch: batch has 6 rows (shape (6, 2)), not divisible by the 4 devices "
        "along mesh axis 'data'"
    )
    assert out["inside"] == "('data',)"
    assert out["stacked"] == ["(None, 'data')", [[3, 2, 2]]]


def test_fit_inside_a_mesh_trains_data_parallel_like_one_device():
    out = session(
        """
        from jmod.training import trainer
        seen = []
        split = trainer._data_parallel

        def spy(leaves, mask, k):
            leaves, mask = split(leaves, mask, k)
            specs = [getattr(getattr(x, "sharding", 0), "spec", ()) for x in (*leaves, mask)]
            seen.append([str(tuple(spec)) for spec in specs])
            return leaves, mask

        trainer._data_parallel = spy
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 3)).astype(np.float32)
        y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)

        def run(k):
            jmod.random.set_seed(0)
            model = jmod.Sequential([jmod.layers.Dense(8, activation="tanh"), jmod.layers.Dense(1)])
            model.compile(optax.adam(0.05), loss="mse", metrics=["mae"], steps_per_execution=k)
            history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                                validation_data=(x[:16], y[:16]))
            preds = model.predict(x[:8], batch_size=8, verbose=0)
            return model, history.history, preds

        single, single_history, single_preds = run(1)
        seen.clear()
        results = {}
        with jd.mesh({"data": 4}):
            for k in (1, 2):
                model, history, preds = run(k)
                results[k] = {
                    "history": history, "preds": preds.tolist(),
                    # Layer names differ between runs (dense, dense_2, ...): by order.
                    "state": [np.asarray(v).tolist() for v in model.variables],
                    "devices": sorted({len(v.sharding.device_set) for v in model.variables}),
                }
        print(json.dumps({
            "seen": sorted({json.dumps(s) for s in seen}), "results": results,
            "single": [np.asarray(v).tolist() for v in single.variables],
            "single_history": single_history, "single_preds": single_preds.tolist(),
        }))
        """
    )
    # Train and test batches (x, y, mask) split along "data", the batch axis of the
    # (steps, batch) stacks with steps_per_execution=2; predict's (x, mask) too.
    assert set(out["seen"]) == {
        json.dumps(["('data',)"] * 3),
        json.dumps(["(None, 'data')"] * 3),
        json.dumps(["('data',)"] * 2),
    }
    for result in out["results"].values():
        assert result["devices"] == [4]
        for name, values in out["single_history"].items():
            np.testing.assert_allclose(result["history"][name], values, rtol=2e-5, atol=1e-6)
        assert len(result["state"]) == len(out["single"]) == 4
        for got, value in zip(result["state"], out["single"]):
            np.testing.assert_allclose(got, value, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(result["preds"], out["single_preds"], rtol=2e-5, atol=1e-6)


# -- several processes --------------------------------------------------------------------

TWO_PROCESS = (
    DATA_PARALLEL
    + """
import os, sys
rank = int(os.environ["RANK"])
if rank == 0:
    jd.initialize(os.environ["ADDRESS"], num_processes=2, process_id=0, timeout=60)
else:
    jd.initialize(timeout=60)  # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID
try:
    jd.initialize(os.environ["ADDRESS"], num_processes=2, process_id=rank)
    again = None
except jd.DistributedError as e:
    again = str(e)

x, y = make_data()
jmod.random.set_seed(0)
model = MLP()
with jd.mesh({"data": 4}):
    model(jnp.asarray(x[:2]))
    # Data parallel, and the hidden kernel split across both processes' devices.
    jd.shard_module(model, {"hidden/kernel": (None, "data")})
    opt = jmod.Optimizer(model, optax.adam(1e-2))

    @jmod.jit
    def step(model, opt, xb, yb):
        loss, grads = jmod.value_and_grad(lambda m: jnp.mean((m(xb) - yb) ** 2))(model)
        opt.update(grads)
        return loss

    losses = []
    for i in range(4):
        # Each process feeds its 8 of the 16 rows of the global batch.
        rows = slice(16 * i + 8 * rank, 16 * i + 8 * rank + 8)
        xb, yb = jd.distribute_batch((x[rows], y[rows]))
        losses.append(float(step(model, opt, xb, yb)))
    jmod.Checkpoint(model=model, optimizer=opt).write(os.environ["CKPT"])

    # Resume on the same mesh: each process reads only the blocks its devices hold.
    from jmod.checkpoint import _sharded
    read = []
    _sharded.BoxReader.close = lambda self: read.append(self.bytes_read)
    jmod.random.set_seed(7)
    resumed = MLP()
    resumed(jnp.asarray(x[:2]))
    jd.shard_module(resumed, {"hidden/kernel": (None, "data")})
    resumed_opt = jmod.Optimizer(resumed, optax.adam(1e-2))
    jmod.Checkpoint(model=resumed, optimizer=resumed_opt).restore(os.environ["CKPT"])

def local(module):
    # {path: (box, values)} of the first block this process holds of each variable.
    out = {}
    for p, v in module.named_variables():
        shard = v.value.addressable_shards[0]
        box = [list(s.indices(n)[:2]) for s, n in zip(shard.index, v.shape)]
        out[p] = [box, np.asarray(shard.data).tolist()]
    return out

state = local(model)
from jmod.distributed import exchange
exchange.barrier("after training")
gathered = [b.decode() for b in exchange.allgather_bytes((f"from {rank}" * (rank + 1)).encode())]
told = exchange.broadcast_bytes(b"process 0 says" if rank == 0 else b"ignored").decode()
print(json.dumps({
    "gathered": gathered, "told": told,
    "rank": jd.process_index(), "count": jd.process_count(), "devices": jax.device_count(),
    "local": jax.local_device_count(), "again": again, "losses": losses, "state": state,
    "bytes_read": sum(read), "resumed_equal": local(resumed) == local(model)
        and local(resumed_opt) == local(opt),
}))
"""
)


def test_two_processes_train_write_a_sharded_checkpoint_and_match_one(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    ckpt = str(tmp_path / "ckpt")
    procs = [
        start(TWO_PROCESS, 2, {"RANK": "0", "ADDRESS": address, "CKPT": ckpt}),
        start(
            TWO_PROCESS,
            2,
            {
                "RANK": "1",
                "ADDRESS": address,
                "CKPT": ckpt,
                "JAX_COORDINATOR_ADDRESS": address,
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "1",
            },
        ),
    ]
    try:
        results = [finish(p, 120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [(r["rank"], r["count"], r["devices"], r["local"]) for r in results] == [
        (0, 2, 4, 2),
        (1, 2, 4, 2),
    ]
    assert "already called in this process (process 0 of 2)" in results[0]["again"]
    for r in results:
        assert r["gathered"] == ["from 0", "from 1from 1"] and r["told"] == "process 0 says"
    # The single-process reference: the same 4 steps on the whole 16-row batches.
    ns = {}
    exec(PRELUDE + DATA_PARALLEL, ns)
    reference, losses, _, reference_opt = ns["train"]()
    for r in results:
        np.testing.assert_allclose(r["losses"], losses, rtol=1e-5)
        for path, value in reference.state().items():
            box, block = r["state"][path]
            expected = np.asarray(value)[tuple(slice(a, b) for a, b in box)]
            np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-6)
        assert r["resumed_equal"]
    boxes = [r["state"]["hidden/kernel"][0] for r in results]
    assert boxes == [[[0, 5], [0, 4]], [[0, 5], [8, 12]]]
    # Each process wrote its own data file; the split kernel has blocks in both.
    assert sorted(os.listdir(tmp_path)) == [
        "ckpt.data-00000-of-00002",
        "ckpt.data-00001-of-00002",
        "ckpt.index",
    ]
    from jmod.checkpoint import _format

    index = _format.read_index(ckpt)
    kernel = index.entries["model/hidden/kernel"]
    assert kernel.shape == (5, 16)
    assert [(p.start, p.shape, p.file) for p in kernel.pieces] == [
        ((0, 4 * i), (5, 4), i // 2) for i in range(4)
    ]
    assert index.entries["optimizer/slots/0/mu/hidden/kernel"].pieces
    whole = [e for e in index.entries.values() if not e.pieces]
    assert {e.file for e in whole} == {0, 1}  # replicated values spread over both files
    # Resuming, each process read the replicated values and half of each split one.
    split = sum(e.length for e in index.entries.values() if e.pieces)
    assert [r["bytes_read"] for r in results] == [
        sum(e.length for e in whole if e.key != "save_counter") + split // 2
    ] * 2
    # Restored in this single process, the checkpoint equals the reference run.
    restored = ns["MLP"]()
    restored(jnp.zeros((1, 5)))
    restored_opt = jmod.Optimizer(restored, optax.adam(1e-2))
    jmod.Checkpoint(model=restored, optimizer=restored_opt).restore(ckpt).assert_consumed()
    for mine, theirs in ((restored, reference), (restored_opt, reference_opt)):
        for path, value in theirs.state().items():
            np.testing.assert_allclose(
                np.asarray(mine.state()[path]), np.asarray(value), rtol=1e-5, atol=1e-6
            )


def test_a_peer_that_never_arrives_is_a_clear_error_not_a_hang():
    out = session(
        f"""
        import time
        t = time.monotonic()
        try:
            jd.initialize("127.0.0.1:{free_port()}", num_processes=2, process_id=0, timeout=1)
            error = None
        except jd.DistributedError as e:
            error = str(e)
        print(json.dumps({{"error": error, "seconds": time.monotonic() - t,
                           "initialized": jax.distributed.is_initialized()}}))
        """,
        devices=1,
        timeout=60,
    )
    assert out["error"].startswith(
        "jmod.distributed.initialize: process 0 of 2 (coordinator 127.0.0.1:"
    )
    assert "could not register with all 2 processes within 1 s. Was every process" in out["error"]
    assert out["error"].endswith("can it reach the coordinator?")
    assert out["seconds"] < 30
    assert out["initialized"] is False


def test_dense_kernel_sharding_argument_lays_out_the_kernel_at_build():
    out = session(
        """
        with jd.mesh({"data": 2, "model": 2}):
            layer = jmod.layers.Dense(8, kernel_sharding=(None, "model"), bias_sharding=("model",))
            y = layer(jnp.ones((4, 6)))
            again = jmod.layers.Dense.from_config(layer.get_config())
        print(json.dumps({"kernel_shards": shard_shapes(layer.kernel), "specs": specs(layer),
                          "shape": list(y.shape), "config": again.kernel_sharding}))
        """
    )
    assert out["kernel_shards"] == [[6, 4]]
    assert out["specs"] == {"bias": "('model',)", "kernel": "(None, 'model')"}
    assert out["shape"] == [4, 8]
    assert out["config"] == [None, "model"]
