"""Seed statistics for the Section 6 figures: intervals, p-values, Holm and the verdict.

A figure of Section 6 plots a read-out y (||grad E||_{1,eps} or the test accuracy at
equal training loss, ``bea.nn.readout``) against a hyperparameter x (rho in Figures
3, 4, 8; beta in Figures 5 to 7), one configuration per x. With K seeds per
configuration, ``y`` is a (C, K) array. Equation (8) predicts the sign of the trend:
the correction c = h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho)) penalises the norm more
as beta grows and less as rho grows, so the paper expects the norm to rise with rho and
fall with beta (and the test accuracy to do the opposite).

Two interval methods (``METHODS``), each with the fewest seeds it is used with
(``MIN_SEEDS``):

* ``"t"`` (the default): the Student-t interval mean +- t_{K-1, (1+level)/2} sd / sqrt K
  and its two-sided p-value 2 P(T_{K-1} > |mean| / (sd / sqrt K)). Exact for normal
  values at every K >= 2. Measured coverage of the 95% interval over 4000 synthetic
  data sets at K = 2, 3, 8, 16 (Monte-Carlo standard error 0.0034; asserted within 4 of
  them in tests/test_nn_stats.py): normal 0.940-0.951; Student-t(3) noise (heavy
  tails) 0.954-0.963; per-seed slopes over five configurations under lognormal(0.8)
  noise 0.951-0.961 (a slope averages five values, which removes most skew); a
  per-configuration mean of lognormal(0.8) values (skewness 3.7) 0.87-0.91: strong skew
  at small K is where no method holds its level.
* ``"bootstrap-t"``: resample the K values, t* = (mean* - mean) / (sd* / sqrt K),
  interval mean - q(t*) sd / sqrt K, p-value P(|t*| >= |t|). At K = 3 only 10 distinct
  resamples have a spread: the measured coverage is 0.83 and one interval in 400 was
  10^19 wide (the issue's [-1e16, 9.8e16]); at K = 4 the widest interval is 2000 times
  the median one; at K >= 6 it is usable (coverage 0.94-0.96). Hence K >= 6.

* ``per_seed_slopes``: seed s has the same initialisation in every configuration, so
  the design is paired, and because the least-squares slope is linear in the
  per-configuration means it is the mean over seeds of the per-seed slopes
  s_k = sum_c w_c y[c, k], w_c = (x_c - mean x) / sum (x - mean x)^2. Its interval is
  the mean interval of the s_k (valid whether or not the seeds are correlated across
  configurations).
* ``verdict``: "holds" (the interval excludes 0 on the paper's side), "reversed" (it
  excludes 0 on the other side), "absent" (it contains 0); ``holm`` adjusts the
  p-values of a family of such tests (the figures' declared headlines) for their
  number, and ``verdict_from_p`` reads an adjusted p-value the same way.

Pure, seeded numpy (and scipy's t distribution).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from jaxtyping import Float
from scipy import stats as _st

__all__ = ["Interval", "VERDICTS", "METHODS", "MIN_SEEDS", "t_mean", "bootstrap_mean",
           "mean_interval", "p_value", "per_seed_slopes", "t_slope", "bootstrap_slope",
           "slope_interval", "holm", "verdict", "verdict_from_p", "seeds_needed"]

VERDICTS = ("holds", "absent", "reversed")
METHODS = ("t", "bootstrap-t")
# the fewest seeds each method is used with (module docstring: bootstrap-t at K = 3 covers
# 83% with intervals up to 10^19 wide)
MIN_SEEDS = {"t": 2, "bootstrap-t": 6}


class Interval(NamedTuple):
    """A point estimate and its (lo, hi) confidence interval."""

    estimate: float
    lo: float
    hi: float


def _seed_values(values, level: float) -> np.ndarray:
    y = np.asarray(values, dtype=float)
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if y.ndim != 1 or len(y) < 2:
        raise ValueError(f"need a 1-D array of at least 2 seeds, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"values must be finite, got {y.tolist()}")
    return y


@functools.lru_cache(maxsize=256)
def _t_quantile(q: float, df: int) -> float:
    return float(_st.t.ppf(q, df))


def t_mean(values: Float[np.ndarray, " k"], *, level: float = 0.95) -> Interval:
    """Mean of ``values`` (one per seed) and its Student-t interval
    mean +- t_{K-1, (1+level)/2} sd / sqrt K (module docstring)."""
    y = _seed_values(values, level)
    k = len(y)
    m, s = float(y.mean()), float(y.std(ddof=1))
    half = _t_quantile((1 + level) / 2, k - 1) * s / math.sqrt(k)
    return Interval(m, m - half, m + half)


def _bootstrap_t(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The bootstrap-t statistics t* = (mean* - mean) / (sd* / sqrt K) of the resamples
    with a spread (a resample of one repeated value has no t*)."""
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    k = len(y)
    yb = y[np.random.default_rng(seed).integers(0, k, (n_boot, k))]
    sb = yb.std(axis=1, ddof=1)
    ok = sb > 0
    return (yb.mean(axis=1)[ok] - y.mean()) / (sb[ok] / math.sqrt(k))


def bootstrap_mean(
    values: Float[np.ndarray, " k"], *, n_boot: int = 10_000, level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` (one per seed) and its bootstrap-t interval (module docstring;
    use it with K >= ``MIN_SEEDS["bootstrap-t"]``, :func:`mean_interval` checks)."""
    y = _seed_values(values, level)
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    m, s = float(y.mean()), float(y.std(ddof=1))
    if s == 0:
        return Interval(m, m, m)
    t = _bootstrap_t(y, n_boot, seed)
    q_lo, q_hi = np.quantile(t, [(1 - level) / 2, (1 + level) / 2])
    se = s / math.sqrt(len(y))
    return Interval(m, float(m - q_hi * se), float(m - q_lo * se))


def _check_method(method: str, k: int) -> None:
    if method not in METHODS:
        raise ValueError(f"interval method must be one of {', '.join(METHODS)}, got {method!r}")
    if k < MIN_SEEDS[method]:
        raise ValueError(f"the {method} interval needs at least {MIN_SEEDS[method]} seeds, "
                         f"got {k}")


def mean_interval(
    values: Float[np.ndarray, " k"], method: str = "t", *, level: float = 0.95,
    n_boot: int = 10_000, seed: int = 0,
) -> Interval:
    """The mean over seeds and its interval by ``method`` (``METHODS``); ValueError
    naming K when there are fewer seeds than ``MIN_SEEDS[method]``."""
    _check_method(method, np.size(values))
    if method == "t":
        return t_mean(values, level=level)
    return bootstrap_mean(values, n_boot=n_boot, level=level, seed=seed)


def p_value(
    values: Float[np.ndarray, " k"], method: str = "t", *, n_boot: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of "the mean of ``values`` is 0": 2 P(T_{K-1} > |t|) for
    ``"t"``, the share of resamples with |t*| >= |t| for ``"bootstrap-t"`` (the test
    that goes with each interval: p < 1 - level exactly when the interval excludes 0,
    for ``"t"``). 1.0 for values all 0, 0.0 for a non-zero constant."""
    _check_method(method, np.size(values))
    y = _seed_values(values, 0.95)
    m, s = float(y.mean()), float(y.std(ddof=1))
    if s == 0:
        return 1.0 if m == 0 else 0.0
    t = m / (s / math.sqrt(len(y)))
    if method == "t":
        return float(2 * _st.t.sf(abs(t), len(y) - 1))
    return float(np.mean(np.abs(_bootstrap_t(y, n_boot, seed)) >= abs(t)))


def per_seed_slopes(x: Float[np.ndarray, " c"], y: Float[np.ndarray, "c k"]) -> np.ndarray:
    """The least-squares slope of y[:, k] against x, for every seed k: shape (K,)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if y.ndim != 2 or y.shape[0] != len(x):
        raise ValueError(f"y must be (configurations, seeds) = ({len(x)}, K), got {y.shape}")
    if len(set(x.tolist())) < 2:
        raise ValueError(f"need at least 2 distinct x for a slope, got {x.tolist()}")
    dx = x - x.mean()
    return dx @ y / float(dx @ dx)


def t_slope(
    x: Float[np.ndarray, " c"], y: Float[np.ndarray, "c k"], *, level: float = 0.95
) -> Interval:
    """Slope of the least-squares line through (x_c, mean_k y[c, k]) and its Student-t
    interval over the per-seed slopes (paired design, module docstring)."""
    return t_mean(per_seed_slopes(x, y), level=level)


def bootstrap_slope(
    x: Float[np.ndarray, " c"], y: Float[np.ndarray, "c k"], *, n_boot: int = 10_000,
    level: float = 0.95, seed: int = 0,
) -> Interval:
    """Slope of the least-squares line through (x_c, mean_k y[c, k]) and its interval:
    ``bootstrap_mean`` of the per-seed slopes (paired design, module docstring)."""
    return bootstrap_mean(per_seed_slopes(x, y), n_boot=n_boot, level=level, seed=seed)


def slope_interval(
    x: Float[np.ndarray, " c"], y: Float[np.ndarray, "c k"], method: str = "t", *,
    level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
) -> Interval:
    """The slope and its interval by ``method``: :func:`mean_interval` of the per-seed
    slopes."""
    return mean_interval(per_seed_slopes(x, y), method, level=level, n_boot=n_boot, seed=seed)


def holm(p_values: Float[np.ndarray, " m"]) -> np.ndarray:
    """Holm's step-down adjustment of m p-values (a family of tests whose every
    rejection at adjusted p < alpha keeps the family-wise error <= alpha): with the
    p-values sorted, p_(1) <= ... <= p_(m), the adjusted p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)); returned in the input's order."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must be a 1-D array in [0, 1], got {p.tolist()}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(adj)
    return out


def verdict(interval: Interval, expected_sign: int) -> str:
    """"holds" / "absent" / "reversed": where the interval lies against 0 relative to the
    sign the paper expects (+1: rises with x, -1: falls)."""
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if interval.lo > 0 or interval.hi < 0:
        return "holds" if (interval.lo > 0) == (expected_sign > 0) else "reversed"
    return "absent"


def verdict_from_p(estimate: float, p: float, expected_sign: int, alpha: float = 0.05) -> str:
    """The verdict of a test read from its (adjusted) p-value: "absent" unless
    p < ``alpha``, then "holds" or "reversed" by the sign of ``estimate``."""
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if not p < alpha:
        return "absent"
    return "holds" if (estimate > 0) == (expected_sign > 0) else "reversed"


def seeds_needed(interval: Interval, k: int) -> int | None:
    """Seeds for the interval to exclude 0 if the measured slope were the true one and
    the half-width shrank like 1/sqrt(K): K ((hi - lo) / 2 / |slope|)^2, at least K;
    None for a zero slope. A rough planning number, not a guarantee."""
    if interval.estimate == 0:
        return None
    half = (interval.hi - interval.lo) / 2
    return max(k, math.ceil(k * (half / abs(interval.estimate)) ** 2))
