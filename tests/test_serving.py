"""jmod.serving: TF Serving's REST API over version folders of jmod saved models.

Real servers run as subprocesses on free loopback ports (`python -m
jmod.saved_model serve`), bounded by timeouts and ended by PID; the TF
Serving documentation's request/response examples run against in-process
servers.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import jax.numpy as jnp
import numpy as np
import pytest

import jmod
import jmod.serving
from jmod.saved_model import __main__ as cli
from jmod.serving import batching, errors, json_tensor, servable, server, versions
from jmod.serving import cli as serving_cli
from jmod.serving.batching import Batcher
from jmod.serving.json_tensor import predict_response, request_tensors, tensor_json
from jmod.serving.versions import ModelVersions
from tests.guide import MyFlexibleSequentialModule
from tests.layer_checks import run_docstring_examples

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 30

W1 = np.array([[0.1, 0.2, -0.3], [0.4, -0.5, 0.6], [0.7, 0.8, 0.9]], np.float32)
B1 = np.array([0.1, -0.2, 0.3], np.float32)
W2 = np.array([[1.0, -1.0], [0.5, 0.5], [-0.2, 0.3]], np.float32)
B2 = np.array([0.05, -0.05], np.float32)


def reference(x):
    """The guide's two relu layers, in NumPy."""
    h = np.maximum(np.asarray(x, np.float32) @ W1 + B1, 0)
    return np.maximum(h @ W2 + B2, 0)


# -- models ---------------------------------------------------------------------
def save_guide_model(path):
    """The guide's model, known weights, saved with a polymorphic batch."""
    model = MyFlexibleSequentialModule(name="the_model")
    model(jnp.ones((1, 3)))
    for dense, w, b in ((model.dense_1, W1, B1), (model.dense_2, W2, B2)):
        dense.w.assign(w)
        dense.b.assign(b)
    spec = jmod.TensorSpec([None, 3], name="x")
    return jmod.saved_model.save(model, path, signatures={"__call__": (model, [spec])})


class Scale(jmod.Module):
    def __init__(self, k):
        super().__init__()
        self.k = jmod.Variable(float(k))

    @jmod.jit
    def __call__(self, x):
        return self.k * x


def save_scale(path, k):
    m = Scale(k)
    return jmod.saved_model.save(
        m, path, signatures={"__call__": (m.__call__, [jmod.TensorSpec([None, 2])])}
    )


class HalfPlus(jmod.Module):
    """TF Serving's test model half_plus_two / half_plus_three: y = 0.5 x + c, any rank."""

    def __init__(self, c):
        super().__init__()
        self.c = jmod.Variable(float(c))

    @jmod.jit
    def __call__(self, x):
        return 0.5 * x + self.c


def save_half_plus(path, c):
    m = HalfPlus(c)
    calls = [(m.__call__, [jmod.TensorSpec([None])]), (m.__call__, [jmod.TensorSpec([None, None])])]
    return jmod.saved_model.save(m, path, signatures={"__call__": calls})


class Sensors(jmod.Module):
    """Two named inputs of different shapes, two named outputs (the REST docs' example)."""

    @jmod.jit
    def __call__(self, signal, sensor):
        return {"total": jnp.sum(signal, axis=1), "peak": jnp.max(sensor, axis=(1, 2))}


def save_sensors(path):
    m = Sensors()
    specs = [jmod.TensorSpec([None, 5], "int32"), jmod.TensorSpec([None, 2, 2], "int32")]
    return jmod.saved_model.save(m, path, signatures={"__call__": (m.__call__, specs)})


# -- HTTP -----------------------------------------------------------------------
def http(url, body=None):
    """(status, parsed JSON) of a GET (body None) or POST."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=TIMEOUT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Subprocess:
    """`python -m jmod.saved_model serve` on a free loopback port; `stop()` ends it by PID."""

    def __init__(self, base, log, *options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
        command = [sys.executable, "-m", "jmod.saved_model", "serve", str(base)]
        command += ["--port", str(self.port), "--host", "127.0.0.1", *options]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the server exited ({self.proc.returncode}):\n{self.output()}"
                )
            try:
                if http(self.url + "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not become healthy:\n{self.output()}")
            time.sleep(0.1)

    def output(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL if it has not exited in time; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode


def wait_for(condition, timeout=20, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not true within {timeout}s")


# -- the guide's model, served by a subprocess ---------------------------------
@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "guide"
    save_guide_model(str(base / "1"))
    srv = Subprocess(base, tmp_path_factory.mktemp("logs") / "guide.log", "--poll-seconds", "0.2")
    yield srv
    assert srv.stop() == 0, srv.output()


def test_instances_return_the_models_outputs(guide):
    status, body = http(
        guide.url + "/v1/models/guide:predict", {"instances": [[1, 2, 3], [4, 5, 6]]}
    )
    assert status == 200
    np.testing.assert_allclose(body["predictions"], reference([[1, 2, 3], [4, 5, 6]]), rtol=1e-6)


def test_columnar_inputs_unnamed_and_named_answer_outputs(guide):
    x = [[0.5, -1.0, 2.0], [3.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    url = guide.url + "/v1/models/guide/versions/1:predict"
    unnamed, named = http(url, {"inputs": x}), http(url, {"inputs": {"x": x}})
    assert unnamed == named
    assert unnamed[0] == 200 and list(unnamed[1]) == ["outputs"]
    np.testing.assert_allclose(unnamed[1]["outputs"], reference(x), rtol=1e-6)


def test_named_instances_and_signature_name(guide):
    body = {"signature_name": "serving_default", "instances": [{"x": [1, 2, 3]}]}
    status, out = http(guide.url + "/v1/models/guide:predict", body)
    assert status == 200
    np.testing.assert_allclose(out["predictions"], reference([[1, 2, 3]]), rtol=1e-6)


def test_metadata_lists_the_signature_with_polymorphic_batch(guide):
    status, body = http(guide.url + "/v1/models/guide/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "guide", "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    x, y = sig["inputs"]["x"], sig["outputs"]["output_0"]
    assert x["dtype"] == y["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "3"]
    assert [d["size"] for d in y["tensor_shape"]["dim"]] == ["-1", "2"]
    assert x["tensor_shape"]["unknown_rank"] is False


def test_status_of_the_model_and_of_a_version(guide):
    available = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert http(guide.url + "/v1/models/guide") == (200, available)
    assert http(guide.url + "/v1/models/guide/versions/1") == (200, available)
    status, body = http(guide.url + "/v1/models/guide/versions/9")
    assert status == 404 and "version 9" in body["error"]


def test_wrong_shape_is_a_400_with_an_error_body_and_the_server_keeps_serving(guide):
    status, body = http(guide.url + "/v1/models/guide:predict", {"instances": [[1, 2], [3, 4]]})
    assert status == 400
    assert "shape [2, 2]" in body["error"] and "[-1, 3]" in body["error"]
    status, body = http(guide.url + "/v1/models/guide:predict", {"instances": [[1, 2, 3]]})
    assert status == 200


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"", 400, "JSON Parse error: The document is empty"),
        (b"instances = [1, 2]", 400, "JSON Parse error"),
        (b"[1, 2]", 400, "Is not object"),
        ({"instances": [[1, 2], [3]]}, 400, "different lengths"),
        ({"instances": [["a", "b", "c"]]}, 400, "is not of expected type: float"),
        ({"instances": [[True, False, True]]}, 400, "is not of expected type: float"),
        ({"instances": []}, 400, "No values in 'instances' array"),
        ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, 400, "only one of"),
        ({"x": [[1, 2, 3]]}, 400, "Missing 'inputs' or 'instances' key"),
        ({"inputs": {"y": [[1, 2, 3]]}}, 400, "Missing named input: x"),
        ({"signature_name": "nope", "instances": [[1, 2, 3]]}, 400, '"nope" not found'),
        ({"signature_name": 3, "instances": [[1, 2, 3]]}, 400, "must be a string"),
    ],
)
def test_bad_requests_get_tf_serving_errors(guide, body, status, words):
    got, out = http(guide.url + "/v1/models/guide:predict", body)
    assert got == status and words in out["error"], out


def test_unknown_model_version_or_route(guide):
    status, body = http(guide.url + "/v1/models/half:predict", {"instances": [[1, 2, 3]]})
    assert (status, body) == (404, {"error": "Servable not found for request: Latest(half)"})
    status, body = http(guide.url + "/v1/models/guide/versions/50:predict", {"instances": [[1]]})
    assert status == 404 and "Specific(guide, 50)" in body["error"]
    status, body = http(guide.url + "/v1/foo")
    assert status == 400 and "Malformed request" in body["error"]
    assert http(guide.url + "/healthz") == (200, {"status": "ok", "model": "guide", "version": "1"})


# -- versions, batching, shutdown (subprocesses) --------------------------------
@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """A model base path whose version v multiplies by v, served with batching."""
    base = tmp_path_factory.mktemp("models") / "scaled"
    save_scale(str(base / "1"), 1)
    options = ["--poll-seconds", "0.2", "--batching", "--max-batch-size", "8"]
    srv = Subprocess(base, tmp_path_factory.mktemp("logs") / "scaled.log", *options)
    srv.base = base
    yield srv
    assert srv.stop() == 0, srv.output()


def served_version(srv):
    _, body = http(srv.url + "/v1/models/scaled")
    return max(int(s["version"]) for s in body["model_version_status"] if s["state"] == "AVAILABLE")


def test_new_version_folder_is_served_within_the_polling_interval(scaled):
    old = served_version(scaled)
    save_scale(str(scaled.base / str(old + 1)), old + 1)
    x = [[1.0, -2.0]]

    def answer():
        _, body = http(scaled.url + "/v1/models/scaled:predict", {"instances": x})
        return body["predictions"] == [[old + 1.0, -2.0 * (old + 1)]]

    wait_for(answer, timeout=60)
    states = {
        s["version"]: s["state"]
        for s in http(scaled.url + "/v1/models/scaled")[1]["model_version_status"]
    }
    assert states[str(old + 1)] == "AVAILABLE" and states[str(old)] == "END"
    status, body = http(scaled.url + f"/v1/models/scaled/versions/{old}:predict", {"instances": x})
    assert status == 404  # the old version was unloaded


def test_broken_version_folder_is_reported_and_the_old_one_keeps_serving(scaled):
    old = served_version(scaled)
    broken = scaled.base / str(old + 1)
    broken.mkdir()
    (broken / "saved_model.json").write_text("{not json")

    def reported():
        status, body = http(scaled.url + f"/v1/models/scaled/versions/{old + 1}")
        return status == 200 and body["model_version_status"][0]

    entry = wait_for(reported, timeout=60)
    assert entry["state"] == "END" and entry["status"]["error_code"] != "OK"
    assert "saved_model.json" in entry["status"]["error_message"]
    status, body = http(scaled.url + "/v1/models/scaled:predict", {"inputs": [[1.0, 1.0]]})
    assert status == 200 and body["outputs"] == [[float(old), float(old)]]
    assert scaled.proc.poll() is None


def test_concurrent_requests_with_batching_each_get_their_rows(scaled):
    k = served_version(scaled)
    rows = [[float(i), float(-i)] for i in range(24)]
    results = [None] * len(rows)

    def client(i):
        n = 1 + i % 3  # requests of 1, 2 and 3 rows
        body = {"instances": [rows[(i + j) % len(rows)] for j in range(n)]}
        results[i] = (body["instances"], http(scaled.url + "/v1/models/scaled:predict", body))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for sent, (status, body) in results:
        assert status == 200
        np.testing.assert_array_equal(body["predictions"], k * np.asarray(sent, np.float32))


def test_sigterm_finishes_the_request_in_flight(tmp_path):
    base = tmp_path / "scaled"
    save_scale(str(base / "1"), 3)
    options = ["--batching", "--max-batch-size", "4", "--batch-timeout-micros", "1500000"]
    srv = Subprocess(base, tmp_path / "server.log", "--poll-seconds", "0", *options)
    try:
        result = []
        body = {"instances": [[1.0, 2.0]]}
        url = srv.url + "/v1/models/scaled:predict"
        t = threading.Thread(target=lambda: result.append(http(url, body)))
        t.start()
        time.sleep(0.5)  # the request now waits in its batch, 1.5 s
        os.kill(srv.proc.pid, signal.SIGTERM)
        t.join(TIMEOUT)
        assert result == [(200, {"predictions": [[3.0, 6.0]]})]
        assert srv.proc.wait(TIMEOUT) == 0
    finally:
        srv.stop()


# -- TF Serving's REST documentation, request for request -------------------------
@pytest.fixture(scope="module")
def half_plus(tmp_path_factory):
    """half_plus_three (the REST guide's example) and half_plus_two (its handler tests)."""
    root = tmp_path_factory.mktemp("tf_examples")
    save_half_plus(str(root / "half_plus_three" / "123"), 3.0)
    save_half_plus(str(root / "half_plus_two" / "123"), 2.0)
    three = server.ModelServer(root / "half_plus_three", poll_seconds=0).start(port=0)
    two = server.ModelServer(root / "half_plus_two", poll_seconds=0).start(port=0)
    yield three.url, two.url
    three.stop()
    two.stop()


def test_rest_guide_example(half_plus):
    url = half_plus[0]
    status_doc = {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert http(url + "/v1/models/half_plus_three") == (200, status_doc)
    body = {"instances": [1.0, 2.0, 5.0]}
    assert http(url + "/v1/models/half_plus_three:predict", body) == (
        200,
        {"predictions": [3.5, 4.0, 5.5]},
    )
    assert http(url + "/v1/models/half:predict", {"instances": [1.0, 5.0]}) == (
        404,
        {"error": "Servable not found for request: Latest(half)"},
    )


@pytest.mark.parametrize(
    "path, body, expected",
    [
        (
            ":predict",
            {"instances": [[1.0, 2.0], [3.0, 4.0]]},
            {"predictions": [[2.5, 3.0], [3.5, 4.0]]},
        ),
        ("/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
        (
            "/versions/123:predict",
            {"signature_name": "serving_default", "instances": [3.0, 4.0]},
            {"predictions": [3.5, 4.0]},
        ),
        (
            "/versions/123:predict",
            {"signature_name": "serving_default", "inputs": [3.0, 4.0]},
            {"outputs": [3.5, 4.0]},
        ),
    ],
)
def test_rest_handler_predict_cases(half_plus, path, body, expected):
    assert http(half_plus[1] + "/v1/models/half_plus_two" + path, body) == (200, expected)


def test_metadata_of_a_function_saved_for_two_ranks_has_unknown_rank(half_plus):
    _, body = http(half_plus[1] + "/v1/models/half_plus_two/metadata")
    x = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
    assert x["tensor_shape"] == {"dim": [], "unknown_rank": True}


@pytest.fixture(scope="module")
def sensors(tmp_path_factory):
    base = tmp_path_factory.mktemp("sensors") / "sensors"
    save_sensors(str(base / "1"))
    with server.ModelServer(base, poll_seconds=0).start(port=0) as srv:
        yield srv.url + "/v1/models/sensors:predict"


SIGNAL = [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]]
SENSOR = [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]


def test_row_format_with_named_inputs_answers_a_list_of_objects(sensors):
    instances = [{"signal": s, "sensor": t} for s, t in zip(SIGNAL, SENSOR)]
    status, body = http(sensors, {"instances": instances})
    total, peak = np.sum(SIGNAL, axis=1), np.max(SENSOR, axis=(1, 2))
    expected = [{"peak": int(p), "total": int(t)} for p, t in zip(peak, total)]
    assert (status, body) == (200, {"predictions": expected})


def test_columnar_format_with_named_inputs_answers_an_object(sensors):
    status, body = http(sensors, {"inputs": {"signal": SIGNAL, "sensor": SENSOR}})
    expected = {"peak": np.max(SENSOR, axis=(1, 2)).tolist(), "total": np.sum(SIGNAL, 1).tolist()}
    assert (status, body) == (200, {"outputs": expected})


def test_int_inputs_refuse_floats_and_plain_lists_need_names(sensors):
    status, body = http(sensors, {"inputs": {"signal": [[1.5] * 5], "sensor": [SENSOR[0]]}})
    assert status == 400 and "is not of expected type: int32" in body["error"]
    status, body = http(sensors, {"instances": [[1, 2, 3, 4, 5]]})
    assert status == 400 and "expecting list of objects" in body["error"]


# -- pure parts -----------------------------------------------------------------
def test_floats_are_written_as_tf_serving_writes_them():
    x = np.array([0.1, 2.0, np.nan, 1e-5, 0.123456789, 1e6, -np.inf, 100000.0], np.float32)
    # Six significant digits when they read back as the same float32, else nine;
    # whole numbers keep a ".0" (json_tensor.cc, WriteDecimal).
    assert tensor_json(x) == "[0.1,2.0,NaN,1e-05,0.123456791,1e+06,-Infinity,100000.0]"
    assert tensor_json(np.array([1 / 3], np.float64)) == "[0.33333333333333331]"
    assert tensor_json(np.array([[1, -2]], np.int32)) == "[[1,-2]]"
    assert tensor_json(np.array([True, False])) == "[true,false]"


def test_row_response_needs_outputs_with_one_batch_size():
    outputs = {"a": np.zeros((2, 1), np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(errors.ServingError, match="inconsistent batch size"):
        predict_response(outputs, json_tensor.ROW)
    body = json.loads(predict_response(outputs, json_tensor.COLUMNAR))
    assert body == {"outputs": {"a": [[0.0], [0.0]], "b": [0.0, 0.0, 0.0]}}


def test_request_floats_too_large_for_float32_are_refused():
    with pytest.raises(errors.ServingError, match="without loss of precision"):
        request_tensors({"instances": [1e300]}, {"x": np.float32})
    fmt, arrays = request_tensors({"instances": [1, 2]}, {"x": np.float32})
    assert fmt == json_tensor.ROW and arrays["x"].dtype == np.float32


def test_batcher_merges_queued_requests_and_pads_to_allowed_sizes():
    calls = []

    class Candidate:
        def run(self, arrays):
            calls.append(arrays["x"].shape[0])
            return {"y": arrays["x"] * 2}

    async def main():
        async def execute(fn, *args):
            await asyncio.sleep(0.01)
            return fn(*args)

        b = Batcher(execute, max_batch_size=8)
        b.start()
        c = Candidate()
        sizes = [1, 2, 1, 1]  # 5 rows: padded to 8
        xs = [np.full((n, 2), i, np.float32) for i, n in enumerate(sizes)]
        outs = await asyncio.gather(*(b.submit(c, {"x": x}, x.shape[0]) for x in xs))
        await b.stop()
        return xs, outs

    xs, outs = asyncio.run(main())
    assert calls == [8]
    for x, out in zip(xs, outs):
        np.testing.assert_array_equal(out["y"], 2 * x)


def test_versions_fall_back_to_the_newest_loadable_and_retry_a_broken_one_once_changed(tmp_path):
    loads = []

    def load(version, path):
        loads.append(version)
        if os.path.exists(os.path.join(path, "broken")):
            raise jmod.saved_model.SavedModelError(f"{path}: broken")
        return type("S", (), {"version": version})()

    for v in (1, 2):
        (tmp_path / str(v)).mkdir()
    (tmp_path / "2" / "broken").write_text("x")
    (tmp_path / "not_a_version").mkdir()
    models = ModelVersions("m", tmp_path, load)
    assert models.poll() == 1 and loads == [2, 1]
    assert models.status(2)[0]["status"]["error_code"] == "INVALID_ARGUMENT"
    assert models.poll() == 1 and loads == [2, 1]  # unchanged: not retried
    os.remove(tmp_path / "2" / "broken")
    assert models.poll() == 2 and loads == [2, 1, 2]
    assert [s["state"] for s in models.status()] == ["AVAILABLE", "END"]


def test_serve_command_refuses_a_missing_folder_or_a_bare_saved_model(tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err
    save_scale(str(tmp_path / "bare"), 2)
    assert cli.main(["serve", str(tmp_path / "bare")]) == 1
    assert "is a saved model itself" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mod",
    [jmod.serving, batching, serving_cli, errors, json_tensor, servable, server, versions],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(mod):
    run_docstring_examples(mod)
