"""Stiff intervals (issue 21): the implicit solve where the explicit one runs out of steps, the
diagnosis of a failed solve (out of steps vs a field NaN/inf), progress per block of
intervals, and bad input (bea._integrate, bea._convergence)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bea
from bea import _convergence as conv
from bea import _integrate as sv
from bea._convergence import SolvePolicy
from bea._result import SweepResult
from experiments import convergence as cli

# y1' = -y1, y2' = -1e6 (y2 - y1): the fast component follows the slow one (a stiffness
# h lambda = 1e5 at h = 0.1), as Adam's does in a gradient component below sqrt(eps)
A = jnp.array([[-1.0, 0.0], [1e6, -1e6]])
Y0 = jnp.array([1.0, 1.0])


def _stiff(n, y):
    return A @ y


def test_implicit_finishes_where_the_explicit_solve_runs_out_of_steps():
    """8 steps per interval: adaptive Dopri8 stops at interval 0 for lack of steps (status
    MAX_STEPS, not NONFINITE); Kvaerno5 with 64 finishes every interval, matches the exact
    solution to 1e-9 and its reference estimate covers its error."""
    h, N = 0.1, 3
    t, k = h * np.arange(N + 1), 1e6 / (1e6 - 1)  # y2 = k e^-t + (1 - k) e^(-1e6 t)
    exact = np.stack([np.exp(-t), k * np.exp(-t) + (1 - k) * np.exp(-1e6 * t)], axis=1)
    ys, err, fail = jax.jit(lambda: sv.solve_with_error(
        _stiff, Y0, h, N, method="adaptive", max_steps=8, return_status=True))()
    assert fail.tolist() == [0, sv.MAX_STEPS] and np.all(np.isnan(ys[1:]))
    ys, err, fail = jax.jit(lambda: sv.solve_with_error(
        _stiff, Y0, h, N, method="implicit", max_steps=64, return_status=True))()
    true = float(np.max(np.linalg.norm(np.asarray(ys) - exact, axis=-1)))
    assert fail.tolist() == [-1, sv.OK]
    # the reference estimate (the solve at 100x tighter tolerance) bounds the true error to
    # within its own order: a factor 10 is the one decade the estimate may be off by
    assert true < 1e-9 and true <= 10 * float(err) + 1e-15


def test_a_field_nan_is_not_called_out_of_steps():
    """A field NaN beyond a barrier (y < 0.3, reached at t = 0.7) makes diffrax reject every
    step until its steps run out; the status says NONFINITE at interval 1, where it is."""
    def barrier(n, y):
        return -1.0 + 0.0 * jnp.sqrt(y - 0.3)

    ys, _, fail = jax.jit(lambda: sv.solve_with_error(
        barrier, jnp.array([1.0]), 0.5, 3, method="adaptive", return_status=True))()
    assert fail.tolist() == [1, sv.NONFINITE]
    np.testing.assert_allclose(np.asarray(ys[:2, 0]), [1.0, 0.5], rtol=1e-12)


def _loss(th, batch):
    """Adam at eps = 1e-8 follows theta2 = theta1/2 with |g2| ~ 0.6 sqrt(eps): the issue's
    regime (a gradient component below sqrt(eps)) in two parameters."""
    return 0.5 * (th[0] ** 2 + 4.0 * (th[1] - 0.5 * th[0]) ** 2)


KW = dict(optimizer="adam", h=[0.02, 0.01], T=0.08, fields=["order1"], beta=0.5, rho=0.7,
          eps=1e-8)


def test_out_of_steps_is_diagnosed_and_the_implicit_solve_agrees_with_radau(monkeypatch,
                                                                              tmp_path):
    """The adaptive solve at max_steps=8 fails with a message naming the interval, the step
    count, the gradient components below sqrt(eps) and the effective step (never "not
    differentiable"), recorded in the JSON; the long solve reports progress per block. The
    implicit solve finishes and its errors agree with scipy's Radau (an independent
    implicit method at rtol 1e-13) to 1e-8 relative."""
    from scipy.integrate import solve_ivp

    from bea.fields import make_field
    from bea.optimizer_registry import transformation
    from bea.optimizers import trajectory

    monkeypatch.setattr(conv, "QUIET_S", 0.0)
    records = []
    res = bea.sweep(_loss, jnp.array([1.0, 0.5]), None, solver="adaptive", max_steps=8,
                    progress=records.append, **KW)
    why = res.failure["order1"][0]
    assert why["cause"] == "max_steps" and why["interval"] == 0 and why["max_steps"] == 8
    assert why["small_gradients"] == 1 and why["effective_step"] == pytest.approx(200.0)
    for needle in ("interval n=0", "8 per interval", "1 of the 2 gradient components",
                   "h/sqrt(eps) = 200"):
        assert needle in why["message"]
    table = res.table()
    assert "max steps" in table and "differentiable" not in table
    blocks = [r for r in records if "intervals" in r]
    assert blocks and blocks[0]["solver"] == "adaptive" and blocks[0]["failed"] == 1
    res.save(str(tmp_path))
    back = SweepResult.load(str(tmp_path))
    assert back.failure["order1"] == res.failure["order1"]

    imp = bea.sweep(_loss, jnp.array([1.0, 0.5]), None, solver="implicit", max_steps=1024,
                    **KW)
    assert imp.solver["order1"] == ("implicit",) * 2
    assert imp.tableau["order1"] == ("kvaerno5",) * 2
    assert imp.failure["order1"] == (None, None)
    bea.enable_x64()
    for h, N, err in zip(KW["h"], (4, 8), imp.errors["order1"], strict=True):
        f = make_field("adam", "order1", lambda t: _loss(t, None), h, beta=0.5, rho=0.7,
                       eps=1e-8, batches=None, num_steps=N)
        rhs = jax.jit(f)
        jac = jax.jit(lambda n, y, f=f: jax.jacfwd(lambda z: f(n, z))(y))
        y, path = np.array([1.0, 0.5]), [np.array([1.0, 0.5])]
        for n in range(N):
            sol = solve_ivp(lambda t, y, n=n, rhs=rhs: np.asarray(rhs(n, jnp.asarray(y))),
                            (0, h), y, method="Radau", rtol=1e-13, atol=1e-15,
                            jac=lambda t, y, n=n, jac=jac: np.asarray(jac(n, jnp.asarray(y))))
            y = sol.y[:, -1]
            path.append(y)
        opt = transformation("adam", h, 0.5, 0.7, 1e-8)
        disc = np.asarray(trajectory(opt, _loss, jnp.array([1.0, 0.5]), None, N))
        want = np.max(np.linalg.norm(np.stack(path) - disc, axis=-1))
        assert abs(err - want) <= 1e-8 * want


class _StiffRun:
    """A FieldRun whose adaptive solve runs out of steps at interval 2 and whose implicit
    solve finishes (one combination), counting what the policy asks."""

    kind, N = "order1", 4

    def __init__(self, jvp_ok=True):
        self.calls, self.jvp_ok = [], jvp_ok

    def paths(self, method, tableau, substeps):
        self.calls.append(method)
        ys = np.linspace(1.0, 2.0, self.N + 1)[None, :, None] * np.ones((1, 1, 2))
        if method == "adaptive":
            ys[:, 3:] = np.nan
            return ys, np.array([np.nan]), np.array([[2, sv.MAX_STEPS]])
        if method == "fixed":  # 1 off, and measured so by halving: not good enough
            return ys + float(substeps), np.array([1.0]), np.array([[-1, 0]])
        return ys, np.array([1e-14]), np.array([[-1, 0]])

    def check_start(self):
        raise AssertionError("finite at theta0")

    def check_jvp(self, refuse):
        if refuse and not self.jvp_ok:
            raise ValueError("no JVP")
        return self.jvp_ok

    def diagnose(self, i, interval, code, method, theta):
        return {"cause": "max_steps", "interval": interval, "message": f"stiff at {interval}"}


def test_auto_goes_on_to_the_implicit_solve_only_after_running_out_of_steps():
    disc = np.zeros((1, 5, 2))
    run = _StiffRun()
    p = SolvePolicy("auto").solve(run, disc, [True])[0]
    assert run.calls == ["fixed", "fixed", "fixed", "fixed", "adaptive", "implicit"]
    assert (p.solver, p.tableau, p.failure) == ("implicit", "kvaerno5", None)
    run = _StiffRun(jvp_ok=False)  # not differentiable: auto keeps the adaptive diagnosis
    p = SolvePolicy("auto").solve(run, disc, [True])[0]
    assert run.calls[-1] == "adaptive" and p.failure["message"] == "stiff at 2"
    with pytest.raises(ValueError, match="no JVP"):
        SolvePolicy("implicit").solve(_StiffRun(jvp_ok=False), disc, [True])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_max_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=f"max_steps must be an integer >= 1, got {bad!r}"):
        bea.SweepConfig(max_steps=bad)


def test_max_steps_flag_and_implicit_choice(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--max-steps", "0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "max_steps must be an integer >= 1, got 0" in err
    assert "\n" not in err and not (tmp_path / "x").exists()
    assert cli.parser().parse_args(["--solver", "implicit", "--max-steps", "64"]).max_steps == 64


def test_implicit_refuses_a_field_not_differentiable_at_theta0():
    """Kingma-Ba Adam (eps outside the root) with a gradient component exactly 0: the
    field's Jacobian-vector product at theta0 is NaN, so the implicit solver is refused in
    one line naming it."""
    data = {"x": jnp.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.3]]), "y": jnp.array([1.0, 0, 2])}

    def loss(p, b):
        return jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2) + 0.0 * jnp.sum(p["dead"])

    params = {"w": jnp.array([0.3, -0.2]), "dead": jnp.zeros(3)}
    with pytest.raises(ValueError) as e:
        bea.sweep(loss, params, data, optimizer="adam_eps_outside", h=[0.01], T=0.02,
                  beta=0.5, rho=0.7, eps=1e-3, solver="implicit", fields=["order0"])
    assert "solver 'implicit' needs a differentiable field" in str(e.value)
    assert "\n" not in str(e.value)


def _quad(theta, batch):
    return 0.5 * (theta[0] ** 2 + 1e4 * theta[1] ** 2)


def test_the_diagnosis_follows_where_eps_sits_and_an_update_without_eps():
    """Gradient descent has no eps: its out-of-steps diagnosis is h times the curvature
    (here h lambda = 1e-4 x 1e4 = 1), never an eps, and the pre-flight says so. Adam with
    eps outside the root (g / (sqrt(nu) + eps)) steps by h/eps below |g| ~ eps, not by
    h/sqrt(eps)."""
    th = jnp.array([1.0, 1e-3])
    gd = bea.sweep(_quad, th, None, optimizer="gd", h=[1e-4], T=4e-4, fields=["order1"],
                   solver="adaptive", max_steps=1, force=True)
    why = gd.failure["order1"][0]
    assert why["cause"] == "max_steps" and why["small_gradients"] is None
    assert why["effective_step"] == 1e-4
    assert why["stiffness"] == pytest.approx(1.0, rel=1e-6)
    assert "no eps" in why["message"] and "larger eps" not in why["message"]
    assert "no eps in the update" in gd.preflight["summary"]
    out = bea.sweep(_quad, th, None, optimizer="adam_eps_outside", h=[1e-2], T=4e-2,
                    fields=["order1"], beta=0.5, rho=0.7, eps=1e-2, solver="adaptive",
                    max_steps=1, force=True)
    why = out.failure["order1"][0]
    assert why["effective_step"] == pytest.approx(1e-2 / 1e-2)  # h / eps, not h / sqrt(eps)
    assert "below eps = 0.01" in why["message"] and "h/eps = 1" in why["message"]
