"""Read-outs at equal training loss (bea.nn.readout) on constructed histories."""

import math

import numpy as np
import pytest

from bea.nn import readout as R


def _history(loss, **cols):
    return [{"step": n, "train_loss": float(l), **{k: float(v[n]) for k, v in cols.items()}}
            for n, l in enumerate(loss)]


def test_equal_loss_interpolation_is_exact_for_values_affine_in_log_loss():
    """v = a + b log L at every row, with a loss that oscillates (up at rows 4 and 7)
    and jumps by uneven factors: the interpolated read-out is a + b log L* to
    round-off at every threshold, and the interpolated step is exact when the step is
    affine in log loss between the two rows."""
    loss = np.array([2.3, 1.1, 0.5, 0.31, 0.45, 0.12, 0.05, 0.07, 0.02, 0.0081, 0.004])
    a, b = 3.0, -1.7
    v = a + b * np.log(loss)
    for thr in (1.0, 0.3, 0.1, 0.06, 0.01, 0.005):
        k = R.first_crossing(loss, thr)
        assert loss[k] < thr <= loss[:k].min()  # the first row below, not a later one
        value, t = R.at_equal_loss(loss, v, thr)
        assert value == pytest.approx(a + b * math.log(thr), rel=1e-13)
        assert k - 1 < t <= k
        # fractional row: log L is affine in t between rows k-1 and k
        lk = math.log(loss[k - 1]) + (t - (k - 1)) * (math.log(loss[k]) - math.log(loss[k - 1]))
        assert lk == pytest.approx(math.log(thr), rel=1e-13)


def test_first_crossing_skips_nan_and_reports_never():
    loss = np.array([2.0, np.nan, 0.5, 0.009, 0.02])
    assert R.first_crossing(loss, 0.01) == 3
    assert R.first_crossing(loss, 0.001) is None
    assert R.at_equal_loss(loss, loss, 0.001) is None
    # already below at row 0: nothing to interpolate from, the row-0 value
    assert R.at_equal_loss(loss, np.arange(5.0), 5.0) == (0.0, 0.0)


def test_window_mean_averages_an_alternating_oscillation():
    """v_n = 5 + 2 (-1)^n: the mean over 2w+1 rows centred on k is 5 +- 2/(2w+1)."""
    v = 5 + 2 * (-1.0) ** np.arange(20)
    for k, w in ((10, 3), (7, 4), (5, 0)):
        expected = 5 + 2 * (-1) ** (k - w) / (2 * w + 1)
        assert R.window_mean(v, k, w) == pytest.approx(expected, rel=1e-14)
    assert R.window_mean(v, 2, 3) is None and R.window_mean(v, 17, 3) is None
    with pytest.raises(ValueError, match="-1"):
        R.window_mean(v, 5, -1)


def test_read_out_bundles_the_three_readouts():
    loss = np.exp(-0.3 * np.arange(30))  # log L = -0.3 n: the interpolated step is exact
    norm = 10 + (-1.0) ** np.arange(30)
    rows = _history(loss, perturbed_one_norm=norm, test_accuracy=np.linspace(0.5, 0.9, 30))
    thr = 0.01
    out = R.read_out(rows, thr, ["perturbed_one_norm", "test_accuracy"], half_width=2)
    k = int(np.argmax(loss < thr))
    assert out["step"] == k and out["window_complete"]
    assert out["step_interp"] == pytest.approx(-math.log(thr) / 0.3, rel=1e-12)
    assert out["first"]["perturbed_one_norm"] == norm[k]
    assert out["window"]["perturbed_one_norm"] == pytest.approx(norm[k - 2:k + 3].mean())
    assert out["interp"]["test_accuracy"] == pytest.approx(
        np.interp(out["step_interp"], np.arange(30), np.linspace(0.5, 0.9, 30)), rel=1e-12)
    assert R.read_out(rows, 1e-9, ["perturbed_one_norm"], 2) is None
    late = R.read_out(rows[: k + 1], thr, ["perturbed_one_norm"], 2)  # stopped at k
    assert not late["window_complete"] and late["window"]["perturbed_one_norm"] is None


def test_hill_height_is_not_set_by_a_first_step_minimum_or_one_spike():
    """Plateaus at 10, 2, 6, 1 (20 steps each) under a step-to-step oscillation of a
    factor 1.5 up and down: the smoothed curve is the plateaus times one constant, so
    the hill is 6 / 2 = 3 exactly. A minimum at step 1 (0.01) and a one-step spike
    (1000 at step 50) leave it at 3; the older measure (after the first local minimum)
    reads 1500 and 150 from them."""
    level = np.repeat([10.0, 2.0, 6.0, 1.0], 20)
    v = level * 1.5 ** (-1.0) ** np.arange(80)
    assert R.hill_height(v) == pytest.approx(3.0, rel=1e-12)
    first = v.copy()
    first[1] = 0.01
    spike = v.copy()
    spike[50] = 1000.0
    assert R.hill_height(first) == pytest.approx(3.0, rel=1e-12)
    assert R.hill_height(spike) == pytest.approx(3.0, rel=1e-12)
    assert R.hill_first_minimum(first) == pytest.approx(10 * 1.5 / 0.01)
    assert R.hill_first_minimum(spike) == pytest.approx(1000 / (10 / 1.5))  # min at step 1
    assert R.hill_height(np.geomspace(10, 1, 40)) == 1.0  # only falls
    assert R.hill_first_minimum([5, 4, 3, 2, 1]) == 1.0
    assert R.hill_first_minimum([5, 2, 6, 4, 1]) == 3.0
    with pytest.raises(ValueError, match="needs at least 12 steps, got 11"):
        R.hill_height(np.ones(11))


def test_regime_names_spikes_by_the_stated_criterion():
    """"spike": the loss rises by more than a factor 10 within 10 steps somewhere; a
    fall with small oscillations, or a tenfold rise spread over 30 steps, is
    "oscillation"; a NaN after finite losses is a spike."""
    base = 2 * np.exp(-0.1 * np.arange(60)) * (1 + 0.3 * (-1.0) ** np.arange(60))
    assert R.regime(base) == "oscillation"
    spiky = base.copy()
    spiky[30:33] = 20 * base[29]
    assert R.regime(spiky) == "spike"
    assert R.regime(spiky, factor=30) == "oscillation"
    slow = np.concatenate([base[:30], base[29] * np.geomspace(1, 12, 30)])
    assert R.regime(slow) == "oscillation" and R.regime(slow, within=30) == "spike"
    assert R.regime(np.append(base, np.nan)) == "spike"
    with pytest.raises(ValueError, match="got 1.0"):
        R.regime(base, factor=1.0)
