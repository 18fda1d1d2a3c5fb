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


def _start(args, n, i, port, module="experiments.convergence", **env):
    return subprocess.Popen([sys.executable, "-m", module, *args],
                            cwd=ROOT, env=_env(n, i, port, **env), text=True,
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
    one = bea.grid(p.loss, p.theta0, p.data, over={"beta": [0.5, 0.7]}, h=[0.05, 0.025],
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_launcher_passes_a_signal_on_and_waits(sig):
    """SIGTERM / Ctrl-C to the launcher reaches every process, which ends in its own way
    (here: exit 128 + signal after saying so); the launcher waits for them, says so in
    one line and exits with process 0's status, no traceback."""
    code = ("import os, signal, sys, time\ni = os.environ['JAX_PROCESS_ID']\n"
            "def bye(s, f):\n    open(f'{d}/stopped{i}', 'w').close(); sys.exit(128 + s)\n"
            "signal.signal(signal.SIGTERM, bye); signal.signal(signal.SIGINT, bye)\n"
            "open(f'{d}/ready{i}', 'w').close()\ntime.sleep(60)")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([sys.executable, "-m", "experiments.launch", "-n", "2", "--",
                              sys.executable, "-c", f"d = {d!r}\n" + code], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while not all(os.path.exists(f"{d}/ready{i}") for i in range(2)):
            assert time.time() - t0 < 30 and p.poll() is None
            time.sleep(0.05)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
        assert sorted(os.listdir(d)) == ["ready0", "ready1", "stopped0", "stopped1"]
    assert p.returncode == 128 + sig, err
    assert err.strip().splitlines() == [
        f"python -m experiments.launch: {signal.Signals(sig).name} passed on to the 2 "
        f"processes; they exited with status {128 + sig}, {128 + sig}"]


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


# a training sweep of 2 vmapped members, 4 steps of the tiny CNN on 48 digits (sharded 24 +
# 24 over the two processes' devices), checkpoints at steps 2 and 4
TRAIN = ["--model", "cnn_small", "--train-size", "48", "--test-size", "64", "--physical-batch",
         "16", "--h", "1e-2", "--beta", "0.9", "--eps", "1e-6", "--dtype", "float64",
         "--no-progress", "--max-steps", "4", "--checkpoint-every", "2", "--write-every", "1",
         "--sweep", "rho=0.9,0.99"]
MEMBERS = ("rho=0.9", "rho=0.99")


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory):
    """A compilation cache shared by the training processes of this module (the same
    programs, compiled once; the executables are the same)."""
    d = str(tmp_path_factory.mktemp("jax_cache"))
    return dict(JAX_COMPILATION_CACHE_DIR=d, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _train(args, n, i, port, cache, **env):
    return _start(TRAIN + args, n, i, port, module="experiments.train", **cache, **env)


def _one_process_two_devices(args, cache):
    """One process with two host devices: the 2-process run's sharding (and so its
    reduction order) in one process."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2", **cache)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "experiments.train", *TRAIN, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_process_training(tmp_path_factory, train_cache):
    out = tmp_path_factory.mktemp("one") / "run"
    r = _one_process_two_devices(["--out", str(out)], train_cache)
    assert r.returncode == 0, r.stderr
    return out


def test_two_process_training_sweep_matches_one_process_and_only_process_0_writes(
        tmp_path, one_process_training, train_cache):
    """Byte-identical histories to one process with the same two devices. Process 1's own
    --out stays absent (process 0's is the run's); in the run directory process 1 only
    takes part in orbax's collective checkpoint save (its ``*process_1`` metadata)."""
    port = free_port()
    procs = [_train(["--out", str(tmp_path / f"p{i}")], 2, i, port, train_cache)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = [ln for ln in outs[1][0].splitlines() if not ln.startswith("[Gloo]")]
    assert not (tmp_path / "p1").exists() and said == [] and outs[1][1].strip() == ""
    for m in MEMBERS:
        assert ((tmp_path / "p0" / m / "history.csv").read_bytes()
                == (one_process_training / m / "history.csv").read_bytes()), m
        assert json.loads((tmp_path / "p0" / m / "config.json").read_text())["devices"] == 2
    assert sorted(os.listdir(tmp_path / "p0" / "checkpoints")) == ["2", "4"]


def test_a_training_process_that_dies_stops_the_other_and_the_run_resumes(
        tmp_path, one_process_training, train_cache):
    """Process 1 SIGKILLs itself after step 3 (checkpoint at 2): process 0 stops at its
    next collective with one line and exit status 2, and the run directory resumes (one
    process, the same two devices) to the uninterrupted histories, byte for byte."""
    port, out = free_port(), tmp_path / "run"
    procs = [_train(["--out", str(out)] + (["--kill-at-step", "3"] if i else []), 2, i, port,
                    train_cache) for i in range(2)]
    _, err = procs[0].communicate(timeout=120)
    procs[1].wait(timeout=30)
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode == 2, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[Gloo]")]
    assert len(lines) == 1 and "process 0 of 2 stopped" in lines[0], lines
    assert sorted(os.listdir(out / "checkpoints")) == ["2"]
    r = _one_process_two_devices(["--out", str(out), "--resume"], train_cache)
    assert r.returncode == 0 and "resumed from step 2" in r.stderr, r.stderr
    for m in MEMBERS:
        assert ((out / m / "history.csv").read_bytes()
                == (one_process_training / m / "history.csv").read_bytes()), m
