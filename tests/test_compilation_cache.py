"""The persistent compilation cache: on per user by default, off by switch, hit by a rerun."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

import jmod
from tests.layer_checks import run_docstring_examples

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Counts the compilation cache's hits and misses, builds and calls a small
# model, and reports what jmod says about the cache.
_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax
    events = {"hits": 0, "misses": 0}
    def on_event(name, **kwargs):
        if name == "/jax/compilation_cache/cache_hits":
            events["hits"] += 1
        elif name == "/jax/compilation_cache/cache_misses":
            events["misses"] += 1
    jax.monitoring.register_event_listener(on_event)
    import jmod
    if sys.argv[1] == "compile":
        jmod.random.set_seed(0)
        model = jmod.Sequential([jmod.layers.Dense(3), jmod.layers.Dense(2)])
        out = model(jax.numpy.ones((2, 4)))
        events["out"] = [float(v) for v in out.ravel()]
    events["directory"] = jmod.compilation_cache.directory()
    print(json.dumps(events))
    """
)


def _run(tmp_path, mode="compile", **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JMOD_", "JAX_COMP"))}
    environ.update(HOME=str(tmp_path / "home"), PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu")
    environ.pop("XDG_CACHE_HOME", None)
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_programs_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, JMOD_COMPILATION_CACHE=str(cache))
    assert first["directory"] == str(cache)
    assert first["hits"] == 0 and first["misses"] >= 3
    assert len(os.listdir(cache)) >= first["misses"]
    second = _run(tmp_path, JMOD_COMPILATION_CACHE=str(cache))
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert second["out"] == first["out"]  # the loaded programs compute what the compiled ones did


def test_default_directory_is_under_the_users_cache_home(tmp_path):
    seen = _run(tmp_path, "import")
    expected = tmp_path / "home" / ".cache" / "jmod" / "xla"
    assert seen["directory"] == str(expected)
    assert oct(expected.stat().st_mode & 0o777) == "0o700"
    xdg = _run(tmp_path, "import", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert xdg["directory"] == str(tmp_path / "xdg" / "jmod" / "xla")


def test_switched_off_by_environment_writes_nothing(tmp_path):
    seen = _run(tmp_path, JMOD_COMPILATION_CACHE="0")
    assert seen["directory"] is None and seen["hits"] == seen["misses"] == 0
    assert not (tmp_path / "home" / ".cache").exists()


def test_a_directory_chosen_for_jax_is_kept(tmp_path):
    seen = _run(tmp_path, "import", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert seen["directory"] == str(tmp_path / "mine")
    assert not (tmp_path / "home" / ".cache").exists()


def test_an_unwritable_directory_leaves_the_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert jmod.compilation_cache.enable(str(blocker / "cache")) is None


@pytest.fixture
def restore_cache_config():
    names = [
        "jax_enable_compilation_cache",
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_compilation_cache_max_size",
    ]
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    jax_cache.reset_cache()


def test_docstring_examples_run(restore_cache_config):
    run_docstring_examples(jmod.compilation_cache)


def test_enable_and_disable_in_a_running_process(tmp_path, restore_cache_config):
    path = jmod.compilation_cache.enable(str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache") and jmod.compilation_cache.directory() == path
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    jax.jit(lambda x: x * 3.0 + 1.0)(jax.numpy.ones(5)).block_until_ready()
    assert os.listdir(path)
    jmod.compilation_cache.disable()
    assert jmod.compilation_cache.directory() is None
