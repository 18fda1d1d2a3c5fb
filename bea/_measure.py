"""Measuring the order (docs/math.md, section 6): global error, fitted and local slopes, floors.

    err(h) = max_{0<=n<=N} || theta~(nh) - theta^(n) ||_2

The order is the least-squares slope of log err against log h over a ladder of h at a
fixed horizon T; local slopes between neighbouring h show the approach to it. A point
whose error is within ``factor`` of the solver error or of float64 round-off is at the
floor (an error of exactly 0 is at round-off), one whose error is as large as the motion it
describes is outside the expansion, and one with fewer than :data:`MIN_STEPS` steps is too
short to show an order: all are flagged and left out of the fit, never silently fitted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Array, Float

__all__ = ["global_error", "fit_slope", "local_slopes", "roundoff_floor", "at_floor",
           "outside_expansion", "too_few_steps", "first_nonfinite", "MIN_STEPS", "Point",
           "point", "NAN_POINT"]

MIN_STEPS = 8
"""The fewest steps N = T/h at which a point enters the fitted slope. An order p is the
slope of err(h) ~ C T h^p as N -> infinity at fixed T: the error is a sum of N local errors
plus the start-up of the optimizer's memory (the bias-corrected first steps: Adam's first
update is g_0/sqrt(g_0^2 + eps), whatever beta and rho), which lasts a few steps and biases
the error by about (its length)/N. With N = 1, 2, 4 that start-up is most of the run: on
the bilinear model (Adam, beta 0.5, rho 0.7, T = 0.1) the local slopes were -19 and -0.9
for a field of order 2. N >= 8 keeps that bias to 1/8 per step of start-up or less, and is
the smallest N of every ladder in docs/orders.md (whose fits it leaves as they are). It is
a floor, not a guarantee: long memories need N >> 1/(1 - rho) (docs/math.md, section 6),
which the local slopes show."""


def global_error(ode: Float[Array, "N+1 p"], discrete: Float[Array, "N+1 p"]) -> float:
    """max over n of ||theta~(nh) - theta^(n)||_2 (NaN if either path is not finite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.linalg.norm(np.asarray(ode) - np.asarray(discrete), axis=-1)
    return float(np.max(d)) if np.all(np.isfinite(d)) else float("nan")


def fit_slope(h, err, use=None) -> float:
    """Least-squares slope of log err on log h over the points in ``use`` (default: finite,
    positive ones). NaN with fewer than two points."""
    h, err = np.asarray(h, float), np.asarray(err, float)
    ok = np.isfinite(err) & (err > 0)
    if use is not None:
        ok &= np.asarray(use, bool)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(h[ok]), np.log(err[ok]), 1)[0])


def local_slopes(h, err) -> list[float]:
    """log(err_i/err_{i+1}) / log(h_i/h_{i+1}) between neighbours, in the order given."""
    h, err = np.asarray(h, float), np.asarray(err, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.log(err[:-1] / err[1:]) / np.log(h[:-1] / h[1:])
    return [float(x) for x in s]


def roundoff_floor(discrete: Float[Array, "N+1 p"]) -> float:
    """Error float64 round-off alone can make over N steps: eps_64 (N + 1) max_n ||theta^(n)||,
    eps_64 = 2^-52 ~ 2.2e-16 the float64 machine epsilon."""
    d = np.asarray(discrete)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run: inf, not a warning
        return float(np.finfo(np.float64).eps * len(d) * np.max(np.linalg.norm(d, axis=-1)))


def at_floor(err: float, solver_error: float, roundoff: float, factor: float = 10.0) -> bool:
    """True if ``err`` is within ``factor`` of the solver error or the round-off floor, or
    exactly 0 (two paths equal to the last bit: nothing is measured)."""
    return bool(np.isfinite(err) and (err == 0 or err < factor * max(solver_error, roundoff)))


def outside_expansion(err: float, ode: Float[Array, "N+1 p"]) -> bool:
    """True where the error is at least the distance the modified flow travels,
    max_n ||theta~(nh) - theta~(0)||: the expansion then explains nothing (the run left the
    region where it means anything, e.g. a discrete run that blew up at a step size beyond
    its stability limit). Such points are flagged and left out of the fit, like floor points.
    An error of exactly 0 is never outside (it is at round-off, :func:`at_floor`), even on a
    flow that does not move."""
    ys = np.asarray(ode)
    with np.errstate(over="ignore", invalid="ignore"):
        travel = float(np.max(np.linalg.norm(ys - ys[0], axis=-1)))
    return bool(np.isfinite(err) and err > 0 and not err < travel)


def too_few_steps(N: int, minimum: int = MIN_STEPS) -> bool:
    """True if a run of ``N`` steps is too short for its error to show the order
    (:data:`MIN_STEPS`): such points are flagged and left out of the fit."""
    return int(N) < minimum


def first_nonfinite(path: Float[Array, "n ..."]) -> int | None:
    """Index of the first row of ``path`` holding a NaN or inf, or None if all are finite."""
    bad = ~np.all(np.isfinite(np.asarray(path).reshape(len(path), -1)), axis=1)
    return int(np.argmax(bad)) if bad.any() else None


class Point(NamedTuple):
    """One field at one h (for one hyperparameter combination): its error, the measured
    error of its solve, the flags :func:`at_floor` and :func:`outside_expansion`, and how
    it was solved: ``solver`` ('fixed', 'adaptive' or 'implicit'), ``tableau``,
    ``estimate`` (how the solver error was measured: 'embedded', 'halving' or 'refined'),
    ``ode_diverged_at`` (:func:`first_nonfinite` of the modified path) and, for an adaptive
    or implicit solve that could not finish an interval, ``failure``: why ('cause':
    'max_steps' or 'nonfinite'), at which ``interval``, and a one-line ``message``
    (bea._convergence._diagnose)."""

    error: float
    solver_error: float
    floor: bool
    outside: bool
    solver: str | None
    tableau: str | None
    estimate: str | None
    ode_diverged_at: int | None
    failure: dict | None = None


NAN_POINT = Point(float("nan"), float("nan"), False, False, None, None, None, None)
"""The point of a run with nothing to measure (its discrete run diverged)."""


def point(ode: Float[Array, "N+1 p"], discrete: Float[Array, "N+1 p"], error: float,
          solver_error: float, solver: str, tableau: str | None, estimate: str) -> Point:
    """The measured :class:`Point` of the modified path ``ode`` against the discrete path:
    ``error`` is :func:`global_error` of the two (computed by the caller, who compared it
    with ``solver_error`` to choose the solve), flagged against the solver error and the
    round-off floor of ``discrete``."""
    return Point(error, solver_error, at_floor(error, solver_error, roundoff_floor(discrete)),
                 outside_expansion(error, ode), solver, tableau, estimate,
                 first_nonfinite(ode))
