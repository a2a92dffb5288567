"""Notebook rendering: treescope HTML of modules, variables, checkpoints and models."""

import doctest
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmod
from jmod import _render, checkpoint, models

treescope = pytest.importorskip("treescope")


class Dense(jmod.Module):
    def __init__(self, w, b, name=None):
        super().__init__(name=name)
        self.w = jmod.Variable(w, name="w")
        self.b = jmod.Variable(b, name="b")


class Model(jmod.Module):
    def __init__(self):
        super().__init__(name="the_model")
        self.dense_1 = Dense(np.arange(6.0).reshape(2, 3), np.zeros(3))
        self.blocks = [Dense(np.ones((3, 1)), np.full(1, 0.5, np.float32))]
        self.steps = jmod.Variable(np.int32(7), trainable=False)
        self.table = {"scale": jmod.Variable(np.array([1.0, 3.0]), dtype=jnp.bfloat16)}


def text_of(obj):
    return treescope.render_to_text(obj)


def test_module_html_lists_every_variable_path_shape_and_dtype():
    m = Model()
    html = m._repr_html_()
    for path, var in m.named_variables():
        assert f"# {path}" in html
        assert f"{np.dtype(var.dtype).name}{tuple(var.shape)}" in html
    assert "float32(2, 3)" in html and "int32()" in html and "bfloat16(2,)" in html


def test_module_html_is_foldable_treescope_output():
    html = Model()._repr_html_()
    assert "<treescope-container" in html
    assert "foldable_node_toggle" in html
    # Copy-path buttons give the Python expression from the rendered object.
    assert ".blocks[0].w" in html and ".table['scale']" in html


def test_module_tree_nests_submodules_under_their_paths():
    lines = text_of(Model()).splitlines()
    assert lines[0].startswith("Model 'the_model' (")
    # Own variables come first, then submodules in attribute order, as `variables` does.
    order = [ln.strip().split(":")[0] for ln in lines if re.match(r"^  \w", ln)]
    assert order == ["steps", "table/scale", "blocks/0", "dense_1"]
    sub = next(ln for ln in lines if ln.strip().startswith("blocks/0:"))
    assert "# blocks/0: 2 variables, 4 parameters (16 B)" in sub


def test_variable_line_shows_trainable_flag_and_value_summary():
    text = text_of(Model())
    w = np.arange(6.0)
    expected = f"≈{w.mean():.2} ±{w.std():.2} [≥{w.min():.2}, ≤{w.max():.2}]"
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("w:") and "(2, 3)" in ln)
    assert "trainable" in line and "non-trainable" not in line
    assert expected in line
    assert line.rstrip().endswith("# dense_1/w")
    steps = next(ln for ln in text.splitlines() if ln.strip().startswith("steps:"))
    assert "non-trainable" in steps and "= 7" in steps


def test_header_counts_parameters_and_bytes():
    text = text_of(Model())
    # 6 + 3 + 3 + 1 float32, one int32, two bfloat16: 16 numbers, 14*4 + 2*2 bytes.
    assert "6 variables, 16 parameters (60 B)" in text.splitlines()[0]


def test_variable_renders_alone_with_its_array_when_expanded():
    v = jmod.Variable(np.array([[1.0, -1.0], [2.0, 4.0]]), name="kernel")
    html = v._repr_html_()
    assert "float32(2, 2)" in html and "<treescope-container" in html
    lines = text_of(v).splitlines()
    assert lines[0] == "Variable 'kernel' float32(2, 2) trainable ≈1.5 ±1.8 [≥-1.0, ≤4.0]"
    assert "  name='kernel'" in lines and "  trainable=True" in lines
    assert any(ln.startswith("  value=") and "float32(2, 2)" in ln for ln in lines)


def test_large_module_html_is_compressed():
    m = jmod.Module()
    m.blocks = [Dense(np.ones((64, 64)), np.zeros(64)) for _ in range(60)]
    html = m._repr_html_()
    assert "<treescope-container" in html and "# blocks/59/w" not in html
    assert len(html) < 100_000
    assert "# blocks/59/w" in _render.to_html(m, compressed=False)


def test_plain_repr_stays_one_short_line():
    m = Model()
    assert repr(m) == "<Model 'the_model': 6 variables>"
    assert "\n" not in repr(m.dense_1.b)


def test_treescope_shows_one_tree_not_a_second_html_copy():
    # Objects with a class-level _repr_html_ get their HTML framed next to the tree.
    text = text_of({"model": Model()})
    assert "Rich HTML representation" not in text
    assert text.count("the_model") == 1


def test_shared_module_is_listed_once_then_referenced():
    m = jmod.Module()
    m.a = Dense(np.ones((1, 1)), np.ones(1))
    m.b = m.a
    text = text_of(m)
    assert text.count("# a/w") == 1 and "# b/w" not in text
    assert "b: Dense  # same object as a" in text
    assert [p for p, _ in m.named_variables()] == ["a/b", "a/w"]


def test_unbuilt_layer_says_so():
    layer = jmod.layers.Dense(4)
    assert "(not built)" in text_of(layer)
    layer(jnp.ones((2, 3)))
    text = text_of(layer)
    assert "(not built)" not in text and "float32(3, 4)" in text


def test_traced_variables_render_without_values():
    seen = []

    @jax.jit
    def f(x):
        seen.append(_render.value_summary(x))
        return x

    f(jnp.ones(3))
    assert seen == ["(traced)"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.array([1.0, 3.0]), "≈2.0 ±1.0 [≥1.0, ≤3.0]"),
        (np.array([2.5, 2.5]), "all 2.5"),
        (np.array([1.0, np.nan, np.inf]), "all 1.0 nan:1 inf:1"),
        (np.array([3, -4], np.int32), "[≥-4, ≤3]"),
        (np.array([True, False, True]), "true:2/3"),
        (np.zeros((0, 3)), "(empty)"),
        (np.array(7, np.int32), "= 7"),
        (np.array([0.5]), "= 0.5"),
    ],
)
def test_value_summary(value, expected):
    assert _render.value_summary(value) == expected


def test_value_summary_of_bfloat16_matches_float32_math():
    x = np.array([0.25, 0.5, 1.0, 2.0], np.float32)
    got = _render.value_summary(jnp.asarray(x, jnp.bfloat16))
    assert got == f"≈{x.mean():.2} ±{x.std():.2} [≥{x.min():.2}, ≤{x.max():.2}]"


def test_checkpoint_listing_shows_keys_shapes_and_dtypes(tmp_path):
    m = Model()
    path = checkpoint.Checkpoint(model=m).write(str(tmp_path / "ckpt"))
    listing = _render.render_checkpoint(path)
    keys = [k for k, _, _ in listing.entries]
    assert keys == sorted(["model/" + p for p, _ in m.named_variables()])
    assert ("model/table/scale", (2,), "bfloat16") in listing.entries
    assert repr(listing) == f"<CheckpointListing {path!r}: 6 values>"
    html = listing._repr_html_()
    assert "<treescope-container" in html
    for key, shape, dtype in listing.entries:
        assert f"# {key}" in html and f"{dtype}{shape}" in html
    text = text_of(listing)
    # Keys are grouped by their path segments: model/ holds blocks/, dense_1/, ...
    assert re.search(r"^  model/ \(", text, re.M) and re.search(r"^    dense_1/ \(", text, re.M)


def test_built_model_shows_summary_table_above_tree():
    inputs = models.Input(shape=[3])
    model = models.Model(inputs, jmod.layers.Dense(2)(inputs))
    html = _render.to_html(model)
    assert html.index("Total params: 8") < html.index("<treescope-container")
    assert "float32(3, 2)" in html


def _run_python(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_renders_without_ipython():
    script = """
        import sys
        sys.modules["IPython"] = None  # any import of IPython now fails
        import numpy as np
        import jmod
        m = jmod.Module()
        m.w = jmod.Variable(np.ones((2, 5)))
        html = m._repr_html_()
        assert "float32(2, 5)" in html and "<treescope-container" in html, html[:200]
        print("ok")
    """
    assert _run_python(script) == "ok"


def test_without_treescope_notebooks_fall_back_to_repr():
    script = """
        import sys
        sys.modules["treescope"] = None  # as if it were not installed
        import jmod
        m = jmod.Module()
        m.w = jmod.Variable([1.0])
        print(m._repr_html_() is None, m.w._repr_html_() is None, repr(m))
    """
    assert _run_python(script) == "True True <Module 'module': 1 variables>"


def test_docstring_examples_exist():
    # pytest's --doctest-modules runs them (pyproject).
    tests = [t for t in doctest.DocTestFinder().find(_render) if t.examples]
    assert len(tests) >= 4
