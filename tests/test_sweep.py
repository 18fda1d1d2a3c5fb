"""Padding, windowing, the fixed-step solve and the compile count of the h-sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bea  # noqa: F401
from bea import sweep as sw
from bea.fields import full_batch
from bea.problems import bilinear, full_batch_loss, make_problem


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("mini,solver", [(False, "adaptive"), (True, "fixed")])
def test_padded_run_equals_plain(mini, solver):
    """Padding to N_max (masked steps) changes no error: 1e-12 relative."""
    if mini:
        prob, kw = make_problem("quadratic", seed=0), dict(batch_size=32, rho=0.7, eps=1e-3)
    else:
        prob, kw = bilinear(), dict(rho=0.7, eps=1e-3)
    plain = sw.run_h(prob, "adam", 0.05, 1.0, ["order1"], beta=0.5, solver=solver, **kw)
    padded = sw.run_h(prob, "adam", 0.05, 1.0, ["order1"], beta=0.5, solver=solver,
                      N_max=37, **kw)
    assert _rel(padded["errors"]["order1"], plain["errors"]["order1"]) < 1e-12


def test_sweep_compiles_one_program_per_field():
    """A 4-point ladder compiles one discrete program and one per field, not one per h."""
    prob = bilinear()
    d0, o0 = sw._discrete._cache_size(), sw._ode._cache_size()
    hs = [1 / 16, 1 / 24, 1 / 32, 1 / 40]  # T = 0.75: N = 12, 18, 24, 30 (a fresh N_max)
    res = sw.sweep(prob, "adam", hs, 0.75, ("order0", "order1"), beta=0.5, rho=0.7,
                   eps=1e-3, solver="fixed")
    assert sw._discrete._cache_size() - d0 == 1
    assert sw._ode._cache_size() - o0 == 2  # the halving reference is the same program
    assert res["solver"]["order1"] == ["fixed"] * 4
    # the coarsest h checks the embedded bound by halving; the others then use the bound
    assert res["estimate"]["order1"] == ["halving"] + ["embedded"] * 3
    assert res["tableau"]["order1"] == ["dopri5"] * 4


def test_fixed_step_solve_is_measured_safe():
    """One Dopri8 step per interval: its measured error is >= 100x below the error, and
    the errors agree with the adaptive solve to within the solver errors."""
    prob = bilinear()
    kw = dict(beta=0.9, rho=0.999, eps=1e-3)
    hs = [1e-3, 5e-4]
    f = ("order1",)
    fx = sw.sweep(prob, "adam", hs, 0.2, f, solver="fixed", **kw)
    ad = sw.sweep(prob, "adam", hs, 0.2, f, solver="adaptive", **kw)
    au = sw.sweep(prob, "adam", hs, 0.2, f, solver="auto", **kw)
    for k in f:
        e, s = np.asarray(fx["errors"][k]), np.asarray(fx["solver_error"][k])
        assert np.all(100 * s <= e)
        tol = np.asarray(fx["solver_error"][k]) + np.asarray(ad["solver_error"][k])
        assert np.all(np.abs(e - np.asarray(ad["errors"][k])) <= 2 * tol + 1e-15)
        assert au["errors"][k] == fx["errors"][k]


def test_full_batch_rmsprop_window_changes_no_digit(monkeypatch):
    """The window of full-batch RMSProp's history sum (weights rho^(n-l) < 1e-18 dropped)
    gives the same field as the full sum, and the same reported errors."""
    E = full_batch_loss(bilinear())
    theta = jnp.array([2.1, 1.3])
    n_max = 400
    assert full_batch._window(0.5, n_max) < n_max
    fw = jax.jit(full_batch.rmsprop_field(E, 0.01, 0.5, 1e-3, n_max))
    monkeypatch.setattr(full_batch, "_window", lambda rho, num_steps: num_steps)
    ff = jax.jit(full_batch.rmsprop_field(E, 0.01, 0.5, 1e-3, n_max))
    for n in (0, 3, 70, 399):
        assert _rel(fw(n, theta), ff(n, theta)) < 1e-15


def test_minibatch_adam_window_changes_no_reported_digit(monkeypatch):
    """Theorem 3.6's field on a 2W-batch window (weights max(beta, rho)^W < 1e-18 dropped)
    equals the full-history field, and the sweep reports the same errors to 1e-12."""
    from bea.fields import _window, adam
    from bea.problems import batch_sequence

    prob = make_problem("quadratic", seed=0)
    K, kw = 150, dict(beta=0.5, rho=0.5, eps=1e-3)
    L = _window.window_length(kw["beta"], kw["rho"], K)
    assert L is not None and L < K
    batches = batch_sequence(prob, 8, K, 0)
    fw = jax.jit(adam.field(prob.loss, batches, 0.01, **kw))
    ff = jax.jit(adam.field(prob.loss, batches, 0.01, **kw, window=False))
    theta = prob.theta0
    for n in (0, 5, L - 1, L + 4, L + 7, K - 1):  # L + 4: a window not on a chunk boundary
        np.testing.assert_allclose(fw(n, theta), ff(n, theta), rtol=1e-14, atol=0)
    from bea.fields import rmsprop  # Theorem 3.3 shares the field, and so the window

    rw = jax.jit(rmsprop.field(prob.loss, batches, 0.01, kw["rho"], kw["eps"]))
    rf = jax.jit(rmsprop.field(prob.loss, batches, 0.01, kw["rho"], kw["eps"], window=False))
    for n in (5, L + 4, K - 1):
        np.testing.assert_allclose(rw(n, theta), rf(n, theta), rtol=1e-14, atol=0)
    used = []

    def spy(*a, **k):
        used.append(_window.window_length(*a, **k))
        return used[-1]

    monkeypatch.setattr(adam, "window_length", spy)
    windowed = sw.run_h(prob, "adam", 0.01, 1.5, ["order1"], batch_size=8, solver="fixed",
                        **kw)
    assert used and used[-1] == L  # the sweep used the window
    monkeypatch.setattr(adam, "window_length", lambda *a, **k: None)
    full = sw.run_h(prob, "adam", 0.01, 1.5, ["order1"], batch_size=8, solver="fixed",
                    N_max=151, **kw)  # a new N_max: a fresh trace, without the window
    assert _rel(windowed["errors"]["order1"], full["errors"]["order1"]) < 1e-12


def test_grouped_history_sweep_reports_the_direct_errors():
    """sweep(..., batching="epoch", history="grouped") reports the errors of the direct
    history to 1e-9 relative (the fields agree to ~1e-14; the solver tolerance is what the
    errors share), for Adam (the whole history) and RMSProp (rho = 0.1: the round-off window
    2W = 38 < N = 50 applies)."""
    from bea.fields._window import window_length

    assert window_length(0.9, 0.99, 50) is None and window_length(0.0, 0.1, 50) == 38
    prob = make_problem("quadratic", seed=0)
    for opt, kw in (("adam", dict(beta=0.9, rho=0.99)), ("rmsprop", dict(rho=0.1))):
        res = {hist: sw.sweep(prob, opt, [0.02, 0.01], 0.5, eps=1e-3, batch_size=32,
                              batching="epoch", history=hist, solver="fixed", **kw)
               for hist in ("direct", "grouped")}
        for k in ("order0", "order1"):
            assert _rel(res["grouped"]["errors"][k], res["direct"]["errors"][k]) < 1e-9
    with pytest.raises(ValueError, match="history 'grouped' needs mini-batches"):
        sw.sweep(prob, "adam", [0.1], 1.0, batch_size=32, history="grouped")
    with pytest.raises(ValueError, match="unknown batching 'cyclic'"):
        sw.sweep(prob, "adam", [0.1], 1.0, batch_size=32, batching="cyclic")
    with pytest.raises(ValueError, match="not 'gd'"):
        sw.sweep(prob, "gd", [0.1], 1.0, batch_size=32, batching="epoch", history="grouped")
