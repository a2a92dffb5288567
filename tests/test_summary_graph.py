"""Graphs of JAX computations for TensorBoard: jaxpr -> GraphDef, fn.graph, trace_export."""

import glob
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend import process_graph  # noqa: E402
from tensorboard.compat.proto import config_pb2, event_pb2, graph_pb2, types_pb2  # noqa: E402
from tensorboard.plugins.graph import graph_util  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

import jmod  # noqa: E402
import jmod.summary as summary  # noqa: E402
from jmod.summary import trace  # noqa: E402
from jmod.summary._graph import graph_def_from_jaxpr  # noqa: E402


@pytest.fixture(autouse=True)
def _tracing_off_afterwards():
    yield
    summary.trace_off()  # a failed test must not leave tracing on for the next


def nodes(graph):
    return {node.name: node for node in graph.node}


def shapes(node):
    return [[d.size for d in s.dim] for s in node.attr["_output_shapes"].list.shape]


def two_layer(w1, b1, w2, x):
    with jax.named_scope("the_model"):
        with jax.named_scope("dense_1"):
            h = jax.nn.relu(x @ w1 + b1)
        with jax.named_scope("dense_2"):
            return jnp.tanh(h @ w2)


def two_layer_graph():
    args = (jnp.ones((3, 4)), jnp.ones(4), jnp.ones((4, 2)), jnp.ones((5, 3)))
    jaxpr = jax.make_jaxpr(two_layer)(*args)
    names = ["the_model/dense_1/w", "the_model/dense_1/b", "the_model/dense_2/w", "x"]
    return graph_def_from_jaxpr(jaxpr, names)


# -- the pure conversion ---------------------------------------------------------


def test_nodes_are_named_by_name_scope_and_primitive():
    graph = nodes(two_layer_graph())
    assert graph["the_model/dense_1/dot_general"].op == "dot_general"
    assert graph["the_model/dense_1/add"].op == "add"
    assert graph["the_model/dense_2/tanh"].op == "tanh"
    assert graph["x"].op == "Placeholder"
    assert graph["output"].op == "Identity"


def test_edges_follow_the_data_flow():
    graph = nodes(two_layer_graph())
    assert list(graph["the_model/dense_1/dot_general"].input) == ["x", "the_model/dense_1/w"]
    assert list(graph["the_model/dense_2/dot_general"].input)[1] == "the_model/dense_2/w"
    assert list(graph["the_model/dense_2/tanh"].input) == ["the_model/dense_2/dot_general"]
    assert list(graph["output"].input) == ["the_model/dense_2/tanh"]
    # Every input refers to a node of the graph.
    for node in graph.values():
        for ref in node.input:
            assert ref.split(":")[0] in graph, (node.name, ref)


def test_output_shapes_and_dtypes_annotate_every_node():
    graph = nodes(two_layer_graph())
    assert shapes(graph["x"]) == [[5, 3]]
    assert shapes(graph["the_model/dense_1/dot_general"]) == [[5, 4]]
    assert shapes(graph["the_model/dense_2/tanh"]) == [[5, 2]]
    assert graph["x"].attr["dtype"].type == types_pb2.DT_FLOAT
    assert graph["the_model/dense_2/tanh"].attr["T"].type == types_pb2.DT_FLOAT


def test_nested_jitted_functions_are_drawn_inline_in_their_own_box():
    graph = nodes(two_layer_graph())
    # jax.nn.relu is a custom_jvp around a jit named relu: one box, no wrapper node.
    relu = graph["the_model/dense_1/relu/max"]
    assert relu.op == "max"
    assert list(relu.input)[0] == "the_model/dense_1/add"
    assert not any(node.op in ("custom_jvp_call", "jit") for node in graph.values())


def test_repeated_ops_get_tensorflow_style_unique_names():
    jaxpr = jax.make_jaxpr(lambda x: (x + 1) + 2)(1.0)
    graph = nodes(graph_def_from_jaxpr(jaxpr, ["x"]))
    assert {"add", "add_1", "Const", "Const_1"} <= set(graph)
    assert list(graph["add_1"].input) == ["add", "Const_1"]


def test_literals_become_consts_with_their_value():
    jaxpr = jax.make_jaxpr(lambda x: x * 3.5)(jnp.ones(2))
    graph = nodes(graph_def_from_jaxpr(jaxpr, ["x"]))
    const = graph["Const"]
    assert const.op == "Const"
    assert tensor_util.make_ndarray(const.attr["value"].tensor) == np.float32(3.5)


def test_closed_over_arrays_become_consts():
    table = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    jaxpr = jax.make_jaxpr(lambda x: x @ jnp.asarray(table))(jnp.ones((1, 2)))
    graph = graph_def_from_jaxpr(jaxpr, ["x"])
    consts = [n for n in graph.node if n.op == "Const" and shapes(n) == [[2, 3]]]
    if jaxpr.consts:  # jax may also inline small constants as literals
        np.testing.assert_array_equal(
            tensor_util.make_ndarray(consts[0].attr["value"].tensor), table
        )
    else:
        assert consts


def test_multiple_outputs_are_referenced_by_index():
    jaxpr = jax.make_jaxpr(lambda x: jax.lax.top_k(x, 2)[1])(jnp.ones(5))
    graph = nodes(graph_def_from_jaxpr(jaxpr, ["x"]))
    assert shapes(graph["top_k"]) == [[2], [2]]
    assert list(graph["top_k"].attr["T"].list.type) == [types_pb2.DT_FLOAT, types_pb2.DT_INT32]
    assert list(graph["output"].input) == ["top_k:1"]


def test_control_flow_stays_one_node_with_its_parameters():
    def f(x):
        return jax.lax.cond(x.sum() > 0, lambda y: y * 2, lambda y: y, x)

    graph = nodes(graph_def_from_jaxpr(jax.make_jaxpr(f)(jnp.ones(3)), ["x"]))
    assert graph["cond"].op == "cond"
    assert graph["cond"].attr["branches"].s == b"(2 jaxprs)"


def test_dtypes_map_to_tensorflow_types():
    def f(a, b, c):
        return a.astype(jnp.bfloat16), b + 1, c & True

    jaxpr = jax.make_jaxpr(f)(jnp.ones(2), jnp.ones(2, jnp.int32), jnp.ones(2, bool))
    graph = nodes(graph_def_from_jaxpr(jaxpr, ["a", "b", "c"]))
    assert graph["convert_element_type"].attr["T"].type == types_pb2.DT_BFLOAT16
    assert graph["b"].attr["dtype"].type == types_pb2.DT_INT32
    assert graph["c"].attr["dtype"].type == types_pb2.DT_BOOL


def test_gradient_graphs_keep_module_boxes_and_place_variables_inside():
    def loss(w, x):
        with jax.named_scope("model"):
            with jax.named_scope("dense"):
                return jnp.sum(jnp.tanh(x @ w))

    jaxpr = jax.make_jaxpr(jax.grad(loss))(jnp.ones((3, 2)), jnp.ones((4, 3)))
    graph = nodes(graph_def_from_jaxpr(jaxpr, ["model/dense/w", "x"], state_inputs=1))
    assert "jvp(model)/dense/w" in graph  # next to the forward ops reading it
    assert any(n.startswith("transpose(jvp(model))/dense/") for n in graph)


def test_unnamed_inputs_and_odd_characters_get_valid_names():
    jaxpr = jax.make_jaxpr(lambda a, b: a + b)(1.0, 2.0)
    graph = graph_def_from_jaxpr(jaxpr, ["a:0 weird"])
    names = [node.name for node in graph.node]
    assert names[:2] == ["a_0_weird", "input"]
    assert not any(":" in name or " " in name for name in names)


def test_graph_survives_tensorboards_graph_processing():
    graph = two_layer_graph()
    parsed = graph_pb2.GraphDef.FromString(graph.SerializeToString())
    process_graph.prepare_graph_for_ui(parsed, 1024, "_too_large_attrs")
    merged = graph_util.merge_graph_defs([parsed, parsed])
    assert "graph_1/the_model/dense_1/dot_general" in nodes(merged)


# -- graphs of jmod.jit functions ----------------------------------------------


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
        self.scale = jmod.Variable(2.0)

    @jmod.jit
    def __call__(self, x):
        return self.dense_2(self.dense_1(x)) * self.scale


def test_fn_graph_names_nodes_by_module_path():
    model = TwoLayers(name="the_model")
    graph = nodes(model.__call__.graph(jnp.ones((1, 3))))
    assert graph["the_model/dense_1/dot_general"].op == "dot_general"
    assert graph["the_model/dense_2/relu/max"].op == "max"
    assert graph["the_model/mul"].op == "mul"
    # Variables sit in their module's box, read by that module's ops.
    assert graph["the_model/dense_1/w"].op == "Placeholder"
    assert shapes(graph["the_model/dense_2/w"]) == [[3, 2]]
    assert list(graph["the_model/dense_1/dot_general"].input) == ["x", "the_model/dense_1/w"]
    assert list(graph["the_model/mul"].input)[1] == "the_model/scale"
    assert model.__call__.trace_count == 0  # inspecting does not count as a call


def test_fn_graph_of_a_function_names_pytree_arguments():
    model = TwoLayers(name="the_model")

    @jmod.jit
    def step(model, x, batch):
        return model(x) + batch["y"][0]

    graph = nodes(step.graph(model, [[2.0, 2.0, 2.0]], {"y": (jnp.ones(2), 3.0)}))
    assert {"x", "batch/y/0", "batch/y/1"} <= set(graph)
    assert graph["step/the_model/dense_1/dot_general"].op == "dot_general"
    assert "step/the_model/dense_1/w" in graph
    assert shapes(graph["x"]) == [[1, 3]]


def event_files(logdir):
    files = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert len(files) == 1
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return list(EventFileLoader(files[0]).Load())


def exported_graphs(logdir, tag):
    values = [
        (event.step, value)
        for event in event_files(logdir)
        for value in event.summary.value
        if value.tag == tag
    ]
    assert len(values) == 1
    step, value = values[0]
    assert value.metadata.plugin_data.plugin_name == "graph_run_metadata_graph"
    run_metadata = config_pb2.RunMetadata.FromString(value.tensor.string_val[0])
    return step, [fg.pre_optimization_graph for fg in run_metadata.function_graphs]


def test_trace_export_writes_graphs_traced_while_tracing_is_on(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    model = TwoLayers(name="the_model")
    summary.trace_on(graph=True)
    model(jnp.ones((1, 3)))
    with writer.as_default():
        assert summary.trace_export("my_func_trace", step=0)
    writer.close()
    step, graphs = exported_graphs(tmp_path, "my_func_trace")
    assert step == 0 and len(graphs) == 1
    graph = nodes(graphs[0])
    assert graph["the_model/dense_1/dot_general"].op == "dot_general"
    assert shapes(graph["the_model/dense_2/dot_general"]) == [[1, 2]]


def test_functions_traced_before_trace_on_are_not_recorded(tmp_path):
    model = TwoLayers(name="the_model")
    model(jnp.ones((1, 3)))
    writer = summary.create_file_writer(tmp_path)
    summary.trace_on()
    model(jnp.ones((1, 3)))  # cached: no new trace
    model(jnp.ones((2, 1, 3)))  # a new signature: traced
    with writer.as_default():
        summary.trace_export("t", step=4)
    writer.close()
    step, graphs = exported_graphs(tmp_path, "t")
    assert step == 4 and len(graphs) == 1
    assert shapes(nodes(graphs[0])["the_model/dense_2/dot_general"]) == [[2, 1, 2]]


def test_trace_export_stops_tracing(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    summary.trace_on()
    with writer.as_default():
        summary.trace_export("t", step=0)
    assert trace._state is None and not jmod.compiled.TRACE_HOOKS
    with pytest.raises(summary.SummaryError, match="tracing is off.*trace_on"):
        summary.trace_export("t", step=1)
    writer.close()


def test_trace_on_twice_and_trace_off():
    summary.trace_on()
    with pytest.raises(summary.SummaryError, match="already on"):
        summary.trace_on()
    summary.trace_off()
    assert not jmod.compiled.TRACE_HOOKS
    summary.trace_off()  # harmless when off


def test_trace_export_without_a_default_writer_warns():
    summary.trace_on()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert summary.trace_export("t", step=0) is False
    assert "no default summary writer" in str(caught[0].message)


def test_trace_with_profiler_saves_the_profile_in_the_logdir(tmp_path):
    writer = summary.create_file_writer(tmp_path)
    summary.trace_on(graph=True, profiler=True)
    TwoLayers(name="the_model")(jnp.ones((1, 3)))
    with writer.as_default():
        summary.trace_export("t", step=0)
    writer.close()
    assert glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert exported_graphs(tmp_path, "t")[1]
    assert not jmod.profiler.is_active()


def test_event_is_an_event_proto(tmp_path):
    # The Graphs plugin reads the blob as RunMetadata: check the outer framing too.
    writer = summary.create_file_writer(tmp_path)
    summary.trace_on()
    with writer.as_default():
        summary.trace_export("empty", step=0)
    writer.close()
    assert all(isinstance(e, event_pb2.Event) for e in event_files(tmp_path))
    assert exported_graphs(tmp_path, "empty") == (0, [])


def test_nested_jit_calls_are_drawn_inside_the_callers_graph(tmp_path):
    model = TwoLayers(name="the_model")

    @jmod.jit
    def step(model, x):
        return model(x) * 2.0

    writer = summary.create_file_writer(tmp_path)
    summary.trace_on()
    step(model, jnp.ones((1, 3)))  # traces step, and model.__call__ inside it
    with writer.as_default():
        summary.trace_export("t", step=0)
    writer.close()
    _, graphs = exported_graphs(tmp_path, "t")
    assert len(graphs) == 1
    graph = nodes(graphs[0])
    assert graph["step/the_model/dense_1/dot_general"].op == "dot_general"
    assert graph["step/mul"].op == "mul"


def test_trace_export_graph_equals_fn_graph(tmp_path):
    model = TwoLayers(name="the_model")
    x = jnp.ones((1, 3))
    expected = model.__call__.graph(x)
    writer = summary.create_file_writer(tmp_path)
    summary.trace_on()
    model(x)
    with writer.as_default():
        summary.trace_export("t", step=0)
    writer.close()
    assert exported_graphs(tmp_path, "t")[1] == [expected]


def test_custom_vjp_and_checkpoint_bodies_are_drawn_inline():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda r, g: (g * jnp.cos(r),))

    @jax.checkpoint
    def g(x):
        return jnp.cos(x) * 2

    def h(x):
        with jax.named_scope("block"):
            return f(x) + g(x)

    graph = nodes(graph_def_from_jaxpr(jax.make_jaxpr(h)(jnp.ones(3)), ["x"]))
    assert graph["block/sin"].op == "sin"
    assert graph["block/cos"].op == "cos"
    assert list(graph["block/add"].input) == ["block/sin", "block/mul"]
