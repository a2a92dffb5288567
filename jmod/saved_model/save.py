"""`save`: a module's `jmod.jit` functions exported with `jax.export`, plus its variables.

Each saved function is the pure function of (state leaves, array arguments)
that `jmod.jit` compiles for one signature, so the artifacts do not hold the
weights: the variables are a checkpoint beside them, and a loaded model
can be fine-tuned and saved again with the same artifacts.
"""

import inspect
import json
import os
import shutil
import tempfile

import jax
import jax.extend.core
import jax.numpy as jnp

from jmod import _version
from jmod.checkpoint import Checkpoint
from jmod.compiled import Compiled, JitFunction
from jmod.errors import TraceError
from jmod.module import Module
from jmod.saved_model import _format
from jmod.saved_model.errors import SavedModelError
from jmod.saved_model.spec import (
    TensorSpec,
    dummy_values,
    short_tree,
    spec_tree,
    symbolic_specs,
    tensor_specs,
    to_json,
)

_JIT_PREFIX = "_jmod_jit_"
_PLATFORM_ALIASES = {"gpu": "cuda"}
_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def save(module, directory, signatures=None, platforms=None, vjp_order=None):
    """Saves `module`'s compiled functions and variables to `directory`, loadable without its class.

    By default every signature traced so far by the module's `jmod.jit`
    methods is saved (like TensorFlow's concrete functions). `signatures`
    chooses instead: a dict from function name to a `jmod.jit` method of
    the module (its traced signatures), or to `(method, args)` /
    `(method, args, kwargs)` where the arguments are `TensorSpec`s, arrays
    and Python values, or to a list of such tuples. There the method may
    also be a plain method or the module itself (a Keras-style model:
    `(model, [jmod.TensorSpec([None, 3])], {"training": False})`). `None` or named
    dimensions are exported shape-polymorphically, so one artifact serves
    every batch size. A function named `__call__` makes the loaded object
    callable.

    Example:
        >>> import tempfile
        >>> class Scale(jmod.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.k = jmod.Variable(2.0)
        ...     @jmod.jit
        ...     def __call__(self, x):
        ...         return self.k * x
        >>> m = Scale()
        >>> path = tempfile.mkdtemp() + "/scale"
        >>> _ = jmod.saved_model.save(m, path, signatures={
        ...     "__call__": (m.__call__, [jmod.TensorSpec([None])])})
        >>> loaded = jmod.saved_model.load(path)
        >>> loaded(jnp.arange(3.0)).tolist(), isinstance(loaded, Scale)
        ([0.0, 2.0, 4.0], False)

    Args:
        module: the module (or a model returned by `load`, saved again with
            its current variable values).
        directory: where to write; replaced if it holds a saved model.
        signatures: see above; None saves every traced signature.
        platforms: backends to export for (`"cpu"`, `"cuda"`, `"rocm"`,
            `"tpu"`), from any machine; by default the current one.
        vjp_order: derivative order to save with each function (1 lets
            `jax.grad` / `jmod.value_and_grad` run through the loaded functions).

    Returns:
        `directory`.
    """
    from jmod.saved_model.load import LoadedModule

    if isinstance(module, LoadedModule):
        return _resave(module, directory, signatures, platforms, vjp_order)
    if not isinstance(module, Module):
        raise SavedModelError(f"save() takes a jmod.Module, got {type(module).__name__}")
    platforms = _platforms(platforms)
    vjp_order = 0 if vjp_order is None else int(vjp_order)
    named = module.named_variables()
    saved = _SavedVariables(named)
    functions, artifacts = {}, {}
    for name, compiled, calls in _requests(module, signatures):
        parameters = _parameters(compiled)
        records = []
        for k, arguments in enumerate(calls):
            where = f"{type(module).__name__}.{name}{_short(arguments)}"
            exported, record = _export(compiled, arguments, saved, platforms, where)
            try:
                data = exported.serialize(vjp_order=vjp_order)
            except Exception as e:  # unserializable output trees, vjp of some primitives
                raise SavedModelError(f"{where}: cannot serialize the export: {e}") from e
            record["file"] = _format.artifact_name(name, k)
            artifacts[record["file"]] = bytes(data)
            records.append(record)
        functions[name] = {"parameters": parameters, "signatures": records}
    if not functions:
        raise SavedModelError(
            f"module {module.name!r} has no traced jmod.jit function to save: call its "
            "jmod.jit methods first, or pass signatures={'__call__': (module.__call__, "
            "[jmod.TensorSpec(...)])}"
        )
    metadata = {
        "format": _format.FORMAT,
        "format_version": _format.FORMAT_VERSION,
        "jmod_version": _version.__version__,
        "jax_version": jax.__version__,
        "module": {"name": module.name, "class": _qualname(type(module))},
        "platforms": platforms,
        "vjp_order": vjp_order,
        "functions": functions,
        "variables": _variable_records(saved.variables),
    }
    write_directory(directory, metadata, artifacts, saved.variables)
    return directory


# -- which functions and signatures -------------------------------------------
def _requests(module, signatures):
    """[(function name, Compiled, [arguments {name: tree}])] to export."""
    if signatures is None:
        out = []
        for attr, value in sorted(vars(module).items()):
            if attr.startswith(_JIT_PREFIX) and isinstance(value, Compiled) and value.signatures:
                calls = [_traced_arguments(value, s) for s in value.signatures]
                out.append((attr[len(_JIT_PREFIX) :], value, _unique(calls)))
        return out
    if not isinstance(signatures, dict):
        raise SavedModelError(f"signatures must be a dict name -> function, got {signatures!r:.60}")
    out = []
    for name, request in signatures.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SavedModelError(f"signature name {name!r} must be a Python identifier")
        where = f"signatures[{name!r}]"
        if isinstance(request, list):
            items = request
        elif isinstance(request, tuple):
            items = [request]
        else:
            compiled = _method_of(module, request, where)
            calls = [_traced_arguments(compiled, s) for s in compiled.signatures]
            if not calls:
                raise SavedModelError(
                    f"{where}: {compiled.__qualname__} was never called, so it has no traced "
                    "signature; give (method, [jmod.TensorSpec(...), ...]) instead"
                )
            out.append((name, compiled, _unique(calls)))
            continue
        compiled, calls = None, []
        for item in items:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise SavedModelError(
                    f"{where}: expected (method, args) or (method, args, kwargs), got {item!r:.80}"
                )
            fn = _method_of(module, item[0], where)
            if compiled is not None and fn is not compiled:
                raise SavedModelError(f"{where}: all signatures of one name must use one method")
            compiled = fn
            kwargs = item[2] if len(item) == 3 else {}
            calls.append(_explicit_arguments(compiled, list(item[1]), dict(kwargs), where))
        if compiled is None:
            raise SavedModelError(f"{where}: an empty list of signatures")
        out.append((name, compiled, _unique(calls)))
    return out


def _method_of(module, fn, where):
    if isinstance(fn, JitFunction):
        fn = fn.__get__(module)
    if isinstance(fn, Compiled):
        for value in vars(module).values():
            if value is fn:
                return fn
        raise SavedModelError(f"{where}: {fn.__qualname__} is not a method of the saved module")
    # A plain method, or the module itself (Keras-style layers and models):
    # compiled here as `jmod.jit` would, without attaching anything to the module.
    if fn is module and callable(module):
        return Compiled(type(module).__call__, module, (), False)
    if inspect.ismethod(fn) and fn.__self__ is module:
        return Compiled(fn.__func__, module, (), False)
    raise SavedModelError(
        f"{where}: expected the module, one of its methods or a jmod.jit method, got "
        f"{type(fn).__name__} {getattr(fn, '__qualname__', fn)!r:.60}"
    )


def _method_parameters(compiled):
    params = list(inspect.signature(compiled.__wrapped__).parameters.values())
    return params[1:]  # self


def _parameters(compiled):
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in _method_parameters(compiled) if p.kind in kinds]


def _named_arguments(compiled, bound, where):
    """Bound arguments as {name: value}, `**kwargs` spread out, as the loaded call binds them."""
    kinds = {p.name: p.kind for p in _method_parameters(compiled)}
    out = {}
    for name, value in bound.items():
        kind = kinds.get(name)
        if kind == inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise SavedModelError(
                f"{where}: argument {name!r} is positional-only or *args; saved functions "
                "take named parameters"
            )
        else:
            out[name] = value
    return out


def _traced_arguments(compiled, signature):
    where = f"{compiled.__qualname__} traced with {signature}"
    named = _named_arguments(compiled, signature.arguments, where)
    return {name: spec_tree(v, f"{where}: argument {name!r}") for name, v in named.items()}


def _explicit_arguments(compiled, args, kwargs, where):
    try:
        bound = inspect.signature(compiled.__wrapped__).bind(None, *args, **kwargs).arguments
    except TypeError as e:
        raise SavedModelError(
            f"{where}: arguments do not fit {compiled.__qualname__}: {e}"
        ) from None
    bound = dict(list(bound.items())[1:])
    named = _named_arguments(compiled, bound, where)
    return {name: spec_tree(v, f"{where}: argument {name!r}") for name, v in named.items()}


def _unique(calls):
    seen, out = set(), []
    for arguments in calls:
        key = json.dumps({k: to_json(v) for k, v in arguments.items()}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(arguments)
    return out


# -- exporting one signature --------------------------------------------------
class _SavedVariables:
    """The variables a saved model holds, by path: the module's, then globals its functions read."""

    def __init__(self, named):
        self.variables = dict(named)
        self.paths = {id(v): p for p, v in named}

    def path_of(self, variable, suggested):
        path = self.paths.get(id(variable))
        if path is None:
            path, k = suggested, 0
            while path in self.variables:  # another function captured another variable here
                k += 1
                path = f"<captured {k}>/{suggested.split('/', 1)[-1]}"
        return path

    def add(self, variable, path):
        self.paths[id(variable)] = path
        self.variables[path] = variable


def _export(compiled, arguments, saved, platforms, where):
    """The `jax.export.Exported` of one signature, and its metadata record."""
    dummies = {name: dummy_values(tree) for name, tree in arguments.items()}
    try:
        fn, variables, paths = compiled.pure_function(**dummies)
    except TraceError as e:
        raise SavedModelError(f"{where}: {e}") from e
    specs = tensor_specs(arguments)
    leaf_specs = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in variables]
    dummy_specs = tuple(jax.ShapeDtypeStruct(dummy_values(s).shape, s.dtype) for s in specs)
    used = _used_inputs(fn, leaf_specs, dummy_specs)
    keep = [i for i, u in enumerate(used) if u]
    names = [saved.path_of(v, p) for v, p in zip(variables, paths)]
    rename = dict(zip(paths, names))

    def exported_fn(state, arrays):
        # Unread variables are not inputs: a stand-in keeps the pure function whole.
        leaves = [jnp.zeros(s.shape, s.dtype) for s in leaf_specs]
        for i, x in zip(keep, state):
            leaves[i] = x
        out, assigned = fn(leaves, arrays)
        return out, {rename[p]: x for p, x in assigned.items()}

    exported_fn.__name__ = compiled.__name__
    try:
        exported = jax.export.export(jax.jit(exported_fn), platforms=platforms)(
            [leaf_specs[i] for i in keep], tuple(symbolic_specs(specs))
        )
    except SavedModelError:
        raise
    except Exception as e:
        hint = ""
        if any(s.polymorphic for s in specs):
            hint = (
                " (with None dimensions the function must work for every size; name a "
                'dimension, TensorSpec(["batch", 3]), where two arguments share it)'
            )
        raise SavedModelError(f"{where}: jax.export failed{hint}: {e}") from e
    out_specs = [
        TensorSpec([d if isinstance(d, int) else str(d) for d in a.shape], a.dtype)
        for a in exported.out_avals
    ]
    outputs, assigned = jax.tree_util.tree_unflatten(exported.out_tree, out_specs)
    state = [names[i] for i in keep]
    for i in keep:
        saved.add(variables[i], names[i])
    for v, name in zip(variables, names):
        if name in assigned:
            saved.add(v, name)
    record = {
        "arguments": {name: to_json(tree) for name, tree in arguments.items()},
        "outputs": _outputs_json(outputs, where),
        "state": state,
        "assigns": sorted(assigned),
    }
    return exported, record


def _used_inputs(fn, leaf_specs, arg_specs):
    """Which state leaves the computation reads (a backward liveness pass over its jaxpr)."""
    jaxpr = jax.make_jaxpr(fn.__wrapped__)(list(leaf_specs), arg_specs).jaxpr
    live = {v for v in jaxpr.outvars if not isinstance(v, jax.extend.core.Literal)}
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if not isinstance(v, jax.extend.core.Literal))
    used = [v in live for v in jaxpr.invars[: len(leaf_specs)]]
    # Extended dtypes (typed PRNG keys) have no zeros to stand in: keep them.
    return [u or jnp.issubdtype(s.dtype, jax.dtypes.extended) for u, s in zip(used, leaf_specs)]


def _outputs_json(outputs, where):
    data = to_json(outputs)
    try:
        json.dumps(data)
    except TypeError:
        raise SavedModelError(
            f"{where}: outputs must be arrays in tuples, lists, dicts or None"
        ) from None
    return data


# -- writing ------------------------------------------------------------------
def _platforms(platforms):
    if platforms is None:
        return [jax.export.default_export_platform()]
    if isinstance(platforms, str):
        platforms = [platforms]
    out = []
    for p in platforms:
        p = _PLATFORM_ALIASES.get(str(p).lower(), str(p).lower())
        if p not in _PLATFORMS:
            raise SavedModelError(f"platform {p!r}: expected one of {', '.join(_PLATFORMS)}")
        if p not in out:
            out.append(p)
    if not out:
        raise SavedModelError("platforms is empty")
    return out


def _qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _short(arguments):
    return "(" + ", ".join(f"{k}={short_tree(v)}" for k, v in arguments.items()) + ")"


def _variable_records(variables):
    return [
        {
            "path": path,
            "name": v.name,
            "shape": list(v.shape),
            "dtype": jnp.dtype(v.dtype).name,
            "trainable": v.trainable,
        }
        for path, v in variables.items()
    ]


def write_variables(prefix, variables):
    """Writes {path: Variable} as the checkpoint `prefix`, keyed `model/<path>`."""
    Checkpoint(**{_format.CHECKPOINT_ROOT: dict(variables)}).write(prefix)


def write_directory(directory, metadata, artifacts, variables):
    """Writes a saved model into a fresh sibling directory, then puts it in place.

    An existing saved model at `directory` is replaced only once the new one
    is complete; any other non-empty directory there is refused.
    """
    target = os.path.abspath(os.fspath(directory))
    if os.path.exists(target):
        is_model = os.path.isfile(os.path.join(target, _format.METADATA))
        if not os.path.isdir(target) or (os.listdir(target) and not is_model):
            raise SavedModelError(
                f"{directory}: exists and is not a jmod saved model; not overwriting it"
            )
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(target)
    tmp = tempfile.mkdtemp(prefix=f".{base}.saving-", dir=parent)
    try:
        for rel, data in artifacts.items():
            _write(os.path.join(tmp, rel), data)
        write_variables(os.path.join(tmp, _format.VARIABLES), variables)
        _write(os.path.join(tmp, _format.METADATA), _format.encode_metadata(metadata))
        record = _format.fingerprint(tmp)
        _write(os.path.join(tmp, _format.FINGERPRINT), _format.encode_fingerprint(record))
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(target, os.path.join(old, base))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(filename, data):
    os.makedirs(os.path.dirname(filename), exist_ok=True)
    with open(filename, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _resave(loaded, directory, signatures, platforms, vjp_order):
    """Saves a loaded model again: the same artifacts, its current variables."""
    metadata = json.loads(json.dumps(loaded._jmod_metadata))
    if signatures is not None:
        raise SavedModelError(
            "a loaded model is saved again with the functions it was loaded with; "
            "signatures= cannot add new ones (they need the Python class)"
        )
    if platforms is not None and _platforms(platforms) != metadata["platforms"]:
        raise SavedModelError(
            f"a loaded model keeps its platforms {metadata['platforms']}; re-exporting for "
            f"{_platforms(platforms)} needs the Python class"
        )
    if vjp_order is not None and int(vjp_order) != metadata["vjp_order"]:
        raise SavedModelError(
            f"a loaded model keeps its vjp_order={metadata['vjp_order']}; changing it needs "
            "the Python class"
        )
    variables = dict(loaded.named_variables())
    before = {r["path"]: r for r in metadata["variables"]}
    for function in metadata["functions"].values():
        for record in function["signatures"]:
            for path in [*record["state"], *record["assigns"]]:
                v, want = variables.get(path), before[path]
                if v is None or (list(v.shape), jnp.dtype(v.dtype).name) != (
                    want["shape"],
                    want["dtype"],
                ):
                    raise SavedModelError(
                        f"variable {path}: the saved functions take "
                        f"{want['dtype']}{want['shape']}, the loaded model now has "
                        f"{'none' if v is None else f'{jnp.dtype(v.dtype).name}{list(v.shape)}'}"
                    )
    metadata["variables"] = _variable_records(variables)
    write_directory(directory, metadata, dict(loaded._jmod_artifacts), variables)
    return directory
