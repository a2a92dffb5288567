"""MkDocs hooks for jmod's site (configured in mkdocs.yml under `hooks:`).

- The notebooks in `notebooks/` become pages: each is executed top to bottom
  in a temporary directory (as tests/test_notebooks.py does) and the executed
  copy is handed to mkdocs-jupyter, so the site shows real outputs. Set
  `JMOD_DOCS_EXECUTE=0` to render them without running (faster previews).
- After the build, every public name (`jmod.__all__` and the public names of
  the packages listed in `PUBLIC_MODULES`) must have an anchor in the API
  reference; a missing one is a warning, so `mkdocs build --strict` fails.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import tempfile
import types
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.jmod_docs")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

# Packages whose public names users reach by dotted access (`jmod.layers.Dense`).
PUBLIC_MODULES = [
    "jmod",
    "jmod.activations",
    "jmod.checkpoint",
    "jmod.compilation_cache",
    "jmod.constraints",
    "jmod.distributed",
    "jmod.errors",
    "jmod.initializers",
    "jmod.interop",
    "jmod.layers",
    "jmod.losses",
    "jmod.metrics",
    "jmod.models",
    "jmod.profiler",
    "jmod.random",
    "jmod.regularizers",
    "jmod.saved_model",
    "jmod.saving",
    "jmod.serving",
    "jmod.summary",
    "jmod.training",
    "jmod.training.callbacks",
]


def public_names(module: types.ModuleType) -> list[str]:
    """The names `module` offers: its `__all__`, else what it defines without a `_`."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return [n for n in names if not n.startswith("__")]
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )


def anchors_for(module: types.ModuleType, name: str) -> set[str]:
    """The anchor ids under which `module.name` may be documented."""
    obj = getattr(module, name)
    found = {f"{module.__name__}.{name}"}
    if isinstance(obj, types.ModuleType):
        found.add(obj.__name__)
    elif getattr(obj, "__module__", None) and getattr(obj, "__qualname__", None):
        found.add(f"{obj.__module__}.{obj.__qualname__}")
    return found


def missing_names(ids: set[str], modules: list[str] = PUBLIC_MODULES) -> list[str]:
    """Public names (dotted) that have none of their anchors in `ids`."""
    missing = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        if module_name not in ids and module_name != "jmod":
            missing.append(module_name)
        for name in public_names(module):
            if not anchors_for(module, name) & ids:
                missing.append(f"{module_name}.{name}")
    return missing


_ID = re.compile(r'\bid="([^"]+)"')


def site_ids(site_dir: Path) -> set[str]:
    """Every `id="..."` in the built API reference pages."""
    ids: set[str] = set()
    for page in (site_dir / "api").rglob("*.html"):
        ids.update(_ID.findall(page.read_text(encoding="utf-8")))
    return ids


def _execute(src: Path, dest: Path) -> None:
    import nbclient
    import nbformat

    nb = nbformat.read(src, as_version=4)
    with tempfile.TemporaryDirectory() as workdir:
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": workdir}}
        )
        client.execute()
    nbformat.write(nb, dest)


_build_dir: tempfile.TemporaryDirectory | None = None


@event_priority(100)  # before mkdocs-jupyter wraps the notebook files
def on_files(files, config):
    global _build_dir
    _build_dir = tempfile.TemporaryDirectory(prefix="jmod-docs-")
    execute = os.environ.get("JMOD_DOCS_EXECUTE", "1") != "0"
    env = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(
        {
            k: v if k != "PYTHONPATH" or not saved[k] else v + os.pathsep + saved[k]
            for k, v in env.items()
        }
    )
    try:
        for src in sorted(NOTEBOOKS.glob("*.ipynb")):
            dest = Path(_build_dir.name) / "notebooks" / src.name  # mkdocs-jupyter matches the path
            dest.parent.mkdir(exist_ok=True)
            if execute:
                log.info("executing %s", src.name)
                _execute(src, dest)
            else:
                dest.write_bytes(src.read_bytes())
            files.append(
                File(
                    f"notebooks/{src.name}",
                    src_dir=_build_dir.name,
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return files


def on_post_build(config):
    global _build_dir
    site = Path(config["site_dir"])
    for src in sorted(NOTEBOOKS.glob("*.ipynb")):
        if not (site / "notebooks" / src.stem / "index.html").exists():
            log.warning("notebook %s was not rendered as a page (mkdocs-jupyter)", src.name)
    missing = missing_names(site_ids(site))
    for name in missing:
        log.warning("public name %s has no entry in the API reference (docs/api/)", name)
    if _build_dir is not None:
        _build_dir.cleanup()
        _build_dir = None
