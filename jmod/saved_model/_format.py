"""The saved model directory: its layout, metadata file and fingerprint.

    DIR/saved_model.json               metadata (JSON): format version, versions,
                                       functions with their signatures, variables
    DIR/functions/NAME.K.jax_export    one serialized `jax.export.Exported` per
                                       function signature K
    DIR/variables/variables.index      the variables, as a jmod checkpoint keyed
    DIR/variables/variables.data-...   `model/<variable path>`
    DIR/fingerprint.json               sha256 of every file but the fingerprint and
                                       the checkpoint's data files, whose values
                                       the (fingerprinted) index checksums already

Pure functions over bytes and dicts, plus small file helpers. Nothing read
here is ever executed.
"""

import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np

from jmod.checkpoint._format import DTYPES as DTYPES_BY_NAME
from jmod.saved_model.errors import SavedModelError, SavedModelNotFoundError

FORMAT = "jmod.saved_model"
FORMAT_VERSION = 1
METADATA = "saved_model.json"
FINGERPRINT = "fingerprint.json"
VARIABLES = "variables/variables"
CHECKPOINT_ROOT = "model"
_HASH = "sha256"


def artifact_name(function, index):
    """The file (relative to DIR) holding signature `index` of `function`."""
    return f"functions/{function}.{index}.jax_export"


def encode_metadata(metadata):
    """The metadata dict as the bytes of `saved_model.json`."""
    return (json.dumps(metadata, indent=1) + "\n").encode()


# JSON files are read whole; larger ones are not files jmod wrote.
MAX_JSON_BYTES = 64 << 20
MAX_NDIM = 64
# The dtypes a saved variable may have (those a checkpoint stores).
DTYPES = frozenset(DTYPES_BY_NAME)


def decode_metadata(data, filename):
    """The metadata dict of `saved_model.json`, validated against its schema.

    Other formats and newer versions are refused, and so is any field that
    is missing, of the wrong type or out of range; each error names the file,
    the field, what was expected and what came.
    """
    try:
        metadata = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SavedModelError(f"{filename}: not valid JSON ({e})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise SavedModelError(f"{filename}: not a jmod saved model (no format {FORMAT!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise SavedModelError(f"{filename}: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise SavedModelError(
            f"{filename}: saved with format version {version} by jmod "
            f"{metadata.get('jmod_version', '?')}; this jmod reads versions up to "
            f"{FORMAT_VERSION}: upgrade jmod to load it"
        )
    validate_metadata(metadata, filename)
    return metadata


# ---------------------------------------------------------------- the metadata schema


_MISSING = object()


def _expected(filename, field, expected, got):
    if got is _MISSING:
        shown = "nothing (the field is missing)"
    else:
        shown = json.dumps(got)[:80] if _jsonable(got) else type(got).__name__
    return SavedModelError(f"{filename}: field {field}: expected {expected}, got {shown}")


def _jsonable(x):
    try:
        json.dumps(x)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _need(ok, filename, field, expected, got):
    if not ok:
        raise _expected(filename, field, expected, got)


def _field(record, key, where, filename, kind, expected):
    """`record[key]`, which must be an instance of `kind` (`expected` says so in words)."""
    field = f"{where}.{key}" if where else key
    _need(isinstance(record, dict), filename, where or "(top level)", "an object", record)
    _need(key in record, filename, field, expected, _MISSING)
    value = record[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    _need(ok, filename, field, expected, value)
    return value


def _strings(value, field, filename):
    _need(
        isinstance(value, list) and all(isinstance(x, str) for x in value),
        filename,
        field,
        "a list of strings",
        value,
    )
    return value


def validate_metadata(meta, filename):
    """Checks every field of a decoded `saved_model.json`; `SavedModelError` names the bad one.

    Example:
        >>> validate_metadata({"format": FORMAT}, "saved_model.json")
        Traceback (most recent call last):
        ...
        jmod.saved_model.errors.SavedModelError: saved_model.json: field format_version: ...
    """
    version = _field(meta, "format_version", "", filename, int, "an integer")
    _need(1 <= version <= FORMAT_VERSION, filename, "format_version", "1", version)
    for key in ("jmod_version", "jax_version"):
        _field(meta, key, "", filename, str, "a version string")
    module = _field(meta, "module", "", filename, dict, 'an object {"name", "class"}')
    _field(module, "name", "module", filename, str, "a string")
    _field(module, "class", "module", filename, str, "a string")
    platforms = _field(meta, "platforms", "", filename, list, "a list of platform names")
    _need(platforms, filename, "platforms", "at least one platform", platforms)
    _strings(platforms, "platforms", filename)
    vjp = _field(meta, "vjp_order", "", filename, int, "an integer >= 0")
    _need(vjp >= 0, filename, "vjp_order", "an integer >= 0", vjp)
    paths = set()
    records = _field(meta, "variables", "", filename, list, "a list of variable records")
    for i, r in enumerate(records):
        where = f"variables[{i}]"
        path = _field(r, "path", where, filename, str, "a variable path such as 'dense/w'")
        segments = path.split("/")
        _need(
            all(segments) and not any(seg.startswith("__") for seg in segments),
            filename,
            f"{where}.path",
            "'/'-separated non-empty names, none starting with '__'",
            path,
        )
        _need(path not in paths, filename, f"{where}.path", "a path listed once", path)
        paths.add(path)
        _need(
            r.get("name") is None or isinstance(r.get("name"), str),
            filename,
            f"{where}.name",
            "a string or null",
            r.get("name"),
        )
        shape = _field(r, "shape", where, filename, list, "a list of sizes")
        _need(
            len(shape) <= MAX_NDIM and all(_is_int(d) and d >= 0 for d in shape),
            filename,
            f"{where}.shape",
            f"at most {MAX_NDIM} integers >= 0",
            shape,
        )
        dtype = _field(r, "dtype", where, filename, str, "a dtype name")
        _need(dtype in DTYPES, filename, f"{where}.dtype", "a dtype name such as 'float32'", dtype)
        _field(r, "trainable", where, filename, bool, "true or false")
    functions = _field(meta, "functions", "", filename, dict, "an object of functions by name")
    files = set()
    for name, function in functions.items():
        where = f"functions[{name!r}]"
        _need(bool(name), filename, where, "a non-empty function name", name)
        _strings(
            _field(function, "parameters", where, filename, list, "a list of parameter names"),
            f"{where}.parameters",
            filename,
        )
        signatures = _field(function, "signatures", where, filename, list, "a list of signatures")
        _need(signatures, filename, f"{where}.signatures", "at least one signature", signatures)
        for k, record in enumerate(signatures):
            at = f"{where}.signatures[{k}]"
            arguments = _field(record, "arguments", at, filename, dict, "an object of arguments")
            for arg, tree in arguments.items():
                _check_tree(tree, f"{at}.arguments[{arg!r}]", filename)
            _need("outputs" in record, filename, f"{at}.outputs", "an output tree", _MISSING)
            _check_tree(record["outputs"], f"{at}.outputs", filename)
            for key in ("state", "assigns"):
                listed = _field(record, key, at, filename, list, "a list of variable paths")
                for path in _strings(listed, f"{at}.{key}", filename):
                    _need(path in paths, filename, f"{at}.{key}", "paths of listed variables", path)
            file = _field(record, "file", at, filename, str, "a file in functions/")
            _need(
                file.startswith("functions/") and file.endswith(".jax_export"),
                filename,
                f"{at}.file",
                "a path 'functions/NAME.K.jax_export'",
                file,
            )
            check_relative(file, f"{at}.file", filename)
            _need(file not in files, filename, f"{at}.file", "a file used once", file)
            files.add(file)


def _check_tree(tree, field, filename, depth=0):
    """An argument or output tree as `spec.to_json` writes it."""
    _need(depth < 100, filename, field, "a tree at most 100 levels deep", "a deeper one")
    _need(
        isinstance(tree, dict) and len(tree) == 1,
        filename,
        field,
        'one of {"tensor"|"tuple"|"list"|"dict"|"value": ...}',
        tree,
    )
    ((kind, body),) = tree.items()
    if kind == "tensor":
        shape = _field(body, "shape", f"{field}.tensor", filename, list, "a list of dimensions")
        _need(
            len(shape) <= MAX_NDIM
            and all(
                d is None or (_is_int(d) and d >= 0) or (isinstance(d, str) and d.strip())
                for d in shape
            ),
            filename,
            f"{field}.tensor.shape",
            "dimensions that are integers >= 0, null or names",
            shape,
        )
        dtype = _field(body, "dtype", f"{field}.tensor", filename, str, "a dtype name")
        _need(_array_dtype(dtype), filename, f"{field}.tensor.dtype", "an array dtype", dtype)
    elif kind in ("tuple", "list"):
        _need(isinstance(body, list), filename, f"{field}.{kind}", "a list of trees", body)
        for i, item in enumerate(body):
            _check_tree(item, f"{field}.{kind}[{i}]", filename, depth + 1)
    elif kind == "dict":
        _need(isinstance(body, dict), filename, f"{field}.dict", "an object of trees", body)
        for key, item in body.items():
            _check_tree(item, f"{field}.dict[{key!r}]", filename, depth + 1)
    elif kind == "value":
        _need(
            body is None or isinstance(body, (bool, str)),
            filename,
            f"{field}.value",
            "true, false, a string or null",
            body,
        )
    else:
        raise _expected(filename, field, "a tree kind tensor|tuple|list|dict|value", kind)


def _array_dtype(name):
    if name in DTYPES:
        return True
    try:
        return np.dtype(jnp.dtype(name)).kind not in "OSUV"
    except (TypeError, ValueError):
        return False


def check_relative(rel, field, filename):
    """Refuses a file name that could leave the saved-model directory."""
    parts = rel.split("/")
    _need(
        isinstance(rel, str)
        and rel
        and not rel.startswith("/")
        and "\\" not in rel
        and "\0" not in rel
        and ":" not in parts[0]
        and all(p not in ("", ".", "..") for p in parts),
        filename,
        field,
        "a relative path inside the saved model directory (no '..', not absolute)",
        rel,
    )


def confined(directory, rel, field, filename):
    """DIR/rel, checked to lie inside DIR once symbolic links are followed."""
    check_relative(rel, field, filename)
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(directory, rel))
    if os.path.commonpath([root, path]) != root:
        raise SavedModelError(
            f"{filename}: field {field}: {rel!r} leads outside the saved model directory "
            f"(to {path})"
        )
    return os.path.join(directory, rel)


def read_file(directory, relpath, limit=None):
    """The bytes of DIR/relpath (at most `limit`); a missing file is a `SavedModelNotFoundError`."""
    filename = confined(directory, relpath, "file", directory)
    try:
        with open(filename, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if limit is not None and size > limit:
                raise SavedModelError(
                    f"{filename}: {size:,} bytes, more than the {limit:,} such a file may hold"
                )
            return f.read()
    except FileNotFoundError:
        raise SavedModelNotFoundError(
            f"{filename}: missing from the saved model {directory!r}"
        ) from None
    except IsADirectoryError:
        raise SavedModelError(f"{filename}: a directory, expected a file") from None


def _file_hash(filename):
    h = hashlib.new(_HASH)
    with open(filename, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fingerprinted(directory):
    for root, _, files in os.walk(directory):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            if rel != FINGERPRINT and not rel.startswith(VARIABLES + ".data-"):
                yield rel


def _checksum(files):
    return hashlib.new(_HASH, json.dumps(files, sort_keys=True).encode()).hexdigest()


def fingerprint(directory):
    """The fingerprint record of a directory: a hash per file and one over them all."""
    names = sorted(_fingerprinted(directory))
    files = {rel: _file_hash(os.path.join(directory, rel)) for rel in names}
    return {"algorithm": _HASH, "files": files, "checksum": _checksum(files)}


def encode_fingerprint(record):
    return (json.dumps(record, indent=1) + "\n").encode()


def verify(directory, data, required):
    """Checks every fingerprinted file against its hash; `required` files must be listed.

    Returns the record. Raises `SavedModelNotFoundError` for a missing file
    and `SavedModelError` for one whose contents changed since the save.
    """
    filename = os.path.join(directory, FINGERPRINT)
    try:
        record = json.loads(data)
        files = record["files"]
        ok = (
            isinstance(files, dict)
            and all(isinstance(v, str) for v in files.values())
            and record["algorithm"] == _HASH
            and record["checksum"] == _checksum(files)
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise SavedModelError(f"{filename}: malformed or modified fingerprint")
    for rel in files:
        confined(directory, rel, f"files[{rel!r}]", filename)
    for rel in required:
        if rel not in files:
            raise SavedModelError(
                f"{filename}: {rel} is not fingerprinted; the directory was modified"
            )
    for rel, digest in files.items():
        path = os.path.join(directory, rel)  # confined above
        if not os.path.isfile(path):
            raise SavedModelNotFoundError(f"{path}: missing from the saved model {directory!r}")
        if _file_hash(path) != digest:
            raise SavedModelError(
                f"{path}: contents differ from the fingerprint taken when it was saved "
                "(the file was modified or corrupted)"
            )
    return record
