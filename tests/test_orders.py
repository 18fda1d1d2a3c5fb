"""Measured convergence orders (docs/math.md, section 6), float64, tolerances stated per test.

Bilinear, full batch, short memory (beta = 0.5, rho = 0.7, eps = 1e-3, T = 1, h = 0.04 ..
0.005): the first-order field converges at order 2, the zeroth-order field at order 1,
and the typeset R^3 variant only at order 1. Mini-batch tanh MLP on digits: order 2 with
non-monotone local slopes (the batch sequence enters)."""

import pytest
from _helpers import run_sweep

from bea import optimizer_registry as registry
from bea.problems import bilinear, logistic, mlp

pytestmark = pytest.mark.slow

H = [0.04, 0.02, 0.01, 0.005]


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_bilinear_full_batch_orders(optimizer):
    r = run_sweep(bilinear(), optimizer=optimizer, h=H, T=1.0,
                  fields=["order0", "order1", "order2", "order1_typo"], beta=0.5, rho=0.7,
                  eps=1e-3)
    assert r.local_slopes["order1"][-1] >= 1.8
    # second order (docs/math.md, section 8; measured: Adam 2.64, 2.87, 2.94, fitted 2.82;
    # RMSProp 2.37, 2.66, 2.84, fitted 2.63)
    assert r.local_slopes["order2"][-1] >= 2.7 and r.slopes["order2"] >= 2.6
    assert not any(r.floor["order2"])
    assert 0.85 <= r.slopes["order0"] <= 1.15
    assert r.slopes["order1_typo"] <= 1.2
    # the first-order field is more accurate than the zeroth at every h, and no point is
    # at the solver floor (the solver error is measured at the finest h)
    for e0, e1 in zip(r.errors["order0"], r.errors["order1"], strict=False):
        assert e1 < e0 / 5
    assert not any(r.floor["order1"])


@pytest.mark.parametrize("optimizer", registry.CLOSED_FORM)
def test_every_closed_form_converges_at_order_2(optimizer):
    """Every registry entry with closed forms, without a hand-written list: a new closed-form
    optimizer is measured here too. Logistic regression, full batch, beta = 0.5, rho = 0.7,
    eps = 1e-3, T = 0.4, N = 10 .. 80 (measured finest local slopes of order1: adam 1.91,
    rmsprop 1.82, gd 2.00, heavy_ball 1.91)."""
    r = run_sweep(logistic(), optimizer=optimizer, h=H, T=0.4, fields=["order0", "order1"],
                  beta=0.5, rho=0.7, eps=1e-3)
    assert r.local_slopes["order1"][-1] >= 1.8, r.local_slopes
    assert r.errors["order1"][-1] < r.errors["order0"][-1] / 5
    assert not any(r.floor["order1"])


# Mini-batch: 256 digits, tanh MLP with 8 hidden units (p = 610), batch size 16,
# beta = 0.5, rho = 0.7, eps = 1e-3, T = 0.08, h = 0.01 .. 0.00125 (N = 8 .. 64). The
# effective step is about h/sqrt(eps) (most |g_j| < sqrt(eps)), so h must stay near 1e-2
# or below for the asymptotic regime; N >> 1/(1-rho) ~ 3 holds.
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_minibatch_mlp_orders(optimizer):
    p = mlp(hidden=8, num_examples=256)
    r = run_sweep(p, optimizer=optimizer, h=[0.01, 0.005, 0.0025, 0.00125], T=0.08,
                  fields=["order0", "order1"], beta=0.5, rho=0.7, eps=1e-3, batch_size=16,
                  seed=0)
    loc = r.local_slopes["order1"]
    assert r.slopes["order1"] >= 1.75, r
    assert loc[-1] >= 1.8 and max(loc) >= 1.9  # trending to 2 (not monotone: batches enter)
    assert 0.85 <= r.slopes["order0"] <= 1.25


def test_minibatch_long_memory_epoch_orders():
    """Theorem 3.6 at a memory people train with (beta, rho) = (0.9, 0.95), under the epoch
    schedule with the history grouped by distinct batch (docs/math.md, section 7): 128
    digits in 8 batches of 16, the default MLP (p = 1210), eps = 1e-6, T = 0.05, N = 200 ..
    800, so N (1 - rho) = 10 .. 40. Measured local slopes order1 1.81, 1.94, order0 0.94,
    0.97 (docs/orders.md, ``mlp_adam_epoch_0.95``, one h coarser)."""
    r = run_sweep(mlp(num_examples=128), optimizer="adam", h=[2.5e-4, 1.25e-4, 6.25e-5],
                  T=0.05, fields=["order0", "order1"], beta=0.9, rho=0.95, eps=1e-6,
                  batch_size=16, batching="epoch")
    assert r.schedule.histories == {"order0": "grouped", "order1": "grouped"}
    assert r.local_slopes["order1"][-1] >= 1.8 and r.slopes["order1"] >= 1.75
    assert all(0.85 <= s <= 1.15 for s in r.local_slopes["order0"])
    assert not any(r.floor["order1"])


def test_practical_setting_bilinear_adam():
    """beta = 0.9, rho = 0.999, eps = 1e-3: order 2 needs N >> 1/(1-rho) = 1000 steps, i.e.
    h ~ 1e-5 at T = 1 (80 000 steps at the finest h); measured local slopes 1.76, 1.88, 1.94."""
    r = run_sweep(bilinear(), optimizer="adam", h=[1e-4, 5e-5, 2.5e-5, 1.25e-5], T=1.0,
                  fields=["order1"], beta=0.9, rho=0.999, eps=1e-3)
    assert r.local_slopes["order1"][-1] >= 1.8


@pytest.mark.parametrize("optimizer, T, hs", [
    ("gd", 1.0, [0.1, 0.05, 0.025, 0.0125]),           # order1 measured 2.00, 2.00, 2.00
    ("heavy_ball", 2.0, [0.02, 0.01, 0.005, 0.0025]),  # order1 measured 1.94, 1.97, 1.99
])
def test_gd_and_heavy_ball_special_cases_orders(optimizer, T, hs):
    """Barrett-Dherin (GD) and Ghosh et al. (heavy ball, beta = 0.7) on logistic regression:
    heavy ball needs N >> 1/(1-beta) and h/(1-beta) small, hence the finer ladder."""
    from bea.problems import logistic

    r = run_sweep(logistic(), optimizer=optimizer, h=hs, T=T,
                  fields=["order0", "order1", "order2"], beta=0.7)
    assert r.slopes["order1"] >= 1.9
    assert 0.9 <= r.slopes["order0"] <= 1.1
    # measured order2: gd 3.00, 3.00, 3.00; heavy ball 2.92, 2.96, 2.98
    assert r.slopes["order2"] >= 2.8 and r.local_slopes["order2"][-1] >= 2.9
    assert not any(r.floor["order2"])
