"""experiments.train on damaged, inconsistent, locked or unusable run directories (issue 14):
every case either one line naming the file with exit status 2 and nothing changed, or a
correct result said in words. The refusals run before any compilation; one real run (the
module fixture) is damaged in each case."""

import contextlib
import fcntl
import io
import json
import os
import shutil
import sys

import pytest

from bea.data import DataError, load_dataset, write_cifar_pickles
from bea.nn import _run_files as H
from bea.nn._rundir import LOCK_NAME
from bea.nn.train import TrainConfig, members
from experiments import train as cli

# tiny and float64: digits, 48 training examples (3 physical batches of 16), 64 test ones
TINY = ["--model", "cnn_small", "--train-size", "48", "--test-size", "64", "--physical-batch", "16",
        "--h", "1e-2", "--beta", "0.9", "--rho", "0.99", "--eps", "1e-6", "--dtype", "float64",
        "--no-progress", "--max-steps", "6", "--checkpoint-every", "2", "--write-every", "1"]


def _base(flags):
    """TINY, without its --rho when ``flags`` sweep rho (the two conflict: refused)."""
    if not any(f.startswith("rho=") for f in flags):
        return TINY
    i = TINY.index("--rho")
    return TINY[:i] + TINY[i + 2:]


def _main(args):
    """(summaries, stderr) of an in-process run."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summaries = cli.main(args)
    return summaries, err.getvalue()


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """JAX's persistent compilation cache for this module (the runs compile the same
    programs: later ones load them; the executables are the same), restored afterwards."""
    import jax

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    for k, v in zip(keys, (str(tmp_path_factory.mktemp("jax_cache")), 0, 0), strict=True):
        jax.config.update(k, v)
    yield
    for k, v in old.items():
        jax.config.update(k, v)


@pytest.fixture(scope="module")
def ref(tmp_path_factory, compile_cache):
    """A complete 6-step run (checkpoints kept at steps 4 and 6, 6 history rows), started
    with --resume in an existing empty directory; and what that said on stderr."""
    out = tmp_path_factory.mktemp("ref")
    _, err = _main(TINY + ["--out", str(out), "--resume"])
    return out, err


def test_resume_on_an_empty_directory_says_it_starts_fresh(ref):
    out, err = ref
    assert f"--resume: {out} holds no run yet; starting a fresh run" in err
    assert sorted(os.listdir(out / "checkpoints")) == ["4", "6"]
    assert len(H.read_history(str(out / "history.csv"))) == 6


def _snapshot(d):
    """Every file under ``d`` with its bytes (directories as None)."""
    snap = {}
    for root, dirs, files in os.walk(d):
        for n in dirs:
            snap[os.path.relpath(os.path.join(root, n), d)] = None
        for n in files:
            p = os.path.join(root, n)
            snap[os.path.relpath(p, d)] = open(p, "rb").read()
    return snap


def _cut(path, keep_rows):
    lines = open(path).read().splitlines(keepends=True)
    open(path, "w").write("".join(lines[:1 + keep_rows]))


def _truncate(path, frac=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * frac)])


def _garbage(path):
    open(path, "wb").write(b"\x00\xffnot what you think\x01" * 10)


def _break_checkpoint(step_dir):
    for root, _, files in os.walk(step_dir):
        for n in files:
            _truncate(os.path.join(root, n), 0.3)


# (damage to the run directory, extra flags, what the one line must say)
BATTERY = {
    "history deleted": (lambda d: os.remove(d / "history.csv"), [],
                        "history.csv is missing but the checkpoint"),
    "history header only": (lambda d: _cut(d / "history.csv", 0), [], "history.csv has no rows"),
    "history cut": (lambda d: _cut(d / "history.csv", 3), [], "history.csv ends at step 2"),
    "history garbage": (lambda d: _garbage(d / "history.csv"), [], "history.csv is not"),
    "history truncated": (lambda d: _truncate(d / "history.csv", 0.6), [], "history.csv, line"),
    "history empty": (lambda d: open(d / "history.csv", "w").close(), [], "history.csv is empty"),
    "config deleted, other rho": (lambda d: os.remove(d / "config.json"), ["--rho", "0.9"],
                                  "config.json is missing"),
    "config garbage": (lambda d: _garbage(d / "config.json"), [], "config.json is not valid JSON"),
    "config truncated": (lambda d: _truncate(d / "config.json"), [],
                         "config.json is not valid JSON"),
    "config a list": (lambda d: (d / "config.json").write_text("[1, 2]"), [],
                      "config.json holds a JSON list"),
    "config of another rho": (lambda d: None, ["--rho", "0.9"],
                              "--resume with rho=0.9 but the run in"),
    "checkpoints a file": (lambda d: (shutil.rmtree(d / "checkpoints"),
                                      (d / "checkpoints").write_text("x")), [],
                           "checkpoints is not a directory of checkpoints"),
    "every checkpoint damaged": (lambda d: [_break_checkpoint(d / "checkpoints" / s)
                                            for s in ("4", "6")], [],
                                 "every checkpoint in"),
    "a sweep asked of a single run": (lambda d: None, ["--sweep", "rho=0.9,0.99"],
                                      "holds a single run (config.json), but the command asks "
                                      "for a sweep"),
    "no --resume": (lambda d: None, ["--no-resume"], "already holds a run"),
}


@pytest.mark.parametrize("case", list(BATTERY))
def test_damaged_or_inconsistent_run_is_refused_changing_nothing(ref, tmp_path, capsys, caplog,
                                                                 case):
    damage, flags, needle = BATTERY[case]
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    damage(d)
    before = _snapshot(d)
    resume = [] if "--no-resume" in flags else ["--resume"]
    flags = [f for f in flags if f != "--no-resume"]
    with pytest.raises(SystemExit) as e:
        cli.main(_base(flags) + flags + resume + ["--out", str(d)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("experiments.train: error: ") and needle in err, err
    assert _snapshot(d) == before  # nothing written, moved or rewritten (config.json included)
    assert not [r for r in caplog.records if r.levelno >= 30]  # nor logged (orbax, absl)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(ref, tmp_path, caplog):
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    _break_checkpoint(d / "checkpoints" / "6")
    _, err = _main(TINY + ["--resume", "--out", str(d)])
    assert not [r for r in caplog.records if r.levelno >= 30]  # said once, below
    assert "checkpoint step 6 in" in err and "resuming from step 4" in err, err
    assert "resumed from step 4" in err
    assert (d / "history.csv").read_bytes() == (ref[0] / "history.csv").read_bytes()
    assert json.loads((d / "config.json").read_text())["status"] == "max_steps"
    assert (d / "checkpoints" / "6.damaged").is_dir()  # kept aside for inspection


def test_damaged_arrays_of_the_newest_checkpoint_are_said_in_one_line(ref, tmp_path,
                                                                     monkeypatch):
    """Only the array data damaged (the metadata intact): orbax fails inside tensorstore's
    reads, whose callbacks then found the event loop closed and printed dozens of
    'RuntimeError: Event loop is closed' tracebacks (issue 23). Now: the fallback's line."""
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    for root, _, files in os.walk(d / "checkpoints" / "6"):
        if os.path.basename(root) == "d":  # the arrays' chunks
            for n in files:
                _truncate(os.path.join(root, n), 0.3)
    _, err = _main(TINY + ["--resume", "--out", str(d)])
    assert "checkpoint step 6 in" in err and "resuming from step 4" in err, err
    assert "Traceback" not in err and not reports, (err, reports[:1])
    assert (d / "history.csv").read_bytes() == (ref[0] / "history.csv").read_bytes()


def test_history_without_a_checkpoint_is_recomputed_from_step_0(ref, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    shutil.rmtree(d / "checkpoints")
    _, err = _main(TINY + ["--resume", "--out", str(d)])
    assert "the 6 row(s) of" in err and "recomputed from step 0" in err, err
    assert (d / "history.csv").read_bytes() == (ref[0] / "history.csv").read_bytes()


def _refused(capsys, args):
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    return err


def test_a_second_training_in_the_same_directory_is_refused(ref, tmp_path, capsys):
    """A live writer holds OUT/train.lock (flock): a second one gets one line, exit 2."""
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    before = _snapshot(d)
    fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"pid 12345 on somehost\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = _refused(capsys, TINY + ["--resume", "--out", str(d)])
        assert "is being written by another training (pid 12345 on somehost" in err, err
    finally:
        os.close(fd)
    os.remove(d / LOCK_NAME)
    assert _snapshot(d) == before


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_text("x"), "exists and is not a directory"),
    (lambda p: None, "--out is empty"),
    (lambda p: (p.parent / "f").write_text("x"), "which is not a directory"),
])
def test_an_unusable_out_is_refused_before_computing(tmp_path, capsys, make, needle):
    out = tmp_path / "out"
    make(out)
    arg = ("" if "empty" in needle else str(tmp_path / "f" / "sub") if "which" in needle
           else str(out))
    err = _refused(capsys, TINY + ["--out", arg])
    assert needle in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_an_unwritable_out_is_refused(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o500)
    assert "is not writable" in _refused(capsys, TINY + ["--out", str(tmp_path / "ro" / "x")])


def test_train_size_beyond_the_data_is_refused(tmp_path, capsys):
    err = _refused(capsys, TINY + ["--train-size", "100000", "--out", str(tmp_path / "x")])
    assert "--train-size 100000 exceeds the 1297 train examples of digits" in err, err
    assert not (tmp_path / "x").exists()


def test_close_sweep_values_get_distinct_round_tripping_names():
    cfg = TrainConfig(sweep=("rho", (0.9999991, 0.9999992)), seeds=2)
    names = [m["name"] for m in members(cfg)]
    assert names == ["rho=0.9999991/seed=0", "rho=0.9999991/seed=1",
                     "rho=0.9999992/seed=0", "rho=0.9999992/seed=1"]
    assert [float(n.split("/")[0].split("=")[1]) for n in names[::2]] == [0.9999991, 0.9999992]


@pytest.mark.parametrize("damage, needle", [
    (_garbage, "is not a readable pickle"),
    (_truncate, "is not a readable pickle"),
    (lambda p: open(p, "wb").write(b"\x80\x04K\x05."), "holds a int"),
])
def test_a_damaged_cifar_pickle_is_named(tmp_path, damage, needle):
    write_cifar_pickles(str(tmp_path), "cifar10", n_train=10, n_test=5)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    damage(bad)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", str(tmp_path))
    assert str(bad) in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


SWEEP = ["--sweep", "rho=0.9,0.99"]


def _fake_sweep_dir(ref_dir, d):
    """The layout of a 2-member sweep (sweep.json with the command's configuration,
    members rho=0.9/ and rho=0.99/ with the reference run's history and summary, shared
    checkpoints/): what the refusals below read before restoring anything."""
    import dataclasses

    args = cli.build_parser().parse_args(_base(SWEEP) + SWEEP + ["--out", str(d)])
    cfg = TrainConfig(**{k: v for k, v in vars(args).items()
                         if k in TrainConfig.__dataclass_fields__})
    d.mkdir()
    shutil.copytree(ref_dir / "checkpoints", d / "checkpoints")
    for m in ("rho=0.9", "rho=0.99"):
        (d / m).mkdir()
        for f in ("history.csv", "config.json"):
            shutil.copy(ref_dir / f, d / m / f)
    H.write_json(str(d / "sweep.json"), {"config": dataclasses.asdict(cfg),
                                         "members": ["rho=0.9", "rho=0.99"]})


@pytest.mark.parametrize("damage, flags, needle", [
    (lambda d: os.remove(d / "rho=0.99" / "history.csv"), SWEEP,
     "rho=0.99/history.csv is missing but the checkpoint"),
    (lambda d: _cut(d / "rho=0.9" / "history.csv", 2), SWEEP,
     "rho=0.9/history.csv ends at step 1"),
    (lambda d: _garbage(d / "rho=0.9" / "config.json"), SWEEP,
     "rho=0.9/config.json is not valid JSON"),
    (lambda d: os.remove(d / "sweep.json"), SWEEP, "sweep.json is missing"),
    (lambda d: None, ["--sweep", "rho=0.9,0.999"],
     "--resume with sweep=['rho', [0.9, 0.999]] but the run in"),
    (lambda d: None, [], "holds a sweep or seeds (sweep.json), but the command asks for a "
                         "single run"),
])
def test_an_inconsistent_sweep_is_refused_changing_nothing(ref, tmp_path, capsys, damage,
                                                           flags, needle):
    d = tmp_path / "sweep"
    _fake_sweep_dir(ref[0], d)
    damage(d)
    before = _snapshot(d)
    err = _refused(capsys, _base(flags) + flags + ["--resume", "--out", str(d)])
    assert needle in err, err
    assert _snapshot(d) == before


def test_a_sweep_recorded_as_text_by_older_runs_still_matches(ref, tmp_path):
    """Run files written before TrainConfig.sweep became (key, values) record it as text
    ("rho=0.9,0.99"): the same sweep is accepted on --resume, another one refused."""
    from bea.nn import _rundir as rundir
    from bea.nn import train as T

    d = tmp_path / "sweep"
    _fake_sweep_dir(ref[0], d)
    root = H.read_json(str(d / "sweep.json"))
    root["config"]["sweep"] = "rho=0.9,0.99"
    H.write_json(str(d / "sweep.json"), root)

    def inspect(sweep):
        args = cli.build_parser().parse_args(_base([sweep]) + ["--sweep", sweep,
                                                                "--out", str(d)])
        cfg = TrainConfig(**{k: v for k, v in vars(args).items()
                             if k in TrainConfig.__dataclass_fields__})
        specs = T.members(cfg)
        several, dirs, groups = T._layout(cfg, specs, str(d))
        return rundir.inspect(str(d), several=several, config=T._record(cfg), specs=specs,
                              groups=groups, dirs=dirs, resume=True, resumable=T._RESUMABLE,
                              defaults=T._record(TrainConfig()),
                              legacy={"sweep": T._sweep_text(cfg)})

    assert not inspect("rho=0.9,0.99").fresh
    with pytest.raises(rundir.RunDirError, match="but the run in"):
        inspect("rho=0.9,0.999")
