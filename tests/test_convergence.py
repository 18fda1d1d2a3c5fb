"""bea._convergence: the one sweep path (a sweep is a grid of one), its compile count, the
solve-and-measure policy, grids equal to single runs on any device count, and the API on a
user's own model and optimizer."""

import json
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import rel, run_sweep
from jax.scipy.linalg import expm

import bea
from bea import _integrate as sv
from bea import programs
from bea._convergence import SolvePolicy, SweepConfig
from bea.problems import bilinear, make_problem

PROB = bilinear()  # one loss function: one compilation for all the runs below
HS = [0.05, 0.025]
GRID = {"beta": [0.5, 0.7], "rho": [0.7, 0.9]}


# --- the path and its programs -------------------------------------------------------------

@pytest.mark.parametrize("mini,solver", [(False, "adaptive"), (True, "fixed")])
def test_padding_changes_no_error(mini, solver):
    """A run padded to a longer N_max (masked steps, here by sweeping a second, finer h)
    reports the same error at h = 0.05 as the run alone: 1e-12 relative."""
    if mini:
        prob, kw = make_problem("quadratic", seed=0), dict(batch_size=32, rho=0.7, eps=1e-3)
    else:
        prob, kw = PROB, dict(rho=0.7, eps=1e-3)
    kw |= dict(optimizer="adam", T=1.0, fields=["order1"], beta=0.5, solver=solver)
    plain = run_sweep(prob, h=[0.05], **kw)
    padded = run_sweep(prob, h=[0.05, 1 / 37], **kw)
    assert rel(padded.errors["order1"][0], plain.errors["order1"][0]) < 1e-12


def test_sweep_compiles_one_program_per_field():
    """A 4-point ladder compiles one discrete program and one per field, not one per h, and
    a second sweep of the same problem compiles nothing."""
    d0, o0 = programs.discrete._cache_size(), programs.ode._cache_size()
    hs = [1 / 16, 1 / 24, 1 / 32, 1 / 40]  # T = 0.75: N = 12, 18, 24, 30 (a fresh N_max)
    kw = dict(optimizer="adam", h=hs, T=0.75, fields=("order0", "order1"), beta=0.5,
              rho=0.7, eps=1e-3, solver="fixed")
    res = run_sweep(PROB, **kw)
    assert programs.discrete._cache_size() - d0 == 1
    assert programs.ode._cache_size() - o0 == 2  # the halving reference is the same program
    assert res.solver["order1"] == ("fixed",) * 4
    # the coarsest h checks the embedded bound by halving; the others then use the bound
    assert res.estimate["order1"] == ("halving",) + ("embedded",) * 3
    assert res.tableau["order1"] == ("dopri5",) * 4
    run_sweep(PROB, **kw)
    assert programs.discrete._cache_size() - d0 == 1 and programs.ode._cache_size() - o0 == 2


def test_fixed_step_solve_is_measured_safe():
    """One step per interval: its measured error is >= 100x below the error, and the errors
    agree with the adaptive solve to within the solver errors."""
    kw = dict(optimizer="adam", h=[1e-3, 5e-4], T=0.2, fields=("order1",), beta=0.9,
              rho=0.999, eps=1e-3)
    fx, ad, au = (run_sweep(PROB, solver=s, **kw) for s in ("fixed", "adaptive", "auto"))
    e, s = fx.errors["order1"], fx.solver_error["order1"]
    assert np.all(100 * s <= e)
    tol = fx.solver_error["order1"] + ad.solver_error["order1"]
    assert np.all(np.abs(e - ad.errors["order1"]) <= 2 * tol + 1e-15)
    np.testing.assert_array_equal(au.errors["order1"], fx.errors["order1"])


def _linear(lam):
    A = jnp.array([[lam, 1.0], [-1.0, lam]])
    return lambda n, y: A @ y, A


class _LinearRun:
    """A bea._convergence.FieldRun of d y/dt = A y (one combination), counting its solves."""

    def __init__(self, lam, h=0.05, N=80, kind="order1"):
        self.f, self.A = _linear(lam)
        self.kind, self.N, self.h, self.y0 = kind, N, h, jnp.array([1.0, 0.5])
        self.calls = []

    def paths(self, method, tableau, substeps):
        self.calls.append((method, tableau, int(substeps)))
        if method == "adaptive":
            ys, e = sv.solve_with_error(self.f, self.y0, self.h, self.N)
        else:
            ys, e = sv.solve_fixed(self.f, self.y0, self.h, self.N, substeps=substeps,
                                   solver=sv.TABLEAUS[tableau](), return_error=True)
        return np.array(ys)[None], np.array(e)[None]

    def check_start(self):
        raise AssertionError("the linear flow is finite")

    def disc(self):
        """A stand-in discrete path far from the flow."""
        exact = np.stack([np.asarray(expm(self.A * self.h * n) @ self.y0)
                          for n in range(self.N + 1)])
        return (1.1 * exact + 1.0)[None]


def _measured(policy, lam, kind="order1"):
    run = _LinearRun(lam, kind=kind)
    return policy.solve(run, run.disc(), [True])[0], run.calls


def test_embedded_bound_is_checked_and_expansion_caught():
    """The embedded bound does not propagate errors: on a flow that expands them (lambda =
    6 over T = 4, a factor e^24) Dopri5's under-estimates the error, the check by halving
    says so, and the halving measurement is what gets reported. On the contracting flow
    the bound passes its check and is then trusted by the same policy (one solve, no
    halving); a failed one is never used. The trust is the policy's, per field."""
    policy = SolvePolicy("auto")
    ok, calls = _measured(policy, 0.0)
    assert policy.trust("order1") == [{"dopri5": True}] and ok.estimate == "halving"
    assert calls == [("fixed", "dopri5", 1), ("fixed", "dopri5", 2)]
    trusted, calls = _measured(policy, 0.0)
    assert trusted.estimate == "embedded" and calls == [("fixed", "dopri5", 1)]
    assert trusted.error == ok.error and trusted.solver_error >= ok.solver_error  # the bound
    policy.trust("order1")[0]["dopri5"] = False  # a copy: the policy's state is its own
    assert policy.trust("order1") == [{"dopri5": True}]

    bad, _ = _measured(policy, 6.0, kind="order0")
    assert policy.trust("order0") == [{"dopri5": False}]
    assert bad.tableau == "dopri5" and bad.estimate == "halving"
    f, _ = _linear(6.0)
    bound = sv.solve_fixed(f, jnp.array([1.0, 0.5]), 0.05, 80, solver=sv.TABLEAUS["dopri5"](),
                           return_error=True)[1]
    assert bad.solver_error > float(bound)  # what the bound alone would have hidden
    distrusted, calls = _measured(policy, 0.0, kind="order0")  # failed before: measure
    assert distrusted.estimate == "halving" and ("fixed", "dopri5", 2) in calls
    assert policy.trust("order0") == [{"dopri5": False}]  # the first check stands


def test_solve_policy_attempts_in_order():
    """'fixed' tries Dopri5 then Dopri8; 'adaptive' one refined adaptive solve; the policy
    refuses an unknown solver by name. A diverged combination gets the NaN point."""
    assert SolvePolicy("fixed").attempts == (("fixed", "dopri5"), ("fixed", "dopri8"))
    assert SolvePolicy("auto").attempts[-2:] == (("adaptive", None), ("implicit", "kvaerno5"))
    assert SolvePolicy("implicit").attempts == (("implicit", "kvaerno5"),)
    p, calls = _measured(SolvePolicy("adaptive"), 0.0)
    assert calls == [("adaptive", None, 1)] and p.estimate == "refined"
    assert (p.solver, p.tableau) == ("adaptive", None) and not p.floor
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        SolvePolicy("rk4")
    run = _LinearRun(0.0)
    dead = SolvePolicy("auto").solve(run, run.disc(), [False])[0]
    assert np.isnan(dead.error) and dead.solver is None and run.calls == []


def test_minibatch_window_changes_no_reported_digit(monkeypatch):
    """The sweep uses Theorem 3.6's round-off window (bea.fields._window) and reports the
    same errors as without it, to 1e-12."""
    from bea.fields import _window
    from bea.fields import adam_fields as adam

    prob = make_problem("quadratic", seed=0)
    kw = dict(optimizer="adam", T=1.5, fields=["order1"], batch_size=8, solver="fixed",
              beta=0.5, rho=0.5, eps=1e-3)
    used = []

    def spy(*a, **k):
        used.append(_window.window_length(*a, **k))
        return used[-1]

    monkeypatch.setattr(adam, "window_length", spy)
    windowed = run_sweep(prob, h=[0.01], **kw)
    assert used and used[-1] == _window.window_length(0.5, 0.5, 150)
    monkeypatch.setattr(adam, "window_length", lambda *a, **k: None)
    full = run_sweep(prob, h=[0.01, 1.5 / 151], **kw)  # a new N_max: a fresh trace
    assert rel(windowed.errors["order1"][0], full.errors["order1"][0]) < 1e-12


def test_grouped_history_sweep_reports_the_direct_errors():
    """batching='epoch' with the history grouped by distinct batch (docs/math.md, section
    7) reports the errors of the direct history to 1e-9 relative (the fields agree to
    ~1e-14; what the errors share is the solver), for Adam (the whole history) and RMSProp
    (rho = 0.1: the round-off window 2W = 38 < N = 50 applies); auto picks grouped here
    (B = 8 distinct batches < N = 50), and the result records the schedule."""
    from bea.fields._window import window_length

    assert window_length(0.9, 0.99, 50) is None and window_length(0.0, 0.1, 50) == 38
    prob = make_problem("quadratic", seed=0)  # 256 examples: 8 batches of 32, none left out
    for opt, kw in (("adam", dict(beta=0.9, rho=0.99)), ("rmsprop", dict(rho=0.1))):
        res = {hist: run_sweep(prob, optimizer=opt, h=[0.02, 0.01], T=0.5, eps=1e-3,
                               batch_size=32, batching="epoch", history=hist, solver="fixed",
                               **kw)
               for hist in ("direct", "grouped", "auto")}
        for k in ("order0", "order1"):
            assert rel(res["grouped"].errors[k], res["direct"].errors[k]) < 1e-9
        assert res["auto"].schedule.histories == {"order0": "grouped", "order1": "grouped"}
        assert res["direct"].schedule.histories["order1"] == "direct"
        assert res["grouped"].schedule.distinct_batches == 8
        assert res["grouped"].schedule.left_out == 0
        assert (res["grouped"].schedule.batching, res["grouped"].schedule.batch_size) == (
            "epoch", 32)
    odd = run_sweep(prob, optimizer="adam", h=[0.1], T=0.2, batch_size=24, batching="epoch",
                    beta=0.5, rho=0.7, eps=1e-3)
    assert odd.schedule.left_out == 256 - 10 * 24  # whole batches only, the rest counted
    for kw, needle in ((dict(history="grouped"), "needs the epoch schedule"),
                       (dict(batching="cyclic"), "unknown batching 'cyclic'"),
                       (dict(optimizer="gd", batching="epoch", history="grouped"), "'gd'"),
                       (dict(batching="epoch", batch_size=None), "give a batch size")):
        with pytest.raises(ValueError, match=needle):
            SweepConfig(**(dict(h=[0.1], T=1.0, batch_size=32) | kw))


# --- grids ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grid_result():
    return bea.grid(PROB.loss, PROB.theta0, PROB.data, over=GRID, optimizer="adam", h=HS,
                    T=1.0, fields=("order0", "order1"), eps=1e-3)


def test_grid_equals_single_runs(grid_result):
    assert len(grid_result.results) == 4 and grid_result.names == ("beta", "rho")
    for c, r in zip(grid_result.params, grid_result.results, strict=True):
        s = run_sweep(PROB, optimizer="adam", h=HS, T=1.0, fields=("order0", "order1"), **c)
        assert r.config["beta"] == c["beta"] and r.config["rho"] == c["rho"]
        for k in ("order0", "order1"):
            np.testing.assert_allclose(r.errors[k], s.errors[k], rtol=1e-12, atol=0)
            assert r.slopes[k] == pytest.approx(s.slopes[k], rel=1e-10)


SCRIPT = """
import json, bea, jax
from bea.problems import bilinear, make_problem
bea.enable_x64()
p = bilinear()
g = bea.grid(p.loss, p.theta0, p.data, over={grid}, optimizer="adam", h={hs}, T=1.0,
             fields=("order0", "order1"), eps=1e-3)
q = make_problem("quadratic", seed=0)
m = bea.grid(q.loss, q.theta0, q.data, over={{"beta": [0.5, 0.6]}}, optimizer="adam",
             h=[0.25], T=1.0, fields=("order1",), rho=0.7, eps=1e-3, batch_size=8,
             shard_history=True)
print(json.dumps({{"devices": len(jax.devices()),
                  "errors": [{{k: list(v) for k, v in r.errors.items()}} for r in g.results],
                  "mini": list(m.results[0].errors["order1"])}}))
"""


def test_four_devices_equal_one(grid_result):
    """XLA_FLAGS=--xla_force_host_platform_device_count=4 in a subprocess: the grid is
    sharded over 4 devices (4 combinations, one per device), the mini-batch history too, and
    the errors are those of one device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    code = SCRIPT.format(hs=HS, grid=GRID)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 4
    for r, e in zip(grid_result.results, got["errors"], strict=True):
        for k in ("order0", "order1"):
            np.testing.assert_allclose(e[k], r.errors[k], rtol=1e-12, atol=0)
    q = make_problem("quadratic", seed=0)
    one = run_sweep(q, optimizer="adam", h=[0.25], T=1.0, fields=("order1",), beta=0.5,
                    rho=0.7, eps=1e-3, batch_size=8)
    np.testing.assert_allclose(got["mini"], one.errors["order1"], rtol=1e-12, atol=0)


def test_grid_refuses_bad_grids():
    for grid, match in (({}, "empty grid"), ({"gamma": [1]}, "cannot grid over 'gamma'"),
                        ({"beta": []}, "no values for 'beta'"),
                        ({"beta": [0.5, 0.5]}, "given twice"), ({"rho": [0.7, 1.0]}, "rho")):
        with pytest.raises(ValueError, match=match):
            bea.grid(PROB.loss, PROB.theta0, PROB.data, over=grid, h=HS, T=1.0)
    with pytest.raises(ValueError, match="optimizer factory"):
        bea.grid(PROB.loss, PROB.theta0, PROB.data, over={"beta": [0.5]}, h=HS, T=1.0,
                 optimizer=lambda lr: optax.sgd(lr))
    # issue 23: a scalar for a list raised TypeError; a grid that is not a mapping, a value
    # that is not a number and an unknown option are named in one line too
    for kw, match in ((dict(over={"beta": 0.5}), "'beta' must be a list of values, got 0.5"),
                      (dict(over={"rho": np.float32(0.7)}), "'rho' must be a list"),
                      (dict(over="beta"), "over must map"),
                      (dict(over={"eps": ["a"]}), "eps must be a real number, got 'a'"),
                      (dict(over={"beta": [0.5]}, betas=0.5), "unknown option 'betas'"),
                      (dict(over={"beta": [0.5]}, shard_history="yes"), "shard_history")):
        with pytest.raises(ValueError, match=match) as e:
            bea.grid(PROB.loss, PROB.theta0, PROB.data, **(dict(h=HS, T=1.0) | kw))
        assert "\n" not in str(e.value)


def test_grid_values_may_be_numpy():
    """float32 values are read as the decimals they show, so member names stay 0.5, 0.7."""
    from bea._convergence import _check_grid

    got = _check_grid({"rho": np.array([0.9, 0.7], np.float32), "beta": [np.float64(0.5)]})
    assert got == {"beta": [0.5], "rho": [0.9, 0.7]} and list(got) == ["beta", "rho"]
    assert all(type(v) is float for v in got["rho"])


# --- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize("kw, needle", [
    (dict(h=[]), "empty list"), (dict(h=[0.01, 0.01]), "h=0.01 is given twice"),
    (dict(h=[-0.1]), "-0.1"), (dict(h=[float("nan")]), "nan"), (dict(T=0.0), "T must"),
    (dict(T=1.0, h=[0.03]), "T/h"), (dict(beta=1.0), "beta"), (dict(rho=0.0), "rho"),
    (dict(eps=-1e-3), "-0.001"), (dict(fields=["order3"]), "order3"),
    (dict(fields=[]), "empty list of fields"), (dict(optimizer="sgdx"), "sgdx"),
    (dict(optimizer="lion"), "refused"), (dict(optimizer="gd", fields=["order1_typo"]),
                                          "order1_typo"),
    (dict(optimizer="adamw", engine="closed"), "no closed-form"),
    (dict(fields=["limit"], batch_size=4), "limit"), (dict(batch_size=0), "batch size"),
    (dict(solver="rk4"), "rk4"), (dict(rtol=float("nan")), "rtol"), (dict(atol=-1.0), "atol"),
    (dict(optimizer=lambda lr: optax.sgd(lr), beta=0.5), "beta=0.5"),
    (dict(T="1"), "T must be a real number, got '1'"), (dict(h="0.1"), "got '0.1'"),
    (dict(h=None), "h must be a step size or a list"), (dict(seed=1.5), "seed must be an"),
    (dict(batch_size=np.float64(4.0)), "got np.float64(4.0)"),
    (dict(batch_size=True), "got True"), (dict(beta=np.array([0.5])), "beta must be a real"),
])
def test_config_names_the_offending_value(kw, needle):
    with pytest.raises(ValueError) as e:
        SweepConfig(**({"T": 1.0} | kw))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_numpy_scalars_are_numbers():
    """Issue 23: T=np.float32(0.2) was refused as 'must be positive and finite'. Numpy
    scalars and 0-d arrays are accepted wherever Python numbers are, float32 ones read as
    the decimal they show (np.float32(0.2) -> 0.2, so T/h stays an integer)."""
    c = SweepConfig(h=np.array([0.02, 0.01, 0.04], np.float32), T=np.float32(0.2),
                    beta=np.float32(0.9), rho=np.array(0.999), eps=np.float64(1e-8),
                    batch_size=np.int64(4), seed=np.int32(3), rtol=np.float32(1e-12),
                    atol=jnp.asarray(1e-14))
    assert c.h == (0.04, 0.02, 0.01) and c.T == 0.2 and c.N == (5, 10, 20)
    assert (c.beta, c.rho, c.eps, c.rtol, c.atol) == (0.9, 0.999, 1e-8, 1e-12, 1e-14)
    assert c.batch_size == 4 and c.seed == 3
    assert all(type(v) is float for v in (*c.h, c.T, c.beta, c.rho, c.eps, c.rtol, c.atol))
    assert type(c.batch_size) is int and type(c.seed) is int
    assert SweepConfig(h=np.float32(0.1), T=np.int64(1)).h == (0.1,)
    json.dumps(c.to_dict())  # plain Python numbers: the result JSON writes them


def test_config_round_trips_through_its_dict():
    """SweepConfig.from_dict(to_dict()) is the config, through JSON too, and a result's
    config (hyperparameters of its combination included) gives the config it ran."""
    c = SweepConfig(optimizer="rmsprop", h=[0.01, 0.02], T=0.2, rho=0.7, eps=1e-3,
                    batch_size=8, batching="epoch", fields=["order1"], solver="fixed")
    assert SweepConfig.from_dict(c.to_dict()) == c
    assert SweepConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert SweepConfig.from_dict(c.to_dict() | {"extra": 1}, rho=0.9).rho == 0.9
    f = SweepConfig(optimizer=lambda lr: optax.sgd(lr), optimizer_name="sgd0", T=1.0)
    assert f.to_dict()["optimizer"] == "sgd0" and "optimizer_name" not in f.to_dict()
    back = SweepConfig.from_dict(f.to_dict(), optimizer=f.optimizer)
    assert back == f and back.optimizer_name == "sgd0"
    for kw, needle in ((dict(optimizer="adam", optimizer_name="x"), "has its name"),
                       (dict(optimizer=optax.sgd, optimizer_name=""), "non-empty string")):
        with pytest.raises(ValueError, match=needle):
            SweepConfig(T=1.0, **kw)


def test_optimizer_factories_are_recorded_never_as_lambda():
    """A result swept with a factory records what the factory tells: a functools.partial
    its keywords and name, optax.inject_hyperparams its state's hyperparameters, a named
    function its name, the transformations its state shows; a lambda is named by
    optimizer_name, or recorded as 'unnamed factory' with a warning saying what to pass."""
    import functools

    kw = dict(h=[0.01], T=0.08, fields=["order0"])
    part = bea.sweep(PROB.loss, PROB.theta0, PROB.data, **kw,
                     optimizer=functools.partial(optax.adam, b1=0.5, b2=0.7, eps=1e-3))
    assert part.config["optimizer"] == "adam"
    assert part.config["factory"] == {"hyperparameters": {"b1": 0.5, "b2": 0.7, "eps": 1e-3},
                                      "transforms": ["scale_by_adam"]}
    assert "b1=0.5, b2=0.7, eps=0.001, T=0.08" in part.title()
    injected = bea.sweep(
        PROB.loss, PROB.theta0, PROB.data, **kw, optimizer_name="adam, injected",
        optimizer=lambda lr: optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.5,
                                                                  b2=0.7, eps=1e-3))
    told = injected.config["factory"]["hyperparameters"]
    assert injected.config["optimizer"] == "adam, injected"
    assert (told["b1"], told["b2"], told["eps"]) == (0.5, 0.7, 1e-3)
    assert "learning_rate" not in told
    np.testing.assert_array_equal(injected.errors["order0"], part.errors["order0"])

    def heavy(lr):
        return optax.sgd(lr, momentum=0.5)

    named = bea.sweep(PROB.loss, PROB.theta0, PROB.data, **kw, optimizer=heavy)
    assert named.config["optimizer"] == "heavy"
    assert named.config["factory"] == {"hyperparameters": None, "transforms": ["trace"]}
    with pytest.warns(UserWarning, match="pass optimizer_name="):
        anon = bea.sweep(PROB.loss, PROB.theta0, PROB.data, **kw,
                         optimizer=lambda lr: optax.sgd(lr, momentum=0.5))
    assert anon.config["optimizer"] == "unnamed factory"
    assert "<lambda>" not in json.dumps(anon.config)


def test_config_is_normalised():
    c = SweepConfig(h=[0.01, 0.04, 0.02], T=1.0, fields="order1")
    assert c.h == (0.04, 0.02, 0.01) and c.N == (25, 50, 100) and c.fields == ("order1",)
    assert c.engine == "closed" and (c.beta, c.rho, c.eps) == (0.9, 0.999, 1e-8)
    assert SweepConfig(optimizer="adamw").engine == "generic"


# --- any model, any optimizer --------------------------------------------------------------

def _equinox_problem():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    data = {"x": 2 * X[:64] / 16 - 1, "y": y[:64]}
    model = eqx.nn.MLP(64, 10, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)

    def loss(params, batch):
        logits = jax.vmap(eqx.combine(params, static))(batch["x"])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))

    return loss, params, data


def test_any_equinox_model_and_optax_chain():
    """The README's example: an equinox MLP and an optax.chain factory through the generic
    engine. The first-order field beats the zeroth-order one at every h and gets closer
    faster (the measured orders of such models are in tests/test_orders.py)."""
    loss, params, data = _equinox_problem()

    def opt(lr):
        return optax.chain(optax.scale_by_adam(b1=0.5, b2=0.7, eps=0.1),
                           optax.add_decayed_weights(0.1), optax.scale_by_learning_rate(lr))

    r = bea.sweep(loss, params, data, optimizer=opt, h=[0.02, 0.01], T=0.1, batch_size=16)
    assert r.config["engine"] == "generic" and r.problem == "custom"
    e0, e1 = r.errors["order0"], r.errors["order1"]
    assert np.all(e1 < e0 / 2) and r.local_slopes["order1"][0] > r.local_slopes["order0"][0]
    assert not any(r.floor["order1"])


def test_flat_and_pytree_parameters_give_the_same_sweep():
    """The same loss written on a flat vector (bea.problems.mlp) and on its parameter dict
    (flattened by bea with ravel_pytree) measures the same errors, to round-off."""
    p = make_problem("mlp", seed=0)._replace(data=None)
    full = make_problem("mlp", seed=0)
    params = p.unravel(p.theta0)
    assert isinstance(params, dict) and set(params) == {"W1", "b1", "W2", "b2"}
    from bea.problems import _mlp_loss

    kw = dict(optimizer="rmsprop", h=[0.01], T=0.05, rho=0.7, eps=1e-3, batch_size=32)
    a = bea.sweep(full.loss, full.theta0, full.data, **kw)
    b = bea.sweep(_mlp_loss, params, full.data, **kw)
    for k in ("order0", "order1"):
        np.testing.assert_allclose(b.errors[k], a.errors[k], rtol=1e-13)


def test_bad_user_input_is_one_clear_line():
    loss, params, data = _equinox_problem()
    c = jnp.ones(3, jnp.float32)
    with jax.enable_x64(False):
        c = jnp.ones(3)  # float32: created with float64 off
    checks = [
        (dict(loss=lambda p, b: jnp.sum(p * c) ** 2, params0=jnp.ones(3), data=None),
         "closes over float32"),
        (dict(loss=lambda p, b: p, params0=jnp.ones(3), data=None), "scalar"),
        (dict(loss=loss, params0=params, data={"x": data["x"], "y": data["y"][:10]}),
         "disagree on the number of examples"),
        (dict(loss=loss, params0=params, data=data, batch_size=65), "exceeds the 64"),
        (dict(loss=loss, params0={"w": jnp.arange(3)}, data=data), "float arrays"),
        (dict(loss=loss, params0=params, data=data, optimizer=lambda lr: optax.adam(lr**2)),
         "not linear in the learning rate"),
        (dict(loss=loss, params0=params, data=data, optimizer=lambda lr: 3),
         "GradientTransformation"),
    ]
    for kw, needle in checks:
        kw = {"optimizer": "gd", "h": [0.01], "T": 0.01} | kw
        with pytest.raises(ValueError) as e:
            bea.sweep(kw.pop("loss"), kw.pop("params0"), kw.pop("data"), **kw)
        assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_field_nan_at_theta0_is_named_with_its_cause():
    """Kingma-Ba Adam (eps outside the root) on a loss with a parameter whose gradient is
    exactly 0: g/(sqrt(nu) + eps) is not differentiable there, the order-1 field is NaN at
    theta0, and the sweep says so (with the count) instead of reporting a divergence."""
    data = {"x": jnp.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.3]]), "y": jnp.array([1.0, 0, 2])}

    def loss(p, b):
        return jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2) + 0.0 * jnp.sum(p["dead"])

    params = {"w": jnp.array([0.3, -0.2]), "dead": jnp.zeros(3)}
    with pytest.raises(ValueError, match="3 of the 5 gradient components are exactly 0"):
        bea.sweep(loss, params, data, optimizer="adam_eps_outside", h=[0.01], T=0.02,
                  beta=0.5, rho=0.7, eps=1e-3)
    r = bea.sweep(loss, params, data, optimizer="adam", h=[0.01], T=0.02, beta=0.5, rho=0.7,
                  eps=1e-3)  # eps inside the root: smooth, finite
    assert np.all(np.isfinite(r.errors["order1"]))


def test_sweep_leaves_the_float_setting_alone():
    """bea.sweep computes in float64 inside a context and restores the caller's setting."""
    code = ("import jax, bea\nfrom bea.problems import bilinear\np = bilinear()\n"
            "r = bea.sweep(p.loss, p.theta0, p.data, optimizer='gd', h=[0.01], T=0.02)\n"
            "print(jax.config.jax_enable_x64, r.errors['order1'].dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.stdout.split() == ["False", "float64"]


# --- issue 23: successes that were wrong or misleading --------------------------------------

def test_too_few_steps_are_flagged_and_not_fitted():
    """--h 0.1 0.05 0.025 --T 0.1 fitted N = 1, 2, 4 (local slopes -19, fitted -9.9, no
    flag). Points with N < 8 (bea._measure.MIN_STEPS) are flagged '<' and left out of the
    fit: here the fit is the local slope of the two points with N >= 8."""
    r = run_sweep(PROB, optimizer="gd", h=[0.01, 0.005, 0.0025], T=0.04, fields=["order1"])
    assert list(r.N) == [4, 8, 16]
    np.testing.assert_array_equal(r.few_steps["order1"], [True, False, False])
    assert r.slopes["order1"] == pytest.approx(r.local_slopes["order1"][-1], rel=1e-12)
    t = r.table()
    assert "< fewer than 8 steps" in t and "<" in t.splitlines()[1]


def test_exact_zero_errors_are_at_round_off():
    """A loss with zero gradient: the paths never move and agree exactly; the errors of 0
    were marked '!' (as large as the motion); they are at round-off ('*')."""
    r = bea.sweep(lambda p, b: 0.0 * jnp.sum(p**2), jnp.ones(2), None, optimizer="gd",
                  h=[0.02, 0.01], T=0.16)
    for k in r.fields:
        assert np.all(r.errors[k] == 0) and r.floor[k].all() and not r.outside[k].any()
    t = r.table()
    assert "* at the solver/round-off floor" in t and "! as large" not in t


def test_a_loss_not_finite_at_theta0_is_refused():
    """Only the gradient drives the runs, so a loss that is NaN everywhere gave clean
    errors; the loss and its gradient are checked at theta0 before anything is solved."""
    for loss, needle in ((lambda p, b: jnp.sum(p**2) + jnp.nan, "the loss is nan at theta0"),
                         (lambda p, b: jnp.sum(jnp.sqrt(jnp.abs(p))),
                          "NaN/inf at theta0 in 1 of its 3 components")):
        with pytest.raises(ValueError, match=needle) as e:
            bea.sweep(loss, jnp.array([1.0, 0.0, 2.0]), None, optimizer="gd", h=[0.01],
                      T=0.08)
        assert "\n" not in str(e.value)
    q = make_problem("quadratic", seed=0)
    with pytest.raises(ValueError, match="on the first batch"):
        bea.sweep(lambda p, b: q.loss(p, b) * jnp.inf, q.theta0, q.data, optimizer="gd",
                  h=[0.01], T=0.08, batch_size=8)


@pytest.mark.parametrize("factory, needle", [
    (lambda lr: optax.lion(lr), "takes sign"),
    (lambda lr: optax.adafactor(lr), "switch of a max"),
    (lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr)),
     "clipping is active"),
    (lambda lr: optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, 5, 100)),
     "traced learning rate"),
])
def test_non_smooth_factories_are_refused_before_solving(factory, needle):
    """Refused by name on the command line, these ran through the API (lion 124 s to NaN,
    adafactor 253 s to a NaN order1, clipping to ordinary-looking slopes, a schedule in lr
    to a raw TracerBoolConversionError); now one line, before anything is compiled."""
    d0 = programs.discrete._cache_size()
    with pytest.raises(ValueError, match=needle) as e:
        bea.sweep(PROB.loss, PROB.theta0, PROB.data, optimizer=factory, h=[0.01], T=0.08)
    assert "\n" not in str(e.value) and programs.discrete._cache_size() == d0
