"""Every notebook in notebooks/ runs top to bottom on CPU, in a temporary directory.

Executed with nbclient in a python3 kernel (the Python running the tests);
a cell that raises fails the test with the cell's source and traceback. A few
outputs that the story depends on are checked too.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# What each notebook must show: (text in the cell's source, text in its outputs).
EXPECTED = {
    "intro_to_modules.ipynb": [
        ("simple_module(jnp.asarray(5.0))", "Array(30., dtype=float32)"),
        ("print(repr(my_model))", "<treescope-container"),
        ("print(repr(my_model))", "# dense_1/w"),
        ('print("Variables before the first call:"', "Variables before the first call: ()"),
        ("jmod.checkpoint.list_variables(chkp_path)", "('model/dense_1/w', (3, 3))"),
        ('print("traces:"', "traces: 2"),
        ("new_model.__call__.graph(", "my_sequential_module/dense_1/"),
        ("isinstance(new_model, MySequentialModule)", "False"),
        ("new_model([[2.0, 2.0, 2.0, 2.0]])", "SignatureError"),
        ("flexible_dense(jnp.array([[2.0, 2.0, 2.0, 2.0]]))", "Call arguments received"),
        ("my_functional_model.summary()", "Total params: 20 (80.00 B)"),
        ("my_functional_model", "jmod-summary"),  # the HTML view: table above the tree
        ("reconstructed_model(x)", "same as the original: True"),
    ],
    "training.ipynb": [
        ("history = model.fit(", "Epoch 1/15"),
        ('print("recorded:"', "recorded: ['loss', 'mae', 'val_loss', 'val_mae']"),
        ('print("train step traces:"', "train step traces: 1"),
        ("return_dict=True", "'mae'"),
        ("np.isclose(mse", "same: True"),
        ("model", "jmod-summary"),  # the HTML view of the trained model
        ("restored = jmod.models.load_model", "restored model predicts the same: True"),
        ("restored = jmod.models.load_model", "compiled again, learning rate: 0.01"),
        ("manager.save()", "checkpoints/ckpt-1"),
        ("cnn = jmod.Sequential", "CNN accuracy: "),
        ("classifier = jmod.Sequential", "LSTM accuracy: "),
    ],
}


def _text(output):
    if output.output_type == "stream":
        return output.text
    if output.output_type in ("execute_result", "display_data"):
        return "\n".join(str(v) for v in output.data.values())
    return ""


def _cell_text(cell):
    # A print may arrive as several stream messages: join them as the notebook shows them.
    return "".join(_text(o) for o in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    # The kernel inherits this environment: CPU only, and jmod importable from
    # the checkout even when it is not installed.
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell raised\n{e}"[:6000], pytest=False)

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[:1]
    for source, wanted in EXPECTED.get(path.name, []):
        cells = [c for c in code if source in c.source]
        assert cells, f"{path.name}: no cell has {source!r}"
        assert any(wanted in _cell_text(c) for c in cells), (
            f"{path.name}: no cell with {source!r} shows {wanted!r}"
        )
    # Everything the notebook wrote went to the temporary directory.
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before
    assert any(tmp_path.iterdir())
