"""jmod.Checkpoint: saving modules and variables by path, restoring by path."""

import gc
import os
import re
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import jmod
import jmod.checkpoint
from jmod.checkpoint import Checkpoint, _format
from jmod.errors import CheckpointError


class FlexibleDenseModule(jmod.Module):
    """The guide's dense layer whose input size comes from the first call."""

    def __init__(self, out_features, name=None):
        super().__init__(name=name)
        self.is_built = False
        self.out_features = out_features

    def __call__(self, x):
        if not self.is_built:
            self.w = jmod.Variable(jmod.random.normal([x.shape[-1], self.out_features]), name="w")
            self.b = jmod.Variable(jmod.random.normal([self.out_features]), name="b")
            self.is_built = True
        return jax.nn.relu(x @ self.w + self.b)


class MySequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = FlexibleDenseModule(out_features=3)
        self.dense_2 = FlexibleDenseModule(out_features=2)

    def __call__(self, x):
        return self.dense_2(self.dense_1(x))


class JittedSequentialModule(MySequentialModule):
    @jmod.jit
    def __call__(self, x):
        return self.dense_2(self.dense_1(x))


X = jnp.array([[2.0, 2.0, 2.0]])


def numpy_forward(params, x):
    """The model's math in NumPy, from the values a checkpoint holds."""
    h = np.maximum(x @ params["model/dense_1/w"] + params["model/dense_1/b"], 0)
    return np.maximum(h @ params["model/dense_2/w"] + params["model/dense_2/b"], 0)


@pytest.fixture
def trained(tmp_path):
    """A built model written as a checkpoint: (model, path, output on X)."""
    model = MySequentialModule()
    y = model(X)
    path = Checkpoint(model=model).write(str(tmp_path / "my_checkpoint"))
    return model, path, np.asarray(y)


# ---------------------------------------------------------------- writing


def test_write_returns_the_path_and_makes_an_index_and_one_data_file(tmp_path):
    model = MySequentialModule()
    model(X)
    path = Checkpoint(model=model).write(str(tmp_path / "my_checkpoint"))
    assert path == str(tmp_path / "my_checkpoint")
    assert sorted(os.listdir(tmp_path)) == [
        "my_checkpoint.data-00000-of-00001",
        "my_checkpoint.index",
    ]


def test_list_variables_gives_sorted_keys_of_attribute_paths_and_shapes(trained):
    _, path, _ = trained
    assert jmod.checkpoint.list_variables(path) == [
        ("model/dense_1/b", (3,)),
        ("model/dense_1/w", (3, 3)),
        ("model/dense_2/b", (2,)),
        ("model/dense_2/w", (3, 2)),
    ]


def test_list_variables_reads_the_index_alone(trained):
    _, path, _ = trained
    os.unlink(_format.data_path(path, 0, 1))
    assert len(jmod.checkpoint.list_variables(path)) == 4


def test_load_variable_returns_the_saved_value(trained):
    model, path, _ = trained
    np.testing.assert_array_equal(
        jmod.checkpoint.load_variable(path, "model/dense_1/w"), np.asarray(model.dense_1.w)
    )


def test_the_saved_values_reproduce_the_model_in_numpy(trained):
    _, path, y = trained
    params = {
        k: jmod.checkpoint.load_variable(path, k) for k, _ in jmod.checkpoint.list_variables(path)
    }
    np.testing.assert_allclose(numpy_forward(params, np.asarray(X)), y, rtol=1e-6)


def test_a_variable_reachable_twice_is_saved_once_under_its_first_path(tmp_path):
    m = jmod.Module()
    m.s2 = m.s1 = jmod.Variable(1.0)
    path = Checkpoint(model=m).write(str(tmp_path / "c"))
    assert [k for k, _ in jmod.checkpoint.list_variables(path)] == ["model/s1"]


def test_plain_variables_dicts_and_lists_are_keyed_by_name_then_position(tmp_path):
    step = jmod.Variable(7)
    layers = [FlexibleDenseModule(2), FlexibleDenseModule(1)]
    for layer in layers:
        layer(jnp.ones((1, 2)))
    path = Checkpoint(step=step, parts={"head": layers}).write(str(tmp_path / "c"))
    keys = [k for k, _ in jmod.checkpoint.list_variables(path)]
    assert keys == [
        "parts/head/0/b",
        "parts/head/0/w",
        "parts/head/1/b",
        "parts/head/1/w",
        "step",
    ]
    new_step = jmod.Variable(0)
    new_layers = [FlexibleDenseModule(2), FlexibleDenseModule(1)]
    status = Checkpoint(step=new_step, parts={"head": new_layers}).restore(path)
    assert int(new_step) == 7
    for new, old in zip(new_layers, layers, strict=True):
        new(jnp.ones((1, 2)))  # builds, and takes the saved values
        np.testing.assert_array_equal(np.asarray(new.w), np.asarray(old.w))
    status.assert_consumed()


def test_objects_without_variables_are_refused():
    with pytest.raises(CheckpointError, match=r"Checkpoint\(config=...\).*cannot save a str"):
        Checkpoint(config="adam")
    with pytest.raises(CheckpointError, match="save_counter"):
        Checkpoint(save_counter=jmod.Variable(0))


# ---------------------------------------------------------------- save numbering


def test_save_numbers_checkpoints_from_one(tmp_path):
    ckpt = Checkpoint(v=jmod.Variable(1.0))
    prefix = str(tmp_path / "ckpt")
    assert [ckpt.save(prefix) for _ in range(3)] == [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
    assert int(jmod.checkpoint.load_variable(f"{prefix}-2", "save_counter")) == 2


def test_write_alone_creates_no_save_counter_as_in_tensorflow(tmp_path):
    # The guide: list_variables after write() holds the model's variables and nothing else.
    ckpt = Checkpoint(v=jmod.Variable(1.0))
    path = ckpt.write(str(tmp_path / "c"))
    assert jmod.checkpoint.list_variables(path) == [("v", ())]
    assert [k for k, _ in ckpt.named_variables()] == ["v"]
    # save() creates it (value 1 after one save); later writes list it too.
    ckpt.save(str(tmp_path / "s"))
    again = ckpt.write(str(tmp_path / "c2"))
    assert jmod.checkpoint.list_variables(again) == [("save_counter", ()), ("v", ())]
    assert int(jmod.checkpoint.load_variable(again, "save_counter")) == 1


def test_restore_creates_the_counter_and_read_keeps_its_value_for_later(tmp_path):
    prefix = str(tmp_path / "ckpt")
    first = Checkpoint(v=jmod.Variable(1.0))
    for _ in range(3):
        path = first.save(prefix)
    restored = Checkpoint(v=jmod.Variable(0.0))
    restored.restore(path).assert_consumed()
    assert "save_counter" in dict(restored.named_variables())  # TF's restore creates it
    assert int(restored.save_counter) == 3
    read = Checkpoint(v=jmod.Variable(0.0))
    read.read(path).assert_consumed()
    assert "save_counter" not in dict(read.named_variables())  # TF's read does not
    assert read.save(prefix) == f"{prefix}-4"  # but numbering continues from the saved 3


def test_save_counter_is_restored_so_numbering_continues(tmp_path):
    prefix = str(tmp_path / "ckpt")
    first = Checkpoint(v=jmod.Variable(1.0))
    first.save(prefix)
    path = first.save(prefix)
    second = Checkpoint(v=jmod.Variable(0.0))
    second.restore(path).assert_consumed()
    assert int(second.save_counter) == 2
    assert second.save(prefix) == f"{prefix}-3"


# ---------------------------------------------------------------- restoring


def test_restore_into_a_built_model_overwrites_its_values(trained):
    model, path, y = trained
    saved = {key: np.asarray(v) for key, v in model.named_variables()}
    new = MySequentialModule()
    new(X)  # built, with other random values
    # Compared by variables: both outputs can be all zeros (ReLU) by chance.
    assert any(not np.array_equal(np.asarray(v), saved[key]) for key, v in new.named_variables())
    status = Checkpoint(model=new).restore(path)
    status.assert_consumed()
    for key, v in new.named_variables():
        np.testing.assert_array_equal(np.asarray(v), saved[key])
    np.testing.assert_array_equal(new(X), y)


def test_restore_before_first_call_fills_deferred_variables(trained):
    _, path, y = trained
    new = MySequentialModule()
    status = Checkpoint(model=new).restore(path)
    assert new.variables == ()  # deferred, as in TensorFlow
    assert status.unmatched_keys == [
        "model/dense_1/b",
        "model/dense_1/w",
        "model/dense_2/b",
        "model/dense_2/w",
    ]
    with pytest.raises(CheckpointError, match="never assigned"):
        status.assert_consumed()
    status.assert_existing_objects_matched()  # nothing exists yet: nothing unmatched
    np.testing.assert_array_equal(new(X), y)
    status.assert_consumed()


def test_restore_before_first_jitted_call_gives_the_identical_output(trained):
    _, path, y = trained
    new = JittedSequentialModule()
    status = Checkpoint(model=new).restore(path)
    np.testing.assert_array_equal(new(X), y)
    np.testing.assert_array_equal(new(X), y)  # the retrace after the build too
    status.assert_consumed()


def test_restore_fills_layers_a_deferred_build_appends_to_a_list(tmp_path):
    class Stack(jmod.Module):
        def __init__(self):
            super().__init__()
            self.layers = []

        def __call__(self, x):
            if not self.layers:
                self.layers.append(FlexibleDenseModule(3))
                self.layers.append(FlexibleDenseModule(2))
            for layer in self.layers:
                x = layer(x)
            return x

    model = Stack()
    y = model(X)
    path = Checkpoint(model=model).write(str(tmp_path / "c"))
    new = Stack()
    Checkpoint(model=new).restore(path).expect_partial()
    np.testing.assert_array_equal(new(X), y)


def test_restored_optimizer_and_generator_continue_where_they_were(tmp_path):
    model = jmod.Module()
    model.w = jmod.Variable([1.0, -2.0])
    opt = jmod.Optimizer(model, optax.adam(0.1))
    gen = jmod.random.Generator(seed=3)
    grad = jmod.grad(lambda m: jnp.sum(m.w**2))
    for _ in range(3):
        opt.update(grad(model))
    gen.normal((2,))
    path = Checkpoint(model=model, opt=opt, gen=gen).write(str(tmp_path / "c"))
    opt.update(grad(model))
    want_w, want_draw = np.asarray(model.w), np.asarray(gen.normal((2,)))

    model2 = jmod.Module()
    model2.w = jmod.Variable([0.0, 0.0])
    opt2 = jmod.Optimizer(model2, optax.adam(0.1))
    gen2 = jmod.random.Generator(seed=99)
    Checkpoint(model=model2, opt=opt2, gen=gen2).restore(path).assert_consumed()
    opt2.update(grad(model2))
    np.testing.assert_array_equal(np.asarray(model2.w), want_w)
    np.testing.assert_array_equal(np.asarray(gen2.normal((2,))), want_draw)


JAX_DTYPES = [
    "bool", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float16", "float32",
    "bfloat16", "complex64", "int4", "uint4", "float8_e4m3fn", "float8_e5m2",
]  # fmt: skip


@pytest.mark.parametrize("dtype", JAX_DTYPES)
def test_variables_of_every_dtype_round_trip_bit_exactly(tmp_path, dtype):
    rng = np.random.default_rng(1)
    dt = np.dtype(getattr(ml_dtypes, dtype, dtype))
    if dt.kind == "V" and dtype.startswith(("int", "uint")):
        info = ml_dtypes.iinfo(dt)
        values = [
            rng.integers(int(info.min), int(info.max) + 1, s).astype(dt) for s in [(), (5,), (2, 3)]
        ]
    elif dt == np.bool_:
        values = [rng.integers(0, 2, s).astype(bool) for s in [(), (5,), (2, 3)]]
    else:
        values = [rng.standard_normal(s).astype(dt) for s in [(), (5,), (2, 3)]]
    saved = {f"v{i}": jmod.Variable(jnp.asarray(v)) for i, v in enumerate(values)}
    path = Checkpoint(**saved).write(str(tmp_path / "c"))
    fresh = {f"v{i}": jmod.Variable(jnp.zeros(v.shape, dt)) for i, v in enumerate(values)}
    Checkpoint(**fresh).restore(path).assert_consumed()
    for i, v in enumerate(values):
        got = np.asarray(fresh[f"v{i}"].value)
        assert got.dtype == dt and got.tobytes() == v.tobytes()


# ---------------------------------------------------------------- strictness


def test_a_shape_mismatch_names_path_expected_found_and_file_and_changes_nothing(trained):
    _, path, _ = trained

    class Wider(MySequentialModule):
        def __init__(self):
            super().__init__()
            self.dense_2 = FlexibleDenseModule(out_features=4)

    new = Wider()
    new(X)
    before = {k: np.asarray(v) for k, v in new.state().items()}
    with pytest.raises(CheckpointError) as err:
        Checkpoint(model=new).restore(path)
    message = str(err.value)
    assert (
        "model/dense_2/b: checkpoint has shape (2,) float32, the variable is (4,) float32"
        in message
    )
    assert "my_checkpoint.index" in message
    for k, v in new.state().items():  # nothing assigned, not even the matching dense_1
        np.testing.assert_array_equal(np.asarray(v), before[k])


def test_a_dtype_mismatch_is_a_checkpoint_error(tmp_path):
    path = Checkpoint(v=jmod.Variable(jnp.ones(3, jnp.float32))).write(str(tmp_path / "c"))
    with pytest.raises(
        CheckpointError,
        match=r"v: checkpoint has shape \(3,\) float32, the variable is \(3,\) bfloat16",
    ):
        Checkpoint(v=jmod.Variable(jnp.ones(3, jnp.bfloat16))).restore(path)


def test_a_deferred_variable_of_the_wrong_shape_fails_when_it_is_created(trained):
    _, path, _ = trained
    new = MySequentialModule()
    Checkpoint(model=new).restore(path).expect_partial()
    with pytest.raises(CheckpointError, match=r"model/dense_1/w: checkpoint has shape \(3, 3\)"):
        new(jnp.ones((1, 5)))  # builds dense_1/w as (5, 3)


def test_an_existing_variable_missing_from_the_checkpoint_is_an_error_unless_partial(trained):
    _, path, y = trained
    new = MySequentialModule()
    new(X)
    new.extra = jmod.Variable(0.0)
    with pytest.raises(
        CheckpointError, match=r"no value for 1 existing variable\(s\): model/extra.*partial=True"
    ):
        Checkpoint(model=new).restore(path)
    status = Checkpoint(model=new).restore(path, partial=True)
    np.testing.assert_array_equal(new(X), y)
    assert status.unrestored_variables == ["model/extra"]
    with pytest.raises(CheckpointError, match="model/extra"):
        status.assert_existing_objects_matched()


def test_unmatched_keys_are_reported_by_the_status(trained):
    _, path, _ = trained
    new = MySequentialModule()
    new(X)
    status = Checkpoint(model=new, other=jmod.Variable(1.0), partial_ok=jmod.Module()).restore(
        path, partial=True
    )
    assert status.unrestored_variables == ["other"]
    with pytest.raises(CheckpointError, match="variables without a value: other"):
        status.assert_consumed()

    only_dense_1 = jmod.Module()
    only_dense_1.dense_1 = FlexibleDenseModule(3)
    only_dense_1.dense_1(X)
    status = Checkpoint(model=only_dense_1).restore(path)
    assert status.unmatched_keys == ["model/dense_2/b", "model/dense_2/w"]
    with pytest.raises(
        CheckpointError, match="keys never assigned: model/dense_2/b, model/dense_2/w"
    ):
        status.assert_consumed()
    status.assert_existing_objects_matched().assert_nontrivial_match()


def test_a_dropped_status_warns_about_unmatched_keys_unless_partial_was_expected(trained):
    _, path, _ = trained

    def restore_half():
        half = jmod.Module()
        half.dense_1 = FlexibleDenseModule(3)
        half.dense_1(X)
        return Checkpoint(model=half).restore(path)

    with pytest.warns(UserWarning, match=r"2 key\(s\) were never assigned.*model/dense_2/b"):
        restore_half()
        gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore_half().expect_partial()
        gc.collect()


def test_restore_none_restores_nothing_and_its_assertions_fail():
    v = jmod.Variable(3.0)
    status = Checkpoint(v=v).restore(None)
    assert float(v) == 3.0
    with pytest.raises(CheckpointError, match="no checkpoint was given"):
        status.assert_consumed()
    status.expect_partial()


def test_a_second_restore_supersedes_the_first_ones_deferred_values(tmp_path):
    a, b = jmod.Module(), jmod.Module()
    a.dense = FlexibleDenseModule(2)
    b.dense = FlexibleDenseModule(2)
    a.dense(X), b.dense(X)
    path_a = Checkpoint(model=a).write(str(tmp_path / "a"))
    path_b = Checkpoint(model=b).write(str(tmp_path / "b"))
    new = jmod.Module()
    new.dense = FlexibleDenseModule(2)
    ckpt = Checkpoint(model=new)
    ckpt.restore(path_a)
    ckpt.restore(path_b)
    np.testing.assert_array_equal(new.dense(X), b.dense(X))


def test_a_corrupt_value_stops_the_restore_and_is_never_assigned(trained):
    model, path, y = trained
    entry = _format.read_index(path).entries["model/dense_2/b"]
    with open(_format.data_path(path, 0, 1), "r+b") as f:
        f.seek(entry.offset)
        f.write(b"\xff\xff")
    new = MySequentialModule()
    new(X)
    before = {k: np.asarray(v) for k, v in new.state().items()}
    with pytest.raises(CheckpointError) as err:
        Checkpoint(model=new).restore(path)
    assert re.search(
        r"my_checkpoint\.data-00000-of-00001.*model/dense_2/b: checksum", str(err.value)
    )
    assert "2 of 4 values were already assigned" in str(err.value)  # dense_1's, in file order
    np.testing.assert_array_equal(np.asarray(new.dense_2.b), before["dense_2/b"])
    np.testing.assert_array_equal(np.asarray(new.dense_2.w), before["dense_2/w"])
    np.testing.assert_array_equal(np.asarray(new.dense_1.w), np.asarray(model.dense_1.w))


def test_a_truncated_checkpoint_changes_nothing(trained):
    _, path, _ = trained
    data = _format.data_path(path, 0, 1)
    os.truncate(data, os.path.getsize(data) - 4)
    new = MySequentialModule()
    new(X)
    before = {k: np.asarray(v) for k, v in new.state().items()}
    with pytest.raises(CheckpointError, match=r"my_checkpoint\.data-00000-of-00001.*truncated"):
        Checkpoint(model=new).restore(path)
    for k, v in new.state().items():
        np.testing.assert_array_equal(np.asarray(v), before[k])


def test_restoring_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*does_not_exist"):
        Checkpoint(v=jmod.Variable(1.0)).restore(str(tmp_path / "does_not_exist"))


# ---------------------------------------------------------------- async writes


def test_async_write_snapshots_values_before_returning(tmp_path):
    v = jmod.Variable(jnp.arange(1000.0))
    ckpt = Checkpoint(v=v)
    handle = ckpt.write(str(tmp_path / "c"), blocking=False)
    v.assign(jnp.zeros(1000))  # a training step right after
    assert handle.wait() == str(tmp_path / "c")
    assert handle.done()
    np.testing.assert_array_equal(
        jmod.checkpoint.load_variable(handle.path, "v"), np.arange(1000.0)
    )


def test_async_writes_in_sequence_and_saves_number_correctly(tmp_path):
    v = jmod.Variable(0.0)
    ckpt = Checkpoint(v=v)
    handles = []
    for i in range(3):
        v.assign(float(i))
        handles.append(ckpt.save(str(tmp_path / "ckpt"), blocking=False))
    assert [os.path.basename(h.wait()) for h in handles] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert [float(jmod.checkpoint.load_variable(h.path, "v")) for h in handles] == [0.0, 1.0, 2.0]


def test_async_write_errors_surface_in_wait(tmp_path, monkeypatch):
    def disk_full(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_format, "write_checkpoint", disk_full)
    handle = Checkpoint(v=jmod.Variable(1.0)).write(str(tmp_path / "c"), blocking=False)
    with pytest.raises(OSError, match="No space"):
        handle.wait()


@pytest.mark.parametrize("blocking", [True, False])
def test_on_written_runs_once_the_checkpoint_is_readable(tmp_path, blocking):
    seen = []

    def on_written(path):
        # The files are in place when it runs: the value reads back.
        seen.append((path, float(jmod.checkpoint.load_variable(path, "v"))))

    ckpt = Checkpoint(v=jmod.Variable(3.0))
    result = ckpt.write(str(tmp_path / "c"), blocking=blocking, on_written=on_written)
    path = result if blocking else result.wait()
    assert seen == [(str(tmp_path / "c"), 3.0)] and path == str(tmp_path / "c")


def test_a_failed_write_does_not_call_on_written(tmp_path, monkeypatch):
    def disk_full(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_format, "write_checkpoint", disk_full)
    called = []
    handle = Checkpoint(v=jmod.Variable(1.0)).write(
        str(tmp_path / "c"), blocking=False, on_written=called.append
    )
    with pytest.raises(OSError, match="No space"):
        handle.wait()
    assert called == []


# ---------------------------------------------------------------- docs


@pytest.mark.parametrize(
    "name", ["_format", "_io", "_read", "_restore_plan", "checkpoint", "manager", "__init__"]
)
def test_docstring_examples_exist(name):
    # pytest's --doctest-modules runs them (pyproject).
    import doctest
    import importlib

    module = importlib.import_module("jmod.checkpoint" + ("" if name == "__init__" else f".{name}"))
    assert [t for t in doctest.DocTestFinder().find(module) if t.examples]
