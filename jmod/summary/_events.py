"""Summary protos from plain values (the pure part of `jmod.summary`).

Each function turns a tag and host data into a `summary_pb2.Summary` laid out
exactly as TensorFlow 2's summary ops lay it out (tensor plus plugin
metadata), so TensorBoard's Scalars, Histograms, Text, Images and Graphs
dashboards read them. Scalars, histograms and text reuse TensorBoard's own
TensorFlow-free `*_pb` builders.
"""

import io

import jax
import numpy as np
from tensorboard.compat.proto import config_pb2, summary_pb2
from tensorboard.plugins.graph import metadata as graph_metadata
from tensorboard.plugins.histogram import summary_v2 as histogram_v2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_v2
from tensorboard.plugins.text import summary_v2 as text_v2
from tensorboard.util import tensor_util

from jmod.errors import TraceError
from jmod.summary._errors import SummaryError
from jmod.variables import Variable

__all__ = [
    "SummaryError",
    "graph_summary",
    "histogram_summary",
    "image_summary",
    "scalar_summary",
    "text_summary",
    "to_host",
]

# Image channel counts TensorBoard displays, and the PIL mode of each.
_IMAGE_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def to_host(tag, data, what):
    """`data` as a NumPy array; refuses values traced inside `jmod.jit`."""
    if isinstance(data, Variable):
        data = data.value
    if isinstance(data, jax.core.Tracer):
        raise TraceError(
            f"jmod.summary.{what}({tag!r}): got a traced value ({data.aval}) inside a "
            "jit-compiled function; return the value from the function and write "
            "the summary outside it"
        )
    if isinstance(data, str | bytes):
        return np.asarray(data, dtype=object)
    return np.asarray(data)


def scalar_summary(tag, data, description=None):
    """A scalar summary: `data` (any real number) stored as float32.

    Example:
        >>> scalar_summary("loss", 0.25).value[0].tensor.float_val
        [0.25]
    """
    value = to_host(tag, data, "scalar")
    if value.shape != ():
        raise SummaryError(
            f"summary {tag!r}: scalar expects a single number, got shape {value.shape}"
        )
    if value.dtype.kind not in "biuf" and value.dtype.name != "bfloat16":
        raise SummaryError(
            f"summary {tag!r}: scalar expects a real number, got dtype {value.dtype}"
        )
    return scalar_v2.scalar_pb(tag, value.astype(np.float32), description)


def histogram_summary(tag, data, buckets=None, description=None):
    """A histogram of all of `data`'s values, in `buckets` equal-width bins (30).

    Example:
        >>> h = histogram_summary("w", [0.0, 1.0, 1.0], buckets=2)
        >>> tensor_util.make_ndarray(h.value[0].tensor).tolist()
        [[0.0, 0.5, 1.0], [0.5, 1.0, 2.0]]
    """
    values = to_host(tag, data, "histogram")
    if values.dtype.kind not in "biuf" and values.dtype.name != "bfloat16":
        raise SummaryError(
            f"summary {tag!r}: histogram expects real numbers, got dtype {values.dtype}"
        )
    if buckets is not None and (not isinstance(buckets, int) or buckets < 1):
        raise SummaryError(f"summary {tag!r}: buckets must be a positive int, got {buckets!r}")
    return histogram_v2.histogram_pb(tag, values.astype(np.float64), buckets, description)


def text_summary(tag, data, description=None):
    """A text summary (Markdown) of a string or an array of strings.

    Example:
        >>> text_summary("note", "hello").value[0].tensor.string_val
        [b'hello']
    """
    values = to_host(tag, data, "text")
    if values.dtype.kind not in "OSU":
        raise SummaryError(f"summary {tag!r}: text expects str data, got dtype {values.dtype}")
    return text_v2.text_pb(tag, values.astype(object), description)


def image_summary(tag, data, max_outputs=3, description=None):
    """An image summary: up to `max_outputs` PNG images from a `[k, h, w, c]` batch.

    Channels `c` are 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA).
    Floats are taken in [0, 1] (clipped, then scaled to 0..255 as TensorFlow's
    `convert_image_dtype` does); integers in 0..255 (clipped); booleans as
    0 and 255.

    Example:
        >>> s = image_summary("img", np.zeros((2, 4, 5, 3)))
        >>> s.value[0].tensor.string_val[:2]
        [b'5', b'4']
    """
    images = to_host(tag, data, "image")
    if images.ndim != 4 or images.shape[-1] not in _IMAGE_MODES:
        raise SummaryError(
            f"summary {tag!r}: image expects shape [k, h, w, c] with c in 1..4, "
            f"got shape {images.shape}"
        )
    if not isinstance(max_outputs, int) or max_outputs < 0:
        raise SummaryError(f"summary {tag!r}: max_outputs must be an int >= 0, got {max_outputs!r}")
    pixels = _to_uint8(tag, images[:max_outputs])
    height, width = images.shape[1:3]
    encoded = [str(width).encode(), str(height).encode()]
    encoded += [encode_png(image) for image in pixels]
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=image_metadata.create_summary_metadata(display_name=None, description=description),
        tensor=tensor_util.make_tensor_proto(encoded, dtype=np.object_),
    )
    return summary


def encode_png(image):
    """PNG bytes of one `[h, w, c]` uint8 image (c in 1..4), via Pillow.

    Example:
        >>> encode_png(np.zeros((2, 2, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    channels = image.shape[-1]
    pixels = image[..., 0] if channels == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode=_IMAGE_MODES[channels]).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def graph_summary(tag, graph_defs):
    """A Graphs-dashboard summary holding one graph per traced function.

    Laid out as TensorFlow's `trace_export` lays it out: a `RunMetadata` whose
    `function_graphs` hold the graphs, under the `graph_run_metadata_graph`
    plugin. TensorBoard shows several graphs side by side, as `graph_1`,
    `graph_2`, ...

    Example:
        >>> from tensorboard.compat.proto import graph_pb2
        >>> s = graph_summary("trace", [graph_pb2.GraphDef()])
        >>> s.value[0].metadata.plugin_data.plugin_name
        'graph_run_metadata_graph'
    """
    run_metadata = config_pb2.RunMetadata()
    for graph_def in graph_defs:
        run_metadata.function_graphs.add().pre_optimization_graph.CopyFrom(graph_def)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=graph_metadata.PLUGIN_NAME_RUN_METADATA_WITH_GRAPH,
                # The version marker TensorFlow writes and TensorBoard checks.
                content=b"1",
            )
        ),
        tensor=tensor_util.make_tensor_proto(
            np.array(run_metadata.SerializeToString(), dtype=object)
        ),
    )
    return summary


def _to_uint8(tag, images):
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    if images.dtype.kind in "iu":
        return np.clip(images, 0, 255).astype(np.uint8)
    if images.dtype.kind == "f" or images.dtype.name == "bfloat16":
        # TensorFlow scales by 255.5 then truncates, so 1.0 -> 255, 0.5 -> 127.
        scaled = np.clip(images.astype(np.float64), 0.0, 1.0) * 255.5
        return np.minimum(scaled, 255.0).astype(np.uint8)
    raise SummaryError(f"summary {tag!r}: image expects numbers, got dtype {images.dtype}")
