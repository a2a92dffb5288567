"""The documentation site's own checks (docs/hooks/jmod_docs.py), without building the site.

CI builds the site with `mkdocs build --strict` (.ci/run); these tests check
that its check for undocumented public names sees what it must, and that the
pages the navigation names exist.
"""

import importlib.util
import re
from pathlib import Path

import pytest

import jmod

pytest.importorskip("mkdocs")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _hooks():
    spec = importlib.util.spec_from_file_location(
        "jmod_docs_hooks", DOCS / "hooks" / "jmod_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site(tmp_path, ids):
    page = tmp_path / "api" / "x" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("".join(f'<h2 id="{i}">{i}</h2>' for i in ids), encoding="utf-8")
    return tmp_path


def test_a_name_missing_from_the_api_pages_is_reported(tmp_path):
    hooks = _hooks()
    ids = hooks.site_ids(_site(tmp_path, ["jmod.layers", "jmod.layers.Dense"]))
    missing = hooks.missing_names(ids, ["jmod.layers"])
    assert "jmod.layers.Dense" not in missing
    assert "jmod.layers.Conv2D" in missing
    # Every name of jmod.layers.__all__ but Dense is missing, and nothing else.
    assert sorted(missing) == sorted(
        f"jmod.layers.{n}" for n in jmod.layers.__all__ if n != "Dense"
    )


def test_a_name_documented_where_it_is_defined_counts(tmp_path):
    hooks = _hooks()
    # jmod.Module is defined in jmod.module: its anchor there documents jmod.Module too.
    assert "jmod.module.Module" in hooks.anchors_for(jmod, "Module")
    ids = hooks.site_ids(_site(tmp_path, ["jmod.module.Module"]))
    missing = hooks.missing_names(ids, ["jmod"])
    assert "jmod.Module" not in missing
    assert "jmod.Variable" in missing
    assert "jmod.layers" in missing  # a public subpackage needs its own page


def test_modules_without_all_offer_what_they_define():
    hooks = _hooks()
    names = hooks.public_names(jmod.losses)
    assert "MeanSquaredError" in names and "mean_squared_error" in names
    # Imported helpers are not part of jmod.losses' API.
    assert not {"jnp", "np", "TrainingError", "lookup"} & set(names)
    assert all(not n.startswith("_") for n in names)


def test_every_public_package_has_an_api_page():
    text = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.md"))
    directives = set(re.findall(r"^::: (\S+)", text, re.MULTILINE))
    for module in _hooks().PUBLIC_MODULES:
        if module != "jmod":
            assert module in directives, f"no '::: {module}' in docs/api/"


def test_every_page_in_the_navigation_exists():
    nav = re.findall(r":\s+(\S+\.(?:md|ipynb))\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(nav) > 20
    for page in nav:
        if page.startswith("notebooks/"):
            assert (ROOT / page).exists(), page  # the hook adds notebooks/ from the repository
        else:
            assert (DOCS / page).exists(), page
