"""JAX's persistent compilation cache, on by default in a per-user directory.

Every XLA program jmod (or your code) compiles is kept on disk, so the next
process that needs the same program loads it instead of compiling it: a
notebook's second start skips most of its compilation time.

The cache lives in `~/.cache/jmod/xla` (under `$XDG_CACHE_HOME` when set).
`JMOD_COMPILATION_CACHE=0` in the environment switches it off before
`import jmod`; `JMOD_COMPILATION_CACHE=/some/dir` puts it elsewhere; a
directory chosen for JAX itself (`JAX_COMPILATION_CACHE_DIR`, or
`jax.config.update("jax_compilation_cache_dir", ...)` before `import jmod`)
is left as it is. In a running process, `disable()` and `enable(directory)`
switch it. Delete the directory to clear it; its entries are compiled code,
so keep it private to you (it is made readable by its owner only).
"""

import os

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

ENV_VAR = "JMOD_COMPILATION_CACHE"
_OFF = frozenset({"0", "off", "false", "no"})
# The cache is bounded when JAX can lock it (the `filelock` package):
# least recently used entries go first.
_MAX_BYTES = 1 << 30


def default_directory():
    """`$XDG_CACHE_HOME/jmod/xla`, or `~/.cache/jmod/xla`.

    Example:
        >>> jmod.compilation_cache.default_directory().endswith("xla")
        True
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jmod", "xla")


def directory():
    """The directory compiled programs are cached in, or None when the cache is off.

    Example:
        >>> jmod.compilation_cache.disable()
        >>> jmod.compilation_cache.directory() is None
        True
    """
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir


def enable(path=None):
    """Caches every compiled program in `path` (default: `default_directory()`).

    Returns the directory, or None when it cannot be created or written
    (the cache then stays off; nothing else changes).

    Example:
        >>> import tempfile
        >>> path = jmod.compilation_cache.enable(tempfile.mkdtemp())  # a private cache
        >>> jmod.compilation_cache.directory() == path
        True
    """
    path = os.path.abspath(os.path.expanduser(path or default_directory()))
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    _jax_cache.set_cache_dir(path)
    # JAX keeps only programs that took a second to compile; first-output
    # time is made of many that take 0.05-0.5 s each.
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if jax.config.jax_compilation_cache_max_size == -1 and _can_lock():
        jax.config.update("jax_compilation_cache_max_size", _MAX_BYTES)
    # JAX decides once per process, at its first compilation, whether to use
    # the cache; start that decision afresh.
    _jax_cache.reset_cache()
    return path


def disable():
    """Stops reading and writing the persistent cache in this process.

    Example:
        >>> jmod.compilation_cache.disable()
        >>> jmod.compilation_cache.directory() is None
        True
    """
    jax.config.update("jax_enable_compilation_cache", False)
    _jax_cache.reset_cache()


def _can_lock():
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True


def enable_from_environment():
    """What `import jmod` does: on in the default directory unless switched off or chosen."""
    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() in _OFF:
        return None
    if jax.config.jax_compilation_cache_dir and not setting:
        return jax.config.jax_compilation_cache_dir
    return enable(setting or None)
