"""TensorBoard summaries and graphs: `jmod.summary`.

Writers and summaries need the `tensorboard` package (its protos and event
file writer); it is imported on first use, so `import jmod` stays fast and
works without it.

Example:
    >>> import tempfile, jmod
    >>> writer = jmod.summary.create_file_writer(tempfile.mkdtemp())
    >>> with writer.as_default():
    ...     jmod.summary.scalar("loss", 0.5, step=0)
    True
"""

import importlib

# Public name -> the submodule defining it.
_EXPORTS = {
    "SummaryError": "_errors",
    "graph_def_from_jaxpr": "_graph",
    "graph_of": "_graph",
    "trace_export": "trace",
    "trace_off": "trace",
    "trace_on": "trace",
    **{
        name: "writer"
        for name in (
            "SummaryWriter",
            "create_file_writer",
            "flush",
            "get_default_writer",
            "get_step",
            "graph",
            "histogram",
            "image",
            "scalar",
            "set_step",
            "text",
        )
    },
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    submodule = _EXPORTS.get(name)
    if submodule is None:
        raise AttributeError(f"module 'jmod.summary' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"jmod.summary.{submodule}")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("tensorboard", "PIL"):
            raise ImportError(
                f"jmod.summary.{name} needs the tensorboard package, which is not "
                "installed: pip install 'jmod[tensorboard]' (or pip install tensorboard)"
            ) from e
        raise
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
