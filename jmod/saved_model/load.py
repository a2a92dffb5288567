"""`load`: a saved model as a module whose methods run the saved functions.

No class of the saving program is imported or needed: the functions are
`jax.export` artifacts, the variables a checkpoint, the rest JSON.
"""

import os

import jax

from jmod.checkpoint import _format as _format_ckpt
from jmod.checkpoint import _read as _read_ckpt
from jmod.errors import CheckpointError
from jmod.module import Module
from jmod.saved_model import _format
from jmod.saved_model.errors import PlatformError, SavedModelError, SavedModelNotFoundError
from jmod.saved_model.spec import (
    Mismatch,
    bind,
    flatten_call,
    from_json,
    short_tree,
    signature_error,
    tensor_specs,
)
from jmod.variables import Variable


def load(directory):
    """Loads a saved model written by `jmod.saved_model.save`, without the module's class.

    The result is a `LoadedModule`: calling it (or `loaded.<function>`) runs
    the saved function whose signature matches the arguments on the saved
    variables, which are ordinary `jmod.Variable`s (train them, checkpoint
    them, `save` the model again). A call that matches no saved signature
    raises `jmod.SignatureError` listing them.

    Example:
        >>> import tempfile
        >>> class Double(jmod.Module):
        ...     @jmod.jit
        ...     def __call__(self, x):
        ...         return 2 * x
        >>> m = Double()
        >>> _ = m(jnp.ones(2))
        >>> path = jmod.saved_model.save(m, tempfile.mkdtemp() + "/double")
        >>> loaded = jmod.saved_model.load(path)
        >>> loaded(jnp.ones(2)).tolist()
        [2.0, 2.0]
        >>> loaded(jnp.ones(3))
        Traceback (most recent call last):
        ...
        jmod.errors.SignatureError: ...

    Raises:
        SavedModelNotFoundError: the directory or one of its files is missing.
        SavedModelError: it is not a saved model, was modified after saving
            (fingerprint), or was written by a newer jmod format.
        PlatformError: it was exported only for other platforms.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise SavedModelError(f"{directory}: not a saved model directory (a file)")
        raise SavedModelNotFoundError(f"{directory}: no saved model directory there")
    metadata = _format.decode_metadata(
        _format.read_file(directory, _format.METADATA, _format.MAX_JSON_BYTES),
        os.path.join(directory, _format.METADATA),
    )
    functions = metadata["functions"]
    files = [s["file"] for f in functions.values() for s in f["signatures"]]
    _format.verify(
        directory,
        _format.read_file(directory, _format.FINGERPRINT, _format.MAX_JSON_BYTES),
        [_format.METADATA, _format.VARIABLES + ".index", *files],
    )
    platform = jax.export.default_export_platform()
    if platform not in metadata["platforms"]:
        raise PlatformError(
            f"{directory}: exported for {', '.join(metadata['platforms'])} only; this process "
            f"runs on {platform}. Save it with platforms=[..., {platform!r}]"
        )
    artifacts = {rel: _format.read_file(directory, rel) for rel in files}
    variables = read_variables(os.path.join(directory, _format.VARIABLES), metadata["variables"])
    try:
        return LoadedModule(directory, metadata, variables, artifacts)
    except SavedModelError as e:  # a function record or artifact: name the directory
        raise SavedModelError(f"{directory}: {e}") from None
    except Exception as e:  # what validation did not foresee still names the directory
        raise SavedModelError(f"{directory}: cannot load: {type(e).__name__}: {e}") from e


def read_variables(prefix, records):
    """The variables of the checkpoint `prefix` as {path: Variable}, described by `records`.

    Every record is checked against the checkpoint's index (key, shape and
    dtype) before anything is read, and the checkpoint reader checks each
    value's bytes lie inside its data file before allocating it: a record or
    an index claiming a huge value fails without allocating it.
    """
    try:
        index = _format_ckpt.read_index(prefix)
    except CheckpointError as e:
        raise SavedModelError(f"{os.path.dirname(prefix)}: variables: {e}") from None
    filename = _format_ckpt.index_path(prefix)
    keys = {}
    for r in records:
        key = f"{_format.CHECKPOINT_ROOT}/{r['path']}"
        entry = index.entries.get(key)
        want = f"{r['dtype']}{list(r['shape'])}"
        if entry is None or (entry.dtype, list(entry.shape)) != (r["dtype"], list(r["shape"])):
            got = "nothing" if entry is None else f"{entry.dtype}{list(entry.shape)}"
            raise SavedModelError(
                f"{filename}: variable {r['path']}: saved_model.json says {want}, "
                f"the checkpoint holds {got}"
            )
        keys[key] = r
    extra = sorted(set(index.entries) - set(keys) - {"save_counter"})
    if extra:
        raise SavedModelError(
            f"{filename}: holds values saved_model.json does not list: {', '.join(extra[:10])}"
        )
    variables = {}
    try:
        for key, value in _read_ckpt.iter_arrays(prefix, index, list(keys)):
            r = keys[key]
            variables[r["path"]] = Variable(value, trainable=r["trainable"], name=r.get("name"))
    except CheckpointError as e:
        raise SavedModelError(f"{os.path.dirname(prefix)}: variables: {e}") from None
    return {r["path"]: variables[r["path"]] for r in records}


def _attach(module, entries):
    """Sets nested attributes so the walk gives back the saved paths (`dense_1/w`)."""
    groups = {}
    for path, var in entries:
        head, _, rest = path.partition("/")
        groups.setdefault(head, []).append((rest, var))
    for head, items in groups.items():
        setattr(module, head, _node(head, items))


def _node(name, items):
    if len(items) == 1 and items[0][0] == "":
        return items[0][1]
    heads = {rest.partition("/")[0] for rest, _ in items}
    if heads == {str(i) for i in range(len(heads))}:
        # Keyed 0..n-1: a list, as the saved module most likely had.
        groups = {}
        for rest, var in items:
            head, _, tail = rest.partition("/")
            groups.setdefault(int(head), []).append((tail, var))
        return [_node(str(i), groups[i]) for i in range(len(groups))]
    node = Module(name=name)
    _attach(node, items)
    return node


class SavedSignature:
    """One saved input signature of a loaded function, and its `jax.export` artifact.

    `arguments` maps argument names to `TensorSpec` trees (Python values where
    the function was traced with one); `outputs` is the output tree; `state`
    lists the variable paths it reads, `assigns` those it writes.
    """

    def __init__(self, record, data, variables=None):
        self.arguments = {name: from_json(tree) for name, tree in record["arguments"].items()}
        self.outputs = from_json(record["outputs"])
        self.state = list(record["state"])
        self.assigns = list(record["assigns"])
        self.file = record["file"]
        state = [variables[p] for p in self.state] if variables is not None else None
        self.exported = _deserialize(data, self.file, state, self.arguments)
        self._call = jax.jit(self.exported.call)

    def __call__(self, state, arrays):
        return self._call(list(state), tuple(arrays))

    def __repr__(self):
        args = ", ".join(f"{k}={short_tree(v)}" for k, v in self.arguments.items())
        return f"SavedSignature({args}) -> {short_tree(self.outputs)}"


def _deserialize(data, file, state, arguments):
    """The `jax.export.Exported` in `data`, parsed whole and checked against its records.

    Parsing the StableHLO now makes a damaged artifact fail at load, not at
    the first call; its inputs must be the variables (`state`: their
    records) and argument tensors saved_model.json describes.
    """
    try:
        exported = jax.export.deserialize(bytearray(data))
        exported.mlir_module()  # parses the StableHLO: damaged bytecode fails here
    except Exception as e:
        raise SavedModelError(
            f"{file}: not a readable jax.export artifact: {type(e).__name__}: {e}"
        ) from None
    specs = tensor_specs(arguments)
    expected = (len(state) if state is not None else len(exported.in_avals) - len(specs)) + len(
        specs
    )
    if len(exported.in_avals) != expected:
        raise SavedModelError(
            f"{file}: the artifact takes {len(exported.in_avals)} arrays, saved_model.json "
            f"describes {expected} (its state and argument tensors)"
        )
    wanted = [(r["dtype"], list(r["shape"]), f"variable {r['path']}") for r in state or []]
    wanted += [
        (spec.dtype.name, list(spec.shape), f"argument tensor {i}") for i, spec in enumerate(specs)
    ]
    avals = exported.in_avals[len(exported.in_avals) - len(wanted) :]
    for (dtype, shape, what), aval in zip(wanted, avals):
        dims = [d if isinstance(d, int) else None for d in aval.shape]
        ok = jax.numpy.dtype(aval.dtype).name == dtype and len(dims) == len(shape)
        ok = ok and all(
            (d is None) == (not isinstance(s, int)) and (d is None or d == s)
            for d, s in zip(dims, shape)
        )
        if not ok:
            raise SavedModelError(
                f"{file}: {what}: saved_model.json says {dtype}{shape}, the artifact takes "
                f"{aval.str_short()}"
            )
    return exported


class LoadedFunction:
    """A function of a loaded model: runs the saved signature its arguments match.

    Example: `loaded.__call__.signatures` lists what it accepts.
    """

    def __init__(self, owner, name, record, artifacts):
        self._owner = owner
        self.__name__ = name
        self.parameters = list(record["parameters"])
        records = {r["path"]: r for r in owner._jmod_metadata["variables"]}
        self.signatures = [
            SavedSignature(r, artifacts[r["file"]], records) for r in record["signatures"]
        ]

    def __call__(self, *args, **kwargs):
        for signature in self.signatures:
            try:
                arrays = flatten_call(signature.arguments, bind(self.parameters, args, kwargs))
            except Mismatch:
                continue
            return self._owner._jmod_run(signature, arrays)
        raise signature_error(
            f"{self.__name__} of the loaded {self._owner.name!r}: could not find a matching "
            "saved signature to call",
            args,
            kwargs,
            [s.arguments for s in self.signatures],
        )

    def __repr__(self):
        return f"<LoadedFunction {self.__name__}: {len(self.signatures)} signatures>"


class LoadedModule(Module):
    """What `jmod.saved_model.load` returns: the saved functions over the saved variables.

    Its variables sit at the saved paths (`loaded.dense_1.w`), its functions
    are attributes (`loaded.predict(x)`; `loaded(x)` runs `__call__`) and are
    listed in `functions`. It is not an instance of the saved class.

    Example:
        >>> import tempfile
        >>> class Shift(jmod.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.inner = jmod.Module()
        ...         self.inner.b = jmod.Variable([1.0, 2.0])
        ...     @jmod.jit
        ...     def __call__(self, x):
        ...         return x + self.inner.b
        >>> m = Shift()
        >>> _ = m(jnp.zeros(2))
        >>> loaded = jmod.saved_model.load(jmod.saved_model.save(m, tempfile.mkdtemp() + "/s"))
        >>> loaded.inner.b.assign([5.0, 5.0])     # a real jmod.Variable
        >>> loaded(jnp.zeros(2)).tolist(), loaded.__call__.signatures
        ([5.0, 5.0], [SavedSignature(x=float32[2]) -> float32[2]])
    """

    def __init__(self, directory, metadata, variables, artifacts):
        super().__init__(name=metadata["module"]["name"])
        self._jmod_directory = directory
        self._jmod_metadata = metadata
        self._jmod_artifacts = artifacts
        self._jmod_index = (None, {})
        _attach(self, variables.items())
        self._jmod_functions = {
            name: LoadedFunction(self, name, record, artifacts)
            for name, record in metadata["functions"].items()
        }
        for name, fn in self._jmod_functions.items():
            # `loaded(x)` goes through the class's __call__; `loaded.__call__`
            # (like `loaded.predict`) finds the LoadedFunction, with its signatures.
            if name == "__call__" or not hasattr(self, name):
                object.__setattr__(self, name, fn)

    @property
    def functions(self):
        """The saved functions by name."""
        return dict(self._jmod_functions)

    @property
    def platforms(self):
        """The platforms the functions were exported for."""
        return list(self._jmod_metadata["platforms"])

    @property
    def saved_class(self):
        """The qualified name of the class that was saved (never imported)."""
        return self._jmod_metadata["module"]["class"]

    def __call__(self, *args, **kwargs):
        fn = self._jmod_functions.get("__call__")
        if fn is None:
            raise SavedModelError(
                f"the loaded {self.name!r} has no saved __call__; its functions: "
                f"{', '.join(self._jmod_functions) or 'none'}"
            )
        return fn(*args, **kwargs)

    def _jmod_run(self, signature, arrays):
        walk = self._jmod_walk()
        if self._jmod_index[0] is not walk:
            self._jmod_index = (walk, dict(walk.named))
        named = self._jmod_index[1]
        try:
            state = [named[p].value for p in signature.state]
        except KeyError as e:
            raise SavedModelError(
                f"the loaded {self.name!r} has no variable {e.args[0]} any more; "
                f"{signature.file} reads it"
            ) from None
        out, assigned = signature(state, arrays)
        for path, value in assigned.items():
            named[path].assign(value)
        return out

    def __repr__(self):
        fns = ", ".join(f"{n} ({len(f.signatures)})" for n, f in self._jmod_functions.items())
        return (
            f"<LoadedModule {self.name!r} saved from {self.saved_class}: functions {fns}; "
            f"{len(self.variables)} variables>"
        )
