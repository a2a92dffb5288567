"""PyTorch weights into jmod models: fixtures made by real PyTorch models, live torch if installed.

The fixtures (tests/fixtures/interop/, made by make_torch_fixtures.py there)
hold each model's weights as .safetensors and PyTorch's own outputs and
one-step-SGD weights as .npz, so CI checks the mapping without torch.
"""

import functools
import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod import layers

pytest.importorskip("safetensors")

from jmod.interop import InteropError, load_torch_state_dict  # noqa: E402

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "interop")


def fixture(name):
    numbers = dict(np.load(os.path.join(HERE, f"{name}.npz")))
    return os.path.join(HERE, f"{name}.safetensors"), numbers


def torch_script():
    spec = importlib.util.spec_from_file_location(
        "make_torch_fixtures", os.path.join(HERE, "make_torch_fixtures.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the jmod ports of the PyTorch models ------------------------------------------------


def jmod_mlp():
    return jmod.Sequential(
        [
            jmod.Input(shape=[6]),
            layers.Dense(16, activation="relu"),
            layers.Dense(16, activation="tanh"),
            layers.Dense(3),
        ]
    )


def bn():
    # PyTorch's defaults: eps 1e-5, momentum 0.1 (= Keras momentum 0.9).
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9)


def jmod_cnn():
    return jmod.Sequential(
        [
            jmod.Input(shape=[8, 8, 3]),
            layers.Conv2D(8, 3, padding="same"),
            bn(),
            layers.Activation("relu"),
            layers.Conv2D(8, 3, padding="same", groups=4),
            bn(),
            layers.Activation("relu"),
            layers.MaxPooling2D(2),
            layers.GlobalAveragePooling2D(),
            layers.Dense(4),
        ]
    )


def jmod_cnn1d():
    return jmod.Sequential(
        [
            jmod.Input(shape=[10, 4]),
            layers.Conv1D(6, 3, padding="same", groups=2),
            bn(),
            layers.Activation("relu"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(2),
        ]
    )


class EncoderLayer(jmod.Module):
    """nn.TransformerEncoderLayer(16, 4, 32, dropout=0, batch_first=True): post-norm, relu."""

    def __init__(self):
        super().__init__()
        self.self_attn = layers.MultiHeadAttention(num_heads=4, key_dim=4)
        self.linear1 = layers.Dense(32, activation="relu")
        self.linear2 = layers.Dense(16)
        self.norm1 = layers.LayerNormalization(epsilon=1e-5)
        self.norm2 = layers.LayerNormalization(epsilon=1e-5)

    def __call__(self, x):
        x = self.norm1(x + self.self_attn(x, x))
        return self.norm2(x + self.linear2(self.linear1(x)))


class Encoder(jmod.Module):
    def __init__(self):
        super().__init__()
        self.embed = layers.Embedding(20, 16)
        self.encoder = EncoderLayer()
        self.head = layers.Dense(3)

    def __call__(self, ids, training=None):
        return self.head(jnp.mean(self.encoder(self.embed(ids)), axis=1))


def jmod_recurrent(kind):
    # nn.LSTM / nn.GRU(4, 8, batch_first=True), the last step into Linear(8, 2).
    return lambda: jmod.Sequential(
        [jmod.Input(shape=[6, 4]), getattr(layers, kind)(8), layers.Dense(2)]
    )


PORTS = {
    "mlp": jmod_mlp,
    "cnn": jmod_cnn,
    "cnn1d": jmod_cnn1d,
    "transformer": Encoder,
    "lstm": jmod_recurrent("LSTM"),
    "gru": jmod_recurrent("GRU"),
}
ALL = list(PORTS)


def to_jmod_layout(name, x):
    # PyTorch images are channels first; the jmod ports take channels last.
    if name == "cnn":
        return x.transpose(0, 2, 3, 1)
    if name == "cnn1d":
        return x.transpose(0, 2, 1)
    return x


_compiled = {}


def forward(model, x):
    # Compiled, one function per model: op-by-op eager execution of these
    # models costs seconds on a small CI machine.
    fn = _compiled.setdefault(id(model), (model, jmod.jit(lambda m, x: m(x))))[1]
    return fn(model, x)


def built(name, x):
    model = PORTS[name]()
    forward(model, jnp.asarray(x))
    return model


@functools.cache
def loaded(name):
    """The jmod port with the fixture's weights, and the load's report (read-only tests)."""
    path, ref = fixture(name)
    model = built(name, to_jmod_layout(name, ref["x"]))
    return model, load_torch_state_dict(model, path)


@jmod.jit
def sgd_step(model, x, y, lr):
    def loss_fn(m, x, y):
        return jnp.mean((m(x, training=True) - y) ** 2)

    loss, grads = jmod.value_and_grad(loss_fn)(model, x, y)
    for path, var in model.named_variables():
        if path in grads:
            var.assign(var.value - lr * grads[path])
    return loss


# -- outputs and one SGD step, from the fixtures -----------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_pytorch_weights_give_pytorch_outputs(name):
    _, ref = fixture(name)
    model, report = loaded(name)
    assert report.consumed
    got = forward(model, jnp.asarray(to_jmod_layout(name, ref["x"])))
    np.testing.assert_allclose(np.asarray(got), ref["out"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_one_sgd_step_lands_on_pytorch_weights(name):
    path, ref = fixture(name)
    x = to_jmod_layout(name, ref["x"])
    model = built(name, x)
    mine = load_torch_state_dict(model, path)
    before = {p: np.asarray(v.value) for p, v in model.named_variables()}
    loss = sgd_step(model, jnp.asarray(x), jnp.asarray(ref["y"]), torch_script().LR)
    assert abs(float(loss) - float(ref["loss"])) < 1e-5

    # PyTorch's weights after its own step, mapped by the same structure.
    expected = built(name, x)
    after = {k[len("sgd/") :]: v for k, v in ref.items() if k.startswith("sgd/")}
    theirs = load_torch_state_dict(expected, after)
    exp = dict(expected.named_variables())
    ours = dict(model.named_variables())
    assert [m[0] for m in mine.matched] == [m[0] for m in theirs.matched]
    for (key, p, *_), (_, q, *_) in zip(mine.matched, theirs.matched):
        got, want = np.asarray(ours[p].value), np.asarray(exp[q].value)
        if p.endswith("moving_variance"):
            # PyTorch's running_var takes the unbiased batch variance, Keras' and
            # jmod's the biased one: undo the n / (n - 1) on the batch part.
            n = x.size // x.shape[-1]
            want = 0.9 * before[p] + (want - 0.9 * before[p]) * (n - 1) / n
        if name == "lstm" and p.endswith("cell/bias"):
            # One jmod bias is PyTorch's bias_ih + bias_hh; torch's SGD moves each of
            # the two by the same gradient, so their sum moves twice as far.
            want = (want + before[p]) / 2
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"{key} -> {p}")
    assert any(not np.allclose(before[p], np.asarray(v.value)) for p, v in model.named_variables())


def test_linear_weight_is_transposed_into_the_kernel():
    path, _ = fixture("mlp")
    model, _ = loaded("mlp")
    import safetensors.numpy

    raw = safetensors.numpy.load_file(path)
    np.testing.assert_array_equal(np.asarray(model.layers[0].kernel.value), raw["0.weight"].T)
    np.testing.assert_array_equal(np.asarray(model.layers[2].bias.value), raw["4.bias"])


def test_grouped_conv_weight_becomes_hwio():
    path, _ = fixture("cnn")
    model, _ = loaded("cnn")
    import safetensors.numpy

    raw = safetensors.numpy.load_file(path)
    kernel = np.asarray(model.layers[3].kernel.value)
    assert kernel.shape == (3, 3, 2, 8)  # 8 channels in 4 groups: 2 inputs per filter
    np.testing.assert_array_equal(kernel, np.transpose(raw["3.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(
        np.asarray(model.layers[4].moving_variance.value), raw["4.running_var"]
    )


def test_report_lists_matches_and_skips_num_batches_tracked():
    model, report = loaded("cnn")
    keys = [k for k, *_ in report.matched]
    assert "1.running_mean" in keys and "9.weight" in keys
    assert sorted(report.ignored) == ["1.num_batches_tracked", "4.num_batches_tracked"]
    assert len(report.matched) == len(model.variables) == 14
    bn_path = model.layers[1].moving_variance
    path = next(p for p, v in model.named_variables() if v is bn_path)
    assert f"1.running_var -> {path} (8,) running_var -> moving_variance" in str(report)


def test_attention_in_proj_splits_into_query_key_value():
    path, _ = fixture("transformer")
    model, _ = loaded("transformer")
    import safetensors.numpy

    raw = safetensors.numpy.load_file(path)
    w = raw["encoder.self_attn.in_proj_weight"]
    attn = model.encoder.self_attn
    np.testing.assert_array_equal(np.asarray(attn.key_kernel.value), w[16:32].T.reshape(16, 4, 4))
    b = raw["encoder.self_attn.in_proj_bias"]
    np.testing.assert_array_equal(np.asarray(attn.value_bias.value), b[32:].reshape(4, 4))


def test_gru_gates_are_reordered_to_update_reset_new():
    path, _ = fixture("gru")
    model, _ = loaded("gru")
    import safetensors.numpy

    raw = safetensors.numpy.load_file(path)
    r, z, n = np.split(raw["rnn.weight_ih_l0"], 3)
    kernel = np.asarray(model.layers[0].cell.kernel.value)
    np.testing.assert_array_equal(kernel, np.concatenate([z, r, n]).T)
    bias = np.asarray(model.layers[0].cell.bias.value)
    np.testing.assert_array_equal(bias[1, :8], raw["rnn.bias_hh_l0"][8:16])  # update gate


def test_in_memory_state_dict_of_numpy_arrays_loads():
    _, ref = fixture("mlp")
    model = built("mlp", ref["x"])
    sd = {k[4:]: v for k, v in ref.items() if k.startswith("sgd/")}
    load_torch_state_dict(model, sd)
    np.testing.assert_array_equal(np.asarray(model.layers[1].bias.value), sd["2.bias"])


# -- mismatches ----------------------------------------------------------------------------


def test_wrong_shape_names_both_sides_and_changes_nothing():
    path, ref = fixture("mlp")
    model = jmod.Sequential(
        [jmod.Input(shape=[6]), layers.Dense(16), layers.Dense(15), layers.Dense(3)]
    )
    model(jnp.ones((1, 6)))
    before = [np.asarray(v.value) for v in model.variables]
    with pytest.raises(InteropError) as e:
        load_torch_state_dict(model, path)
    msg = str(e.value)
    assert "mlp.safetensors" in msg and "torch module '2'" in msg
    assert "weight (16, 16)" in msg and f"layers/{model.layers[1].name}" in msg
    assert "(16, 15)" in msg
    assert all(np.array_equal(b, np.asarray(v.value)) for b, v in zip(before, model.variables))


def test_extra_tensors_are_an_error_unless_not_strict():
    _, ref = fixture("mlp")
    sd = {k[4:]: v for k, v in ref.items() if k.startswith("sgd/")}
    sd["6.weight"], sd["6.bias"] = np.ones((2, 3), np.float32), np.ones(2, np.float32)
    model = built("mlp", ref["x"])
    with pytest.raises(InteropError, match=r"unused in the file: 6\.weight \(2, 3\), 6\.bias"):
        load_torch_state_dict(model, sd)
    report = load_torch_state_dict(model, sd, strict=False)
    assert [k for k, _ in report.unused] == ["6.weight", "6.bias"] and not report.missing
    np.testing.assert_array_equal(np.asarray(model.layers[2].bias.value), sd["4.bias"])


def test_missing_tensors_name_the_model_variables_left_out():
    _, ref = fixture("mlp")
    sd = {k[4:]: v for k, v in ref.items() if k.startswith("sgd/") and not k.startswith("sgd/4.")}
    model = built("mlp", ref["x"])
    last = f"layers/{model.layers[2].name}"
    with pytest.raises(InteropError, match=rf"not loaded: {last}/bias \(3,\)"):
        load_torch_state_dict(model, sd)
    report = load_torch_state_dict(model, sd, strict=False)
    assert sorted(p for p, _ in report.missing) == [f"{last}/bias", f"{last}/kernel"]


def test_a_file_that_is_not_safetensors_is_named(tmp_path):
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 4)
    model = built("mlp", np.ones((1, 6), np.float32))
    with pytest.raises(InteropError, match="weights.safetensors: not a safetensors file"):
        load_torch_state_dict(model, str(bad))


def test_unbuilt_model_is_a_clear_error():
    with pytest.raises(InteropError, match="no variables yet"):
        load_torch_state_dict(jmod.Sequential([layers.Dense(3)]), {"0.weight": np.ones((3, 2))})


def test_mapping_pairs_modules_the_order_gets_wrong():
    # The port lists head before body: the Linear(6, 16) goes to "body" by name.
    class Port(jmod.Module):
        def __init__(self):
            super().__init__()
            self.head = layers.Dense(3)
            self.body = layers.Dense(16, activation="relu")

        def __call__(self, x):
            return self.head(self.body(x))

    rng = np.random.default_rng(0)
    sd = {
        "fc1.weight": rng.normal(size=(16, 6)),
        "fc1.bias": rng.normal(size=16),
        "fc2.weight": rng.normal(size=(3, 16)),
        "fc2.bias": rng.normal(size=3),
    }
    sd = {k: v.astype(np.float32) for k, v in sd.items()}
    model = Port()
    model(jnp.ones((1, 6)))
    with pytest.raises(InteropError, match="torch module 'fc1'.*jmod layer 'head'"):
        load_torch_state_dict(model, sd)
    load_torch_state_dict(model, sd, mapping={"fc1": "body", "fc2": "head"})
    x = rng.normal(size=(2, 6)).astype(np.float32)
    h = np.maximum(x @ sd["fc1.weight"].T + sd["fc1.bias"], 0)
    np.testing.assert_allclose(
        np.asarray(model(x)), h @ sd["fc2.weight"].T + sd["fc2.bias"], atol=1e-5
    )


# -- live, against an installed PyTorch ----------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer", "gru"])
def test_live_pt_file_and_module_load_and_match(name, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (not in CI)")
    script = torch_script()
    net = script.build(name, seed=3)
    x = script.inputs(name, np.random.default_rng(3))
    pt = tmp_path / f"{name}.pt"
    torch.save(net.state_dict(), pt)
    net.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    model = built(name, to_jmod_layout(name, x))
    for source in (str(pt), net, net.state_dict()):
        for var in model.variables:
            var.assign(jnp.zeros_like(var.value))
        load_torch_state_dict(model, source)
        got = np.asarray(forward(model, jnp.asarray(to_jmod_layout(name, x))))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_live_module_with_other_eps_is_warned_about():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (not in CI)")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4, eps=1e-5))
    model = jmod.Sequential([jmod.Input(shape=[3]), layers.Dense(4), layers.LayerNormalization()])
    with pytest.warns(UserWarning, match=r"torch module '1' has eps=1e-05.*epsilon=0.001"):
        report = load_torch_state_dict(model, net)
    assert len(report.notes) == 1


def test_live_pt_file_holding_a_pickled_object_is_refused(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (not in CI)")
    bad = tmp_path / "model.pt"
    torch.save({"net": torch.nn.Linear(2, 2)}, bad)  # a whole module: needs full unpickling
    with pytest.raises(InteropError, match="model.pt: not a PyTorch weights file"):
        load_torch_state_dict(built("mlp", np.ones((1, 6), np.float32)), str(bad))
