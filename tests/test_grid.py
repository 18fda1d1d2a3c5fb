"""Grids in one vmapped program: equal to single runs, and independent of the device count."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bea  # noqa: F401
from bea.grid import combinations, grid_sweep, parse_grid
from bea.problems import bilinear, make_problem
from bea.sweep import sweep

HS = [0.05, 0.025]
GRID = {"beta": [0.5, 0.7], "rho": [0.7, 0.9]}
PROB = bilinear()  # one loss function: one compilation for all the runs below
SCRIPT = """
import json, bea
from bea.grid import grid_sweep
from bea.problems import bilinear, make_problem
import jax
g = grid_sweep(bilinear(), "adam", {hs}, 1.0, ("order0", "order1"), grid={grid}, eps=1e-3)
q = make_problem("quadratic", seed=0)
m = grid_sweep(q, "adam", [0.25], 1.0, ("order1",), grid={{"beta": [0.5]}}, rho=0.7, eps=1e-3,
               batch_size=8, shard_history=True)
print(json.dumps({{"devices": len(jax.devices()), "errors": [r["errors"] for r in g["results"]],
                  "mini": m["results"][0]["errors"]["order1"]}}))
"""


@pytest.fixture(scope="module")
def grid_result():
    return grid_sweep(PROB, "adam", HS, 1.0, ("order0", "order1"), grid=GRID, eps=1e-3)


def test_parse_grid():
    assert parse_grid(["beta=0.5,0.7", "rho=0.9"]) == {"beta": [0.5, 0.7], "rho": [0.9]}
    for bad in (["beta"], ["gamma=1"], ["beta=x"], ["beta=1", "beta=2"]):
        with pytest.raises(ValueError):
            parse_grid(bad)
    c = combinations({"rho": [0.7, 0.9], "beta": [0.5]}, beta=0.1, rho=0.2, eps=1e-3)
    assert c == [{"beta": 0.5, "rho": 0.7, "eps": 1e-3}, {"beta": 0.5, "rho": 0.9, "eps": 1e-3}]


def test_grid_equals_single_runs(grid_result):
    assert len(grid_result["results"]) == 4
    for c, r in zip(grid_result["params"], grid_result["results"], strict=True):
        s = sweep(PROB, "adam", HS, 1.0, ("order0", "order1"), **c)
        for k in ("order0", "order1"):
            np.testing.assert_allclose(r["errors"][k], s["errors"][k], rtol=1e-12, atol=0)
            assert r["slopes"][k] == pytest.approx(s["slopes"][k], rel=1e-10)


def test_four_devices_equal_one(grid_result):
    """XLA_FLAGS=--xla_force_host_platform_device_count=4 in a subprocess: the grid is
    sharded over 4 devices (4 combinations, one per device) and gives the same errors."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    code = SCRIPT.format(hs=HS, grid=GRID)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 4
    for r, e in zip(grid_result["results"], got["errors"], strict=True):
        for k in ("order0", "order1"):
            np.testing.assert_allclose(e[k], r["errors"][k], rtol=1e-12, atol=0)
    # mini-batch, with the batch history (the K axis of Theorem 3.6) sharded as well
    one = sweep(make_problem("quadratic", seed=0), "adam", [0.25], 1.0, ("order1",),
                beta=0.5, rho=0.7, eps=1e-3, batch_size=8)
    np.testing.assert_allclose(got["mini"], one["errors"]["order1"], rtol=1e-12, atol=0)


def test_cli_grid_writes_one_result_per_combination(tmp_path):
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
    assert (out / "grid_slopes.png").exists()
