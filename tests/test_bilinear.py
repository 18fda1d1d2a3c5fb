"""Section 5 (Figures 1 and 2): the paper's claims asserted on measured numbers.

Drift is the change of nu = lim ||grad E||_1 / sqrt(2E) at the landing point on the hyperbola
between theta^(0) and theta^(N), N = T/h (see bea/bilinear.py for why this, not the raw
||grad E||_1 at T, which the residual oscillation of small-eps Adam dominates).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bea  # noqa: F401
from bea import bilinear as B
from bea.problems import full_batch_loss

C = 0.75  # y/x


@pytest.fixture(scope="module")
def records():
    """Discrete paths only (cheap) for every configuration drawn in Figures 1 and 2."""
    out = {}
    for fig, panels in B.FIGURES.items():
        out[fig] = [[B.measure(cfg, B.run_paths(cfg, B.T, odes=False)) for cfg in p.configs]
                    for p in panels]
    return out


@pytest.fixture(scope="module")
def ode_runs():
    """Discrete and modified-ODE paths for one beta > rho and one rho > beta configuration."""
    cfgs = (B.Config(0.01, 0.75, 0.5), B.Config(0.01, 0.5, 0.75))
    return [(cfg, B.run_paths(cfg, B.T)) for cfg in cfgs]


def _nu(recs):
    return [r["end_limiting_one_norm"] for r in recs]


# --- analytic pieces -------------------------------------------------------------------------

def test_golden_section_finds_known_minimum():
    f = lambda s: (s - 1.3) ** 2 + 0.1 * (s - 1.3) ** 4  # noqa: E731
    assert abs(float(B.golden_section(f, -4.0, 5.0)) - 1.3) < 1e-7


def test_cross_is_the_closed_form_minimiser():
    cx = np.asarray(B.cross())
    np.testing.assert_allclose(cx, [math.sqrt(C)] * 2, atol=1e-6)
    assert abs(cx[0] * cx[1] - C) < 1e-12  # on the hyperbola
    # brute force along the hyperbola: nothing beats it
    t1 = np.geomspace(0.05, 20, 20001)
    nu_grid = 2 * (t1 + C / t1)
    assert float(B.limiting_one_norm(jnp.asarray(cx))) <= nu_grid.min() + 1e-9
    # the perturbed form on a level set near the minima tends to the same point
    s = 1e-3
    cs = np.asarray(B.cross(level=s, eps=1e-8))
    np.testing.assert_allclose(cs, [math.sqrt((1.5 - s) / 2)] * 2, rtol=1e-6)


def test_limiting_one_norm_is_the_one_norm_at_equal_loss():
    """nu(theta) = lim ||grad E||_1 / sqrt(2E) at the landing point, approached along the
    zeroth-order line (-1, -1) through theta."""
    E = full_batch_loss(B.default_problem())
    theta = jnp.array([2.8, 3.5])
    land = B.landing_point(theta)
    assert abs(float(land[0] * land[1]) - C) < 1e-12
    assert abs(float(land[1] - land[0]) - 0.7) < 1e-12
    for delta in (1e-3, 1e-5):
        p = land + delta * jnp.ones(2)
        ratio = float(jnp.sum(jnp.abs(jax.grad(E)(p))) / jnp.sqrt(2 * E(p)))
        assert abs(ratio - float(B.limiting_one_norm(theta))) < 10 * delta
    np.testing.assert_allclose(float(B.limiting_one_norm(theta)), 2 * float(land.sum()))


# --- Figure 1: beta and rho at fixed h, small eps --------------------------------------------

def test_figure1_increasing_beta_lowers_the_one_norm(records):
    panel = records[1][0]
    betas = [r["beta"] for r in panel]
    assert betas == sorted(betas) and len(betas) >= 3
    nu = _nu(panel)
    assert all(a > b for a, b in zip(nu, nu[1:], strict=False)), nu


def test_figure1_increasing_rho_raises_the_one_norm(records):
    panel = records[1][1]
    rhos = [r["rho"] for r in panel]
    assert rhos == sorted(rhos) and len(rhos) >= 3
    nu = _nu(panel)
    assert all(a < b for a, b in zip(nu, nu[1:], strict=False)), nu


# --- Figure 2: h, with beta > rho and rho > beta ---------------------------------------------

def test_figure2_increasing_h_lowers_the_one_norm_when_beta_above_rho(records):
    panel = records[2][0]
    assert all(r["beta"] > r["rho"] for r in panel)
    hs = [r["h"] for r in panel]
    assert hs == sorted(hs) and len(hs) >= 3
    nu = _nu(panel)
    assert all(a > b for a, b in zip(nu, nu[1:], strict=False)), nu


def test_figure2_increasing_h_raises_the_one_norm_when_rho_above_beta(records):
    panel = records[2][1]
    assert all(r["rho"] > r["beta"] for r in panel)
    hs = [r["h"] for r in panel]
    assert hs == sorted(hs) and len(hs) >= 3
    nu = _nu(panel)
    assert all(a < b for a, b in zip(nu, nu[1:], strict=False)), nu


def test_sign_of_eq8_coefficient_predicts_every_plotted_drift(records):
    for fig in records.values():
        for panel in fig:
            for r in panel:
                bracket = (1 + r["beta"]) / (1 - r["beta"]) - (1 + r["rho"]) / (1 - r["rho"])
                assert r["predicted_sign"] == -int(np.sign(bracket)) != 0
                assert r["observed_sign"] == r["predicted_sign"], r
                assert r["signs_agree"]


def test_paths_stay_stable_and_reach_the_minima(records):
    for fig in records.values():
        for panel in fig:
            for r in panel:
                assert all(np.isfinite(r["end_point"])) and min(r["end_point"]) > 0
                assert r["end_loss"] < 0.5 * B.R_MIN**2, r  # near the hyperbola at T
                assert r["window_step"] < r["num_steps"]


# --- the modified ODE explains the drift -----------------------------------------------------

def test_first_order_ode_explains_the_drift(ode_runs):
    for cfg, paths in ode_runs:
        rec = B.measure(cfg, paths)
        wd = rec["window_drift"]
        # zeroth-order flow: no drift (d = theta2 - theta1 conserved up to eps effects)
        assert abs(wd["order0"]) < 1e-4, wd
        # first order: same sign as the discrete drift, and of the same size
        assert np.sign(wd["order1"]) == np.sign(wd["discrete"]) == rec["predicted_sign"]
        assert 0.5 < wd["order1"] / wd["discrete"] < 2.0, wd
        # and it follows the discrete path far better than the zeroth-order flow
        assert rec["distance_order1"] < 0.2 * rec["distance_order0"], rec
        assert len(paths.order1) == rec["window_step"] + 1


# --- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, bad", [
    (["--figure", "3"], "'3'"), (["--figure", "abc"], "'abc'"), (["--figure", "-1"], "'-1'"),
    (["--figure", "1", "--dpi", "abc"], "'abc'"), (["--figure", "1", "--dpi", "19"], "'19'"),
    (["--figure", "1", "--dpi", "1.5"], "'1.5'"),
    (["--figure", "1", "--contours", "two-norm"], "'two-norm'"),
    (["--figure", "1", "--out", "FILE"], "not a directory"),
    (["--figure", "1", "--out", "FILE/below"], "not a directory"),
    (["--figure", "1", "--out", ""], "empty"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, bad, capsys, tmp_path):
    from experiments import bilinear as cli

    (tmp_path / "FILE").write_text("x")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and bad in err
    assert not (tmp_path / "out").exists()


def test_cli_writes_png_and_json(tmp_path, monkeypatch, ode_runs):
    from experiments import bilinear as cli

    small = {1: (B.Panel("beta > rho", "beta", (B.Config(0.01, 0.75, 0.5),)),)}
    monkeypatch.setattr(B, "FIGURES", small)
    cli.main(["--figure", "1", "--out", str(tmp_path), "--dpi", "40"])
    assert (tmp_path / "figure1.png").stat().st_size > 1000
    out = json.loads((tmp_path / "figure1.json").read_text())
    (rec,) = out["panels"][0]["trajectories"]
    for key in ("h", "beta", "rho", "eps", "end_point", "end_grad_one_norm",
                "end_grad_perturbed_one_norm", "drift", "correction_coefficient",
                "predicted_sign", "observed_sign", "distance_order1", "path"):
        assert key in rec
    assert len(rec["path"]["grad_one_norm"]) == len(rec["path"]["grad_perturbed_one_norm"])
    np.testing.assert_allclose(out["cross"], out["cross_closed_form"], atol=1e-6)
