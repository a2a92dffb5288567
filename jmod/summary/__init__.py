"""TensorBoard summaries and graphs: `jmod.summary`.

Example:
    >>> import tempfile, jmod
    >>> writer = jmod.summary.create_file_writer(tempfile.mkdtemp())
    >>> with writer.as_default():
    ...     jmod.summary.scalar("loss", 0.5, step=0)
    True
"""

from jmod.summary._errors import SummaryError
from jmod.summary._graph import graph_def_from_jaxpr, graph_of
from jmod.summary.trace import trace_export, trace_off, trace_on
from jmod.summary.writer import (
    SummaryWriter,
    create_file_writer,
    flush,
    get_default_writer,
    get_step,
    graph,
    histogram,
    image,
    scalar,
    set_step,
    text,
)

__all__ = [
    "SummaryError",
    "SummaryWriter",
    "create_file_writer",
    "flush",
    "get_default_writer",
    "get_step",
    "graph",
    "graph_def_from_jaxpr",
    "graph_of",
    "histogram",
    "image",
    "scalar",
    "set_step",
    "text",
    "trace_export",
    "trace_off",
    "trace_on",
]
