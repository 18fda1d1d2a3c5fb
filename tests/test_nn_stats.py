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


# --- the Student-t interval (the figures' default) ---------------------------------------

N_COVER = 4000  # Monte-Carlo standard error of a 95% coverage: sqrt(.95 .05 / 4000) = 0.0034


def _t3(rng, shape):
    """Student-t with 3 degrees of freedom (heavy tails), scaled to sd 1."""
    return rng.standard_t(3, shape) / math.sqrt(3)


NOISE = {"normal": lambda rng, shape: rng.standard_normal(shape),
         "t3": _t3,
         "lognormal0.8": _lognormal}


COVER_TOL = 4 * math.sqrt(0.95 * 0.05 / N_COVER)  # 4 Monte-Carlo standard errors: 0.0138


@pytest.mark.parametrize("k", [2, 3, 8, 16])
def test_t_interval_covers_a_known_mean_and_a_known_slope(k):
    """Synthetic seeds with a known mean (1.5) and a known slope (30 per unit x, over
    Figure 3's rho values, a seed effect shared across configurations), 4000 data sets at
    K = 2, 3, 8, 16 (K = 2 is the least the t interval is used with). For normal noise the
    interval is exact: coverage within 4 Monte-Carlo standard errors of 0.95 (measured
    0.940-0.951; the normal quantile for t_{K-1}, or K degrees of freedom for K - 1, fall
    outside at K = 2, 8 or 16). Heavy-tailed (t3) noise and slopes under skewed
    lognormal(0.8) noise: within 4 standard errors of [0.95, 0.96] (measured t3
    0.954-0.963, lognormal slopes 0.951-0.961: a slope averages five configurations). The
    one case below, the mean of strongly skewed values (lognormal(0.8), skewness 3.7), is
    asserted as measured, 0.87-0.91: no interval holds its level there at K <= 16."""
    mean, slope = 1.5, 30.0
    for name, noise in NOISE.items():
        rng = np.random.default_rng(100 + k)
        means = mean + noise(rng, (N_COVER, k))
        ys = (10 + slope * X[None, :, None] + 0.7 * rng.standard_normal((N_COVER, 1, k))
              + noise(rng, (N_COVER, len(X), k)))
        cover_m = cover_s = 0
        for v, y in zip(means, ys, strict=True):
            iv = S.mean_interval(v)
            cover_m += iv.lo <= mean <= iv.hi
            sl = S.slope_interval(X, y)
            cover_s += sl.lo <= slope <= sl.hi
        lo, hi = (0.95, 0.95) if name == "normal" else (0.95, 0.96)
        got = {"slope": cover_s / N_COVER, "mean": cover_m / N_COVER}
        assert lo - COVER_TOL <= got["slope"] <= hi + COVER_TOL, (name, k, got)
        if name == "lognormal0.8":  # no method at small K: the t interval undercovers
            assert 0.86 <= got["mean"] < 0.92, (name, k, got)
        else:
            assert lo - COVER_TOL <= got["mean"] <= hi + COVER_TOL, (name, k, got)


def test_bootstrap_t_fails_at_three_seeds_and_is_refused():
    """At K = 3 bootstrap-t has 10 resamples with a spread: over 400 normal data sets it
    covers about 83% (0.92 is 4.7 Monte-Carlo standard errors above) and its widest
    interval is astronomically wide (the issue's [-1e16, 9.8e16]); the t interval of the
    same data covers 95% and its width is 2 t_{2,0.975} sd / sqrt 3. ``mean_interval``
    refuses bootstrap-t below ``MIN_SEEDS``, naming K."""
    rng = np.random.default_rng(4)
    n, cover_b, cover_t, ratio = 400, 0, 0, []
    for i in range(n):
        y = rng.standard_normal(3)
        b = S.bootstrap_mean(y, n_boot=2000, seed=i)
        t = S.t_mean(y)
        cover_b += b.lo <= 0 <= b.hi
        cover_t += t.lo <= 0 <= t.hi
        ratio.append((b.hi - b.lo) / (t.hi - t.lo))
    assert cover_b / n < 0.92, cover_b / n
    assert abs(cover_t / n - 0.95) < _binomial_bound(0.95, n), cover_t / n
    assert max(ratio) > 1e6, max(ratio)
    with pytest.raises(ValueError, match="the bootstrap-t interval needs at least 6 seeds, "
                                         "got 3"):
        S.mean_interval(np.array([1.0, 2.0, 4.0]), "bootstrap-t")
    with pytest.raises(ValueError, match="needs at least 2 seeds, got 1"):
        S.slope_interval(X, np.ones((5, 1)))
    with pytest.raises(ValueError, match="one of t, bootstrap-t, got 'z'"):
        S.mean_interval(np.ones(4), "z")


def test_t_interval_and_p_value_agree():
    """The t interval is mean +- t_{K-1} sd / sqrt K (checked against a hand value), and
    the t test's p-value is below 0.05 exactly when the 95% interval excludes 0."""
    y = np.array([1.0, 2.0, 4.0])  # mean 7/3, sd sqrt(7/3)
    iv = S.t_mean(y)
    half = 4.302652729749464 * math.sqrt(7 / 3) / math.sqrt(3)  # t_{2, 0.975}
    assert iv == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half), rel=1e-12)
    rng = np.random.default_rng(5)
    for _ in range(200):
        v = 0.8 + rng.standard_normal(5)
        iv, p = S.t_mean(v), S.p_value(v)
        assert (p < 0.05) == (iv.lo > 0 or iv.hi < 0)
    assert S.p_value(np.zeros(3)) == 1.0 and S.p_value(np.ones(3)) == 0.0
    # bootstrap-t's p-value is the share of resampled |t*| at or above |t| (by hand)
    v = 0.8 + rng.standard_normal(8)
    t = v.mean() / (v.std(ddof=1) / math.sqrt(8))
    idx = np.random.default_rng(3).integers(0, 8, (2000, 8))
    r = v[idx]
    tstar = (r.mean(axis=1) - v.mean()) / (r.std(axis=1, ddof=1) / math.sqrt(8))
    want = float(np.mean(np.abs(tstar[np.isfinite(tstar)]) >= abs(t)))
    got = S.p_value(v, "bootstrap-t", n_boot=2000, seed=3)
    assert got == want, (got, want)  # the same resamples: exactly


def test_holm_adjusts_by_hand_and_bounds_the_family_wise_error():
    """Holm's step-down adjustment on a hand-worked example, and over 20 000 families of
    7 true null hypotheses (uniform p-values) no more than 5% of the families reject
    any (measured 0.049; raw p < 0.05 rejects in 1 - 0.95^7 = 30%)."""
    adj = S.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert S.holm(np.array([0.5, 0.9])).tolist() == [1.0, 1.0]
    rng = np.random.default_rng(6)
    fams = rng.uniform(size=(20_000, 7))
    any_adj = np.mean([np.any(S.holm(p) < 0.05) for p in fams])
    assert any_adj < 0.05 + _binomial_bound(0.05, 20_000), any_adj
    assert np.mean(np.any(fams < 0.05, axis=1)) > 0.28
    assert S.verdict_from_p(2.0, 0.01, +1) == "holds"
    assert S.verdict_from_p(2.0, 0.01, -1) == "reversed"
    assert S.verdict_from_p(-2.0, 0.2, +1) == "absent"
    with pytest.raises(ValueError, match="1.5"):
        S.holm(np.array([0.1, 1.5]))
