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


@pytest.mark.parametrize("args, needle", [
    (["--h", "-0.1"], "-0.1"),
    (["--h", "0"], "0.0"),
    (["--h"], "empty"),
    (["--beta", "1"], "beta"),
    (["--beta", "-0.1"], "-0.1"),
    (["--rho", "0"], "rho"),
    (["--rho", "1.5"], "1.5"),
    (["--eps", "0"], "eps"),
    (["--eps=-1e-3"], "-0.001"),
    (["--T", "1", "--h", "0.03"], "0.03"),
    (["--problem", "cifar"], "cifar"),
    (["--optimizer", "sgdx"], "sgdx"),
    (["--fields", "order3"], "order3"),
    (["--beta", "abc"], "abc"),
    (["--optimizer", "gd", "--fields", "order1_typo"], "order1_typo"),
    (["--problem", "mlp", "--batch-size", "0"], "0"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0]


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
