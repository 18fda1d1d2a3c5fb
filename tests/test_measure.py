"""bea._measure: error metric, slopes and floor flags."""

import math

import numpy as np

import bea
from bea import _measure as measure
from bea.optimizers import trajectory
from bea.problems import bilinear


def test_slopes_of_exact_power_laws():
    h = np.array([0.04, 0.02, 0.01, 0.005])
    assert measure.fit_slope(h, 3 * h**2) == pytest_approx(2.0)
    assert all(abs(s - 1.0) < 1e-12 for s in measure.local_slopes(h, 0.5 * h))


def pytest_approx(x):
    import pytest

    return pytest.approx(x, abs=1e-12)


def test_fit_leaves_out_flagged_and_nonfinite_points():
    h = np.array([0.04, 0.02, 0.01, 0.005])
    err = h**2
    err[-1] = 1e-15  # a floor point would flatten the fit
    assert measure.fit_slope(h, err, use=[True, True, True, False]) == pytest_approx(2.0)
    err[0] = math.nan
    assert measure.fit_slope(h, err, use=[True, True, True, False]) == pytest_approx(2.0)
    assert math.isnan(measure.fit_slope(h[:1], err[:1]))


def test_global_error_is_max_over_steps_of_two_norm():
    a = np.zeros((3, 2))
    b = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    assert measure.global_error(a, b) == 5.0
    b[2, 0] = np.nan
    assert math.isnan(measure.global_error(a, b))


def test_floor_flags():
    assert measure.at_floor(5e-14, 1e-14, 1e-16)
    assert not measure.at_floor(1e-6, 1e-14, 1e-16)
    assert not measure.at_floor(math.nan, 1e-14, 1e-16)


def test_first_nonfinite_reports_the_step():
    p = bilinear()
    path = trajectory(bea.gd(0.2), p.loss, p.theta0, None, 60, data=p.data)  # unstable
    k = measure.first_nonfinite(path)
    assert k is not None and 0 < k <= 60
    assert np.all(np.isfinite(np.asarray(path[:k])))
    assert measure.first_nonfinite(path[:k]) is None


def test_exact_zero_error_is_at_round_off_not_outside():
    """Two paths equal to the last bit (a flow that does not move) are at the round-off
    floor, never 'as large as the motion': the old rule read 0 >= 0 as outside."""
    still = np.zeros((5, 2))
    assert measure.at_floor(0.0, 0.0, 0.0)
    assert not measure.outside_expansion(0.0, still)
    assert measure.outside_expansion(1.0, still)  # a real error on a still flow still is
    assert not measure.at_floor(1e-3, 0.0, 0.0)


def test_too_few_steps():
    assert [measure.too_few_steps(N) for N in (1, 2, 4, 7, 8, 64)] == [True] * 4 + [False] * 2
    assert measure.MIN_STEPS == 8  # docs/orders.md's smallest N: its fits must not change


def test_point_flags_the_error_against_solver_and_round_off():
    """measure.point: the floor flag against the solver error and the discrete path's
    round-off floor, the outside flag against the flow's travel, and the first non-finite
    row of the modified path."""
    disc = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    ode = disc + 1e-3
    err = measure.global_error(ode, disc)
    p = measure.point(ode, disc, err, 1e-9, "fixed", "dopri5", "embedded")
    assert (p.error, p.solver_error, p.floor, p.outside) == (err, 1e-9, False, False)
    assert (p.solver, p.tableau, p.estimate, p.ode_diverged_at) == (
        "fixed", "dopri5", "embedded", None)
    assert measure.point(ode, disc, err, err / 5, "fixed", "dopri5", "halving").floor
    still = np.ones((3, 2))  # a flow that does not move: any error is outside
    assert measure.point(still, disc, 1.0, 1e-9, "adaptive", None, "refined").outside
    blown = ode.copy()
    blown[2, 1] = np.inf
    assert measure.point(blown, disc, np.nan, 1e-9, "fixed", "dopri5",
                         "halving").ode_diverged_at == 2
    assert np.isnan(measure.NAN_POINT.error) and measure.NAN_POINT.solver is None
