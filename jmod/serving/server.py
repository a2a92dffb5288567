"""`ModelServer`: TF Serving's REST API over the versions of a saved model (starlette + uvicorn).

    GET  /v1/models/NAME[/versions/N]            version status
    GET  /v1/models/NAME[/versions/N]/metadata   signature_def of the served version
    POST /v1/models/NAME[/versions/N]:predict    {"instances": ...} or {"inputs": ...}
    GET  /healthz                                200 once a version serves, else 503

Requests are parsed on the event loop; the model runs in one compute
thread, so the loop keeps taking requests (and, with batching, collecting
the next batch) while it computes.
"""

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import signal
import threading
import time

from jmod.serving.batching import Batcher
from jmod.serving.errors import ServingError
from jmod.serving.json_tensor import error_body, parse_body, predict_response, request_tensors
from jmod.serving.servable import Servable
from jmod.serving.versions import ModelVersions

log = logging.getLogger("jmod.serving")

_PREDICT = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+))?:(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:/versions/(\d+))?(/metadata)?/?")


def _json(data, status=200):
    from starlette.responses import Response

    return Response(json.dumps(data, indent=1), status, media_type="application/json")


def _error(e):
    from starlette.responses import Response

    return Response(error_body(e), e.status, media_type="application/json")


class ModelServer:
    """Serves the numbered versions under `model_base_path` with TensorFlow Serving's REST API.

    `app` is the ASGI application (for any ASGI server or test client);
    `start()` runs it with uvicorn in a background thread and `stop()` ends
    it, for use inside a program or a test; `jmod.serving.serve` runs it in
    the foreground until SIGTERM or Ctrl-C.

    Example:
        >>> import os, tempfile, json, urllib.request
        >>> from jmod.serving import ModelServer
        >>> class Half(jmod.Module):
        ...     @jmod.jit
        ...     def __call__(self, x):
        ...         return 0.5 * x + 3.0
        >>> m, base = Half(), tempfile.mkdtemp()
        >>> _ = jmod.saved_model.save(m, os.path.join(base, "123"),
        ...     signatures={"__call__": (m.__call__, [jmod.TensorSpec([None])])})
        >>> with ModelServer(base, "half_plus_three").start(port=0) as server:
        ...     request = urllib.request.Request(server.url + "/v1/models/half_plus_three:predict",
        ...                                      data=b'{"instances": [1.0, 2.0, 5.0]}')
        ...     json.load(urllib.request.urlopen(request, timeout=30))
        {'predictions': [3.5, 4.0, 5.5]}

    Args:
        model_base_path: folder of version folders `1/`, `2/`, ..., each a
            `jmod.saved_model.save` directory.
        model_name: the NAME in URLs; by default the folder's name.
        batching: merge concurrent requests into batched calls (see
            `jmod.serving.batching`).
        max_batch_size: rows per batched call.
        batch_timeout_micros: how long a batch waits for more requests
            after its first (0: takes what has queued, never waits).
        allowed_batch_sizes: the sizes batches are padded to (default:
            powers of two, then `max_batch_size`).
        poll_seconds: how often to look for new version folders (0: never,
            after the first look).
        warmup: compile each signature (for every allowed batch size when
            batching) before a version starts serving.
    """

    def __init__(
        self,
        model_base_path,
        model_name=None,
        *,
        batching=False,
        max_batch_size=32,
        batch_timeout_micros=0,
        allowed_batch_sizes=None,
        poll_seconds=1.0,
        warmup=True,
    ):
        base = os.path.abspath(os.fspath(model_base_path))
        if not os.path.isdir(base):
            raise ServingError(f"model base path {model_base_path}: no such folder")
        if os.path.isfile(os.path.join(base, "saved_model.json")):
            raise ServingError(
                f"{model_base_path} is a saved model itself; serve a folder of numbered "
                f"versions, e.g. move it to {os.path.join(base + '_base', '1')} and serve "
                f"{base}_base"
            )
        self.model_name = model_name or os.path.basename(base.rstrip(os.sep))
        if not self.model_name or "/" in self.model_name or ":" in self.model_name:
            raise ServingError(f"model name {self.model_name!r} cannot contain '/' or ':'")
        if float(poll_seconds) < 0:
            raise ServingError(f"poll_seconds must be >= 0, got {poll_seconds}")
        self.poll_seconds = float(poll_seconds)
        self.batcher = None
        if batching:
            self.batcher = Batcher(
                self._compute, max_batch_size, batch_timeout_micros, allowed_batch_sizes
            )
        sizes = tuple(self.batcher.sizes) if self.batcher else (1,)
        self._warmup_sizes = sizes if warmup else ()
        self.versions = ModelVersions(self.model_name, base, self._load)
        self._executor = None
        self._poller = None
        self._thread = None
        self._uvicorn = None
        self.url = None
        self.app = self._make_app()

    # -- lifecycle --------------------------------------------------------------
    def _load(self, version, path):
        return Servable.load(self.model_name, version, path, self._warmup_sizes)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "jmod-serving-compute")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.versions.poll)
        if self.poll_seconds > 0:
            self._poller = loop.create_task(self._poll_forever())
        if self.batcher is not None:
            self.batcher.start()
        try:
            yield
        finally:
            if self._poller is not None:
                self._poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poller
            if self.batcher is not None:
                await self.batcher.stop()
            self._executor.shutdown(wait=True)

    async def _poll_forever(self):
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await loop.run_in_executor(None, self.versions.poll)
            except Exception:  # never let a bad folder stop the polling
                log.exception("polling %s failed", self.versions.base_path)

    async def _compute(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _config(self, host, port, **kwargs):
        import uvicorn

        kwargs.setdefault("log_level", "warning")
        kwargs.setdefault("access_log", False)
        kwargs.setdefault("timeout_graceful_shutdown", 30)
        return uvicorn.Config(self.app, host=host, port=port, **kwargs)

    def start(self, host="127.0.0.1", port=8501, timeout=120, **uvicorn_options):
        """Runs the server in a background thread until `stop()`; returns self once it serves.

        `port=0` picks a free port; `url` is then `http://host:port`.
        """
        import uvicorn

        self._uvicorn = uvicorn.Server(self._config(host, port, **uvicorn_options))
        self._thread = threading.Thread(target=self._uvicorn.run, name="jmod-serving", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServingError.unavailable(f"the server did not start on {host}:{port}")
            time.sleep(0.01)
        sock = self._uvicorn.servers[0].sockets[0]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self

    def stop(self, timeout=60):
        """Stops a server started with `start()`, after finishing the requests in flight."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout)
            self._uvicorn = self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- HTTP -------------------------------------------------------------------
    def _make_app(self):
        from starlette.applications import Starlette
        from starlette.routing import Route

        routes = [
            Route("/healthz", self._health, methods=["GET"]),
            Route("/v1/{rest:path}", self._v1, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes, lifespan=self._lifespan)

    async def _health(self, request):
        current = self.versions.current
        body = {
            "model": self.model_name,
            "version": None if current is None else str(current.version),
        }
        return _json(
            {"status": "ok" if current else "unavailable", **body}, 200 if current else 503
        )

    async def _v1(self, request):
        path, method = request.url.path, request.method
        try:
            if method == "POST" and (m := _PREDICT.fullmatch(path)):
                name, version, verb = m.groups()
                body = await request.body()
                return await self._predict(name, version, verb.lower(), body)
            if method == "GET" and (m := _STATUS.fullmatch(path)):
                name, version, metadata = m.groups()
                if not name:
                    raise ServingError("Missing model name in request.")
                self._check_name(name, version)
                version = None if version is None else int(version)
                if metadata:
                    return _json(self.versions.servable(version).metadata_json())
                return _json({"model_version_status": self.versions.status(version)})
            raise ServingError(f"Malformed request: {method} {path}")
        except ServingError as e:
            return _error(e)
        except Exception as e:  # a bug or a failure inside the model: answer, keep serving
            log.exception("%s %s failed", method, path)
            return _error(ServingError.internal(f"{type(e).__name__}: {e}"))

    def _check_name(self, name, version):
        if name != self.model_name:
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError.not_found(f"Servable not found for request: {spec}")

    async def _predict(self, name, version, verb, body):
        self._check_name(name, version)
        if verb != "predict":
            raise ServingError(
                f":{verb} takes tf.Example inputs, which jmod saved models do not have; "
                "use :predict",
                501,
                "UNIMPLEMENTED",
            )
        servable = self.versions.servable(None if version is None else int(version))
        doc = parse_body(body)
        signame = doc.get("signature_name", "")
        if not isinstance(signame, str):
            raise ServingError("'signature_name' key must be a string value.")
        signature = servable.signature(signame)
        fmt, arrays = request_tensors(doc, signature.input_dtypes)
        candidate = signature.match(arrays)
        rows = _rows(arrays)
        if (
            self.batcher is not None
            and candidate.batchable
            and rows is not None
            and rows <= self.batcher.max_batch_size
        ):
            outputs = await self.batcher.submit(candidate, arrays, rows)
        else:
            outputs = await self._compute(candidate.run, arrays)
        return _response(predict_response(outputs, fmt))


def _rows(arrays):
    """The batch size the arrays share (their first axis), or None."""
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    return sizes.pop() if len(sizes) == 1 else None


def _response(body):
    from starlette.responses import Response

    return Response(body, media_type="application/json")


def serve(model_base_path, port=8501, model_name=None, host="127.0.0.1", **options):
    """Serves a model base path with TF Serving's REST API until SIGTERM or Ctrl-C (blocking).

    In-flight requests finish before the process exits. `options` are those
    of `ModelServer` (batching, max_batch_size, batch_timeout_micros,
    allowed_batch_sizes, poll_seconds, warmup).

    Example (from a shell, the same as `python -m jmod.saved_model serve`):
        >>> from jmod.serving import serve
        >>> serve  # serve("/models/my_model", port=8501, batching=True)
        <function serve at ...>
    """
    import uvicorn

    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    server = ModelServer(model_base_path, model_name, **options)
    log.info(
        "serving model %s from %s at http://%s:%d/v1/models/%s",
        server.model_name,
        server.versions.base_path,
        host,
        port,
        server.model_name,
    )
    # uvicorn finishes the requests in flight, then raises the signal again:
    # exit quietly then (status 0 for SIGTERM, as process managers expect).
    handlers = {s: signal.signal(s, _exit_after_shutdown) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(server._config(host, port)).run()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def _exit_after_shutdown(signum, frame):
    raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)
