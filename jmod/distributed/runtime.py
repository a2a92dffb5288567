"""Joining processes into one JAX cluster: `initialize`, `process_index`, `process_count`.

This wraps `jax.distributed.initialize`; JAX's coordination service and
collectives (gloo on CPU, NCCL on GPU) do the work.
"""

import os

import jax

from jmod.distributed._errors import DistributedError

_DEFAULT_TIMEOUT = 120


def _from_env(value, var, convert):
    if value is not None:
        return value
    raw = os.environ.get(var)
    if raw is None or raw == "":
        return None
    try:
        return convert(raw)
    except ValueError:
        raise DistributedError(
            f"environment variable {var}={raw!r} is not a valid {convert.__name__}"
        ) from None


class _NoAbortClient:
    """Stands in for jaxlib's module inside `jax._src.distributed` during `initialize`.

    JAX's client, by default, terminates the process when it cannot
    register with the coordinator (a peer never arrived). Passing any
    error callback makes `connect()` raise instead, which becomes a
    `DistributedError` with a message.
    """

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_distributed_runtime_client(self, *args, **kwargs):
        kwargs.setdefault("missed_heartbeat_callback", _lost_peer)
        return self._real.get_distributed_runtime_client(*args, **kwargs)


def _lost_peer(*_):
    # Never usefully called: jaxlib cannot hand the status to Python, and
    # connect() raises on its own.
    pass


def _internals():
    try:
        from jax._src import distributed as internal

        if hasattr(internal, "_jax") and hasattr(internal, "global_state"):
            return internal
    except ImportError:
        pass
    return None


def initialize(
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    timeout=_DEFAULT_TIMEOUT,
    local_device_ids=None,
):
    """Joins this process to a cluster of `num_processes` JAX processes.

    Call it once per process, before any other JAX work. Afterwards
    `jax.devices()` lists the devices of every process, and meshes made by
    `jmod.distributed.mesh` span them all. Arguments left None come from
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, and
    else from JAX's cluster detection (SLURM, Open MPI, TPU pods).

    If some process does not arrive within `timeout` seconds, every
    waiting process raises `DistributedError` (instead of hanging or being
    aborted).

    Example (run in each of two processes, with process_id 0 and 1):
        >>> jmod.distributed.initialize(  # doctest: +SKIP
        ...     "127.0.0.1:12345", num_processes=2, process_id=0, timeout=60
        ... )
        >>> jmod.distributed.process_count()  # doctest: +SKIP
        2

    Args:
        coordinator_address: `host:port` of process 0, which serves the
            coordinator there.
        num_processes: how many processes take part.
        process_id: this process's index, 0 .. num_processes - 1.
        timeout: seconds to wait for every process to register.
        local_device_ids: restricts this process to some local devices (GPUs).
    """
    coordinator_address = _from_env(coordinator_address, "JAX_COORDINATOR_ADDRESS", str)
    num_processes = _from_env(num_processes, "JAX_NUM_PROCESSES", int)
    process_id = _from_env(process_id, "JAX_PROCESS_ID", int)
    if jax.distributed.is_initialized():
        raise DistributedError(
            "jmod.distributed.initialize was already called in this process "
            f"(process {jax.process_index()} of {jax.process_count()})"
        )
    if num_processes is not None and process_id is not None:
        if not 0 <= process_id < num_processes:
            raise DistributedError(
                f"process_id must be in 0..{num_processes - 1} for {num_processes} processes, "
                f"got {process_id}"
            )
    where = (
        f"process {process_id} of {num_processes} (coordinator {coordinator_address})"
        if coordinator_address
        else "this process"
    )
    internal = _internals()
    real = internal._jax if internal is not None else None
    if internal is not None:
        internal._jax = _NoAbortClient(real)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=int(timeout),
        )
    except (RuntimeError, ValueError, TypeError) as e:
        _forget(internal)
        text = str(e)
        if "before any JAX" in text or "backend" in text.lower() and "initialized" in text:
            raise DistributedError(
                f"jmod.distributed.initialize for {where} came too late: call it before any "
                f"other JAX work in the process ({text})"
            ) from e
        if isinstance(e, RuntimeError):
            # jaxlib reports the timeout as a failed cast of its status: no detail.
            detail = "" if "bad_cast" in text else f" ({text})"
            raise DistributedError(
                f"jmod.distributed.initialize: {where} could not register with all "
                f"{num_processes or 'expected'} processes within {timeout} s. Was every process "
                "started, with the same coordinator address and process count, and can it "
                f"reach the coordinator?{detail}"
            ) from e
        raise DistributedError(f"jmod.distributed.initialize for {where}: {text}") from e
    finally:
        if internal is not None:
            internal._jax = real


def _forget(internal):
    # A failed connect leaves a half-made client (and on process 0 a running
    # coordinator) behind; drop them so the process exits cleanly.
    if internal is None:
        return
    state = internal.global_state
    service, state.service, state.client = state.service, None, None
    if service is not None:
        try:
            service.shutdown()
        except Exception:  # noqa: BLE001 (best effort while reporting another error)
            pass


def shutdown():
    """Leaves the cluster (optional: JAX also does it at exit)."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def process_index():
    """This process's index in the cluster (0 when not distributed).

    Example:
        >>> jmod.distributed.process_index()
        0
    """
    return jax.process_index()


def process_count():
    """How many processes the cluster has (1 when not distributed).

    Example:
        >>> jmod.distributed.process_count()
        1
    """
    return jax.process_count()
