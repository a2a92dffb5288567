"""`.safetensors` in and out by variable path, and the shared matcher's report and renaming."""

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("safetensors")
import safetensors.numpy  # noqa: E402

import jmod  # noqa: E402
from jmod import layers  # noqa: E402
from jmod.interop import (  # noqa: E402
    InteropError,
    load_safetensors,
    matching,
    save_safetensors,
)
from jmod.interop import safetensors as st_mod  # noqa: E402
from jmod.interop import torch as torch_mod  # noqa: E402
from tests.layer_checks import run_docstring_examples  # noqa: E402


def model(units=4, name="net"):
    m = jmod.Sequential(
        [jmod.Input(shape=[3]), layers.Dense(units, name="fc1"), layers.Dense(2, name="fc2")],
        name=name,
    )
    return m


def test_save_writes_every_variable_under_its_path(tmp_path):
    m = model()
    path = save_safetensors(m, tmp_path / "m.safetensors")
    raw = safetensors.numpy.load_file(str(path))
    assert sorted(raw) == sorted(p for p, _ in m.named_variables())
    np.testing.assert_array_equal(raw["layers/fc1/kernel"], np.asarray(m.layers[0].kernel.value))


def test_round_trip_gives_equal_outputs(tmp_path):
    a, b = model(), model()
    path = save_safetensors(a, tmp_path / "a.safetensors")
    report = load_safetensors(b, path)
    assert report.consumed and len(report.matched) == 4
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("f4")
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))


def test_bfloat16_variables_round_trip_bit_exactly(tmp_path):
    m = jmod.Module()
    m.w = jmod.Variable(jnp.asarray([1.5, -2.25, 3.0e-3], jnp.bfloat16))
    path = save_safetensors(m, tmp_path / "bf.safetensors")
    n = jmod.Module()
    n.w = jmod.Variable(jnp.zeros(3, jnp.bfloat16))
    load_safetensors(n, path)
    assert n.w.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(n.w.value).view(np.uint16), np.asarray(m.w.value).view(np.uint16)
    )


def test_float16_file_is_cast_to_the_float32_variables(tmp_path):
    m = model()
    path = tmp_path / "h.safetensors"
    tensors = {p: np.asarray(v.value).astype(np.float16) for p, v in m.named_variables()}
    safetensors.numpy.save_file(tensors, str(path))
    load_safetensors(m, path)
    assert m.layers[0].kernel.dtype == jnp.float32
    np.testing.assert_array_equal(
        np.asarray(m.layers[0].kernel.value), tensors["layers/fc1/kernel"].astype(np.float32)
    )
    assert ml_dtypes  # bfloat16 files need ml_dtypes, a jax dependency


def test_mapping_renames_file_keys_to_paths(tmp_path):
    m = model()
    rng = np.random.default_rng(0)
    tensors = {
        "encoder.fc1.w": rng.normal(size=(3, 4)).astype("f4"),
        "encoder.fc1.b": rng.normal(size=4).astype("f4"),
        "encoder.fc2.w": rng.normal(size=(4, 2)).astype("f4"),
        "encoder.fc2.b": rng.normal(size=2).astype("f4"),
        "optimizer.step": np.zeros((), "f4"),
    }
    path = tmp_path / "k.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    mapping = {
        r"encoder\.(\w+)\.w": r"layers/\1/kernel",
        r"encoder\.(\w+)\.b": r"layers/\1/bias",
        r"optimizer\..*": None,
    }
    report = load_safetensors(m, path, mapping=mapping)
    assert report.ignored == ["optimizer.step"]
    x = np.ones((1, 3), "f4")
    want = (x @ tensors["encoder.fc1.w"] + tensors["encoder.fc1.b"]) @ tensors[
        "encoder.fc2.w"
    ] + tensors["encoder.fc2.b"]
    np.testing.assert_allclose(np.asarray(m(x)), want, atol=1e-5)


def test_wrong_shape_names_tensor_variable_and_file(tmp_path):
    path = save_safetensors(model(units=5), tmp_path / "five.safetensors")
    m = model(units=4)
    before = np.asarray(m.layers[1].kernel.value)
    with pytest.raises(InteropError) as e:
        load_safetensors(m, path)
    msg = str(e.value)
    assert "five.safetensors" in msg and "'layers/fc1/bias' has shape (5,)" in msg
    assert "is (4,)" in msg
    np.testing.assert_array_equal(before, np.asarray(m.layers[1].kernel.value))


def test_extra_and_missing_tensors_are_listed(tmp_path):
    m = model()
    tensors = {p: np.asarray(v.value) for p, v in m.named_variables() if "fc2" not in p}
    tensors["layers/fc3/kernel"] = np.zeros((2, 2), "f4")
    path = tmp_path / "partial.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    with pytest.raises(InteropError, match=r"unused in the file: layers/fc3/kernel \(2, 2\)"):
        load_safetensors(m, path)
    report = load_safetensors(m, path, strict=False)
    assert sorted(p for p, _ in report.missing) == ["layers/fc2/bias", "layers/fc2/kernel"]
    assert not report.consumed


def test_pytorch_names_point_to_load_torch_state_dict(tmp_path):
    path = tmp_path / "torch.safetensors"
    safetensors.numpy.save_file({"0.weight": np.zeros((4, 3), "f4")}, str(path))
    with pytest.raises(InteropError, match="load_torch_state_dict"):
        load_safetensors(model(), path)


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    with pytest.raises(InteropError, match="bad.safetensors: not a safetensors file"):
        load_safetensors(model(), bad)
    with pytest.raises(InteropError, match="no such file"):
        load_safetensors(model(), tmp_path / "absent.safetensors")


def test_read_tensors_keeps_the_saved_order(tmp_path):
    path = tmp_path / "o.safetensors"
    m = jmod.Module()
    m.z = jmod.Variable(np.zeros(2, "f4"))
    m.a = jmod.Variable(np.zeros(3, "f4"))
    save_safetensors(m, path)
    # safetensors writes by dtype and name; this reader returns that byte order.
    assert list(st_mod.read_tensors(path)) == ["a", "z"]


@pytest.mark.parametrize("mod", [matching, st_mod, torch_mod], ids=lambda m: m.__name__)
def test_docstring_examples_run(mod):
    run_docstring_examples(mod)
