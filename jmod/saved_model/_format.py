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


def decode_metadata(data, filename):
    """The metadata dict of `saved_model.json`, refusing other formats and newer versions."""
    try:
        metadata = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
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
    return metadata


def read_file(directory, relpath):
    """The bytes of DIR/relpath; a missing file is a `SavedModelNotFoundError` naming it."""
    filename = os.path.join(directory, relpath)
    try:
        with open(filename, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise SavedModelNotFoundError(
            f"{filename}: missing from the saved model {directory!r}"
        ) from None


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
        ok = record["algorithm"] == _HASH and record["checksum"] == _checksum(files)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise SavedModelError(f"{filename}: malformed or modified fingerprint")
    for rel in required:
        if rel not in files:
            raise SavedModelError(
                f"{filename}: {rel} is not fingerprinted; the directory was modified"
            )
    for rel, digest in files.items():
        path = os.path.join(directory, rel)
        if not os.path.isfile(path):
            raise SavedModelNotFoundError(f"{path}: missing from the saved model {directory!r}")
        if _file_hash(path) != digest:
            raise SavedModelError(
                f"{path}: contents differ from the fingerprint taken when it was saved "
                "(the file was modified or corrupted)"
            )
    return record
