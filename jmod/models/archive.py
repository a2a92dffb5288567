"""Whole-model archives: `model.save("model.jmod")` and `load_model`.

An archive is a zip file with these entries, all at the top level:

    metadata.json                      format name and version, jmod/jax versions, date
    config.json                        {"model": jmod.saving.serialize(model),
                                        "build_config": ..., "compile_config": ...}
    model.weights.index                the variables, in jmod's checkpoint format
    model.weights.data-00000-of-00001  (keys `model/<variable path>`)
    optimizer.index, optimizer.data-*  the optimizer's state, if the model was compiled

Loading reads JSON and checkpoint data only: no pickle, and classes are
looked up by name among jmod's built-ins and registered classes, so a file
cannot make Python import or run anything.
"""

import datetime
import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile

import jax

from jmod import saving
from jmod._version import __version__
from jmod.checkpoint import Checkpoint, _format
from jmod.errors import CheckpointError, JmodError, SerializationError

FORMAT = "jmod.model"
FORMAT_VERSION = 1
_METADATA = "metadata.json"
_CONFIG = "config.json"
_WEIGHTS = "model.weights"
_OPTIMIZER = "optimizer"
# JSON entries are read whole; anything larger is not a config jmod wrote.
_MAX_JSON_BYTES = 256 * 1024 * 1024
# Everything extracted from one archive together (checkpoint files) is at
# most this, and never more than the temporary directory's free space.
MAX_EXTRACTED_BYTES = 1 << 40


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Writes `model` (config, weights, optimizer state, metadata) to the zip `filepath`.

    The archive is written under a temporary name and then renamed, so an
    interrupted save never leaves a half-written file at `filepath`.

    Example:
        >>> import os, tempfile
        >>> model = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2)])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.jmod")
        >>> jmod.models.archive.save_model(model, path) == path
        True
        >>> sorted(zipfile.ZipFile(path).namelist())[:3]
        ['config.json', 'metadata.json', 'model.weights.data-00000-of-00001']

    Returns:
        `filepath`.
    """
    filepath = os.fspath(filepath)
    if not overwrite and os.path.exists(filepath):
        raise SerializationError(f"{filepath} exists and overwrite=False")
    config = {"model": saving.serialize(model), "build_config": model.get_build_config()}
    get_compile_config = getattr(model, "get_compile_config", None)
    if callable(get_compile_config):
        compile_config = get_compile_config()
        if compile_config is not None:
            config["compile_config"] = compile_config
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jmod_version": __version__,
        "jax_version": jax.__version__,
        "date_saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    optimizer = _optimizer_of(model) if include_optimizer else None
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        Checkpoint(model=model).write(os.path.join(tmp, _WEIGHTS))
        if optimizer is not None:
            Checkpoint(optimizer=optimizer).write(os.path.join(tmp, _OPTIMIZER))
        fd, partial = tempfile.mkstemp(prefix=".jmod-save-", dir=directory)
        os.close(fd)
        try:
            with zipfile.ZipFile(partial, "w") as zf:
                zf.writestr(_METADATA, json.dumps(metadata, indent=2), zipfile.ZIP_DEFLATED)
                zf.writestr(_CONFIG, json.dumps(config, indent=2), zipfile.ZIP_DEFLATED)
                # Arrays barely compress; stored entries read back at disk speed.
                for name in sorted(os.listdir(tmp)):
                    zf.write(os.path.join(tmp, name), name, zipfile.ZIP_STORED)
            os.replace(partial, filepath)
        except BaseException:
            os.unlink(partial)
            raise
    return filepath


def _optimizer_of(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "named_variables"):
        return None
    return optimizer if optimizer.named_variables() else None


def _check_entries(filepath, zf):
    for name in zf.namelist():
        parts = re.split(r"[\\/]", name)
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise SerializationError(
                f"{filepath}: refusing zip entry {name!r}: a model archive may not hold "
                "absolute paths or '..' components"
            )
    for required in (_METADATA, _CONFIG):
        if required not in zf.namelist():
            raise SerializationError(f"{filepath}: not a jmod model archive (no {required})")


def _read_json(filepath, zf, name):
    info = zf.getinfo(name)
    if info.file_size > _MAX_JSON_BYTES:
        raise SerializationError(f"{filepath}: {name} is {info.file_size} bytes, too large")
    try:
        return json.loads(zf.read(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SerializationError(f"{filepath}: {name} is not valid JSON: {e}") from None


class _Budget:
    """What extraction may still write: `MAX_EXTRACTED_BYTES`, at most the free disk space."""

    def __init__(self, directory):
        self.left = min(MAX_EXTRACTED_BYTES, shutil.disk_usage(directory).free)


def _needed_bytes(index, prefix):
    """{data file name: the bytes its checkpoint index accounts for}."""
    needed = {}
    for entry in index.entries.values():
        for piece in entry.pieces or (entry,):
            name = os.path.basename(_format.data_path(prefix, piece.file, index.num_shards))
            end = max(piece.offset + piece.length, _format.DATA_HEADER_BYTES)
            needed[name] = max(needed.get(name, _format.DATA_HEADER_BYTES), end)
    for shard in range(index.num_shards):
        name = os.path.basename(_format.data_path(prefix, shard, index.num_shards))
        needed.setdefault(name, _format.DATA_HEADER_BYTES)
    return needed


def _copy_entry(filepath, zf, info, directory, limit, budget, why):
    """Streams one entry out of the zip, refusing it past `limit` bytes or the budget.

    `limit` is what the entry may hold (what the archive's own checkpoint
    index accounts for); its declared size is checked before anything is
    written, and the bytes that actually come are counted while they stream,
    so a zip bomb fails after at most `limit` bytes.
    """
    name = info.filename
    if info.file_size > limit:
        raise SerializationError(
            f"{filepath}: refusing entry {name!r}: it declares {info.file_size:,} bytes "
            f"({info.compress_size:,} compressed), but {why} {limit:,}"
        )
    if info.file_size > budget.left:
        raise SerializationError(
            f"{filepath}: refusing entry {name!r}: extracting its {info.file_size:,} bytes "
            f"would pass the limit of {budget.left:,} bytes left (MAX_EXTRACTED_BYTES or the "
            "free disk space)"
        )
    written = 0
    with zf.open(info) as src, open(os.path.join(directory, name), "wb") as dst:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > info.file_size:
                raise SerializationError(
                    f"{filepath}: refusing entry {name!r}: it inflates past the "
                    f"{info.file_size:,} bytes the archive declares for it"
                )
            dst.write(chunk)
    budget.left -= written


def _extract_checkpoint(filepath, zf, prefix, directory, budget):
    """Copies checkpoint `prefix` out of the zip, bounded; returns its path, or None.

    The index comes first (at most `MAX_INDEX_BYTES`); each data file it
    names is then bounded by the bytes the index accounts for in it, so a
    small archive cannot inflate into a large extraction. Data files the
    index does not name are not extracted.
    """
    infos = {
        info.filename: info
        for info in zf.infolist()
        if "/" not in info.filename and "\\" not in info.filename
    }
    index_name = f"{prefix}.index"
    if index_name not in infos:
        return None
    limit, why = _format.MAX_INDEX_BYTES, "a checkpoint index is at most"
    _copy_entry(filepath, zf, infos[index_name], directory, limit, budget, why)
    path = os.path.join(directory, prefix)
    try:
        index = _format.read_index(path)
    except CheckpointError as e:
        raise SerializationError(f"{filepath}: entry {index_name!r}: {e}") from None
    for name, limit in _needed_bytes(index, prefix).items():
        if name in infos:
            why = f"its checkpoint index {index_name!r} accounts for"
            _copy_entry(filepath, zf, infos[name], directory, limit, budget, why)
    return path


def load_model(filepath, custom_objects=None, compile=True):
    """Rebuilds a model saved with `model.save(filepath)`: same class, config and weights.

    Example:
        >>> import os, tempfile
        >>> model = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2)])
        >>> path = model.save(os.path.join(tempfile.mkdtemp(), "model.jmod"))
        >>> loaded = jmod.models.load_model(path)
        >>> x = jnp.ones((1, 3))
        >>> bool((loaded(x) == model(x)).all())
        True

    Args:
        filepath: the archive.
        custom_objects: classes by registered or class name, for classes not
            registered with `@jmod.saving.register_serializable()`.
        compile: re-compile the model (and restore its optimizer state) if
            it was saved compiled.

    Raises:
        SerializationError: the file is not a jmod archive or is corrupt, has
            unsafe entry names, or names classes that are neither jmod
            built-ins nor registered (all of them are listed).
    """
    filepath = os.fspath(filepath)
    try:
        zf = zipfile.ZipFile(filepath)
    except Exception as e:  # BadZipFile, and what a damaged zip directory raises deeper down
        if isinstance(e, OSError) and not os.path.isfile(filepath):
            raise  # missing, or a directory: the builtin error says so
        raise SerializationError(
            f"{filepath}: not a jmod model archive ({type(e).__name__}: {e})"
        ) from None
    with zf:
        try:
            return _load(filepath, zf, custom_objects, compile)
        except SerializationError:
            raise
        except Exception as e:  # a corrupt entry can fail anywhere: always the same error
            raise SerializationError(
                f"{filepath}: cannot load the model: {type(e).__name__}: {e}"
            ) from e


def _load(filepath, zf, custom_objects, compile):
    _check_entries(filepath, zf)
    metadata = _read_json(filepath, zf, _METADATA)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise SerializationError(f"{filepath}: not a jmod model archive (metadata format)")
    if not isinstance(metadata.get("format_version"), int) or (
        metadata["format_version"] > FORMAT_VERSION
    ):
        raise SerializationError(
            f"{filepath}: archive format version {metadata.get('format_version')!r} is newer "
            f"than this jmod reads ({FORMAT_VERSION}); it was saved by jmod "
            f"{metadata.get('jmod_version')}"
        )
    config = _read_json(filepath, zf, _CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise SerializationError(f"{filepath}: config.json has no model config")
    unknown = saving.unknown_classes(config["model"], custom_objects)
    if unknown:
        raise SerializationError(
            f"{filepath}: cannot rebuild the model: {saving.unknown_message(unknown)}"
        )
    with saving.custom_object_scope(custom_objects or {}):
        model = saving.deserialize(config["model"])
    build_config = config.get("build_config")
    if build_config and not model.built:
        model.build_from_config(build_config)
    with tempfile.TemporaryDirectory() as tmp:
        budget = _Budget(tmp)
        weights = _extract_checkpoint(filepath, zf, _WEIGHTS, tmp, budget)
        if weights is None:
            raise SerializationError(f"{filepath}: the archive has no {_WEIGHTS} checkpoint")
        status = Checkpoint(model=model).restore(weights)
        if model.built:
            status.assert_consumed()
        else:  # a model that builds on its first call gets its values then
            status.assert_existing_objects_matched().expect_partial()
        compile_config = config.get("compile_config")
        if compile and compile_config is not None and hasattr(model, "compile_from_config"):
            try:
                model.compile_from_config(compile_config)
            except JmodError as e:
                warnings.warn(
                    f"{filepath}: the model loads uncompiled: its compile arguments cannot "
                    f"be restored ({e})",
                    stacklevel=3,
                )
                return model
            optimizer = getattr(model, "optimizer", None)
            saved = _extract_checkpoint(filepath, zf, _OPTIMIZER, tmp, budget)
            if optimizer is not None and saved is not None:
                Checkpoint(optimizer=optimizer).restore(saved, partial=True).expect_partial()
    return model
