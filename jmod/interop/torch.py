"""PyTorch `state_dict`s into jmod models, matched by structure in module order.

A `state_dict` lists tensors module by module in the order the modules were
assigned (`features.0.weight`, `features.0.bias`, `features.1.weight`, ...).
The model's weight-owning layers are walked in the same order (attribute
assignment order, `Sequential` order) and paired one to one; each pair is
converted by the rule for the jmod layer's type:

    Linear                -> Dense                kernel = weight.T
    Conv1d / Conv2d       -> Conv1D / Conv2D      OIW/OIHW -> WIO/HWIO (groups kept)
    BatchNorm1d / 2d      -> BatchNormalization   running_mean/var -> moving_mean/variance
    LayerNorm             -> LayerNormalization   weight, bias -> gamma, beta
    Embedding             -> Embedding            weight -> embeddings
    MultiheadAttention    -> MultiHeadAttention   packed in_proj -> query/key/value (E, heads, dim)
    LSTM / GRU (1 layer)  -> LSTM / GRU           weight_ih/hh.T; GRU gates (r, z, n) -> (z, r, n)

The pure part (`group_state_dict`, `convert_group`) works on NumPy arrays and
needs no torch; only reading a `.pt`/`.pth` file imports it.
"""

import os
import re
import warnings
from collections import OrderedDict

import numpy as np

from jmod.errors import InteropError
from jmod.interop import matching
from jmod.layers.attention import MultiHeadAttention
from jmod.layers.conv import Conv1D, Conv2D
from jmod.layers.dense import Dense
from jmod.layers.embedding import Embedding
from jmod.layers.normalization import BatchNormalization, LayerNormalization

# Tensors PyTorch keeps that have no jmod counterpart and carry no weights.
_IGNORED = ("num_batches_tracked",)


def _describe(prefix, tensors):
    shapes = ", ".join(f"{k} {matching.shape_str(v.shape)}" for k, v in tensors.items())
    return f"torch module '{prefix}' ({shapes})"


def group_state_dict(state_dict):
    """Splits a flat `state_dict` into `(module prefix, {name: array})` groups, in order.

    A `MultiheadAttention`'s `out_proj` submodule joins its parent's group, so
    one group is one layer on the jmod side.

    Example:
        >>> sd = {"0.weight": np.ones((2, 3)), "0.bias": np.ones(2), "2.weight": np.ones((1, 2))}
        >>> [(p, list(t)) for p, t in jmod.interop.torch.group_state_dict(sd)]
        [('0', ['weight', 'bias']), ('2', ['weight'])]
    """
    groups = OrderedDict()
    for key, value in state_dict.items():
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix, OrderedDict())[name] = value
    merged = []
    for prefix, tensors in groups.items():
        parent, _, last = prefix.rpartition(".")
        if last == "out_proj" and merged and merged[-1][0] == parent:
            head = merged[-1][1]
            if "in_proj_weight" in head or "q_proj_weight" in head:
                for name, value in tensors.items():
                    head[f"out_proj.{name}"] = value
                continue
        merged.append((prefix, tensors))
    return merged


class _Mismatch(Exception):
    """A torch group does not fit a jmod layer; the message says what was expected."""


def _expect(tensors, required, optional=()):
    names = set(tensors) - set(_IGNORED)
    if not set(required) <= names or not names <= set(required) | set(optional):
        want = ", ".join(required)
        if optional:
            want += f" (and optionally {', '.join(optional)})"
        raise _Mismatch(f"expected tensors {want}")


def _linear(layer, t):
    _expect(t, ["weight", "bias"] if layer.use_bias else ["weight"])
    out = {"kernel": (t["weight"].T, "transposed (out, in) -> (in, out)")}
    if layer.use_bias:
        out["bias"] = (t["bias"], "")
    return out


def _conv(layer, t):
    _expect(t, ["weight", "bias"] if layer.use_bias else ["weight"])
    w = t["weight"]
    if w.ndim != layer.rank + 2:
        raise _Mismatch(f"expected a {layer.rank}-D convolution weight, got {w.ndim - 2}-D")
    # (out, in / groups, *window) -> (*window, in / groups, out)
    axes = (*range(2, w.ndim), 1, 0)
    how = "OIW -> WIO" if layer.rank == 1 else "OIHW -> HWIO"
    out = {"kernel": (np.transpose(w, axes), how)}
    if layer.use_bias:
        out["bias"] = (t["bias"], "")
    return out


def _affine(layer, t, extra=()):
    names = (["weight"] if layer.scale else []) + (["bias"] if layer.center else [])
    _expect(t, names + list(extra))
    out = {}
    if layer.scale:
        out["gamma"] = (t["weight"], "weight -> gamma")
    if layer.center:
        out["beta"] = (t["bias"], "bias -> beta")
    return out


def _batch_norm(layer, t):
    out = _affine(layer, t, ["running_mean", "running_var"])
    out["moving_mean"] = (t["running_mean"], "running_mean -> moving_mean")
    out["moving_variance"] = (t["running_var"], "running_var -> moving_variance")
    return out


def _embedding(layer, t):
    _expect(t, ["weight"])
    return {"embeddings": (t["weight"], "")}


def _attention(layer, t):
    h, dk, dv = layer.num_heads, layer.key_dim, layer.value_dim
    bias = ["in_proj_bias", "out_proj.bias"] if layer.use_bias else []
    if "in_proj_weight" in t:
        _expect(t, ["in_proj_weight", "out_proj.weight", *bias])
        wq, wk, wv = np.split(t["in_proj_weight"], 3, axis=0)
    else:
        _expect(t, ["q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight", *bias])
        wq, wk, wv = t["q_proj_weight"], t["k_proj_weight"], t["v_proj_weight"]
    embed = t["out_proj.weight"].shape[0]
    if wq.shape[0] != h * dk or wv.shape[0] != h * dv:
        raise _Mismatch(
            f"expected {h} heads of key_dim {dk} and value_dim {dv} (embed_dim {h * dk}), "
            f"the torch projections have {wq.shape[0]} outputs"
        )
    # torch: q = x @ Wq.T, then split into heads head-major: (E_out,) -> (heads, dim).
    out = {
        "query_kernel": (wq.T.reshape(-1, h, dk), "in_proj rows [0:E] transposed, (E, heads, dim)"),
        "key_kernel": (wk.T.reshape(-1, h, dk), "in_proj rows [E:2E] transposed"),
        "value_kernel": (wv.T.reshape(-1, h, dv), "in_proj rows [2E:3E] transposed"),
        "output_kernel": (
            t["out_proj.weight"].T.reshape(h, dv, embed),
            "out_proj.weight transposed to (heads, dim, E)",
        ),
    }
    if layer.use_bias:
        bq, bk, bv = np.split(t["in_proj_bias"], [h * dk, 2 * h * dk])
        out["query_bias"] = (bq.reshape(h, dk), "in_proj_bias [0:E]")
        out["key_bias"] = (bk.reshape(h, dk), "in_proj_bias [E:2E]")
        out["value_bias"] = (bv.reshape(h, dv), "in_proj_bias [2E:3E]")
        out["output_bias"] = (t["out_proj.bias"], "")
    return out


def _recurrent(layer, t, gates):
    """LSTM / GRU, one layer, one direction: `weight_ih_l0` ... into the cell's weights."""
    cell = layer.cell
    bias = ["bias_ih_l0", "bias_hh_l0"] if cell.use_bias else []
    _expect(t, ["weight_ih_l0", "weight_hh_l0", *bias])
    w_ih, w_hh = t["weight_ih_l0"], t["weight_hh_l0"]
    if gates == "GRU":
        # PyTorch orders the GRU gates reset, update, new; Keras and jmod update, reset, new.
        def order(w):
            r, z, n = np.split(w, 3, axis=0)
            return np.concatenate([z, r, n], axis=0)

        how = "gates (r, z, n) -> (z, r, n), transposed"
    else:
        # Both frameworks order the LSTM gates input, forget, cell, output.
        def order(w):
            return w

        how = "transposed"
    out = {
        "cell/kernel": (order(w_ih).T, how),
        "cell/recurrent_kernel": (order(w_hh).T, how),
    }
    if cell.use_bias:
        b_ih, b_hh = order(t["bias_ih_l0"]), order(t["bias_hh_l0"])
        if gates == "GRU" and getattr(cell, "reset_after", False):
            out["cell/bias"] = (np.stack([b_ih, b_hh]), "(bias_ih, bias_hh) stacked")
        elif gates == "GRU":
            raise _Mismatch(
                "a PyTorch GRU applies the reset gate after the recurrent product: "
                "build the jmod GRU with reset_after=True"
            )
        else:
            out["cell/bias"] = (b_ih + b_hh, "bias_ih + bias_hh")
    return out


_RULES = [
    (Dense, _linear, "Linear"),
    ((Conv1D, Conv2D), _conv, "Conv"),
    (BatchNormalization, _batch_norm, "BatchNorm"),
    (LayerNormalization, _affine, "LayerNorm"),
    (Embedding, _embedding, "Embedding"),
    (MultiHeadAttention, _attention, "MultiheadAttention"),
]
try:  # recurrent layers joined jmod.layers later; keep the import soft
    from jmod.layers.recurrent import GRU, LSTM

    _RULES += [
        (LSTM, lambda layer, t: _recurrent(layer, t, "LSTM"), "LSTM"),
        (GRU, lambda layer, t: _recurrent(layer, t, "GRU"), "GRU"),
    ]
except ImportError:
    pass


def torch_kinds(tensors):
    """The PyTorch module types a group of tensors can come from, by names and ranks.

    Example:
        >>> sorted(jmod.interop.torch.torch_kinds({"weight": np.ones((4, 3))}))   # no bias: either
        ['Embedding', 'Linear']
        >>> jmod.interop.torch.torch_kinds({"weight": np.ones((4, 3, 3, 3)), "bias": np.ones(4)})
        {'Conv'}
    """
    names = set(tensors) - set(_IGNORED)
    if "in_proj_weight" in names or "q_proj_weight" in names:
        return {"MultiheadAttention"}
    if "running_mean" in names:
        return {"BatchNorm"}
    if "weight_ih_l0" in names:
        hh = tensors.get("weight_hh_l0")
        gates = hh.shape[0] // hh.shape[1] if hh is not None and hh.ndim == 2 else 0
        return {4: {"LSTM"}, 3: {"GRU"}}.get(gates, set())
    weight = tensors.get("weight")
    if weight is None or not names <= {"weight", "bias"}:
        return set()
    if weight.ndim in (3, 4):
        return {"Conv"}
    if weight.ndim == 2:
        return {"Linear"} if "bias" in names else {"Linear", "Embedding"}
    if weight.ndim == 1:
        return {"LayerNorm"}
    return set()


def _rule(layer):
    for cls, fn, torch_name in _RULES:
        if isinstance(layer, cls):
            return fn, torch_name
    return None


def is_leaf(module):
    """Whether jmod knows how to fill `module` from one PyTorch module."""
    return _rule(module) is not None


def convert_group(unit, prefix, tensors, source):
    """`[(torch key, model path, Variable, array, how)]` for one torch module into one jmod layer.

    Raises InteropError naming both sides, their tensors and shapes, when the
    module does not fit the layer.
    """
    fn, torch_name = _rule(unit.layer)
    key = lambda n: f"{prefix}.{n}" if prefix else n
    try:
        converted = fn(unit.layer, tensors)
        for name, (array, _) in converted.items():
            if name not in unit.variables:
                raise _Mismatch(f"the jmod layer has no variable {name!r}")
            var = unit.variables[name][1]
            if tuple(array.shape) != tuple(var.shape):
                raise _Mismatch(
                    f"{name} would get shape {matching.shape_str(array.shape)}, the variable is "
                    f"{matching.shape_str(var.shape)}"
                )
    except _Mismatch as e:
        raise InteropError(
            f"{source}: {_describe(prefix, tensors)} does not fit {unit.describe()}: {e}; "
            f"a {type(unit.layer).__name__} takes a torch {torch_name}. If the two models list "
            "their layers in different orders, pair them with mapping="
        ) from None
    sources = {
        "query_kernel": "in_proj_weight",
        "key_kernel": "in_proj_weight",
        "value_kernel": "in_proj_weight",
        "query_bias": "in_proj_bias",
        "key_bias": "in_proj_bias",
        "value_bias": "in_proj_bias",
        "output_kernel": "out_proj.weight",
        "output_bias": "out_proj.bias",
        "kernel": "weight",
        "bias": "bias",
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
        "embeddings": "weight",
        "cell/kernel": "weight_ih_l0",
        "cell/recurrent_kernel": "weight_hh_l0",
        "cell/bias": "bias_ih_l0",
    }
    out = []
    for name, (array, how) in converted.items():
        path, var = unit.variables[name]
        src = sources.get(name, name)
        if src == "in_proj_weight" and "in_proj_weight" not in tensors:
            src = name[0] + "_proj_weight"
        out.append((key(src), path, var, array, how))
    return out


def _natural(key):
    # "features.10.weight" after "features.2.weight", as PyTorch registered them.
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"\.", key)]


def _read_state_dict(state_dict_or_path):
    """`(name, {key: numpy array})` from a dict, a `.safetensors` file or a torch file."""
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        path = os.fspath(state_dict_or_path)
        if path.endswith(".safetensors"):
            from jmod.interop.safetensors import read_tensors

            # safetensors.torch writes tensors sorted by dtype and name, so the
            # module order is lost; numbered siblings come back in natural order.
            tensors = read_tensors(path)
            return path, OrderedDict((k, tensors[k]) for k in sorted(tensors, key=_natural))
        return path, _read_torch_file(path)
    if hasattr(state_dict_or_path, "state_dict") and callable(state_dict_or_path.state_dict):
        state_dict_or_path = state_dict_or_path.state_dict()
    if not hasattr(state_dict_or_path, "items"):
        raise InteropError(
            "load_torch_state_dict takes a state_dict (a dict of tensors), a torch module, or "
            f"the path of a .pt/.pth/.safetensors file; got {type(state_dict_or_path).__name__}"
        )
    return "<state_dict>", OrderedDict(
        (k, _to_numpy(v, k, "<state_dict>")) for k, v in state_dict_or_path.items()
    )


def _settings(obj):
    """`{module prefix: eps}` of a torch module's normalization layers (a state_dict has none)."""
    if not hasattr(obj, "named_modules"):
        return {}
    return {
        name: float(m.eps)
        for name, m in obj.named_modules()
        if isinstance(getattr(m, "eps", None), float)
    }


def _to_numpy(value, key, source):
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            import ml_dtypes

            return value.view(dtype=_torch().int16).numpy().view(ml_dtypes.bfloat16)
        return value.numpy()
    try:
        return np.asarray(value)
    except Exception as e:
        raise InteropError(f"{source}: {key} is not a tensor ({type(value).__name__})") from e


def _torch():
    try:
        import torch
    except ImportError:
        raise InteropError(
            "reading a .pt/.pth file needs PyTorch installed (pip install torch); without it, "
            "save the state_dict as .safetensors and load that instead"
        ) from None
    return torch


def _read_torch_file(path):
    torch = _torch()
    if not os.path.exists(path):
        raise InteropError(f"{path}: no such file")
    try:
        # weights_only=True: PyTorch's restricted unpickler, which builds tensors
        # and plain containers only and never runs code named by the file.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InteropError(
            f"{path}: not a PyTorch weights file that loads with weights_only=True ({e})"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise InteropError(f"{path}: holds a {type(loaded).__name__}, not a state_dict")
    return OrderedDict((k, _to_numpy(v, k, path)) for k, v in loaded.items())


def load_torch_state_dict(model, state_dict_or_path, mapping=None, strict=True):
    """Loads a PyTorch `state_dict` into a jmod model with the same structure.

    Modules are paired with the model's layers by structure, in module order
    (see this module's docstring for the conversion of each layer type), not
    by name, so a jmod port of a PyTorch model loads without renaming. The
    model must be built (called once) first; nothing is assigned unless every
    pair fits.

    Example:
        >>> model = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2)])
        >>> sd = {"0.weight": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), "0.bias": np.zeros(2)}
        >>> report = jmod.interop.load_torch_state_dict(model, sd)
        >>> model.layers[0].kernel.value.tolist()     # the transposed torch weight
        [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
        >>> report.consumed
        True

    Args:
        model: a built jmod model or module.
        state_dict_or_path: a `state_dict` (a dict of torch tensors or NumPy
            arrays), a `torch.nn.Module` (then a normalization layer whose
            `eps` differs from the jmod layer's `epsilon` is warned about and
            noted in the report), or the path of a `.safetensors` file
            (read without torch) or a `.pt`/`.pth` file (read with an
            installed torch, `weights_only=True`).
        mapping: pairs modules by name where the orders differ: a callable
            `torch module prefix -> jmod layer path` (None skips the module),
            or `{regex: replacement}` over the prefixes. Modules it sends to a
            layer path are paired with that layer; the rest pair in order.
        strict: raise if any tensor or model variable is left unmatched
            (otherwise the returned report lists them).

    Returns:
        A `LoadReport` of what matched and what was left over.
    """
    settings = _settings(state_dict_or_path)
    source, state = _read_state_dict(state_dict_or_path)
    groups = group_state_dict(state)
    units, stray = matching.layer_units(model, is_leaf)
    report = matching.LoadReport(os.path.basename(source) if source != "<state_dict>" else source)

    by_path = {matching.layer_prefix(u): u for u in units}
    by_path.update({u.path: u for u in units})
    pairs, free_groups, taken = [], [], set()
    for prefix, tensors in groups:
        if mapping is not None:
            target = matching.rename(mapping, prefix)
            if target is None:
                report.ignored += [f"{prefix}.{n}" if prefix else n for n in tensors]
                continue
            if target != prefix or target in by_path:
                unit = by_path.get(target)
                if unit is None:
                    raise InteropError(
                        f"{source}: mapping= sends torch module '{prefix}' to {target!r}, which "
                        f"is no layer of the model; layers: {sorted({u.path for u in units})}"
                    )
                pairs.append((prefix, tensors, unit))
                taken.add(id(unit))
                continue
        free_groups.append((prefix, tensors))
    # Each layer takes the first free torch module of its kind, in order: the
    # i-th Linear pairs with the i-th Dense, whatever sits between them.
    free_units = [u for u in units if id(u) not in taken]
    unpaired_units = []
    for unit in free_units:
        kind = _rule(unit.layer)[1]
        index = next((i for i, (_, t) in enumerate(free_groups) if kind in torch_kinds(t)), None)
        if index is None:
            unpaired_units.append(unit)
            continue
        prefix, tensors = free_groups.pop(index)
        pairs.append((prefix, tensors, unit))

    pending = []
    for prefix, tensors, unit in pairs:
        for key, path, var, array, how in convert_group(unit, prefix, tensors, source):
            pending.append((var, matching.to_value(array, var, path, source)))
            report.matched.append((key, path, tuple(var.shape), how))
        report.ignored += [f"{prefix}.{name}" for name in tensors if name in _IGNORED]
        eps = settings.get(prefix)
        if eps is not None and hasattr(unit.layer, "epsilon"):
            if not np.isclose(eps, unit.layer.epsilon, rtol=1e-6, atol=0):
                report.notes.append(
                    f"torch module '{prefix}' has eps={eps:g}, jmod layer '{unit.path}' "
                    f"epsilon={unit.layer.epsilon:g}: outputs will differ (build the layer "
                    f"with epsilon={eps:g})"
                )
    for prefix, tensors in free_groups:
        report.unused += [
            (f"{prefix}.{k}" if prefix else k, tuple(v.shape)) for k, v in tensors.items()
        ]
    for unit in unpaired_units:
        report.missing += [(p, tuple(v.shape)) for p, v in unit.variables.values()]
    report.missing += [(p, tuple(v.shape)) for p, v in stray]
    report.check(strict)
    matching.assign_all(pending)
    for note in report.notes:
        warnings.warn(note, stacklevel=2)
    return report
