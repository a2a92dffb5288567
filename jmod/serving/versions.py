"""`ModelVersions`: the numbered version folders of a model base path, and which one is served.

As TF Serving's file system source with its "latest" policy: the newest
version folder (`1/`, `2/`, ...) is loaded and served; `poll()` looks again,
loads a newer folder beside the served one, and swaps only once it has
loaded, so a broken new version is reported (in the status) while the old
one keeps serving. A broken folder is not retried until its files change.
"""

import logging
import os
import threading

from jmod.saved_model import PlatformError, SavedModelNotFoundError
from jmod.serving.errors import ServingError

log = logging.getLogger("jmod.serving")


def version_folders(base_path):
    """{version number: folder} of the numbered subfolders of `base_path`."""
    out = {}
    for entry in os.scandir(base_path):
        if entry.is_dir() and entry.name.isdigit():
            out[int(entry.name)] = entry.path
    return out


def _stamp(path):
    """What identifies a folder's contents: every file's path, size and modification time."""
    files = []
    for root, _, names in os.walk(path):
        for n in names:
            try:
                st = os.stat(os.path.join(root, n))
            except OSError:
                continue
            files.append((os.path.relpath(os.path.join(root, n), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(files))


def _error_code(error):
    if isinstance(error, (SavedModelNotFoundError, FileNotFoundError)):
        return "NOT_FOUND"
    if isinstance(error, PlatformError):
        return "FAILED_PRECONDITION"
    if isinstance(error, ValueError):
        return "INVALID_ARGUMENT"
    return "UNKNOWN"


class ModelVersions:
    """The versions of one model under `base_path`: the served one and the status of each seen.

    `load(version, folder)` returns a servable (anything with `.version`) or
    raises. `poll()` is called from one thread at a time; `servable()` and
    `status()` from any thread.

    Example:
        >>> import os, tempfile, types
        >>> from jmod.serving.versions import ModelVersions
        >>> base = tempfile.mkdtemp()
        >>> load = lambda version, path: types.SimpleNamespace(version=version)
        >>> versions = ModelVersions("m", base, load)
        >>> os.makedirs(os.path.join(base, "3"))
        >>> versions.poll()
        3
        >>> versions.status()[0]["state"], versions.servable().version
        ('AVAILABLE', 3)
    """

    def __init__(self, name, base_path, load):
        self.name = name
        self.base_path = os.fspath(base_path)
        self._load = load
        self._lock = threading.Lock()
        self._current = None
        self._states = {}  # version -> (state, error code, message)
        self._broken = {}  # version -> stamp of the folder that failed to load

    @property
    def current(self):
        """The servable now served (None before a version loaded)."""
        return self._current

    def poll(self):
        """Looks at the version folders and loads the newest loadable one if it is newer.

        Returns the version served afterwards (None if none is).
        """
        try:
            folders = version_folders(self.base_path)
        except OSError as e:
            log.error("cannot list model base path %s: %s", self.base_path, e)
            return self._version()
        current = self._current
        for version in sorted(folders, reverse=True):
            if current is not None and version == current.version:
                break
            if current is not None and version < current.version and current.version in folders:
                break
            path = folders[version]
            stamp = _stamp(path)
            if self._broken.get(version) == stamp:
                continue
            self._set(version, "LOADING")
            log.info("loading servable version {name: %s version: %d}", self.name, version)
            try:
                servable = self._load(version, path)
            except Exception as e:
                self._broken[version] = stamp
                message = f"{type(e).__name__}: {e}"
                self._set(version, "END", _error_code(e), message)
                log.error(
                    "loading servable version {name: %s version: %d} failed: %s",
                    self.name,
                    version,
                    message,
                )
                continue
            self._broken.pop(version, None)
            with self._lock:
                old, self._current = self._current, servable
                self._states[version] = ("AVAILABLE", "OK", "")
                if old is not None:
                    self._states[old.version] = ("END", "OK", "")
            log.info("serving version {name: %s version: %d}", self.name, version)
            if old is not None:
                log.info("unloaded servable version {name: %s version: %d}", self.name, old.version)
            break
        if not folders and current is None:
            log.warning("no versions of servable %s found under %s", self.name, self.base_path)
        return self._version()

    def _version(self):
        current = self._current
        return None if current is None else current.version

    def _set(self, version, state, code="OK", message=""):
        with self._lock:
            self._states[version] = (state, code, message)

    def servable(self, version=None):
        """The servable for a request: the served version, or a 404 naming what was asked."""
        current = self._current
        if current is not None and (version is None or version == current.version):
            return current
        spec = f"Latest({self.name})" if version is None else f"Specific({self.name}, {version})"
        raise ServingError.not_found(f"Servable not found for request: {spec}")

    def status(self, version=None):
        """`model_version_status` entries as TF Serving lists them (newest first)."""
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise ServingError.not_found(
                    f"Could not find version {version} of model {self.name}"
                )
            states = {version: states[version]}
        if not states:
            raise ServingError.not_found(f"Could not find any versions of model {self.name}")
        return [
            {
                "version": str(v),
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }
            for v, (state, code, message) in sorted(states.items(), reverse=True)
        ]
