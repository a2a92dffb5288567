"""Docstring examples: pytest runs every one in jmod/, and every public module has some.

The examples themselves run as `--doctest-modules` items (pyproject's pytest
options, namespace from conftest.py), so a new module's examples run
without being listed anywhere. These tests check that this stays switched
on and that no public module ships without an example.
"""

import doctest
import importlib
import pkgutil
import tomllib
from pathlib import Path

import jmod

ROOT = Path(__file__).resolve().parent.parent

# Public modules that have no example, and why.
WITHOUT_EXAMPLES = {
    "jmod.layers": "the package only re-exports; each layer's module has examples",
    "jmod.tour": "a script (python -m jmod.tour) that prints the guide's story",
    "jmod.training.steps": "the compiled train/test/predict steps behind fit; fit has examples",
}


def _public_modules():
    for info in pkgutil.walk_packages(jmod.__path__, "jmod."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield info.name


def test_pytest_runs_the_examples_of_every_module_in_jmod():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "jmod" in options["testpaths"]
    assert "--doctest-modules" in options["addopts"].split()
    assert {"ELLIPSIS", "NORMALIZE_WHITESPACE"} <= set(options["doctest_optionflags"])


def test_every_public_module_has_examples():
    without = []
    for name in _public_modules():
        module = importlib.import_module(name)
        tests = doctest.DocTestFinder().find(module, name)
        if not any(t.examples for t in tests) and name not in WITHOUT_EXAMPLES:
            without.append(name)
    assert without == [], f"modules without a '>>>' example: {without}"


def test_the_exceptions_still_exist():
    names = set(_public_modules())
    assert set(WITHOUT_EXAMPLES) <= names
