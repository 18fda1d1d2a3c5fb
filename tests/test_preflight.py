"""bea.preflight (in bea._preflight): the stability intervals it uses, its cost model, the
stiffness it measures (lambda_max(H)/sqrt(eps) where gradients sit below sqrt(eps)), the
budget a sweep is held to, and what it stores on the result."""

import json
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bea
from bea._precision import float64
from bea._preflight import STABILITY, STAGES, BudgetError, Preflight, solve_cost
from bea.problems import make_problem


@pytest.mark.parametrize("tableau, solver", [("dopri5", diffrax.Dopri5),
                                             ("dopri8", diffrax.Dopri8)])
def test_stability_interval_is_the_tableaus(tableau, solver):
    """|R(-z)| <= 1 up to STABILITY[tableau] and not 1% beyond it, from diffrax's own step
    on y' = -z y (the cost model's one-step-per-interval limit h lambda)."""
    s = solver()

    def amplification(z):
        term = diffrax.ODETerm(lambda t, y, a: -z * y)
        state = s.init(term, 0.0, 1.0, jnp.ones(()), None)
        return jnp.abs(s.step(term, 0.0, 1.0, jnp.ones(()), None, state, False)[0])

    with float64():
        R = STABILITY[tableau]
        inside = jax.vmap(amplification)(jnp.linspace(1e-3, 0.999 * R, 400))
        assert float(jnp.max(inside)) <= 1.0
        assert float(amplification(1.01 * R)) > 1.0


def test_cost_model():
    """One stable Dopri5 step per interval: the solve and its halving reference (3 x 7
    evaluations per interval); past its stability interval the auto solver pays Dopri5's
    and Dopri8's attempts and then ~z/5.17 adaptive steps (solve and refined reference)."""
    assert solve_cost(1.0, 100, "auto") == ("dopri5", 1, 3 * STAGES["dopri5"] * 100)
    assert solve_cost(4.0, 100, "fixed")[0] == "dopri8"
    assert solve_cost(6.0, 100, "fixed")[0] == "unstable"
    solve, steps, evals = solve_cost(100.0, 10, "auto")
    assert (solve, steps) == ("adaptive", math.ceil(100 / STABILITY["dopri8"]))
    assert evals == 10 * (3 * 7 + 3 * 14 + 14 * (steps + steps))
    assert solve_cost(1e6, 10, "adaptive", max_steps=1024)[0] == "max_steps"
    assert solve_cost(1.0, 10, "implicit") == ("?", 0, -1)


def _quadratic(scale):
    H = jnp.asarray([1.0, 3.0])

    def loss(theta, batch):
        return 0.5 * jnp.sum(H * theta**2) * jnp.mean(batch)

    return loss, jnp.asarray([scale, -scale]), jnp.ones(1)


def test_stiffness_is_lambda_max_over_sqrt_eps_where_gradients_are_small():
    """Full-batch Adam on E = (theta_1^2 + 3 theta_2^2)/2 from |theta| = 1e-4, eps = 1e-2:
    every |g_j| <= 3e-4 << sqrt(eps), the update is gradient descent with step h/sqrt(eps),
    and lambda = 3/sqrt(eps) = 30 to 1%; order 2 expected below kappa/lambda."""
    bea.enable_x64()
    loss, theta0, data = _quadratic(1e-4)
    pf = bea.preflight(loss, theta0, data, beta=0.5, rho=0.7, eps=1e-2, h=[0.01, 0.005],
                       T=0.1)
    assert pf.small_share == 1.0 and pf.eps == 1e-2
    assert pf.stiffness == pytest.approx(3 / math.sqrt(1e-2), rel=1e-2)
    assert pf.h_star == pytest.approx(pf.kappa / pf.stiffness)
    assert pf.h_lambda == pytest.approx((0.01 * pf.stiffness, 0.005 * pf.stiffness))
    assert pf.solve == ("dopri5", "dopri5") and not pf.over_budget
    assert pf.check_seconds < 60 and all(s > 0 for s in pf.seconds)
    # with gradients far above sqrt(eps) the field is sign-like and not stiff
    loss, theta0, data = _quadratic(10.0)
    far = bea.preflight(loss, theta0, data, beta=0.5, rho=0.7, eps=1e-2, h=[0.01], T=0.1)
    assert far.small_share == 0.0 and far.stiffness < 0.1 * pf.stiffness


def test_budget_refuses_before_solving_and_force_runs(tmp_path):
    """A budget below the prediction raises BudgetError (a ValueError), one line with the
    predicted seconds, the h and what would fit; force=True runs the sweep, whose result
    carries the pre-flight through its JSON; an older file without it loads with None."""
    bea.enable_x64()
    p = make_problem("bilinear")
    kw = dict(beta=0.5, rho=0.7, eps=1e-3, h=[0.1, 0.05], T=1.0, fields=["order1"])
    seen = []
    with pytest.raises(BudgetError) as e:
        bea.sweep(p.loss, p.theta0, p.data, time_budget=1e-9, progress=seen.append, **kw)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in msg
    assert "time_budget=1e-09" in msg and "h=0.05" in msg and "use h <=" in msg
    assert "force=True" in msg
    assert len(seen) == 1 and isinstance(seen[0]["preflight"], Preflight)
    res = bea.sweep(p.loss, p.theta0, p.data, time_budget=1e-9, force=True, **kw)
    assert res.preflight["total_seconds"] > res.preflight["time_budget"] == 1e-9
    assert res.preflight["h"] == [0.1, 0.05] and np.isfinite(res.errors["order1"]).all()
    res.save(str(tmp_path))
    back = bea.SweepResult.load(tmp_path)
    assert back.preflight == json.loads(json.dumps(back.preflight))
    assert Preflight.from_dict(back.preflight).summary() == res.preflight["summary"]
    d = json.load(open(tmp_path / "convergence.json"))
    del d["preflight"]
    assert bea.SweepResult.from_dict(d).preflight is None


@pytest.mark.parametrize("value, needle", [(0, "0"), (-1.0, "-1.0"), (math.inf, "inf"),
                                           (math.nan, "nan"), ("300", "'300'"),
                                           (True, "True")])
def test_bad_time_budget_is_one_line(value, needle):
    with pytest.raises(ValueError, match="time_budget") as e:
        bea.SweepConfig(time_budget=value)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_force_is_one_line():
    with pytest.raises(ValueError, match="force must be True or False, got 'yes'"):
        bea.SweepConfig(force="yes")
    assert bea.SweepConfig(time_budget=np.float32(2.5)).time_budget == 2.5


def test_cli_prints_the_check_and_refuses_over_budget(tmp_path, capsys):
    """The CLI prints the pre-flight block before solving; over --time-budget it ends with
    one error line, exit 2, nothing written."""
    from experiments.convergence import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--h", "0.1", "0.05", "--fields", "order1", "--time-budget", "1e-9",
              "--out", str(out), "--no-compile-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and not out.exists()
    assert any(line.startswith("pre-flight (") for line in err)
    assert "error:" in err[-1] and "--force" in err[-1]


def test_factory_eps_placement_sets_the_threshold():
    """optax's Adam divides by sqrt(nu) + eps (eps outside: gradient descent with step h/eps
    below |g_j| ~ eps), optax.rmsprop by sqrt(nu + eps): the share is counted below 3 eps
    and 3 sqrt(eps) respectively, read from the factory's record."""
    import functools

    import optax

    x = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
    data = {"x": x, "y": 0.3 * x[:, 0]}

    def loss(p, b):
        return jnp.mean((jnp.tanh(b["x"] @ p["w"]) - b["y"]) ** 2)

    p0 = {"w": jnp.array([0.1, -0.2, 0.3])}
    adam = bea.preflight(loss, p0, data, optimizer=functools.partial(optax.adam, eps=1e-3),
                         h=[0.01], T=0.1)
    rms = bea.preflight(loss, p0, data, optimizer=functools.partial(optax.rmsprop, eps=1e-3),
                        h=[0.01], T=0.1)
    assert adam.threshold == pytest.approx(3e-3, rel=1e-12)
    assert rms.threshold == pytest.approx(3 * 1e-3**0.5, rel=1e-12)
