"""`.safetensors` files in and out, keyed by jmod variable paths, without torch.

The format is a JSON header (name -> dtype, shape, byte range) and raw
little-endian bytes: nothing in it can run code. Reading goes through the
`safetensors` package's NumPy API, one tensor at a time from a memory map,
so loading a model never holds a second copy of the whole file.
"""

import json
import os
import struct
from collections import OrderedDict

import numpy as np

from jmod.errors import InteropError
from jmod.interop import matching


def _lib():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise InteropError(
            "reading and writing .safetensors needs the safetensors package "
            "(pip install 'jmod[interop]')"
        ) from None
    return safetensors


def _open(path):
    st = _lib()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InteropError(f"{path}: no such file")
    try:
        return st.safe_open(path, framework="numpy")
    except Exception as e:
        raise InteropError(f"{path}: not a safetensors file ({e})") from None


def read_tensors(path):
    """All tensors of a `.safetensors` file as an ordered `{name: numpy array}`.

    Tensors come in the file's byte order (the safetensors writers order by
    dtype, then name: the order a model listed them in is not kept).

    Example:
        >>> import safetensors.numpy, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> safetensors.numpy.save_file({"b": np.zeros(2), "a": np.ones(3)}, p)
        >>> {k: v.shape for k, v in jmod.interop.safetensors.read_tensors(p).items()}
        {'a': (3,), 'b': (2,)}
    """
    with _open(path) as f:
        keys = _write_order(path, f.keys())
        try:
            return OrderedDict((k, f.get_tensor(k)) for k in keys)
        except Exception as e:
            raise InteropError(f"{path}: damaged safetensors file ({e})") from None


def _write_order(path, keys):
    """`keys` in the order their bytes lie in the file (the library lists them by name)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sorted(keys, key=lambda k: header[k]["data_offsets"][0])


def save_safetensors(model, path, metadata=None):
    """Writes every variable of `model` to a `.safetensors` file, keyed by its path.

    Example:
        >>> import tempfile, os
        >>> model = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2)])
        >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> p = jmod.interop.save_safetensors(model, p)
        >>> sorted(jmod.interop.safetensors.read_tensors(p))
        ['layers/dense/bias', 'layers/dense/kernel']

    Args:
        model: any jmod module.
        path: the file to write (replaced atomically if it exists).
        metadata: an optional `{str: str}` stored in the header.

    Returns:
        `path`.
    """
    st = _lib()
    path = os.fspath(path)
    tensors = {p: np.ascontiguousarray(np.asarray(v.value)) for p, v in model.named_variables()}
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InteropError(f"metadata must map str to str, got {metadata!r}")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        st.numpy.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_safetensors(model, path, mapping=None, strict=True):
    """Loads a `.safetensors` file into `model`, matching tensor names to variable paths.

    Files written by `save_safetensors` load as they are; for other names,
    `mapping=` renames each tensor to a variable path. A file of PyTorch
    weights (`features.0.weight`, ...) loads by structure with
    `jmod.interop.load_torch_state_dict(model, path)` instead. Every shape is
    checked before anything is assigned; floating-point tensors are cast to
    the variables' dtypes.

    Example:
        >>> import tempfile, os
        >>> a = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2, name="fc")])
        >>> p = jmod.interop.save_safetensors(a, os.path.join(tempfile.mkdtemp(), "a.safetensors"))
        >>> b = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2, name="fc")])
        >>> report = jmod.interop.load_safetensors(b, p)
        >>> bool((a.layers[0].kernel.value == b.layers[0].kernel.value).all())
        True

    Args:
        model: a built jmod module.
        path: the `.safetensors` file.
        mapping: a callable `tensor name -> variable path` (None skips the
            tensor), or `{regex: replacement}` over the names.
        strict: raise if any tensor or variable is left unmatched (otherwise
            the returned report lists them).

    Returns:
        A `LoadReport`.
    """
    path = os.fspath(path)
    named = dict(model.named_variables())
    if not named:
        raise InteropError(
            f"model {model.name!r} has no variables yet: call it once on an example input "
            "before loading weights into it"
        )
    report = matching.LoadReport(os.path.basename(path))
    pending, loaded = [], set()
    with _open(path) as f:
        for key in _write_order(path, f.keys()):
            target = matching.rename(mapping, key)
            shape = tuple(f.get_slice(key).get_shape())
            if target is None:
                report.ignored.append(key)
                continue
            var = named.get(target)
            if var is None:
                report.unused.append((key, shape))
                continue
            if shape != tuple(var.shape):
                raise InteropError(
                    f"{path}: tensor {key!r} has shape {matching.shape_str(shape)}, the "
                    f"variable {target} is {matching.shape_str(var.shape)}"
                )
            try:
                array = f.get_tensor(key)
            except Exception as e:
                raise InteropError(f"{path}: damaged safetensors file at {key!r} ({e})") from None
            pending.append((var, matching.to_value(array, var, target, path)))
            loaded.add(target)
            how = "" if key == target else "renamed"
            report.matched.append((key, target, shape, how))
    report.missing = [(p, tuple(v.shape)) for p, v in named.items() if p not in loaded]
    if strict and report.unused and not report.matched:
        raise InteropError(
            f"{path}: no tensor name is a variable path of {model.name!r} (file has "
            f"{[k for k, _ in report.unused[:3]]}..., the model {list(named)[:3]}...). "
            "For PyTorch weights use jmod.interop.load_torch_state_dict(model, path); "
            "otherwise rename with mapping="
        )
    report.check(strict)
    matching.assign_all(pending)
    return report
