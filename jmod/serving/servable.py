"""`Servable`: one loaded version of a saved model, seen as TF Serving signatures.

Each saved function is a signature: `__call__` is `serving_default`, the
others keep their names. Its inputs are the array leaves of the saved
arguments (`x`, or `x/0`, `x/key` inside lists and dicts; Python values the
function was saved with are filled in), its outputs the array leaves of the
result (`output_0` for a single array, `output_i` for tuples and lists, the
keys of dicts). A function saved with several signatures runs the first
whose shapes fit the request; metadata shows the shape they share (-1 where
they differ, unknown rank where the rank does).
"""

import logging

import jax.numpy as jnp
import numpy as np

from jmod.saved_model import TensorSpec, load
from jmod.serving.errors import ServingError
from jmod.serving.json_tensor import tf_dtype

DEFAULT_SIGNATURE = "serving_default"
log = logging.getLogger("jmod.serving")


class TensorInfo:
    """An input or output of a signature: its dtype, and its shape (None dims: any size).

    `shape` is None when the rank itself varies between saved signatures.
    """

    __slots__ = ("dtype", "shape")

    def __init__(self, dtype, shape):
        self.dtype = jnp.dtype(dtype)
        self.shape = shape

    @classmethod
    def of(cls, spec):
        return cls(spec.dtype, tuple(d if isinstance(d, int) else None for d in spec.shape))

    def merged(self, other):
        if self.shape is None or other.shape is None or len(self.shape) != len(other.shape):
            return TensorInfo(self.dtype, None)
        dims = tuple(a if a == b else None for a, b in zip(self.shape, other.shape))
        return TensorInfo(self.dtype, dims)

    def to_json(self, name):
        """TF's TensorInfo as TF Serving prints it: dtype, `tensor_shape` (-1: any size), name."""
        dims = [] if self.shape is None else self.shape
        return {
            "dtype": tf_dtype(self.dtype),
            "tensor_shape": {
                "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in dims],
                "unknown_rank": self.shape is None,
            },
            "name": f"{name}:0",
        }


# -- argument and output trees -------------------------------------------------
def _input_leaves(tree, name):
    """[(input name, TensorSpec)] of an argument tree."""
    if isinstance(tree, TensorSpec):
        return [(name, tree)]
    if isinstance(tree, (list, tuple)):
        return [x for i, t in enumerate(tree) for x in _input_leaves(t, f"{name}/{i}")]
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _input_leaves(tree[k], f"{name}/{k}")]
    return []


def _fill(tree, name, arrays):
    """The argument tree with each TensorSpec replaced by the request's array of that name."""
    if isinstance(tree, TensorSpec):
        return arrays[name]
    if isinstance(tree, (list, tuple)):
        items = [_fill(t, f"{name}/{i}", arrays) for i, t in enumerate(tree)]
        return items if isinstance(tree, list) else tuple(items)
    if isinstance(tree, dict):
        return {k: _fill(v, f"{name}/{k}", arrays) for k, v in tree.items()}
    return tree


def _output_leaves(tree, name=None, path=()):
    """[(output name, path into the result, TensorSpec)] of an output tree."""
    if isinstance(tree, TensorSpec):
        return [(name or "output_0", path, tree)]
    if isinstance(tree, (list, tuple)):
        out = []
        for i, t in enumerate(tree):
            out += _output_leaves(t, f"{name}/{i}" if name else f"output_{i}", (*path, i))
        return out
    if isinstance(tree, dict):
        out = []
        for k in sorted(tree):
            out += _output_leaves(tree[k], f"{name}/{k}" if name else str(k), (*path, k))
        return out
    return []


class Candidate:
    """One saved signature of a served function: how request arrays become its call."""

    def __init__(self, function, signature):
        self.function = function
        self.arguments = signature.arguments
        self.inputs = {
            n: spec
            for a in sorted(self.arguments)
            for n, spec in _input_leaves(self.arguments[a], a)
        }
        self.outputs = _output_leaves(signature.outputs)
        self.stateful = bool(signature.assigns)
        lead = [s.shape[0] if s.shape else 0 for s in self.inputs.values()]
        lead += [s.shape[0] if s.shape else 0 for _, _, s in self.outputs]
        # Requests can share a call only if every input and output has a free batch axis.
        self.batchable = (
            not self.stateful and bool(self.inputs) and all(not isinstance(d, int) for d in lead)
        )

    def fits(self, arrays):
        """Why `arrays` do not fit this signature (a message), or None when they do."""
        if set(arrays) != set(self.inputs):
            return f"inputs {sorted(arrays)}, the signature takes {sorted(self.inputs)}"
        dims = {}
        for name, spec in self.inputs.items():
            shape = arrays[name].shape
            want = "[" + ", ".join("-1" if not isinstance(d, int) else str(d) for d in spec.shape)
            if len(shape) != len(spec.shape):
                return f"input {name}: shape {list(shape)}, expected {want}]"
            for d, n in zip(spec.shape, shape):
                if isinstance(d, int) and d != n:
                    return f"input {name}: shape {list(shape)}, expected {want}]"
                if isinstance(d, str) and d.isidentifier() and dims.setdefault(d, n) != n:
                    return f"input {name}: dimension {d!r} is {n} here and {dims[d]} elsewhere"
        return None

    def run(self, arrays):
        """Calls the saved function on the request's arrays; {output name: NumPy array}."""
        kwargs = {a: _fill(t, a, arrays) for a, t in self.arguments.items()}
        result = self.function(**kwargs)
        out = {}
        for name, path, _ in self.outputs:
            value = result
            for key in path:
                value = value[key]
            out[name] = value
        return {name: np.asarray(value) for name, value in out.items()}


class Signature:
    """A served function: its candidates (saved signatures) and the TensorInfo they share."""

    def __init__(self, name, function):
        self.name = name
        self.candidates = [Candidate(function, s) for s in function.signatures]
        self.inputs, self.outputs = {}, {}
        for c in self.candidates:
            for n, spec in c.inputs.items():
                info = TensorInfo.of(spec)
                self.inputs[n] = self.inputs[n].merged(info) if n in self.inputs else info
            for n, _, spec in c.outputs:
                info = TensorInfo.of(spec)
                self.outputs[n] = self.outputs[n].merged(info) if n in self.outputs else info
        # Names in the order of the first signature that has them.
        self.input_dtypes = {n: info.dtype for n, info in self.inputs.items()}

    def match(self, arrays):
        """The first candidate the arrays fit; a 400 `ServingError` saying why none does."""
        reasons = []
        for c in self.candidates:
            reason = c.fits(arrays)
            if reason is None:
                return c
            reasons.append(reason)
        if len(reasons) == 1:
            raise ServingError(f"signature {self.name!r}: {reasons[0]}")
        listed = "; ".join(f"signature {i}: {r}" for i, r in enumerate(reasons))
        raise ServingError(f"signature {self.name!r}: no saved signature fits ({listed})")

    def def_json(self):
        return {
            "inputs": {n: info.to_json(f"{self.name}_{n}") for n, info in self.inputs.items()},
            "outputs": {n: info.to_json(f"{self.name}_{n}") for n, info in self.outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }


class Servable:
    """One version of a model, loaded: its signatures by TF Serving name.

    Example:
        >>> import tempfile, os
        >>> from jmod.serving.servable import Servable
        >>> class Half(jmod.Module):
        ...     @jmod.jit
        ...     def __call__(self, x):
        ...         return 0.5 * x + 2.0
        >>> m = Half()
        >>> base = tempfile.mkdtemp()
        >>> _ = jmod.saved_model.save(m, os.path.join(base, "1"),
        ...     signatures={"__call__": (m.__call__, [jmod.TensorSpec([None])])})
        >>> servable = Servable.load("half", 1, os.path.join(base, "1"))
        >>> sig = servable.signature("")
        >>> sig.match({"x": np.ones(3, np.float32)}).run({"x": np.ones(3, np.float32)})
        {'output_0': array([2.5, 2.5, 2.5], dtype=float32)}
    """

    def __init__(self, name, version, path, loaded):
        self.name = name
        self.version = version
        self.path = path
        self.loaded = loaded
        functions = loaded.functions
        self.signatures = {}
        for fname, fn in functions.items():
            key = fname
            if fname == "__call__" and DEFAULT_SIGNATURE not in functions:
                key = DEFAULT_SIGNATURE
            self.signatures[key] = Signature(key, fn)

    @classmethod
    def load(cls, name, version, path, warmup_sizes=(1,)):
        """Loads the saved model at `path` and runs each signature once per warm-up batch size."""
        servable = cls(name, version, path, load(path))
        servable.warmup(warmup_sizes)
        return servable

    def warmup(self, sizes):
        """Compiles each stateless signature for the given batch sizes, so requests do not wait."""
        for sig in self.signatures.values():
            for c in sig.candidates:
                if c.stateful or not c.inputs:
                    continue
                for size in sizes if c.batchable else (1,):
                    arrays = {
                        n: np.zeros([d if isinstance(d, int) else size for d in s.shape], s.dtype)
                        for n, s in c.inputs.items()
                    }
                    try:
                        c.run(arrays)
                    except Exception as e:  # a shape the function refuses; requests will tell
                        log.warning(
                            "warm-up of %s version %s signature %r with batch %s failed: %s",
                            self.name,
                            self.version,
                            sig.name,
                            size,
                            e,
                        )
                        break

    def signature(self, name):
        """The signature of a request's `signature_name` ("" or absent: serving_default)."""
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise ServingError(
                f'Serving signature name: "{key}" not found in signature def '
                f"(signatures: {', '.join(self.signatures)})"
            )
        return sig

    def metadata_json(self):
        """TF Serving's GetModelMetadataResponse for this version."""
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {
                "signature_def": {
                    "signature_def": {n: s.def_json() for n, s in self.signatures.items()}
                }
            },
        }
