"""Several processes as one JAX cluster, started by any launcher (``jax.distributed``).

The same command runs as one process or as P processes. P processes are described by JAX's
coordinator variable ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0) with
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or by a SLURM or Open MPI job, which
``jax.distributed.initialize()`` detects itself. :func:`initialize` joins the cluster; it
must run before any JAX computation (the command lines call it right after reading their
flags). Then ``jax.devices()`` lists every process's devices, a grid's combination axis (or
a training run's examples) is sharded over all of them, results are gathered to every
process, and only process 0 (:func:`is_main`) writes files.

Failures end in one line and exit status 2, never a hang: a cluster that does not form
within ``BEA_DISTRIBUTED_TIMEOUT`` seconds (default 60: a wrong process count, an
unreachable coordinator; JAX itself would abort the process with a stack dump, so a
watchdog thread ends it first), and a peer that dies mid-run (the others' next collective
fails at once, and :func:`fail_cleanly` turns that into one line). On the CPU the
collectives run over gloo.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import jax

__all__ = ["requested", "initialize", "is_main", "broken", "fail_cleanly"]

_CLUSTERS = (("SLURM_JOB_ID", "SLURM_NTASKS"), ("OMPI_COMM_WORLD_SIZE",
                                                 "OMPI_COMM_WORLD_SIZE"))


def _int_env(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be an integer (set JAX_COORDINATOR_ADDRESS, "
                         "JAX_NUM_PROCESSES and JAX_PROCESS_ID together)") from None


def requested() -> bool:
    """Whether the environment describes a multi-process run: JAX's coordinator variable,
    ``BEA_DISTRIBUTED=1``, or a SLURM / Open MPI job of more than one task."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("BEA_DISTRIBUTED") == "1":
        return True
    return any(os.environ.get(job) and os.environ.get(size, "1") != "1"
               for job, size in _CLUSTERS)


def initialize(prog: str = "bea") -> int:
    """Join the cluster the environment describes (nothing for a single process); returns
    the number of processes. Raises ValueError (one line) for inconsistent variables; a
    cluster that does not form within the timeout ends the process with one line on stderr
    and exit status 2 (``prog`` names the command)."""
    if not requested():
        return 1
    if jax.distributed.is_initialized():
        return jax.process_count()
    timeout = _int_env("BEA_DISTRIBUTED_TIMEOUT") if os.environ.get(
        "BEA_DISTRIBUTED_TIMEOUT") else 60
    # a peer that dies is seen at the next collective; JAX's heartbeat check would abort the
    # survivors (no Python exception), so it only backs that up
    kw = dict(initialization_timeout=timeout + 30, heartbeat_timeout_seconds=600)
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        n, i = _int_env("JAX_NUM_PROCESSES"), _int_env("JAX_PROCESS_ID")
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"JAX_PROCESS_ID={i} must lie in [0, JAX_NUM_PROCESSES={n})")
        kw.update(coordinator_address=address, num_processes=n, process_id=i)
    where = f" at {address}" if address else ""
    count = kw.get("num_processes", "the")
    message = (f"{prog}: error: the cluster{where} did not form within {timeout} s: are all "
               f"{count} processes started, with the same JAX_NUM_PROCESSES, and is the "
               "coordinator (process 0) reachable?\n")

    def give_up():  # JAX's own deadline would abort with a stack dump: end first, one line
        sys.stderr.write(message)
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog.start()
    try:
        jax.distributed.initialize(**kw)
    except Exception as e:  # noqa: BLE001 - JAX raises several types here: name it, one line
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(message.split("error: ", 1)[1].strip() + f" ({what[:200]})") from None
    finally:
        watchdog.cancel()
    return jax.process_count()


def is_main() -> bool:
    """True in process 0 (the one that writes files), and in a single-process run."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def broken(error: BaseException) -> bool:
    """Whether ``error`` says the cluster broke up (a peer died: a collective failed, or the
    coordination service reported it), rather than something wrong with the input."""
    if not jax.distributed.is_initialized():
        return False
    text = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) or any(
        w in text for w in ("Gloo", "coordination", "Coordination", "UNAVAILABLE"))


@contextlib.contextmanager
def fail_cleanly(prog: str) -> Iterator[None]:
    """In a multi-process run, turn any failure of this process (a peer that died and
    broke a collective, a missed heartbeat) into one line on stderr and exit status 2,
    leaving at once: JAX's own shutdown would wait for the dead peer at a barrier and then
    abort. A single-process run is left to fail as it would."""
    try:
        yield
    except SystemExit as e:
        if jax.distributed.is_initialized() and e.code not in (0, None):
            sys.stderr.flush()
            os._exit(int(e.code) if isinstance(e.code, int) else 2)
        raise
    except Exception as e:  # noqa: BLE001
        if not jax.distributed.is_initialized():
            raise
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"{prog}: error: process {jax.process_index()} of "
                         f"{jax.process_count()} stopped: {what[:300]} (a peer process "
                         "failed or the cluster broke up)\n")
        sys.stderr.flush()
        os._exit(2)
