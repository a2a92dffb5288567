"""The treescope HTML of a model, opened in headless Chromium: it renders and it folds.

The page is written to test-artifacts/ with its screenshot and DOM dump, for
people to look at. Skipped only where no Chromium is installed (.ci/run
installs Debian's `chromium`).
"""

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import jax.numpy as jnp
import pytest

import jmod

pytest.importorskip("treescope")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Treescope draws into a shadow root, which --dump-dom does not serialize: the
# page copies what is shown (innerText honours folding) into plain elements,
# then opens one folded variable, as a click on its triangle would.
_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jmod treescope</title></head>
<body>
{body}
<pre id="shown-before" hidden></pre>
<pre id="shown-after" hidden></pre>
<script>
function shown(root) {{
  return Array.from(root.children)
    .filter((e) => e.tagName !== "STYLE" && e.tagName !== "SCRIPT")
    .map((e) => e.innerText).join("\\n");
}}
const timer = setInterval(() => {{
  const box = document.querySelector("treescope-container");
  if (!box || !box.shadowRoot || !shown(box.shadowRoot).includes("variables")) return;
  clearInterval(timer);
  document.getElementById("shown-before").textContent = shown(box.shadowRoot);
  const toggle = Array.from(box.shadowRoot.querySelectorAll("input.foldable_node_toggle"))
    .find((t) => !t.checked && t.closest(".foldable_node").innerText.includes("# dense_1/kernel"));
  if (toggle) toggle.click();
  setTimeout(() => {{
    document.getElementById("shown-after").textContent = shown(box.shadowRoot);
    document.title = "rendered";
  }}, 100);
}}, 50);
</script>
</body></html>
"""


class TwoLayers(jmod.Module):
    def __init__(self):
        super().__init__(name="the_model")
        self.dense_1 = jmod.layers.Dense(4, activation="relu", name="dense_1")
        self.dense_2 = jmod.layers.Dense(2, name="dense_2")

    def __call__(self, x):
        return self.dense_2(self.dense_1(x))


def _chromium():
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (.ci/run installs it)")


def _run_chromium(chromium, profile, *args, url):
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
        # Lets the page's timers (treescope's rendering, the fold click) finish first.
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, timeout=90, check=True).stdout


def _png_pixels(data):
    """The decompressed scanlines of a PNG (filter bytes included) and its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return zlib.decompress(idat), size


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    model = TwoLayers()
    model(jnp.ones((1, 3)))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "treescope_model.html"
    path.write_text(_PAGE.format(body=model._repr_html_()), encoding="utf-8")
    return model, path


def test_model_html_renders_in_chromium_screenshot(page, tmp_path):
    chromium = _chromium()
    _, path = page
    shot = ARTIFACTS / "treescope_model.png"
    shot.unlink(missing_ok=True)
    _run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", url=path.as_uri())
    pixels, size = _png_pixels(shot.read_bytes())
    assert size == (1200, 900)
    # A blank page is one colour; drawn text gives many distinct byte values.
    assert len(set(pixels)) > 16


def test_model_html_dom_shows_paths_and_folds_open(page, tmp_path):
    chromium = _chromium()
    model, path = page
    dom = _run_chromium(chromium, tmp_path / "profile", "--dump-dom", url=path.as_uri())
    (ARTIFACTS / "treescope_model_dom.html").write_bytes(dom)
    dom = dom.decode("utf-8")
    assert "<title>rendered</title>" in dom, "the page script did not finish"
    before = dom.split('id="shown-before"', 1)[1].split("</pre>", 1)[0]
    after = dom.split('id="shown-after"', 1)[1].split("</pre>", 1)[0]
    assert "TwoLayers 'the_model'" in before
    for var_path, _ in model.named_variables():
        assert f"# {var_path}" in before
    assert "float32(3, 4)" in before and "float32(4, 2)" in before
    # Folded, a variable is one line; opened, it shows its name, flag and array.
    assert "trainable=True" not in before
    assert "name='kernel'" in after and "trainable=True" in after and "value=" in after
