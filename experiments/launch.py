"""python -m experiments.launch -n P -- COMMAND ...: P local processes as one JAX cluster.

Starts P copies of COMMAND with JAX's variables set (JAX_COORDINATOR_ADDRESS on a free
local port, JAX_NUM_PROCESSES = P, JAX_PROCESS_ID = 0..P-1), so that any of bea's command
lines runs as a multi-process cluster on one machine, e.g.

    python -m experiments.launch -n 2 -- python -m experiments.convergence \\
        --grid beta=0.5,0.7 --h 0.05 0.025 --out results/grid2

Process 0's output passes through; the others' stderr is prefixed with their id. If a
process exits with a failure, the others are stopped (SIGTERM, then SIGKILL after
``--grace`` seconds) and the launcher exits with status 2, in one line; otherwise with
process 0's status. SIGTERM or SIGINT (Ctrl-C) to the launcher is passed on to every
process (a training saves and stops at its next step; a second signal kills them), and
the launcher exits with process 0's status once all have ended. On a cluster use its own
launcher (srun, mpirun) or set the three variables per host: nothing else changes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from experiments._cli import Parser, check_size, fail, integer, interruptible

PROG = "python -m experiments.launch"


def max_processes() -> int:
    """The most local processes -n may ask for: the CPU count, at least 8."""
    return max(8, os.cpu_count() or 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relay(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()


def launch(n: int, command: list[str], grace: float = 10.0, port: int | None = None) -> int:
    port = port or free_port()
    procs: list[subprocess.Popen] = []
    got = []  # SIGTERM / SIGINT to the launcher: passed on, then every process's own exit

    def forward(signum, frame):  # a second one ends them at once
        got.append(signum)
        for p in procs:
            if p.poll() is None:
                p.kill() if len(got) > 1 else p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(n):
            env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i))
            try:
                p = subprocess.Popen(command, env=env, text=True,
                                     stdout=None if i == 0 else subprocess.DEVNULL,
                                     stderr=None if i == 0 else subprocess.PIPE)
            except OSError as e:  # not found, not executable: stop those already started
                for q in procs:
                    q.kill()
                    q.wait()
                fail(PROG, f"cannot start {command[0]!r}: {e.strerror or e}")
            if i:
                threading.Thread(target=_relay, args=(p.stderr, f"[{i}] ", sys.stderr),
                                 daemon=True).start()
            procs.append(p)
            if got:  # a signal while starting them: the later ones are not started
                p.send_signal(got[0])
                break
        failed = None
        while failed is None and any(p.poll() is None for p in procs):
            if not got:
                failed = next((i for i, p in enumerate(procs)
                               if p.poll() not in (None, 0)), None)
            time.sleep(0.05)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        codes = [128 - p.returncode if p.returncode < 0 else p.returncode for p in procs]
        sys.stderr.write(f"{PROG}: {signal.Signals(got[0]).name} passed on to the {len(procs)} "
                         f"processes; they exited with status {', '.join(map(str, codes))}\n")
        raise SystemExit(codes[0])
    if failed is None:
        failed = next((i for i, p in enumerate(procs) if p.returncode != 0), None)
    if failed is not None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        fail(PROG, f"process {failed} of {n} exited with status {procs[failed].returncode}; "
                   "stopped the others")
    return procs[0].returncode


@interruptible(PROG, "; no process was started yet")  # once started: passed on to them
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        fail(PROG, "give the command after '--', e.g. -n 2 -- python -m experiments.convergence")
    split = argv.index("--")
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("-n", "--processes", type=integer, required=True)
    p.add_argument("--port", type=integer, default=None, help="coordinator port (default: free)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds between SIGTERM and SIGKILL when stopping the others")
    args = p.parse_args(argv[:split])
    command = argv[split + 1:]
    if args.processes < 1:
        fail(PROG, f"-n must be at least 1, got {args.processes}")
    try:
        check_size("-n", args.processes, max_processes(), "processes run on this machine "
                   "(at most its CPU count, or 8)")
    except ValueError as e:
        fail(PROG, str(e))
    if not command:
        fail(PROG, "empty command after '--'")
    if shutil.which(command[0]) is None:
        fail(PROG, f"cannot start {command[0]!r}: no such executable (not found on PATH, or "
                   "not executable)")
    return launch(args.processes, command, args.grace, args.port)


if __name__ == "__main__":
    sys.exit(main())
