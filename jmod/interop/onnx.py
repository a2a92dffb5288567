"""jmod models out to ONNX, through the `jax2onnx` converter, for `onnxruntime` and friends.

jax2onnx converts JAX functions of arrays; a module is not one (its
variables carry `__jax_array__`, which jax2onnx 0.17's patched `jnp`
functions trip on). So the model is closed over its current weights with
`jmod.functional_call` and staged out to a jaxpr with plain JAX first; jax2onnx
converts the evaluation of that jaxpr, and the weights become ONNX
initializers.

One repair after conversion: jax2onnx lowers a channels-last
`reduce_window` max pooling (jmod's `MaxPooling*D`) to an ONNX `MaxPool`
over a window `(1, kh, kw, 1)` on a tensor with two unit axes prepended,
which onnxruntime rejects ("Unsupported pooling size"). `_fix_pooling`
rewrites each such node to `Squeeze -> Transpose (NCHW) -> MaxPool (kh, kw) ->
Transpose back -> Unsqueeze`, which computes the same values.
"""

import os

import numpy as np

from jmod.errors import InteropError


def _libs():
    try:
        import jax2onnx
        import onnx
    except ImportError:
        raise InteropError(
            "export_onnx needs jax2onnx (pip install 'jmod[interop]', which also brings "
            "onnxruntime to run the result)"
        ) from None
    return jax2onnx, onnx


def _specs(input_spec):
    """`[(shape with named dynamic dims, dtype)]` from TensorSpecs, shapes or arrays."""
    import jax.numpy as jnp

    from jmod.saved_model import TensorSpec

    single = isinstance(input_spec, TensorSpec) or (
        isinstance(input_spec, (list, tuple))
        and all(d is None or isinstance(d, (int, str)) for d in input_spec)
    )
    items = [input_spec] if single else list(input_spec)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, TensorSpec):
            shape, dtype = item.shape, item.dtype
        elif hasattr(item, "shape") and hasattr(item, "dtype"):
            shape, dtype = tuple(item.shape), item.dtype
        else:
            shape, dtype = tuple(item), jnp.float32
        # An unnamed dynamic dimension gets its own name; the first axis is the batch.
        dims = tuple(
            ("batch" if axis == 0 else f"in{i}_dim{axis}") if d is None else d
            for axis, d in enumerate(shape)
        )
        out.append((dims, jnp.dtype(dtype)))
    return out


def export_onnx(model, path, input_spec, opset=21):
    """Writes `model`'s inference computation as an ONNX file that onnxruntime runs.

    The current weights are baked in as constants; `None` (or a name) in an
    input shape stays dynamic in the ONNX graph, so one file serves every
    batch size.

    Example:
        >>> import os, tempfile
        >>> model = jmod.Sequential([jmod.Input(shape=[3]), jmod.layers.Dense(2)])
        >>> p = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> p = jmod.interop.export_onnx(model, p, jmod.TensorSpec([None, 3]))
        >>> import onnxruntime
        >>> sess = onnxruntime.InferenceSession(p, providers=["CPUExecutionProvider"])
        >>> x = np.ones((5, 3), np.float32)
        >>> out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        >>> bool(np.allclose(out, model(x), atol=1e-6))
        True

    Args:
        model: a built jmod model or module (called as `model(*inputs)`).
        path: the `.onnx` file to write.
        input_spec: one `jmod.TensorSpec` (or shape, or example array) per
            positional input, or a single one; `None` dims are dynamic.
        opset: the ONNX opset to target.

    Returns:
        `path`.
    """
    import jax

    from jmod.bridge import functional_call

    jax2onnx, onnx = _libs()
    if not model.named_variables():
        raise InteropError(
            f"model {model.name!r} has no variables yet: call it once on an example input "
            "before exporting it"
        )
    specs = _specs(input_spec)
    state = {p: jax.numpy.asarray(v) for p, v in model.state().items()}
    # Stage the model out to a jaxpr first, with real jax.numpy: jax2onnx patches
    # jnp functions while it traces, and its patches take arrays only (a module's
    # code hands them Variables). The dynamic dims are jax.export symbols shared
    # by both traces.
    names = sorted({d for shape, _ in specs for d in shape if isinstance(d, str)})
    symbols = dict(zip(names, jax.export.symbolic_shape(", ".join(names)))) if names else {}
    avals = [
        jax.ShapeDtypeStruct(tuple(symbols.get(d, d) for d in shape), dtype)
        for shape, dtype in specs
    ]

    def inference(*inputs):
        out, _ = functional_call(model, state, *inputs)
        return out

    try:
        closed, out_shape = jax.make_jaxpr(inference, return_shape=True)(*avals)
    except Exception as e:
        raise InteropError(
            f"export_onnx: {model.name!r} does not run on inputs {[s for s, _ in specs]}: "
            f"{type(e).__name__}: {e}"
        ) from e
    out_tree = jax.tree_util.tree_structure(out_shape)

    def staged(*inputs):
        flat = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *inputs)
        return jax.tree_util.tree_unflatten(out_tree, flat)

    try:
        proto = jax2onnx.to_onnx(staged, avals, model_name=model.name, opset=opset)
    except Exception as e:
        raise InteropError(
            f"export_onnx: jax2onnx could not convert {model.name!r} for inputs "
            f"{[s for s, _ in specs]}: {type(e).__name__}: {e}"
        ) from e
    _fix_pooling(proto, onnx)
    path = os.fspath(path)
    onnx.save(proto, path)
    return path


def _fix_pooling(proto, onnx):
    """Rewrites channels-last MaxPool/AveragePool nodes onnxruntime rejects (see module doc)."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    nodes = list(graph.node)
    new_nodes, axes_name = [], "jmod_pool_unit_axes"
    added_axes = False
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        if (
            node.op_type not in ("MaxPool", "AveragePool")
            or len(kernel) < 3
            or kernel[0] != 1
            or kernel[-1] != 1
        ):
            new_nodes.append(node)
            continue
        rank = len(kernel)  # the channels-last data's rank: (N, *spatial, C)
        strides = list(attrs.get("strides", [1] * rank))
        pads = list(attrs.get("pads", [0] * (2 * rank)))
        dil = list(attrs.get("dilations", [1] * rank))
        if strides[0] != 1 or strides[-1] != 1 or any(pads[i] for i in (0, rank - 1, rank, -1)):
            new_nodes.append(node)
            continue
        if not added_axes:
            graph.initializer.append(
                numpy_helper.from_array(np.array([0, 1], np.int64), name=axes_name)
            )
            added_axes = True
        base = node.name or node.output[0]
        x, nchw, pooled, back = (f"{base}_nhwc", f"{base}_nchw", f"{base}_pool", f"{base}_back")
        spatial = slice(1, rank - 1)
        to_first = [0, rank - 1, *range(1, rank - 1)]
        to_last = [0, *range(2, rank), 1]
        kwargs = {
            "kernel_shape": kernel[spatial],
            "strides": strides[spatial],
            "pads": pads[1 : rank - 1] + pads[rank + 1 : 2 * rank - 1],
        }
        if node.op_type == "MaxPool" and any(d != 1 for d in dil):
            kwargs["dilations"] = dil[spatial]
        if "ceil_mode" in attrs:
            kwargs["ceil_mode"] = attrs["ceil_mode"]
        if node.op_type == "AveragePool" and "count_include_pad" in attrs:
            kwargs["count_include_pad"] = attrs["count_include_pad"]
        new_nodes += [
            helper.make_node("Squeeze", [node.input[0], axes_name], [x], name=f"{base}_sq"),
            helper.make_node("Transpose", [x], [nchw], perm=to_first, name=f"{base}_t1"),
            helper.make_node(node.op_type, [nchw], [pooled], name=f"{base}_2d", **kwargs),
            helper.make_node("Transpose", [pooled], [back], perm=to_last, name=f"{base}_t2"),
            helper.make_node("Unsqueeze", [back, axes_name], [node.output[0]], name=f"{base}_unsq"),
        ]
    del graph.node[:]
    graph.node.extend(new_nodes)
