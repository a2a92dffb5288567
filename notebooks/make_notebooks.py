"""Writes the notebooks from their cell lists: `python notebooks/make_notebooks.py`.

Each `<name>.py` here holds `TITLE` and `CELLS`, a list of ("md" | "code", text);
this script turns it into `<name>.ipynb` with nbformat, without outputs (the
test suite executes every notebook, tests/test_notebooks.py). Edit the `.py`
and run this script again rather than editing the notebook by hand, so the
two never drift apart.
"""

import importlib.util
import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = ["intro_to_modules", "training"]


def load_cells(name):
    spec = importlib.util.spec_from_file_location(f"_notebook_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TITLE, module.CELLS


def build(title, cells):
    """A notebook (nbformat 4) from ("md" | "code", text) pairs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "title": title,
    }
    for kind, text in cells:
        source = textwrap.dedent(text).strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source))
        else:
            raise ValueError(f"cell kind must be 'md' or 'code', got {kind!r}")
    # Stable ids keep the files identical from one run of this script to the next.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    nbformat.validate(nb)
    return nb


def main(names):
    for name in names:
        if not (HERE / f"{name}.py").exists():
            print(f"skip {name}: no {name}.py")
            continue
        nb = build(*load_cells(name))
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(HERE.parent)} ({len(nb.cells)} cells)")


if __name__ == "__main__":
    main(sys.argv[1:] or SOURCES)
