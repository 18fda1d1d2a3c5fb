"""The CLI contract of python -m experiments.convergence: files, schema, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, tmp_path=None):
    return subprocess.run([sys.executable, "-m", "experiments.convergence", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


BATTERY = [  # (flags, a piece of the one line that must name the value)
    (["--h", "-0.1"], "-0.1"), (["--h", "0"], "0.0"), (["--h"], "empty"),
    (["--h", "0.01", "0.01"], "given twice"), (["--h", "nan"], "nan"), (["--h", "inf"], "inf"),
    (["--h", "1e-9"], "N=1000000000"), (["--h", "abc"], "'abc'"),
    (["--T", "1", "--h", "0.03"], "0.03"), (["--T", "0"], "T must"), (["--T", "1e400"], "1e400"),
    (["--T", "-1"], "-1"),
    (["--beta", "1"], "beta"), (["--beta", "-0.1"], "-0.1"), (["--beta", "abc"], "abc"),
    (["--beta", "nan"], "nan"), (["--rho", "0"], "rho"), (["--rho", "1.5"], "1.5"),
    (["--eps", "0"], "eps"), (["--eps=-1e-3"], "-0.001"), (["--eps", "-1e-3"], "-0.001"),
    (["--eps", "inf"], "inf"),
    (["--problem", "cifar"], "cifar"), (["--optimizer", "sgdx"], "sgdx"),
    (["--optimizer", "lion"], "lion"), (["--fields", "order3"], "order3"),
    (["--fields"], "empty list of fields"), (["--fields", "order1", "order1"], "twice"),
    (["--optimizer", "gd", "--fields", "order1_typo"], "order1_typo"),
    (["--optimizer", "adamw", "--engine", "closed"], "adamw"),
    (["--engine", "compiled"], "compiled"), (["--solver", "rk4"], "rk4"),
    (["--problem", "mlp", "--batch-size", "0"], "0"),
    (["--problem", "mlp", "--batch-size", "2.5"], "2.5"),
    (["--problem", "mlp", "--batch-size", "100000"], "100000"),
    (["--problem", "mlp", "--batch-size", "8", "--fields", "limit"], "limit"),
    (["--batch-size", "1"], "bilinear"), (["--seed", "x"], "'x'"),
    (["--rtol", "nan"], "rtol"), (["--rtol", "-1"], "rtol"), (["--atol", "0"], "atol"),
    (["--grid", "gamma=1"], "gamma"), (["--grid", "beta"], "'beta'"),
    (["--grid", "beta=0.5,x"], "'x'"), (["--grid", "beta=0.5", "beta=0.7"], "twice"),
    (["--grid", "beta=0.5,0.5"], "twice"), (["--grid", "rho=0.5,1.0"], "rho"),
    (["--grid", "beta=0.5,1e999"], "1e999"), (["--device", "gpu"], "no accelerator"),
    (["--device", "tpu"], "tpu"),
    (["--problem", "mlp", "--batch-size", "16", "--history", "grouped"], "'grouped'"),
    (["--problem", "mlp", "--batching", "epoch"], "'epoch'"),
    (["--problem", "cnn", "--batch-size", "16", "--batching", "epoch", "--optimizer", "adamw",
      "--history", "grouped"], "'adamw'"),
    (["--problem", "cnn", "--batch-size", "16", "--batching", "epoch", "--fields", "order2",
      "--history", "grouped"], "order2"),
    (["--problem", "cnn", "--batch-size", "16", "--fields", "limit"], "limit"),
    (["--problem", "mlp", "--num-examples", "0"], "num_examples 0"),
    (["--problem", "cnn", "--num-examples", "9999"], "9999"), (["--num-examples", "3"], "3"),
    (["--time-budget", "0"], "time_budget"), (["--time-budget", "-5"], "-5"),
    (["--time-budget", "inf"], "inf"), (["--time-budget", "nan"], "nan"),
]


@pytest.mark.parametrize("args, needle", BATTERY, ids=[" ".join(a) for a, _ in BATTERY])
def test_bad_input_is_one_line_exit_2_nothing_written(args, needle, tmp_path, capsys):
    """Every case ends with SystemExit(2) and one line on stderr naming the value; no
    traceback, and nothing is written (the output directory is not even created)."""
    from experiments.convergence import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(out), "--no-compile-cache"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("out, needle", [
    ("", "empty"), ("file", "not a directory"), ("file/below", "not a directory")])
def test_unusable_out_is_refused_before_computing(tmp_path, capsys, out, needle):
    from experiments.convergence import main

    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / out) if out else "", "--no-compile-cache"])
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_blown_up_points_are_flagged_not_fitted(tmp_path):
    """Gradient descent beyond its stability limit on the stiff bilinear model (h = 0.1 and
    0.05; largest Hessian eigenvalue ~80): errors of 300 and 6, as large as the motion they
    describe, are flagged '!' and left out of the fit; the fit uses the two stable h."""
    r = run("--optimizer", "gd", "--T", "0.2", "--h", "0.1", "0.05", "0.01", "0.005", "--out",
            str(tmp_path))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "convergence.json").read_text())
    assert res["outside"]["order1"] == [True, True, False, False]
    e = res["errors"]["order1"]
    import math

    assert res["slopes"]["order1"] == pytest.approx(math.log(e[2] / e[3]) / math.log(2))
    assert "! as large as the motion" in r.stdout


def test_default_sweep_writes_schema(tmp_path):
    out = tmp_path / "res"
    r = run("--h", "0.04", "0.02", "--out", str(out), "--fields", "order0", "order1")
    assert r.returncode == 0, r.stderr
    assert "fitted slope" in r.stdout
    res = json.loads((out / "convergence.json").read_text())
    for key in ("config", "h", "errors", "slopes", "local_slopes", "floor", "seconds"):
        assert key in res
    assert res["config"]["optimizer"] == "adam" and res["config"]["h"] == [0.04, 0.02]
    assert set(res["errors"]) == {"order0", "order1"} and len(res["floor"]["order1"]) == 2
    assert res["errors"]["order1"][1] < res["errors"]["order1"][0]
    assert (out / "convergence.csv").read_text().count("\n") == 3
    assert (out / "convergence.png").stat().st_size > 1000


def test_divergence_is_reported_with_its_step(tmp_path):
    out = tmp_path / "div"
    r = run("--optimizer", "gd", "--h", "0.2", "0.1", "--T", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "diverged" in r.stdout and "at step" in r.stdout
    res = json.loads((out / "convergence.json").read_text())
    assert res["errors"]["order1"][0] is None  # NaN written as null, not as a number
    assert int(res["diverged_at"]["0.2"]) > 0


def test_grid_writes_one_result_per_combination(tmp_path):
    from experiments.convergence import main

    out = tmp_path / "g"
    rc = main(["--grid", "beta=0.5,0.7", "rho=0.7", "--h", "0.05", "0.025", "--out", str(out),
               "--no-compile-cache"])
    assert rc == 0
    index = json.loads((out / "grid.json").read_text())
    assert [c["name"] for c in index["combinations"]] == ["beta=0.5_rho=0.7",
                                                         "beta=0.7_rho=0.7"]
    one = json.loads((out / "beta=0.5_rho=0.7" / "convergence.json").read_text())
    assert set(one) >= {"config", "h", "N", "errors", "slopes", "local_slopes", "floor"}
    assert one["config"]["beta"] == 0.5 and one["config"]["rho"] == 0.7
    assert (out / "grid_slopes.png").exists()


def _files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def test_out_holds_one_configuration(tmp_path, capsys):
    """A single sweep, a grid, another grid and a single sweep again into one --out: each
    leaves only its own files (an earlier run's other files are removed, with a notice),
    and the header names the gridded values, not the flags' defaults."""
    from experiments.convergence import main

    out = tmp_path / "o"
    base = ["--h", "0.05", "0.025", "--fields", "order1", "--out", str(out), "--no-compile-cache"]
    assert main(base) == 0
    assert _files(out) == ["convergence.csv", "convergence.json", "convergence.png"]
    capsys.readouterr()
    assert main([*base, "--grid", "beta=0.5,0.7"]) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0].endswith("beta=[0.5, 0.7] rho=0.7 eps=0.001 T=1.0")
    assert "removed 3 file(s) of an earlier run" in cap.err and "convergence.png" in cap.err
    assert _files(out) == ["beta=0.5/convergence.csv", "beta=0.5/convergence.json",
                           "beta=0.7/convergence.csv", "beta=0.7/convergence.json",
                           "grid.json", "grid_slopes.png"]
    assert main([*base, "--grid", "beta=0.7,0.9"]) == 0  # beta=0.5 is not in this one
    assert "removed 2 file(s)" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["beta=0.7", "beta=0.9", "grid.json", "grid_slopes.png"]
    assert main(base) == 0
    assert "removed 6 file(s)" in capsys.readouterr().err
    assert _files(out) == ["convergence.csv", "convergence.json", "convergence.png"]
    assert sorted(os.listdir(out)) == _files(out)  # the combinations' directories too


def test_a_damaged_grid_index_in_out_is_refused(tmp_path, capsys):
    from experiments.convergence import main

    (tmp_path / "grid.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--no-compile-cache"])
    assert e.value.code == 2 and "unreadable grid.json" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["grid.json"]
