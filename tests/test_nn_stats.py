"""Bootstrap intervals and trend verdicts (bea.nn.stats) on synthetic seeds.

Every rate below is measured over N synthetic data sets, so it carries binomial noise
sqrt(p (1 - p) / N); each bound is the target plus 3 such standard deviations.
"""

import math

import numpy as np
import pytest

from bea.nn import stats as S

X = np.array([0.97, 0.98, 0.99, 0.995, 0.999])  # Figure 3's rho values
DX2 = float(np.sum((X - X.mean()) ** 2))


def _synthetic(rng, slope, k, noise="normal"):
    """(C, K) values: 10 + slope x + a seed effect shared by all configurations (the
    paired design) + independent noise of unit scale."""
    seed_effect = 0.7 * rng.standard_normal(k)
    if noise == "normal":
        e = rng.standard_normal((len(X), k))
    else:  # skewed, heavy right tail, mean 0, sd 1
        e = _lognormal(rng, (len(X), k))
    return 10 + slope * X[:, None] + seed_effect + e


def _lognormal(rng, shape, s=0.8):
    """Lognormal(0, s) shifted and scaled to mean 0 and standard deviation 1."""
    sd = math.sqrt((math.exp(s * s) - 1) * math.exp(s * s))
    return (rng.lognormal(0, s, shape) - math.exp(s * s / 2)) / sd


def _binomial_bound(p, n):
    return 3 * math.sqrt(p * (1 - p) / n)


def _percentile_interval(y, n_boot, seed):
    means = y[np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))].mean(axis=1)
    return np.quantile(means, [0.025, 0.975])


@pytest.mark.parametrize("k,noise", [(8, "normal"), (16, "lognormal")])
def test_mean_interval_covers_95_percent(k, noise):
    rng = np.random.default_rng(10 + k)
    n, cover, cover_pct = 600, 0, 0
    for i in range(n):
        y = rng.standard_normal(k) if noise == "normal" else _lognormal(rng, k)
        iv = S.bootstrap_mean(y, n_boot=2000, seed=i)
        cover += iv.lo <= 0 <= iv.hi
        lo, hi = _percentile_interval(y, 2000, i)
        cover_pct += lo <= 0 <= hi
    tol = _binomial_bound(0.95, n)
    # lognormal(0.8) at K = 16 is skewed enough to cost bootstrap-t about 2 points
    target = 0.95 if noise == "normal" else 0.93
    assert abs(cover / n - target) < tol + 0.01, cover / n
    if k == 8:  # why not the plain percentile interval: it covers about 90% at K = 8
        assert cover_pct / n < 0.95 - tol, cover_pct / n


def test_per_seed_slopes_average_to_the_slope_of_the_means():
    rng = np.random.default_rng(0)
    y = _synthetic(rng, 30.0, 7)
    fit = np.polyfit(X, y.mean(axis=1), 1)[0]
    assert np.mean(S.per_seed_slopes(X, y)) == pytest.approx(fit, rel=1e-12)
    assert S.bootstrap_slope(X, y, n_boot=500).estimate == pytest.approx(fit, rel=1e-12)


# measured power: normal 1.00, lognormal 0.95 (bootstrap-t intervals get long on the side
# of a skewed tail); the bounds are those minus 3 binomial standard deviations
@pytest.mark.parametrize("noise,power", [("normal", 0.97), ("lognormal", 0.91)])
def test_a_known_trend_is_detected_and_covered(noise, power):
    """A slope of 6 standard errors (per-seed slope sd = 1 / sqrt(sum dx^2) for unit
    noise, K = 16) is detected in almost every data set; the interval covers the true
    slope ~95% of the time; the verdict follows the sign the paper expects."""
    k, n = 16, 300
    slope = 6 * (1 / math.sqrt(DX2)) / math.sqrt(k)
    rng = np.random.default_rng(1)
    holds = cover = 0
    for i in range(n):
        iv = S.bootstrap_slope(X, _synthetic(rng, slope, k, noise), n_boot=2000, seed=i)
        holds += S.verdict(iv, +1) == "holds"
        cover += iv.lo <= slope <= iv.hi
        if i == 0:
            assert S.verdict(iv, -1) == "reversed"
    assert holds / n > power, holds / n
    assert abs(cover / n - 0.95) < _binomial_bound(0.95, n) + 0.015, cover / n


@pytest.mark.parametrize("noise", ["normal", "lognormal"])
def test_no_trend_is_not_detected(noise):
    """Slope 0: "holds" or "reversed" (the interval excludes 0) at most ~5% of the time."""
    k, n = 8, 400
    rng = np.random.default_rng(2)
    found = 0
    for i in range(n):
        iv = S.bootstrap_slope(X, _synthetic(rng, 0.0, k, noise), n_boot=2000, seed=i)
        found += S.verdict(iv, +1) != "absent"
    assert found / n < 0.05 + _binomial_bound(0.05, n), found / n


def test_seeded_and_pure():
    y = _synthetic(np.random.default_rng(3), 10.0, 6)
    y0 = y.copy()
    assert S.bootstrap_slope(X, y, seed=5) == S.bootstrap_slope(X, y, seed=5)
    assert S.bootstrap_slope(X, y, seed=5) != S.bootstrap_slope(X, y, seed=6)
    np.testing.assert_array_equal(y, y0)


def test_verdict_and_seeds_needed():
    assert S.verdict(S.Interval(1.0, 0.5, 1.5), +1) == "holds"
    assert S.verdict(S.Interval(1.0, 0.5, 1.5), -1) == "reversed"
    assert S.verdict(S.Interval(1.0, -0.5, 2.5), +1) == "absent"
    # half-width 1.5 = 1.5 |slope| at K = 8: 8 * 1.5^2 = 18 seeds
    assert S.seeds_needed(S.Interval(1.0, -0.5, 2.5), 8) == 18
    assert S.seeds_needed(S.Interval(1.0, 0.5, 1.5), 8) == 8
    assert S.bootstrap_mean(np.ones(4)) == S.Interval(1.0, 1.0, 1.0)


@pytest.mark.parametrize("call,needle", [
    (lambda: S.bootstrap_mean(np.array([1.0])), "at least 2 seeds"),
    (lambda: S.bootstrap_mean(np.array([1.0, np.nan])), "finite"),
    (lambda: S.bootstrap_mean(np.ones(3), level=1.2), "1.2"),
    (lambda: S.bootstrap_slope(X, np.ones((4, 3))), "(4, 3)"),
    (lambda: S.bootstrap_slope(np.ones(5), np.ones((5, 3))), "distinct x"),
    (lambda: S.verdict(S.Interval(0, 0, 0), 0), "got 0"),
])
def test_bad_input_is_named(call, needle):
    with pytest.raises(ValueError, match=None) as e:
        call()
    assert needle in str(e.value)
