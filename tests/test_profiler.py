"""jmod.profiler: jax.profiler traces with annotations, under a TensorBoard logdir."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

import jmod
from jmod import profiler


def host_events(logdir):
    """(name, stats) of every host event in the one profile under `logdir`."""
    (path,) = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    data = jax.profiler.ProfileData.from_file(path)
    return [
        (event.name, dict(event.stats))
        for plane in data.planes
        if plane.name.startswith("/host")
        for line in plane.lines
        for event in line.events
    ]


def test_trace_writes_a_profile_with_annotations(tmp_path):
    with profiler.trace(tmp_path):
        assert profiler.is_active()
        with profiler.annotate("load_batch"):
            x = jnp.arange(8.0)
        with profiler.annotate("train", step=7):
            jax.jit(lambda v: v * 2)(x).block_until_ready()
    assert not profiler.is_active()
    events = host_events(tmp_path)
    names = [name for name, _ in events]
    assert "load_batch" in names
    (step_stats,) = [stats for name, stats in events if name == "train"]
    assert step_stats["step_num"] == 7


def test_start_stop_returns_the_profile_run_directory(tmp_path):
    profiler.start(tmp_path)
    jnp.ones(3).block_until_ready()
    run_dir = profiler.stop()
    assert os.path.dirname(run_dir) == str(tmp_path / "plugins" / "profile")
    assert glob.glob(os.path.join(run_dir, "*.xplane.pb"))


def test_annotate_works_as_a_decorator_and_reentrantly(tmp_path):
    @profiler.annotate("preprocess", kind="host")
    def preprocess(x, depth):
        return x if depth == 0 else preprocess(x + 1, depth - 1)

    with profiler.trace(tmp_path):
        assert int(preprocess(jnp.int32(0), 2)) == 2
    events = [stats for name, stats in host_events(tmp_path) if name == "preprocess"]
    assert len(events) == 3 and events[0]["kind"] == "host"


def test_starting_twice_is_an_error_naming_the_running_logdir(tmp_path):
    profiler.start(tmp_path / "a")
    try:
        with pytest.raises(jmod.JmodError, match=r"already being recorded into .*a'"):
            profiler.start(tmp_path / "b")
    finally:
        profiler.stop()


def test_stop_without_start_is_an_error():
    with pytest.raises(jmod.JmodError, match=r"no profile.*start\(logdir\)"):
        profiler.stop()


def test_trace_stops_the_profile_when_the_block_raises(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with profiler.trace(tmp_path):
            _ = 1 / 0
    assert not profiler.is_active()
    assert glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))


def test_fit_marks_train_steps_while_profiling(tmp_path):
    import jax.numpy as jnp
    import numpy as np

    model = jmod.Sequential([jmod.Input(shape=[2]), jmod.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
    with profiler.trace(tmp_path):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    traces = glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert traces
    data = open(traces[0], "rb").read()
    assert b"step_num" in data  # a StepTraceAnnotation per train step
    assert jnp.isfinite(model(jnp.ones((1, 2)))).all()
