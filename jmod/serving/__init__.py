"""Serve jmod saved models with TensorFlow Serving's REST API, without TensorFlow.

A model base path holds numbered version folders, each a
`jmod.saved_model.save` directory, as TF Serving expects:

    models/my_model/1/   models/my_model/2/   ...

    python -m jmod.saved_model serve models/my_model --port 8501 [--batching]

answers `GET /v1/models/my_model` (version status), `.../metadata`
(signatures, -1 for polymorphic dimensions) and `POST
/v1/models/my_model:predict` with `{"instances": [...]}` or `{"inputs": ...}`,
exactly as TF Serving does; the newest version is served, new version
folders are picked up while it runs. Needs the `serving` extra
(`pip install jmod[serving]`: starlette, uvicorn).

Example:
    >>> import os, tempfile, json, urllib.request
    >>> class Double(jmod.Module):
    ...     @jmod.jit
    ...     def __call__(self, x):
    ...         return 2.0 * x
    >>> m, base = Double(), tempfile.mkdtemp()
    >>> _ = jmod.saved_model.save(m, os.path.join(base, "1"),
    ...     signatures={"__call__": (m.__call__, [jmod.TensorSpec([None, 2])])})
    >>> with jmod.serving.ModelServer(base, "double").start(port=0) as server:
    ...     request = urllib.request.Request(server.url + "/v1/models/double:predict",
    ...                                      data=b'{"instances": [[1, 2], [3, 4]]}')
    ...     json.load(urllib.request.urlopen(request, timeout=30))
    {'predictions': [[2.0, 4.0], [6.0, 8.0]]}
"""

from jmod.serving.errors import ServingError
from jmod.serving.server import ModelServer, serve

__all__ = ["ModelServer", "ServingError", "serve"]
