"""A real TensorBoard server (and a headless Chromium) reads what jmod.summary wrote.

The server runs in its own process group, under a deadline, and is stopped by
its PID. Screenshots and DOM dumps go to test-artifacts/ for people to look at.
"""

import base64
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorboard")

from PIL import Image  # noqa: E402  (installed with tensorboard)

import jmod  # noqa: E402
import jmod.summary as summary  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SERVER_START_TIMEOUT = 40
CHROMIUM_TIMEOUT = 40
LOSSES = [1.0, 0.5, 0.25, 0.125]


class Dense(jmod.Module):
    def __init__(self, n_in, n_out, name=None):
        super().__init__(name=name)
        self.w = jmod.Variable(jnp.ones((n_in, n_out)))
        self.b = jmod.Variable(jnp.zeros(n_out))

    def __call__(self, x):
        return jax.nn.relu(x @ self.w + self.b)


class TwoLayers(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = Dense(3, 3)
        self.dense_2 = Dense(3, 2)

    @jmod.jit
    def __call__(self, x):
        return self.dense_2(self.dense_1(x))


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    writer = summary.create_file_writer(root / "train")
    model = TwoLayers(name="the_model")
    summary.trace_on(graph=True)
    model(jnp.ones((1, 3)))
    with writer.as_default():
        summary.trace_export("my_func_trace", step=0)
        for step, loss in enumerate(LOSSES):
            summary.scalar("loss", loss, step=step)
        summary.graph(model.__call__.graph(jnp.ones((1, 3))))
    writer.close()
    return root


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8")


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def tensorboard_url(logdir, tmp_path_factory):
    log = tmp_path_factory.mktemp("tb") / "tensorboard.log"
    with open(log, "wb") as out:
        # `timeout` bounds the server's life even if this process dies; the
        # new session makes it (and the data server it spawns) one group.
        command = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        if shutil.which("timeout"):
            command = ["timeout", "300", *command]
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def port():
            if proc.poll() is not None:
                raise AssertionError(f"tensorboard exited: {log.read_text()[-2000:]}")
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())
            return found and found.group(1)

        url = f"http://127.0.0.1:{_wait_for(port, SERVER_START_TIMEOUT, 'tensorboard to start')}"
        _wait_for(
            lambda: "train" in json.loads(_get(f"{url}/data/plugin/scalars/tags")),
            SERVER_START_TIMEOUT,
            "the run to load",
        )
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# -- the HTTP API ------------------------------------------------------------------


def test_server_serves_the_scalars(tensorboard_url):
    tags = json.loads(_get(f"{tensorboard_url}/data/plugin/scalars/tags"))
    assert "loss" in tags["train"]
    points = json.loads(_get(f"{tensorboard_url}/data/plugin/scalars/scalars?run=train&tag=loss"))
    assert [step for _, step, _ in points] == list(range(len(LOSSES)))
    np.testing.assert_allclose([value for _, _, value in points], LOSSES)


def test_server_serves_the_traced_graph_with_module_paths(tensorboard_url):
    info = json.loads(_get(f"{tensorboard_url}/data/plugin/graphs/info"))
    assert info["train"]["tags"]["my_func_trace"]["op_graph"] is True
    pbtxt = _get(f"{tensorboard_url}/data/plugin/graphs/graph?run=train&tag=my_func_trace")
    names = re.findall(r'^  name: "([^"]+)"', pbtxt, flags=re.M)
    assert "the_model/dense_1/dot_general" in names
    assert "the_model/dense_2/relu/max" in names
    assert 'op: "dot_general"' in pbtxt and "_output_shapes" in pbtxt


def test_server_serves_the_run_graph_from_fn_graph(tensorboard_url):
    info = json.loads(_get(f"{tensorboard_url}/data/plugin/graphs/info"))
    assert info["train"]["run_graph"] is True
    pbtxt = _get(f"{tensorboard_url}/data/plugin/graphs/graph?run=train")
    names = re.findall(r'^  name: "([^"]+)"', pbtxt, flags=re.M)
    assert {"x", "the_model/dense_1/w", "the_model/dense_1/dot_general", "output"} <= set(names)


# -- headless Chromium ---------------------------------------------------------------


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (.ci/run installs it)")


def _chromium_command(chromium, profile_dir, *extra):
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        "--window-size=1400,900",
        *extra,
    ]


def test_graphs_page_renders_in_chromium(tensorboard_url, tmp_path):
    chromium = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    page = f"{tensorboard_url}/#graphs&run=train"
    screenshot = ARTIFACTS / "tensorboard_graphs.png"
    screenshot.unlink(missing_ok=True)
    wait = "--virtual-time-budget=15000"  # let the app's scripts run first
    subprocess.run(
        _chromium_command(chromium, tmp_path / "a", wait, f"--screenshot={screenshot}", page),
        capture_output=True,
        timeout=CHROMIUM_TIMEOUT,
        check=True,
    )
    dom = subprocess.run(
        _chromium_command(chromium, tmp_path / "b", wait, "--dump-dom", page),
        capture_output=True,
        timeout=CHROMIUM_TIMEOUT,
        check=True,
    ).stdout
    (ARTIFACTS / "tensorboard_graphs_dom.html").write_bytes(dom)

    image = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert image.shape == (900, 1400, 3)
    # TensorBoard's orange header (#f57c00) is drawn: the app rendered.
    orange = (np.abs(image - [245, 124, 0]).sum(axis=-1) < 30).sum()
    assert orange > 1400 * 20
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # not a blank page
    text = dom.decode("utf-8", "replace")
    assert "<tf-graph-dashboard" in text and "TensorBoard" in text


class _DevTools:
    """The Chrome DevTools protocol over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, chromium, profile_dir, url):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # A tiny launcher puts the pipe ends on fds 3 and 4 where Chromium expects them.
        launcher = (
            "import fcntl, os, sys\n"
            "r, w = (fcntl.fcntl(int(a), fcntl.F_DUPFD, 10) for a in sys.argv[1:3])\n"
            "os.dup2(r, 3); os.dup2(w, 4)\n"
            "os.execv(sys.argv[3], sys.argv[3:])\n"
        )
        command = _chromium_command(chromium, profile_dir, "--remote-debugging-pipe", url)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launcher, str(to_browser_r), str(from_browser_w), *command],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        fcntl.fcntl(self._from_browser, fcntl.F_SETFL, os.O_NONBLOCK)
        self._buffer = b""
        self._id = 0

    def send(self, method, session=None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + CHROMIUM_TIMEOUT
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, reply
                    return reply["result"]
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            if not chunk:
                raise AssertionError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raise AssertionError(f"no DevTools reply to {method}")

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)


# The graph is drawn inside shadow roots, which --dump-dom leaves out.
_DEEP_TEXT = """(() => {
  const out = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) out.push(child.textContent); else walk(child);
    }
  };
  walk(document);
  return out.join(" ");
})()"""


def test_graph_view_shows_the_model_as_a_module_box(tensorboard_url, tmp_path):
    chromium = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    browser = _DevTools(chromium, tmp_path / "profile", f"{tensorboard_url}/#graphs&run=train")
    try:
        targets = browser.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = browser.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]

        def rendered_text():
            result = browser.send(
                "Runtime.evaluate", session, expression=_DEEP_TEXT, returnByValue=True
            )
            text = result["result"].get("value", "")
            return text if "the_model" in text else None

        text = _wait_for(rendered_text, CHROMIUM_TIMEOUT, "the graph to render")
        time.sleep(1.0)  # the view zooms to fit after drawing
        shot = browser.send("Page.captureScreenshot", session, format="png")["data"]
    finally:
        browser.close()
    (ARTIFACTS / "tensorboard_graph_module_box.png").write_bytes(base64.b64decode(shot))
    assert "Main Graph" in text
    # The collapsed top-level box is the module; its input and output are the ends.
    assert re.search(r"\bthe_model\b", text) and re.search(r"\boutput\b", text)
