"""experiments._cli and the contract every command keeps through it (issue 23): bad input,
sizes beyond a limit and conflicting flags end in one line and exit status 2 with every
file kept byte for byte; SIGINT / SIGTERM end in one line and exit status 130 / 143.

The battery runs each case through the command's real ``main`` in-process (the
per-command batteries in tests/test_experiments_*.py hold the older cases); the signals
are also sent for real to one command in a subprocess."""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from experiments import _cli, convergence, figures, launch, orders, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hashes(*roots) -> dict:
    """Every file and directory under ``roots`` with the SHA-256 of its bytes."""
    out = {}
    for root in roots:
        for d, dirs, files in os.walk(root):
            for n in dirs:
                out[os.path.join(d, n)] = None
            for n in files:
                p = os.path.join(d, n)
                out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


MANY = ",".join(f"{0.001 * k:g}" for k in range(1, 102))  # 101 values
# (command, flags ({tmp}: the test's directory; {doc}: a copy of docs/orders.md), what the
# one line must say). Every case also runs with files in {tmp} that must stay unchanged.
BATTERY = [
    # 1: a report from a results folder that does not exist, holds no run, or would drop
    # measured rows must not rewrite the document
    (orders, ["report", "--results", "{tmp}/typo", "--doc", "{doc}"], "is not a directory"),
    (orders, ["report", "--results", "{tmp}/empty", "--doc", "{doc}"], "holds none of the"),
    (orders, ["report", "--results", "{tmp}/results", "--doc", "{doc}"],
     "would drop the measured rows of bilinear_adam"),
    (orders, ["report", "--keep-missing", "--drop-missing", "--doc", "{doc}"],
     "not allowed with"),
    # 2: sizes checked before anything is built (seeds: the members were listed first)
    (train, ["--seeds", "99999999999", "--max-steps", "3"], "= 1e+11 exceeds the limit"),
    (train, ["--sweep", "rho=0.9,0.99", "--seeds", "6000"], "(--seeds 6000 x 2 sweep value"),
    (convergence, ["--h", "1e-300"], "N = T/h = 1e+300 exceeds the limit of 1e+09"),
    (convergence, ["--grid", f"beta={MANY}", f"rho={MANY}"],
     "--grid combinations = 10201 exceeds the limit of 10000"),
    (convergence, ["--h", "1e-8", "--grid", "beta=" + ",".join(f"0.{k}" for k in range(1, 10)),
                   "rho=0.5,0.7"], "--grid combinations x N (18 x 100000000)"),
    (figures, ["--figure", "3", "--runs", "{tmp}", "--n-boot", "10000000"],
     "--n-boot = 1e+07 exceeds the limit"),
    (launch, ["-n", "100000", "--", "true"], "-n = 100000 exceeds the limit"),
    # 3: a command that does not exist
    (launch, ["-n", "2", "--", "/nonexistent/cmd"], "cannot start '/nonexistent/cmd'"),
    # 5: conflicting flags
    (convergence, ["--beta", "0.9", "--grid", "beta=0.5,0.7"],
     "--beta 0.9 conflicts with --grid beta=..."),
    (convergence, ["--eps=1e-4", "--grid", "eps=1e-3,1e-2"], "--eps 0.0001 conflicts"),
    (train, ["--sweep", "rho=0.9", "--rho", "0.5"],
     "--rho 0.5 conflicts with --sweep rho=0.9"),
    (train, ["--sweep", "beta=0.8,0.9", "--be", "0.5"], "--beta 0.5 conflicts"),  # abbreviated
    # 7: messages name the flag
    (convergence, ["--problem", "logistic", "--seed", "-1"], "--seed must be an integer in"),
]
_OUT = {train: True, convergence: True, figures: True}  # commands that take --out


def _ids():
    return [f"{m.__name__.split('.')[-1]} {' '.join(a)}"[:70] for m, a, _ in BATTERY]


@pytest.mark.parametrize("command, flags, needle", BATTERY, ids=_ids())
def test_battery_one_line_exit_2_every_file_kept(command, flags, needle, tmp_path, capsys):
    doc = tmp_path / "orders.md"
    shutil.copy(os.path.join(ROOT, orders.DOC), doc)
    (tmp_path / "empty").mkdir()
    # one sweep's results (the refusal comes before they are read)
    (tmp_path / "results" / "logistic_gd").mkdir(parents=True)
    (tmp_path / "results" / "logistic_gd" / "convergence.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "convergence.json").write_text("an earlier result\n")
    argv = [a.format(tmp=tmp_path, doc=doc) for a in flags]
    if command in _OUT:
        argv += ["--out", str(out)]
    before = _hashes(tmp_path)
    capsys.readouterr()
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        command.main(argv)
    assert time.perf_counter() - t0 < 60  # refused before anything is built
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{command.PROG}: error: ") and needle in lines[0], lines
    # no 300-digit numbers (the line's length depends on the temporary paths it names)
    assert not re.search(r"\d{40}", lines[0].replace(str(tmp_path), "TMP")), lines[0]
    assert _hashes(tmp_path) == before


# signals ---------------------------------------------------------------------------------

@pytest.fixture
def ctrl_c():
    """Ctrl-C raising KeyboardInterrupt in this process, as in a terminal (a test run in
    the background of a shell inherits SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_exit_on_signal_says_one_line_and_exits_128_plus_signal(sig, capsys, ctrl_c):
    old = signal.getsignal(signal.SIGTERM)

    @_cli.interruptible("prog", "; a note")
    def main():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises in this thread at once
        raise AssertionError("not interrupted")

    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 128 + sig
    assert capsys.readouterr().err == f"prog: interrupted ({signal.Signals(sig).name}); a note\n"
    assert signal.getsignal(signal.SIGTERM) is old  # restored


def test_a_command_inside_another_leaves_the_line_to_the_outer_one(tmp_path, monkeypatch,
                                                                   capsys):
    """orders run calls convergence.main in-process: Ctrl-C during a sweep is said once,
    by orders, and the sweeps before it are kept."""
    calls = []

    def sweep(args, main_process, given=frozenset()):
        calls.append(args.out)
        if len(calls) == 2:
            raise KeyboardInterrupt
        os.makedirs(args.out)
        open(os.path.join(args.out, "convergence.json"), "w").write("{}")
        return 0

    monkeypatch.setattr(convergence, "_main", sweep)
    with pytest.raises(SystemExit) as e:
        orders.main(["run", "bilinear_adam", "bilinear_rmsprop", "--results", str(tmp_path)])
    assert e.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{orders.PROG}: interrupted (SIGINT); the sweeps finished before it are "
                   "kept under --results, the one running wrote nothing, the document is "
                   "rewritten whole or not at all"]
    assert os.listdir(tmp_path) == ["bilinear_adam"]


def test_training_interrupted_outside_its_steps_says_so(monkeypatch, capsys):
    """SIGTERM before the training loop (here: while the run is being set up) used to end
    the process silently with -15."""
    def setup(args, main_process):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(train, "_main", setup)
    with pytest.raises(SystemExit) as e:
        train.main(["--out", "unused", "--no-progress"])
    assert e.value.code == 143
    assert capsys.readouterr().err == (
        "experiments.train: interrupted (SIGTERM) outside the training steps; a run already "
        "started continues with --resume\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_convergence_stopped_by_a_real_signal(sig, tmp_path, ctrl_c):
    """A real process and signal: sent once the sweep has said its first line (so the test
    is not racy), it ends with one line, status 128 + signal, and nothing written. (With
    ``ctrl_c`` the child starts with SIGINT's default, not an inherited 'ignore'.)"""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "experiments.convergence", "--T", "2", "--h",
                          "0.002", "0.001", "0.0005", "0.00025", "--out", str(out),
                          "--no-compile-cache"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("adam (closed fields) on bilinear")
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == (
        f"{convergence.PROG}: interrupted ({signal.Signals(sig).name}); results are written "
        "only at the end, each file whole"), err
    assert "Traceback" not in err
    assert not out.exists()


# the pieces --------------------------------------------------------------------------------

def test_parser_records_the_flags_given(capsys):
    p = _cli.Parser(prog="p")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--rho", type=float, default=0.7)
    p.add_argument("--out", default="x")
    p.add_argument("--runs", action="append")
    p.add_argument("-v", action="count")
    args = p.parse_args(["--beta", "0.5", "--ou=y", "--runs", "a", "--runs", "b"])
    assert (args.beta, args.rho, args.out, args.runs) == (0.5, 0.7, "y", ["a", "b"])
    assert p.given == {"beta", "out", "runs"}  # given even when equal to the default
    p.parse_args(["-vv"])
    assert p.given == {"v"}
    p.parse_args([])
    assert p.given == set()


@pytest.mark.parametrize("value, text", [(10**300, "1e+300"), (123456, "123456"),
                                         (1234567, "1.23e+06"), (float("inf"), "inf"),
                                         (float("nan"), "nan")])
def test_check_size_names_numbers_short(value, text):
    with pytest.raises(ValueError) as e:
        _cli.check_size("the thing", value, 100)
    assert str(e.value) == f"the thing = {text} exceeds the limit of 100"
    _cli.check_size("the thing", 100, 100)  # the limit itself is allowed
