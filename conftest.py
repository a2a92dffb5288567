"""pytest configuration for the whole repository: the docstring examples of `jmod/`.

`pytest` (pyproject: testpaths tests and jmod, --doctest-modules) runs every
`>>>` example in the package, so a new module's examples run without anyone
listing it. They see `jmod`, `jnp`, `jax` and `np` without importing them.
Modules that need an optional extra which is not installed are not collected.
"""

import importlib.util
import os

# Tests run on CPU everywhere (CI has no GPU).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jmod  # noqa: E402

# module path (relative to the repository) -> the package its import needs.
_NEEDS = {
    "jmod/summary/_events.py": "tensorboard",
    "jmod/summary/_graph.py": "tensorboard",
    "jmod/summary/writer.py": "tensorboard",
    "jmod/summary/trace.py": "tensorboard",
}
# Docstring examples (not imports) that need an extra: skipped without it.
_EXAMPLES_NEED = {
    "jmod/summary/": ["tensorboard"],
    "jmod/training/callbacks.py": ["tensorboard"],
    "jmod/_render.py": ["treescope"],
    "jmod/serving/": ["starlette", "uvicorn"],
    "jmod/interop/keras.py": ["keras", "h5py"],
    "jmod/interop/onnx.py": ["jax2onnx", "onnxruntime"],
    "jmod/interop/safetensors.py": ["safetensors"],
}

collect_ignore = [path for path, package in _NEEDS.items() if not importlib.util.find_spec(package)]


@pytest.fixture(autouse=True)
def _doctest_globals(request, doctest_namespace):
    doctest_namespace.update(jmod=jmod, jnp=jnp, jax=jax, np=np)
    path = os.path.relpath(str(request.node.path), os.path.dirname(__file__))
    if isinstance(request.node, pytest.DoctestItem):
        for prefix, packages in _EXAMPLES_NEED.items():
            if path.startswith(prefix):
                for package in packages:
                    pytest.importorskip(package)


_CACHE_CONFIG = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_compilation_cache_max_size",
)


@pytest.fixture(autouse=True)
def _restore_compilation_cache(request):
    # jmod.compilation_cache's examples switch the process-wide cache off and on.
    if not isinstance(request.node, pytest.DoctestItem) or "compilation_cache" not in str(
        request.node.path
    ):
        yield
        return
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    saved = {name: getattr(jax.config, name) for name in _CACHE_CONFIG}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    jax_cache.reset_cache()
