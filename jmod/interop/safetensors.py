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

import jax
import jax.numpy as jnp
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


_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}  # fmt: skip
_FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _header(path):
    """`{name: (dtype, shape, start, end)}` from the JSON header; byte ranges are absolute.

    Called after `_open`, whose library call has validated the header.
    """
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    base = 8 + n
    return {
        k: (v["dtype"], tuple(v["shape"]), base + v["data_offsets"][0], base + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__"
    }


def _read_into(path, header, pairs):
    """Reads each `(key, path, Variable, dtype)` tensor's bytes and assigns it, one at a time.

    The bytes go into a 64-byte-aligned buffer that `jax.device_put` takes on
    the CPU without a copy: one copy from the file, as a raw read makes (the
    library's `get_tensor` and then `jnp.asarray` would make two).
    """
    numpy_dtypes = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
    fd = os.open(path, os.O_RDONLY)
    try:
        for key, target, var, file_dtype in pairs:
            _, shape, start, end = header[key]
            raw = np.empty(end - start + 64, np.uint8)
            first = -raw.ctypes.data % 64
            buf = raw[first : first + end - start]
            view, offset = memoryview(buf), start
            while view:
                got = os.preadv(fd, [view], offset)
                if got == 0:
                    raise InteropError(f"{path}: damaged safetensors file: {key!r} is cut short")
                view, offset = view[got:], offset + got
            array = buf.view(jnp.dtype(numpy_dtypes[file_dtype]).newbyteorder("<")).reshape(shape)
            var.assign(jax.device_put(matching.to_value(array, var, target, path)))
    finally:
        os.close(fd)


def _write_order(path, keys):
    """`keys` in the order their bytes lie in the file (the library lists them by name)."""
    header = _header(path)
    return sorted(keys, key=lambda k: header[k][2])


def save_safetensors(model, path, metadata=None):
    """Writes every variable of `model` to a `.safetensors` file, keyed by its path.

    Example:
        >>> import tempfile, os
        >>> model = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2, name="fc")])
        >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> p = jmod.interop.save_safetensors(model, p)
        >>> sorted(jmod.interop.safetensors.read_tensors(p))
        ['layers/fc/bias', 'layers/fc/kernel']

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
    # Everything is checked from the header first; then each tensor is read,
    # cast and assigned on its own, so the model's old and new values never
    # coexist beyond one tensor (peak memory: one model plus one tensor).
    pairs, loaded = [], set()
    with _open(path) as f:  # the library validates the header and the byte ranges
        header = _header(path)
        for key in sorted(f.keys(), key=lambda k: header[k][2]):
            file_dtype, shape = header[key][:2]
            target = matching.rename(mapping, key)
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
            var_dtype = np.dtype(var.dtype)
            if file_dtype != _SAFETENSORS_DTYPES.get(var_dtype.name) and not (
                file_dtype in _FLOATS and np.issubdtype(var_dtype, np.inexact)
            ):
                raise InteropError(
                    f"{path}: tensor {key!r} is {file_dtype}, the variable {target} is "
                    f"{var_dtype.name}; only floating-point values are cast"
                )
            pairs.append((key, target, var, file_dtype))
            loaded.add(target)
            report.matched.append((key, target, shape, "" if key == target else "renamed"))
    report.missing = [(p, tuple(v.shape)) for p, v in named.items() if p not in loaded]
    if strict and report.unused and not report.matched:
        raise InteropError(
            f"{path}: no tensor name is a variable path of {model.name!r} (file has "
            f"{[k for k, _ in report.unused[:3]]}..., the model {list(named)[:3]}...). "
            "For PyTorch weights use jmod.interop.load_torch_state_dict(model, path); "
            "otherwise rename with mapping="
        )
    report.check(strict)
    _read_into(path, header, pairs)
    return report
