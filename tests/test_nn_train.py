"""The training CLI: resume after SIGKILL, atomic files, sharding, divergence, errors."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import bea  # noqa: F401
from bea.data import DataError, load_dataset, write_cifar_pickles
from bea.nn import _run_files as H
from experiments import train as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tiny and float64: digits, 48 training examples (3 physical batches of 16), 64 test ones
TINY = ["--model", "cnn_small", "--train-size", "48", "--test-size", "64", "--physical-batch", "16",
        "--h", "1e-2", "--beta", "0.9", "--rho", "0.99", "--eps", "1e-6", "--dtype", "float64",
        "--no-progress"]


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """A compilation cache shared by this module's subprocesses (they compile the same
    programs; the cache only saves time, the executables are the same)."""
    return str(tmp_path_factory.mktemp("jax_cache"))


def _start(args, devices=1, cache=None):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


COMMON = TINY + ["--max-steps", "10", "--checkpoint-every", "3", "--write-every", "2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, jax_cache):
    """An uninterrupted single-device run (10 steps), the reference of two tests."""
    full = tmp_path_factory.mktemp("full")
    rc, _, err = _finish(_start(COMMON + ["--out", str(full)], cache=jax_cache))
    assert rc == 0, err
    return full


def test_sigkill_and_resume_gives_the_same_history(tmp_path, uninterrupted, jax_cache):
    full, part = uninterrupted, tmp_path / "part"
    common = COMMON
    # the hidden hook SIGKILLs the process right after step 8 (checkpoint at 6, history
    # written through row 7): the resume must drop rows 6 and 7 and redo them
    rc_part, _, _ = _finish(_start(common + ["--out", str(part), "--kill-at-step", "8"],
                                   cache=jax_cache))
    assert rc_part == -signal.SIGKILL
    killed = H.read_history(str(part / "history.csv"))
    assert [r["step"] for r in killed] == list(range(8))  # complete rows only
    assert not [f for f in os.listdir(part) if ".tmp." in f]
    rc, _, err = _finish(_start(common + ["--out", str(part), "--resume"], cache=jax_cache))
    assert rc == 0, err
    assert "resumed from step 6" in err
    assert "took over the lock" in err and "which no longer runs" in err  # the killed one's
    assert (part / "history.csv").read_bytes() == (full / "history.csv").read_bytes()
    cfg = json.loads((part / "config.json").read_text())
    assert cfg["status"] == "max_steps" and cfg["rows"] == 10


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_saves_and_resume_gives_the_same_history(tmp_path, uninterrupted,
                                                                   jax_cache, sig):
    """SIGTERM or SIGINT (Ctrl-C) sent to the process while it waits after step 5
    (checkpoint at 3, history written through row 3): it saves a checkpoint at step 5 and
    the history, says so in one line (no traceback), leaves no temporary files, and
    --resume continues to the uninterrupted run's history, byte for byte."""
    part = tmp_path / "part"
    p = _start(COMMON + ["--out", str(part), "--wait-at-step", "5"], cache=jax_cache)
    line = ""
    while "waiting at step 5" not in line:
        line = p.stderr.readline()
        assert line or p.poll() is None, "the run ended before step 5"
    p.send_signal(sig)
    rc, _, err = _finish(p)
    assert rc == 128 + sig, err
    name = signal.Signals(sig).name
    assert err.strip().splitlines() == [
        f"experiments.train: stopped by {name} at step 5: checkpoint and history saved in "
        f"{part}; continue with --resume"]
    assert [r["step"] for r in H.read_history(str(part / "history.csv"))] == list(range(5))
    assert sorted(os.listdir(part / "checkpoints")) == ["3", "5"]
    assert not [f for _, _, fs in os.walk(part) for f in fs if ".tmp." in f]
    assert not (part / "train.lock").exists()
    if sig == signal.SIGINT:
        return  # the resume is the same as after SIGTERM: checked once
    rc, _, err = _finish(_start(COMMON + ["--out", str(part), "--resume"], cache=jax_cache))
    assert rc == 0 and "resumed from step 5" in err, err
    assert (part / "history.csv").read_bytes() == (uninterrupted / "history.csv").read_bytes()


# seeds x sweep, in two vmapped chunks (3 + 1 members), each member stopping 2 steps
# after its loss first drops below 2.21 (steps 2 or 5 in this configuration, so some
# members stop before the checkpoint at 6 and some between it and the kill at 8)
# (COMMON without its --rho: --rho and --sweep rho= conflict)
SEEDS = [a for a in COMMON if a not in ("--rho", "0.99")] + [
    "--seeds", "2", "--sweep", "rho=0.9,0.99", "--chunk-size", "3", "--stop-loss", "2.21",
    "--steps-after-stop", "2"]
SEED_MEMBERS = ["rho=0.9/seed=0", "rho=0.9/seed=1", "rho=0.99/seed=0", "rho=0.99/seed=1"]


def test_sigkill_and_resume_with_seeds_gives_the_same_histories(tmp_path, jax_cache):
    full, part = tmp_path / "full", tmp_path / "part"
    rc, _, err = _finish(_start(SEEDS + ["--out", str(full)], cache=jax_cache))
    assert rc == 0, err
    rc_part, _, _ = _finish(_start(SEEDS + ["--out", str(part), "--kill-at-step", "8"],
                                   cache=jax_cache))
    assert rc_part == -signal.SIGKILL
    assert not (part / "rho=0.99" / "seed=1").exists()  # the second chunk never started
    rc, _, err = _finish(_start(SEEDS + ["--out", str(part), "--resume"], cache=jax_cache))
    assert rc == 0, err
    assert "resumed from step 6" in err
    assert json.loads((full / "sweep.json").read_text())["members"] == SEED_MEMBERS
    stops = set()
    for m in SEED_MEMBERS:
        assert (part / m / "history.csv").read_bytes() == (full / m / "history.csv").read_bytes()
        cfg = json.loads((full / m / "config.json").read_text())
        rows = H.read_history(str(full / m / "history.csv"))
        assert cfg["status"] == "stop_loss" and cfg["seed"] == int(m[-1])
        k = cfg["stop_step"]  # the first row below 2.21, then 2 more rows
        assert rows[k]["train_loss"] < 2.21 <= min(r["train_loss"] for r in rows[:k])
        assert len(rows) == k + 3 and cfg["stop_train_loss"] == rows[k]["train_loss"]
        stops.add(k)
    assert min(stops) + 2 < 6 < max(stops) + 2 < 8  # stopped on both sides of the checkpoint


def test_seed_member_is_the_single_run_with_that_seed(tmp_path):
    """Member seed=4 of ``--seed 3 --seeds 2`` (vmapped with seed 3) is the run
    ``--seed 4`` (to vmap round-off); the two seeds start from different weights."""
    args = TINY + ["--max-steps", "3"]
    cli.main(args + ["--seed", "3", "--seeds", "2", "--out", str(tmp_path / "k")])
    cli.main(args + ["--seed", "4", "--out", str(tmp_path / "one")])
    s3 = H.read_history(str(tmp_path / "k" / "seed=3" / "history.csv"))
    s4 = H.read_history(str(tmp_path / "k" / "seed=4" / "history.csv"))
    one = H.read_history(str(tmp_path / "one" / "history.csv"))
    for a, b in zip(s4, one, strict=True):
        for c in H.COLUMNS:
            np.testing.assert_allclose(a[c], b[c], rtol=1e-9, atol=1e-14, err_msg=c)
    assert abs(s3[0]["train_loss"] - s4[0]["train_loss"]) > 1e-3


def test_the_network_as_a_problem_has_the_training_loss(tmp_path):
    """bea.nn.train.problem: the training configuration's network and training set as a
    sweep problem. At the initial parameters its loss and gradient are the training's
    (fullbatch.loss_and_grad over physical batches) to round-off, and its loss is row 0
    of the history a run writes; ``on_step`` sees every step."""
    import equinox as eqx
    import jax
    from jax.flatten_util import ravel_pytree

    from bea.nn import _exact as F
    from bea.nn import train as T

    cfg = T.TrainConfig(model="mlp", train_size=40, test_size=8, physical_batch=16,
                        dtype="float64", max_steps=2, h=1e-2, seed=5)
    p = T.problem(cfg)
    data = T.load_data(cfg)
    params, static = eqx.partition(T.init_model(cfg, data, 5), eqx.is_inexact_array)
    theta0 = ravel_pytree(params)[0]
    np.testing.assert_array_equal(p.theta0, theta0)
    assert p.num_examples == 40 and p.data["x"].shape == (40, 1, 8, 8)
    E, _, g = F.loss_and_grad(params, static, F.make_batches(data.x_train, data.y_train, 16,
                                                              dtype=np.float64))
    E_p, g_p = jax.value_and_grad(p.loss)(p.theta0, p.data)
    np.testing.assert_allclose(E_p, E, rtol=1e-13)
    np.testing.assert_allclose(g_p, ravel_pytree(g)[0], rtol=1e-11,
                               atol=1e-15)
    seen = []
    T.run(cfg, str(tmp_path / "run"), progress=False, log=lambda s: None,
          on_step=lambda step, stop_asked: seen.append((step, stop_asked())))
    assert seen == [(1, False), (2, False)]
    rows = H.read_history(str(tmp_path / "run" / "history.csv"))
    assert rows[0]["train_loss"] == pytest.approx(float(E_p), rel=1e-13)


def test_training_takes_its_optimizers_from_the_registry():
    """Every registry optimizer by its registry name (and modified_gd); refused ones are
    refused with the registry's reason."""
    from bea import optimizer_registry as R
    from bea.nn import train as T

    assert T.OPTIMIZERS == (*R.NAMES, T.MODIFIED_GD)
    with pytest.raises(T.ConfigError, match="optimizer 'lion' is refused: its update takes"):
        T.validate(T.TrainConfig(optimizer="lion"))
    with pytest.raises(T.ConfigError, match="unknown optimizer 'adam_no_bias_correction'"):
        T.validate(T.TrainConfig(optimizer="adam_no_bias_correction"))


def test_the_sweep_is_checked_by_the_api():
    from bea.nn import train as T

    for sweep, needle in [(("gamma", (0.9,)), "sweep key must be one of"),
                          (("rho", ()), "needs at least one value"),
                          (("rho", (0.9, 0.9)), "sweep values repeat"),
                          ("rho=0.9", "sweep must be (key, values)"),
                          (("rho", ("0.9",)), "sweep must be (key, values)"),
                          (("rho", (0.9, 1.5)), "rho must lie in (0, 1), got 1.5")]:
        with pytest.raises(T.ConfigError, match=re.escape(needle)):
            T.validate(T.TrainConfig(sweep=sweep))


def test_a_huge_member_count_is_refused_before_the_members_are_listed():
    """Issue 23: validate() listed 10^11 members (minutes, no output) before its seed
    check; the count is checked first, in well under a second."""
    import time

    from bea.nn import train as T

    t0 = time.perf_counter()
    with pytest.raises(T.ConfigError, match="members .* exceed"):
        T.validate(T.TrainConfig(seeds=99999999999, sweep=("rho", (0.9, 0.99))))
    assert time.perf_counter() - t0 < 1


def test_history_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "history.csv")
    row = {c: 1.0 for c in H.COLUMNS} | {"step": 0}
    H.write_history(path, [row])
    before = open(path).read()

    def crash(*a, **k):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        H.write_history(path, [row, row | {"step": 1}])
    assert open(path).read() == before  # the old file, whole


def test_sharded_run_matches_single_device(tmp_path, uninterrupted):
    rc, _, err = _finish(_start(COMMON + ["--out", str(tmp_path / "d4")], devices=4))
    assert rc == 0, err
    assert json.loads((tmp_path / "d4" / "config.json").read_text())["devices"] == 4
    r4 = H.read_history(str(tmp_path / "d4" / "history.csv"))
    r1 = H.read_history(str(uninterrupted / "history.csv"))
    assert len(r4) == len(r1) == 10
    for a, b in zip(r4, r1, strict=True):
        for c in H.COLUMNS:
            np.testing.assert_allclose(a[c], b[c], rtol=1e-10, atol=1e-14, err_msg=c)


def test_divergence_is_detected_and_recorded(tmp_path, capsys):
    out = tmp_path / "div"
    summaries = cli.main(["--model", "cnn_small", "--train-size", "32", "--test-size", "32",
                          "--h", "1e6",
                          "--max-steps", "50", "--no-progress", "--out", str(out)])
    said = capsys.readouterr().out
    assert (f"DIVERGED: 1 of 1 member(s) (the run) hit a non-finite loss or gradient (at step "
            f"{summaries[0]['diverged_step']})") in said, said
    assert "NaN" not in (out / "config.json").read_text()  # JSON has no NaN: null
    s = summaries[0]
    assert s["status"] == "diverged" and s["diverged_step"] is not None
    rows = H.read_history(str(out / "history.csv"))
    assert rows[-1]["step"] == s["diverged_step"] < 49
    last = [rows[-1][c] for c in H.COLUMNS if c != "step"]
    assert not all(np.isfinite(last))
    assert json.loads((out / "config.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("flags,needle", [
    (["--h", "0"], "h must be positive and finite, got 0.0"),
    (["--h", "nan"], "h must be positive and finite, got nan"),
    (["--beta", "nan"], "beta must lie in [0, 1), got nan"),
    (["--stop-loss", "nan"], "stop-loss must be > 0 and finite, got nan"),
    (["--beta", "1"], "beta must lie in [0, 1), got 1.0"),
    (["--rho", "0"], "rho must lie in (0, 1), got 0.0"),
    (["--eps=-1e-8"], "eps must be positive and finite, got -1e-08"),
    (["--sweep", "rho=0.9,1.5"], "rho must lie in (0, 1), got 1.5"),
    (["--sweep", "gamma=0.9"], "'gamma=0.9'"),
    (["--sweep", "rho=0.9,abc"], "'abc' is not a number"),
    (["--sweep", "rho=0.9,0.9"], "values repeat in 'rho=0.9,0.9'"),
    (["--optimizer", "lion"], "invalid choice: 'lion'"),
    (["--seeds", "0"], "seeds must be >= 1, got 0"),
    (["--chunk-size", "0"], "chunk-size must be >= 1, got 0"),
    (["--steps-after-stop=-1"], "steps-after-stop must be >= 0, got -1"),
    (["--gd-lr", "0.1"], "gd-lr 0.1 applies only to --optimizer modified_gd"),
    (["--optimizer", "modified_gd", "--gd-lr", "0"], "gd-lr must be > 0, got 0.0"),
    (["--model", "resnet9"], "invalid choice: 'resnet9'"),
    (["--optimizer", "sgd"], "invalid choice: 'sgd'"),
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--dataset", "cifar100", "--data-dir", "/nonexistent"],
     "/nonexistent/cifar-100-python/train"),
])
def test_bad_flags_one_line_status_2(tmp_path, capsys, flags, needle):
    with pytest.raises(SystemExit) as e:
        cli.main(flags + ["--out", str(tmp_path / "x"), "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (tmp_path / "x" / "history.csv").exists()


def test_bad_flag_subprocess_has_no_traceback(tmp_path):
    rc, out, err = _finish(_start(["--rho", "1.0", "--out", str(tmp_path / "x")]))
    assert rc == 2
    assert err.strip().splitlines() == ["experiments.train: error: rho must lie in (0, 1), got 1.0"]


def test_cifar_layout_is_read_and_missing_file_named(tmp_path):
    write_cifar_pickles(str(tmp_path), "cifar10", n_train=25, n_test=7)
    d = load_dataset("cifar10", str(tmp_path))
    assert d.x_train.shape == (25, 3, 32, 32) and d.x_test.shape == (7, 3, 32, 32)
    assert d.num_classes == 10 and d.y_train.dtype == np.int32
    np.testing.assert_allclose(d.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    write_cifar_pickles(str(tmp_path), "cifar100", n_train=9, n_test=4)
    assert load_dataset("cifar100", str(tmp_path)).num_classes == 100
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))


def test_vmapped_sweep_runs_on_synthetic_cifar_and_matches_single_runs(tmp_path):
    write_cifar_pickles(str(tmp_path / "data"), "cifar10", n_train=20, n_test=10)
    common = ["--model", "cnn_small", "--dataset", "cifar10", "--data-dir",
              str(tmp_path / "data"), "--dtype", "float64", "--max-steps", "2",
              "--h", "1e-2", "--no-progress", "--physical-batch", "10"]
    cli.main(common + ["--sweep", "rho=0.95,0.999", "--out", str(tmp_path / "sw")])
    cli.main(common + ["--rho", "0.999", "--out", str(tmp_path / "single")])
    sw = H.read_history(str(tmp_path / "sw" / "rho=0.999" / "history.csv"))
    single = H.read_history(str(tmp_path / "single" / "history.csv"))
    assert os.path.exists(tmp_path / "sw" / "rho=0.95" / "history.csv")
    for a, b in zip(sw, single, strict=True):
        for c in H.COLUMNS:
            np.testing.assert_allclose(a[c], b[c], rtol=1e-9, atol=1e-14, err_msg=c)
    with pytest.raises(SystemExit):  # the directory holds a run: --resume or a new --out
        cli.main(common + ["--rho", "0.999", "--out", str(tmp_path / "single")])


def test_problems_models_and_data_never_import_training():
    """The import direction: the sweeps' problems, the networks and the data sit below
    bea.nn (which uses them), never the reverse."""
    banned = re.compile(r"^\s*(from\s+bea\.nn\b|import\s+bea\.nn\b|from\s+bea\s+import\s+.*\bnn\b)",
                        re.M)
    for name in ("problems.py", "models.py", "data.py"):
        assert not banned.search(pathlib.Path(ROOT, "bea", name).read_text()), name


def test_bea_nn_never_imports_the_ode_machinery():
    ode = r"(fields|integrate|convergence|_programs)"
    banned = re.compile(rf"^\s*(from\s+bea\.{ode}|import\s+bea\.{ode}"
                        rf"|from\s+bea\s+import\s+.*\b{ode}\b)", re.M)
    files = list(pathlib.Path(ROOT, "bea", "nn").glob("*.py"))
    assert files
    for path in files:
        assert not banned.search(path.read_text()), path


def test_modified_gd_coefficient_is_remark_3_7s_finite_n_c():
    """modified_gd's c(n) = h (c_beta(n) - c_rho(n)): (i) at n = 87 (where the h = 1e-2
    runs of Figure 3 stop) it is 0, -0.052, -0.112, -0.144, -0.170 for rho = 0.97 ...
    0.999 at beta = 0.97, up to 57x smaller than eq. (8)'s large-n 0, -0.17, -0.67,
    -1.67, -9.67, which it reaches as n grows; c(0) = 0. (ii) It is the coefficient read
    off Remark 3.7's full-batch field (bea.fields.full_batch.adam_field): where
    |g_j| >> sqrt(eps) that field equals -(g + c(n) grad ||grad E||_{1,eps}) / R to
    O(eps / g^2)."""
    import jax
    import jax.numpy as jnp

    from bea._finite_n import correction_coefficient_n
    from bea.fields import full_batch

    h, beta = 1e-2, 0.97
    rhos = (0.97, 0.98, 0.99, 0.995, 0.999)
    at87 = [float(correction_coefficient_n(h, beta, r, 87)) for r in rhos]
    limit = [float(correction_coefficient_n(h, beta, r, 10**9)) for r in rhos]
    large = [bea.correction_coefficient(h, beta, r) for r in rhos]
    np.testing.assert_allclose(at87, [0, -0.05245, -0.11240, -0.14418, -0.16996],
                               atol=5e-5)
    np.testing.assert_allclose(limit, large, rtol=1e-6, atol=1e-12)
    assert float(correction_coefficient_n(h, beta, 0.999, 0)) == 0.0
    assert large[-1] / at87[-1] > 56

    def loss(t):  # a smooth quartic with gradient entries of order 1
        return jnp.sum(t**4) / 4 + jnp.sum(t[:-1] * t[1:]) + jnp.sum(jnp.sin(t))

    theta = jnp.array([1.3, -0.7, 0.9, -1.6, 1.1])
    eps = 1e-12
    g = jax.grad(loss)(theta)
    R = jnp.sqrt(g * g + eps)
    dn1 = jax.jvp(jax.grad(loss), (theta,), (g / R,))[1]
    for n in (0, 5, 87, 1000):
        f = full_batch.adam_field(loss, h, beta, 0.999, eps)(n, theta)
        cn = correction_coefficient_n(h, beta, 0.999, n)
        np.testing.assert_allclose(f, -(g + cn * dn1) / R, rtol=1e-9, atol=1e-12)
