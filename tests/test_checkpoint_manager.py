"""jmod.CheckpointManager: numbered checkpoints in a directory, surviving restarts."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jmod
import jmod.checkpoint
from jmod.checkpoint import Checkpoint, CheckpointManager
from jmod.checkpoint import manager as manager_module
from jmod.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(directory, value=0.0, **kwargs):
    v = jmod.Variable(value)
    kwargs.setdefault("max_to_keep", 3)
    return v, CheckpointManager(Checkpoint(v=v), str(directory), **kwargs)


def names(paths):
    return [os.path.basename(p) for p in paths]


def test_latest_checkpoint_is_none_before_the_first_save(tmp_path):
    _, manager = make(tmp_path / "ckpts")
    assert manager.latest_checkpoint is None
    assert manager.checkpoints == []
    assert jmod.checkpoint.latest_checkpoint(tmp_path / "ckpts") is None


def test_five_saves_keep_the_last_three_and_a_state_file(tmp_path):
    directory = tmp_path / "ckpts"
    v, manager = make(directory)
    saved = []
    for i in range(5):
        v.assign(float(i))
        saved.append(manager.save())
    assert saved == [str(directory / f"ckpt-{n}") for n in range(1, 6)]
    assert manager.latest_checkpoint == str(directory / "ckpt-5")
    assert names(manager.checkpoints) == ["ckpt-3", "ckpt-4", "ckpt-5"]
    assert sorted(os.listdir(directory)) == ["checkpoint"] + [
        f"ckpt-{n}.{ext}" for n in (3, 4, 5) for ext in ("data-00000-of-00001", "index")
    ]
    assert float(jmod.checkpoint.load_variable(manager.checkpoints[0], "v")) == 2.0


def test_a_new_manager_on_the_directory_finds_the_same_checkpoints(tmp_path):
    directory = tmp_path / "ckpts"
    _, first = make(directory)
    for _ in range(5):
        first.save()
    _, second = make(directory)
    assert second.checkpoints == first.checkpoints
    assert second.latest_checkpoint == first.latest_checkpoint
    assert jmod.checkpoint.latest_checkpoint(directory) == first.latest_checkpoint


def test_a_restarted_process_continues_the_numbering_instead_of_overwriting(tmp_path):
    directory = tmp_path / "ckpts"
    _, first = make(directory)
    first.save(), first.save()
    _, second = make(directory)  # a fresh Checkpoint: its save_counter is 0
    assert names([second.save()]) == ["ckpt-3"]
    assert names(second.checkpoints) == ["ckpt-1", "ckpt-2", "ckpt-3"]


def test_save_with_a_step_names_the_checkpoint_after_it(tmp_path):
    _, manager = make(tmp_path)
    assert names([manager.save(step=100), manager.save(step=200)]) == ["ckpt-100", "ckpt-200"]
    assert names(manager.checkpoints) == ["ckpt-100", "ckpt-200"]


def test_checkpoint_name_sets_the_file_prefix(tmp_path):
    _, manager = make(tmp_path, checkpoint_name="model")
    assert names([manager.save()]) == ["model-1"]
    assert os.path.exists(tmp_path / "model-1.index")


def test_restore_or_initialize_initializes_then_restores(tmp_path):
    calls = []
    v, manager = make(tmp_path, value=1.0, init_fn=lambda: calls.append("init"))
    assert manager.restore_or_initialize() is None
    assert calls == ["init"]
    v.assign(42.0)
    manager.save()
    v2, manager2 = make(tmp_path, value=0.0, init_fn=lambda: calls.append("again"))
    assert manager2.restore_or_initialize() == str(tmp_path / "ckpt-1")
    assert float(v2) == 42.0 and calls == ["init"]


def test_keep_every_n_hours_preserves_old_checkpoints_beyond_max_to_keep(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(manager_module, "_now", lambda: clock[0])
    directory = tmp_path / "ckpts"
    _, manager = make(directory, max_to_keep=2, keep_every_n_hours=1)
    for minutes in [0, 30, 61, 90, 125, 130]:  # saves at these minutes past the start
        clock[0] = 1000.0 + 60 * minutes
        manager.save()
    # ckpt-1 (0 min) and ckpt-2 (30) are < 1 h after the start; ckpt-3 (61) is kept,
    # ckpt-4 (90) is < 1 h after it, and ckpt-5/6 are the two most recent.
    assert names(manager.checkpoints) == ["ckpt-5", "ckpt-6"]
    kept = sorted(n[: -len(".index")] for n in os.listdir(directory) if n.endswith(".index"))
    assert kept == ["ckpt-3", "ckpt-5", "ckpt-6"]
    _, again = make(directory, max_to_keep=2, keep_every_n_hours=1)
    assert names(again.checkpoints) == ["ckpt-5", "ckpt-6"]  # preserved ones stay unmanaged


def test_max_to_keep_none_keeps_everything(tmp_path):
    _, manager = make(tmp_path, max_to_keep=None)
    for _ in range(4):
        manager.save()
    assert names(manager.checkpoints) == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        make(tmp_path, max_to_keep=0)
    with pytest.raises(ValueError, match="checkpoint_name"):
        make(tmp_path, checkpoint_name="a/b")


def test_a_damaged_state_file_is_rebuilt_from_the_directory(tmp_path):
    _, manager = make(tmp_path)
    for _ in range(3):
        manager.save()
    (tmp_path / "checkpoint").write_bytes(b"\x00not json")
    _, again = make(tmp_path)
    assert names(again.checkpoints) == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert names([again.save()]) == ["ckpt-4"]
    assert json.loads((tmp_path / "checkpoint").read_text())["latest"] == "ckpt-4"


def test_a_listed_checkpoint_deleted_by_hand_is_dropped(tmp_path):
    _, manager = make(tmp_path)
    manager.save(), manager.save()
    jmod.checkpoint._format.delete_checkpoint(str(tmp_path / "ckpt-2"))
    _, again = make(tmp_path)
    assert names(again.checkpoints) == ["ckpt-1"]
    assert jmod.checkpoint.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-1")


def test_async_save_does_the_bookkeeping_when_the_write_ends(tmp_path):
    v, manager = make(tmp_path, max_to_keep=2)
    handles = []
    for i in range(4):
        v.assign(float(i))
        handles.append(manager.save(blocking=False))
    manager.sync()
    assert names(h.wait() for h in handles) == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]
    assert names(manager.checkpoints) == ["ckpt-3", "ckpt-4"]
    assert float(jmod.checkpoint.load_variable(manager.latest_checkpoint, "v")) == 3.0
    assert not os.path.exists(tmp_path / "ckpt-1.index")


_KILLED_TRAINER = textwrap.dedent(
    """
    import os, signal, sys
    import jax.numpy as jnp
    import jmod
    from jmod.checkpoint import Checkpoint, CheckpointManager
    directory = sys.argv[1]
    v = jmod.Variable(jnp.zeros(200_000))
    manager = CheckpointManager(Checkpoint(v=v), directory, max_to_keep=2)
    for step in range(3):
        v.assign(jnp.full(200_000, float(step)))
        manager.save()
    real_write = os.write
    def write_then_die(fd, data):
        n = real_write(fd, memoryview(data)[:4096])
        if os.fstat(fd).st_size > 100_000:
            os.kill(os.getpid(), signal.SIGKILL)
        return n
    os.write = write_then_die
    v.assign(jnp.full(200_000, 3.0))
    manager.save()
    """
)


def test_a_trainer_killed_mid_save_leaves_the_previous_checkpoints_loadable(tmp_path):
    directory = str(tmp_path / "ckpts")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_TRAINER, directory],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    v, manager = make(directory, value=np.zeros(200_000, np.float32), max_to_keep=2)
    assert names(manager.checkpoints) == ["ckpt-2", "ckpt-3"]
    assert manager.restore_or_initialize() == os.path.join(directory, "ckpt-3")
    np.testing.assert_array_equal(np.asarray(v), np.full(200_000, 2.0))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        jmod.checkpoint.list_variables(os.path.join(directory, "ckpt-4"))
    assert names([manager.save()]) == ["ckpt-4"]  # and the half-written files are gone
    assert sorted(os.listdir(directory)) == ["checkpoint"] + [
        f"ckpt-{n}.{ext}" for n in (3, 4) for ext in ("data-00000-of-00001", "index")
    ]
