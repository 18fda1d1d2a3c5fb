"""bea.distributed and experiments.launch: the multi-process path run for real, as local
processes forming one JAX cluster on the CPU (gloo collectives): the same results as one
process, only process 0 writes, and every failure is one line and exit status 2 within a
timeout, never a hang."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import bea
from bea.problems import bilinear, make_problem
from experiments.launch import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ["--grid", "beta=0.5,0.7", "--h", "0.05", "0.025", "--no-compile-cache"]


def _env(n, i, port, **extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i), BEA_DISTRIBUTED_TIMEOUT="8")
    env.pop("XLA_FLAGS", None)
    return env | extra


def _start(args, n, i, port):
    return subprocess.Popen([sys.executable, "-m", "experiments.convergence", *args],
                            cwd=ROOT, env=_env(n, i, port), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _errors(out):
    return [json.loads((out / m / "convergence.json").read_text())["errors"]
            for m in ("beta=0.5", "beta=0.7")]


def test_two_processes_give_the_results_of_one_and_only_process_0_writes(tmp_path):
    port = free_port()
    procs = [_start(GRID + ["--out", str(tmp_path / f"p{i}")], 2, i, port) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = [ln for ln in outs[1][0].splitlines() if not ln.startswith("[Gloo]")]
    assert not (tmp_path / "p1").exists() and said == []  # process 1: nothing written
    assert "in 2 process(es)" in outs[0][0]
    p = bilinear()
    one = bea.grid(p.loss, p.theta0, p.data, grid={"beta": [0.5, 0.7]}, h=[0.05, 0.025],
                   T=1.0, beta=0.5, rho=0.7, eps=1e-3)
    for got, r in zip(_errors(tmp_path / "p0"), one.results, strict=True):
        for k in ("order0", "order1"):
            np.testing.assert_allclose(got[k], r.errors[k], rtol=1e-12, atol=0)


def _one_line_exit_2(procs, needle, t0, limit):
    for p in procs:
        out, err = p.communicate(timeout=limit)
        assert p.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    assert time.time() - t0 < limit


def test_a_wrong_process_count_ends_in_one_line(tmp_path):
    """JAX_NUM_PROCESSES=3 but two processes started: both stop after the timeout (8 s)."""
    port, t0 = free_port(), time.time()
    procs = [_start(GRID + ["--out", str(tmp_path / "o")], 3, i, port) for i in range(2)]
    _one_line_exit_2(procs, "did not form within 8 s", t0, 120)
    assert not (tmp_path / "o").exists()


def test_an_unreachable_coordinator_ends_in_one_line(tmp_path):
    port, t0 = free_port(), time.time()
    _one_line_exit_2([_start(GRID + ["--out", str(tmp_path / "o")], 2, 1, port)],
                     f"127.0.0.1:{port} did not form", t0, 120)


def test_a_peer_that_dies_mid_run_stops_the_others(tmp_path):
    """SIGKILL process 1 once process 0 has finished its first h: process 0 stops with one
    line and exit status 2 at its next collective, and writes nothing."""
    port = free_port()
    q = make_problem("quadratic", seed=0)
    assert q.num_examples >= 32
    args = ["--problem", "quadratic", "--batch-size", "8", "--grid", "beta=0.5,0.7", "--T", "1",
            "--h", "0.1", "0.05", "0.025", "0.0125", "0.00625", "--no-compile-cache", "--out",
            str(tmp_path / "o")]
    procs = [_start(args, 2, i, port) for i in range(2)]
    line = ""
    while "h=0.1 " not in line:  # process 0's progress on stderr
        line = procs[0].stderr.readline()
        assert line or procs[0].poll() is None, "process 0 ended before its first h"
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    _, err = procs[0].communicate(timeout=120)
    assert procs[0].returncode == 2, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("  h=", "[Gloo]"))]
    assert len(lines) == 1 and "process 0 of 2 stopped" in lines[0], lines
    assert time.time() - t0 < 120 and not (tmp_path / "o").exists()


def test_launcher_stops_the_others_when_one_fails():
    code = ("import os, sys, time\ni = int(os.environ['JAX_PROCESS_ID'])\n"
            "sys.exit(3) if i == 1 else time.sleep(60)")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "experiments.launch", "-n", "2", "--grace", "2",
                        "--", sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and time.time() - t0 < 30
    assert r.stderr.strip().splitlines()[-1].endswith(
        "process 1 of 2 exited with status 3; stopped the others")


@pytest.mark.parametrize("argv, needle", [
    (["-n", "2"], "after '--'"), (["-n", "0", "--", "true"], "at least 1"),
    (["-n", "x", "--", "true"], "'x'"), (["-n", "2", "--"], "empty command")])
def test_launcher_bad_input(argv, needle, capsys):
    from experiments.launch import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_inconsistent_variables_are_named(monkeypatch):
    from bea import distributed

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' must be an integer"):
        distributed.initialize()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID=2 must lie in \[0, "):
        distributed.initialize()
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    assert not distributed.requested() and distributed.initialize() == 1
