"""The modified flows beside full-batch Adam on a training network (Section 6's mechanism).

For a training configuration (:class:`bea.nn.train.TrainConfig`: model, data, h, beta, rho,
eps) and an initialisation seed, from the same theta(0) (``bea.nn.train.problem``: the flat
float64 training loss E):

* ``adam``: the discrete full-batch run theta^(n) of the configuration's optimizer (``adam``,
  Definition 3.1, or ``rmsprop``) in float64, at the same h, beta, rho, eps;
* ``order0``, ``order1``: the piecewise flows theta~(t) of the zeroth- and first-order
  full-batch modified fields (Remark 3.7 for Adam, Remark 3.4 for RMSProp, with the
  finite-n coefficients c_a(n) of ``bea.fields.full_batch``), restarted at every t = nh;
* ``order2`` (on request): the second-order field of the generic engine
  (``bea.fields.generic.modified_field(..., order=2)``; its cost grows like n per
  evaluation).

Every interval [nh, (n+1)h] is integrated in float64 with ``substeps`` fixed steps of an
explicit diffrax tableau, the sweeps' fixed-step scheme (``bea._integrate.solve_fixed``, unrolled:
:func:`_intervals` says why); the solver
error is reported per flow: ``embedded``, the sum of the steps' embedded error estimates
plus round-off (free), or ``halving``, the largest difference from a twin integration with
twice the substeps (a measurement of the global solver error; doubles the cost).

At n = 0, every, 2 every, ... each trajectory is read: training loss E, the perturbed
one-norm ||grad E||_{1,eps} (``bea.perturbed_one_norm``), its excess over P sqrt(eps)
(``bea.perturbed_one_norm_excess``, cancellation-free; at eps = 1e-3 and small gradients
||g||_{1,eps} ~ P sqrt(eps) + ||g||_2^2 / (2 sqrt(eps)): a
two-norm penalty), the test accuracy, and, for the flows, the distance to Adam
||theta~(nh) - theta^(n)||_2 and that distance relative to Adam's own displacement,
||theta~(nh) - theta^(n)|| / ||theta^(n) - theta^(0)||. The largest distance over every
n (not only the read ones) is kept per flow (``max_distance``): the global error whose
slope in h measures the order.

The run advances in jitted blocks of ``every`` steps (one ``lax.scan`` of Adam steps, one
``solve_fixed`` per flow): :func:`start` gives the state at n = 0, :func:`advance` one
block, :func:`record` the typed result (:class:`FlowRecord`, to / from JSON). The state is
a plain pytree of arrays (:func:`state_to_bytes` / :func:`state_from_bytes`), so a run can
be saved after any block and continued to the same numbers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from bea import optimizer_registry as registry
from bea._norms import perturbed_one_norm, perturbed_one_norm_excess
from bea.fields import make_field
from bea.fields.generic import modified_field
from bea.models import SMOOTH_MODELS
from bea.nn._exact import batch_sums
from bea.nn.readout import read_out
from bea.nn.train import TrainConfig, init_model, load_data, problem, validate

__all__ = ["FLOWS", "OPTIMIZERS", "TABLEAUS", "ERRORS", "METRICS", "FlowError", "FlowSpec",
           "FlowRecord", "Engine", "check", "build", "start", "advance", "record",
           "state_to_bytes", "state_from_bytes", "run", "readouts", "steps_within"]

FLOWS = ("order0", "order1", "order2")
"""The flows that may be asked for (the discrete run ``adam`` is always there)."""
OPTIMIZERS = ("adam", "rmsprop")
"""The optimizers with full-batch closed-form fields (Remarks 3.7 and 3.4)."""
TABLEAUS = {"heun": diffrax.Heun, "bosh3": diffrax.Bosh3, "dopri5": diffrax.Dopri5,
            "dopri8": diffrax.Dopri8}
"""Explicit tableaus with an embedded error estimate (orders 2, 3, 5, 8), cheapest first."""
ERRORS = ("embedded", "halving")
METRICS = ("train_loss", "perturbed_one_norm", "norm_excess", "test_accuracy")
"""Read along every trajectory; the flows add ``distance`` and ``rel_distance``."""


class FlowError(ValueError):
    """Invalid flow settings; the message names the offending value."""


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """What to integrate beside the run ``TrainConfig`` describes (whose ``max_steps`` is
    the length of the Adam run and whose ``seed`` is the initialisation).

    ``flow_steps``: the flows' horizon in steps (default: the whole run); ``every``: steps
    per block and between read-outs (it divides both horizons); ``flows``: of
    :data:`FLOWS`; ``tableau`` (of :data:`TABLEAUS`) and ``substeps`` per interval;
    ``error``: of :data:`ERRORS`; ``allow_nonsmooth``: integrate on a model outside
    ``bea.models.SMOOTH_MODELS`` (ReLU / max-pool: the theory's assumption (3) fails)."""

    flows: tuple[str, ...] = ("order0", "order1")
    flow_steps: int | None = None
    every: int = 10
    tableau: str = "dopri5"
    substeps: int = 1
    error: str = "embedded"
    allow_nonsmooth: bool = False


def check(cfg: TrainConfig, spec: FlowSpec) -> None:
    """Raise FlowError (one line naming the value) for settings that cannot run: an invalid
    training configuration (``bea.nn.train.validate``), an optimizer without full-batch
    closed forms, a non-smooth model without ``allow_nonsmooth``, unknown or repeated
    flows, a flow horizon beyond the run, ``every`` not dividing the horizons, an unknown
    tableau or error estimate, ``substeps`` < 1."""
    try:
        validate(cfg)
    except ValueError as e:
        raise FlowError(str(e)) from None
    if cfg.optimizer not in OPTIMIZERS:
        raise FlowError(f"flows need an optimizer with full-batch closed forms "
                        f"({', '.join(OPTIMIZERS)}), got {cfg.optimizer!r}")
    if cfg.sweep is not None or cfg.seeds != 1:
        raise FlowError("one flow run is one configuration and one seed: the sweep and the "
                        "seeds are listed by the caller")
    unknown = [f for f in spec.flows if f not in FLOWS]
    if unknown:
        raise FlowError(f"unknown flow {unknown[0]!r}; choose from {', '.join(FLOWS)}")
    if not spec.flows:
        raise FlowError("no flow asked for; choose from " + ", ".join(FLOWS))
    if len(set(spec.flows)) != len(spec.flows):
        raise FlowError(f"flows repeat: {','.join(spec.flows)}")
    if cfg.model not in SMOOTH_MODELS and not spec.allow_nonsmooth:
        raise FlowError(f"model {cfg.model!r} is not smooth (ReLU / max-pool; the modified "
                        f"equations assume a smooth loss): use one of "
                        f"{', '.join(SMOOTH_MODELS)}, or opt in with --allow-nonsmooth")
    n = horizon(cfg, spec)
    if not 1 <= n <= cfg.max_steps:
        raise FlowError(f"flow horizon {n} steps must lie in [1, {cfg.max_steps}] (the run's "
                        "--max-steps)")
    if spec.every < 1 or cfg.max_steps % spec.every or n % spec.every:
        raise FlowError(f"every {spec.every} must be >= 1 and divide the run's {cfg.max_steps} "
                        f"steps and the flows' {n}")
    if spec.tableau not in TABLEAUS:
        raise FlowError(f"unknown tableau {spec.tableau!r}; choose from {', '.join(TABLEAUS)}")
    if spec.error not in ERRORS:
        raise FlowError(f"unknown error estimate {spec.error!r}; choose from "
                        f"{', '.join(ERRORS)}")
    if spec.substeps < 1:
        raise FlowError(f"substeps must be >= 1, got {spec.substeps}")


def horizon(cfg: TrainConfig, spec: FlowSpec) -> int:
    """The flows' horizon in steps: ``spec.flow_steps``, or the whole run."""
    return cfg.max_steps if spec.flow_steps is None else spec.flow_steps


class Engine(NamedTuple):
    """The compiled pieces of one (configuration, seed, spec): see :func:`build`."""

    cfg: TrainConfig
    spec: FlowSpec
    theta0: Float[Array, " p"]
    loss: Callable  # E(theta), float64
    block: Callable  # (state, with_flows) -> (state, readings)
    read: Callable  # theta -> dict of METRICS


def _fields(cfg: TrainConfig, spec: FlowSpec, E, prob, hp) -> dict[str, Callable]:
    """The modified fields f(n, theta) of ``spec.flows`` (bea.fields) at hyperparameters
    ``hp`` = (h, beta, rho, eps) (traced for Adam; RMSProp's history window needs rho)."""
    k = horizon(cfg, spec) + 1
    h, beta, rho, eps = hp if cfg.optimizer == "adam" else (cfg.h, cfg.beta, cfg.rho, cfg.eps)
    out = {}
    for name in spec.flows:
        if name == "order2":
            tr = registry.transformation(cfg.optimizer, 1.0, beta, rho, eps)
            out[name] = modified_field(tr, prob.loss, None, h, order=2, data=prob.data,
                                       num_steps=k)
        else:
            out[name] = make_field(cfg.optimizer, name, E, h, beta=beta, rho=rho, eps=eps,
                                   num_steps=k)
    return out


def _intervals(field, theta, n0, h, B: int, m: int, solver):
    """theta~ at the ends of intervals n0 .. n0 + B - 1 (shape (B, p)) and the sum of the
    steps' embedded error norms: ``m`` fixed steps of ``solver`` per interval, each taken
    in unit time s with d theta/ds = (h/m) f(n, theta), as ``bea._integrate.solve_fixed``
    does. Not solve_fixed itself: its ``fori_loop`` puts the network's convolutions inside
    an XLA while loop, which XLA:CPU runs 3-4x slower than straight-line code (measured:
    7 gradients of cnn_small_smooth 1890 ms in a loop, 420-595 ms unrolled), so the B
    intervals here are an unrolled ``lax.scan``."""

    def interval(carry, k):
        th, err = carry
        n = n0 + k
        term = diffrax.ODETerm(lambda s, y, args: (h / m) * field(n, y))
        for _ in range(m):
            st = solver.init(term, 0.0, 1.0, th, None)
            th, y_err = solver.step(term, 0.0, 1.0, th, None, st, False)[:2]
            err = err + jnp.linalg.norm(y_err)
        return (th, err), th

    zero = jnp.zeros((), theta.dtype)
    (th, err), ys = jax.lax.scan(interval, (theta, zero), jnp.arange(B), unroll=True)
    roundoff = jnp.finfo(ys.dtype).eps * B * m * jnp.max(jnp.linalg.norm(ys, axis=-1))
    return ys, err + roundoff


_COMPILED: dict = {}


def _key(cfg: TrainConfig, spec: FlowSpec) -> tuple:
    """What the compiled block depends on besides its traced arguments: not the seed
    (theta(0) is in the state) and, for Adam, not h, beta, rho, eps (traced)."""
    hp = () if cfg.optimizer == "adam" else (cfg.h, cfg.beta, cfg.rho, cfg.eps)
    order2 = horizon(cfg, spec) if "order2" in spec.flows or cfg.optimizer != "adam" else None
    return (cfg.model, cfg.dataset, cfg.data_dir, cfg.train_size, cfg.test_size, cfg.dtype,
            cfg.optimizer, hp, order2, spec.flows, spec.every, spec.tableau, spec.substeps,
            spec.error)


def _compile(cfg: TrainConfig, spec: FlowSpec, prob, static, data):
    """(block, read), jitted, with the hyperparameters h, beta, rho, eps a traced argument:
    one compilation serves every member of a sweep and every seed (cached by
    :func:`_key`)."""
    E = lambda th: prob.loss(th, prob.data)  # noqa: E731
    x_test = jnp.asarray(data.x_test, jnp.float64)
    y_test = jnp.asarray(data.y_test)
    w_test = jnp.ones(y_test.shape, jnp.float64)
    solver = TABLEAUS[spec.tableau]()
    B, m = spec.every, spec.substeps

    def read(theta, hp):
        value, g = jax.value_and_grad(E)(theta)
        n1 = perturbed_one_norm(g, hp[3])
        acc = batch_sums(prob.unravel(theta), static, x_test, y_test, w_test)[1]
        return {"train_loss": value, "perturbed_one_norm": n1,
                "norm_excess": perturbed_one_norm_excess(g, hp[3]),
                "test_accuracy": acc / y_test.shape[0]}

    def block(state, hp, with_flows: bool):
        h = hp[0]
        opt = registry.transformation(cfg.optimizer, h, hp[1], hp[2], hp[3])
        fields = _fields(cfg, spec, E, prob, tuple(hp))

        def step(carry, _):
            th, st = carry
            upd, st = opt.update(jax.grad(E)(th), st, th)
            th = optax.apply_updates(th, upd)
            return (th, st), th

        n0 = state["n"]
        (theta, opt_state), ths = jax.lax.scan(step, (state["adam"], state["opt_state"]), None,
                                               length=B, unroll=True)
        new = dict(state, n=n0 + B, adam=theta, opt_state=opt_state)
        readings = {"adam": read(theta, hp)}
        disp = jnp.linalg.norm(theta - state["theta0"])
        if with_flows:
            flows, err, dmax, fine = {}, {}, {}, {}
            for name in spec.flows:
                ys, bound = _intervals(fields[name], state["flows"][name], n0, h, B, m, solver)
                flows[name] = ys[-1]
                dist = jnp.linalg.norm(ys - ths, axis=-1)
                dmax[name] = jnp.maximum(state["max_distance"][name], jnp.max(dist))
                if spec.error == "halving":
                    ysf, _ = _intervals(fields[name], state["fine"][name], n0, h, B, 2 * m,
                                        solver)
                    fine[name] = ysf[-1]
                    # twin integrations, each from its own state: the global solver error
                    e = jnp.max(jnp.linalg.norm(ys - ysf, axis=-1))
                    err[name] = jnp.maximum(state["solver_error"][name], e)
                else:
                    err[name] = state["solver_error"][name] + bound
                r = read(ys[-1], hp)
                r["distance"] = dist[-1]
                r["rel_distance"] = dist[-1] / disp
                readings[name] = r
            new.update(flows=flows, solver_error=err, max_distance=dmax)
            if spec.error == "halving":
                new["fine"] = fine
        return new, readings

    return jax.jit(block, static_argnums=2), jax.jit(read)


def build(cfg: TrainConfig, spec: FlowSpec) -> Engine:
    """Check the settings (:func:`check`) and load the data: the engine whose
    :func:`start` / :func:`advance` run the flows (compiled on first use, shared by every
    engine of the same structure). Needs float64 (``bea.enable_x64()`` before any array
    exists); raises FlowError otherwise."""
    check(cfg, spec)
    if not jax.config.jax_enable_x64:
        raise FlowError("flows run in float64: call bea.enable_x64() before any array exists")
    data = load_data(cfg)
    prob = problem(cfg, cfg.seed, data)
    key = _key(cfg, spec)
    if key not in _COMPILED:
        if len(_COMPILED) >= 8:
            _COMPILED.pop(next(iter(_COMPILED)))
        static = eqx.partition(init_model(cfg, data, cfg.seed), eqx.is_inexact_array)[1]
        _COMPILED[key] = _compile(cfg, spec, prob, static, data)
    block, read = _COMPILED[key]
    hp = jnp.array([cfg.h, cfg.beta, cfg.rho, cfg.eps], jnp.float64)
    E = lambda th: prob.loss(th, prob.data)  # noqa: E731
    return Engine(cfg, spec, prob.theta0, E, lambda st, wf: block(st, hp, wf),
                  lambda th: read(th, hp))


def start(engine: Engine) -> tuple[dict, dict]:
    """(state at n = 0, readings at n = 0): every trajectory at theta(0)."""
    state = _initial(engine)
    r0 = engine.read(engine.theta0)
    readings = {"adam": r0}
    for k in engine.spec.flows:
        readings[k] = dict(r0, distance=jnp.zeros(()), rel_distance=jnp.asarray(jnp.nan))
    return state, readings


def advance(engine: Engine, state: dict) -> tuple[dict, dict]:
    """One block of ``every`` steps: (state, readings at its end). The flows stop at their
    horizon; Adam goes on to the end of the run."""
    with_flows = int(state["n"]) < horizon(engine.cfg, engine.spec)
    return engine.block(state, with_flows)


def state_to_bytes(state: dict) -> bytes:
    """The state as an ``.npz`` file's bytes (every leaf by its tree path)."""
    buf = io.BytesIO()
    leaves = jax.tree_util.tree_leaves_with_path(state)
    np.savez(buf, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    return buf.getvalue()


def state_from_bytes(engine: Engine, blob: bytes) -> dict:
    """A state saved by :func:`state_to_bytes` for this engine; ValueError (one line) if it
    does not fit (other leaves or shapes)."""
    like = jax.eval_shape(lambda: _initial(engine))
    with np.load(io.BytesIO(blob)) as z:
        saved = dict(z)
    paths = jax.tree_util.tree_leaves_with_path(like)
    if sorted(saved) != sorted(jax.tree_util.keystr(k) for k, _ in paths):
        raise ValueError("the saved flow state holds other entries than this run's")
    out = []
    for k, v in paths:
        a = saved[jax.tree_util.keystr(k)]
        if a.shape != np.shape(v):
            raise ValueError(f"the saved flow state's {jax.tree_util.keystr(k)} has shape "
                             f"{a.shape}, this run's {np.shape(v)}")
        out.append(jnp.asarray(a, dtype=jnp.result_type(v)))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), out)


def _initial(engine: Engine) -> dict:
    """The state at n = 0: every trajectory at theta(0), Adam's state initialised."""
    th0 = engine.theta0
    opt = registry.transformation(engine.cfg.optimizer, engine.cfg.h, engine.cfg.beta,
                                  engine.cfg.rho, engine.cfg.eps)
    names = engine.spec.flows
    zero = jnp.zeros((), th0.dtype)
    state = {"n": jnp.zeros((), jnp.int32), "theta0": th0, "adam": th0,
             "opt_state": opt.init(th0), "flows": {k: th0 for k in names},
             "solver_error": {k: zero for k in names}, "max_distance": {k: zero for k in names}}
    if engine.spec.error == "halving":
        state["fine"] = {k: th0 for k in names}
    return state


@dataclasses.dataclass(frozen=True)
class FlowRecord:
    """One flow run: its settings, the read steps, the curves (``curves[traj][metric]``,
    traj ``adam`` and the flows; a flow's curves stop at its horizon), per flow the solver
    error (``error`` kind) and the largest distance to Adam over every step, and the wall
    time. JSON: :meth:`to_json` / :meth:`from_json` (NaN as null)."""

    config: dict
    spec: dict
    steps: tuple[int, ...]
    curves: dict
    solver_error: dict
    max_distance: dict
    seconds: float
    done: bool

    def to_json(self) -> dict:
        def clean(v):
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        return clean(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, obj: dict) -> FlowRecord:
        def back(v):
            if isinstance(v, dict):
                return {k: back(x) for k, x in v.items()}
            if isinstance(v, list):
                return tuple(float("nan") if x is None else x for x in v)
            return v

        fields = {f.name for f in dataclasses.fields(cls)}
        missing = fields - set(obj)
        if missing:
            raise ValueError(f"a flow record lacks {sorted(missing)}")
        return cls(config=obj["config"], spec=obj["spec"], steps=tuple(obj["steps"]),
                   curves=back(obj["curves"]),
                   solver_error={k: math.nan if v is None else v
                                 for k, v in obj["solver_error"].items()},
                   max_distance={k: math.nan if v is None else v
                                 for k, v in obj["max_distance"].items()},
                   seconds=obj["seconds"], done=obj["done"])


def _append(curves: dict, readings: dict) -> None:
    for traj, r in jax.device_get(readings).items():
        c = curves.setdefault(traj, {})
        for k, v in r.items():
            c.setdefault(k, []).append(float(v))


def record(engine: Engine, state: dict, steps: Sequence[int], curves: dict,
           seconds: float) -> FlowRecord:
    """The :class:`FlowRecord` of a run at ``state`` (its readings so far)."""
    as_json = lambda d: json.loads(json.dumps(dataclasses.asdict(d)))  # noqa: E731
    err = {k: float(v) for k, v in jax.device_get(state["solver_error"]).items()}
    dmax = {k: float(v) for k, v in jax.device_get(state["max_distance"]).items()}
    return FlowRecord(config=as_json(engine.cfg), spec=as_json(engine.spec),
                      steps=tuple(int(s) for s in steps),
                      curves={t: {k: tuple(v) for k, v in c.items()} for t, c in curves.items()},
                      solver_error=err, max_distance=dmax, seconds=round(seconds, 3),
                      done=int(state["n"]) >= engine.cfg.max_steps)


def run(engine: Engine, *, resume: tuple[dict, FlowRecord] | None = None,
        on_block: Callable[[dict, FlowRecord], Any] | None = None) -> FlowRecord:
    """Run to the end from n = 0, or from ``resume = (state, record so far)``; after
    every block ``on_block(state, record)`` (saving, progress)."""
    t0 = time.monotonic()
    if resume is None:
        state, r0 = start(engine)
        steps, curves, before = [0], {}, 0.0
        _append(curves, r0)
    else:
        state, rec = resume
        steps = list(rec.steps)
        curves = {t: {k: list(v) for k, v in c.items()} for t, c in rec.curves.items()}
        before = rec.seconds
    while int(state["n"]) < engine.cfg.max_steps:
        state, r = advance(engine, state)
        steps.append(int(state["n"]))
        _append(curves, r)
        rec = record(engine, state, steps, curves, before + time.monotonic() - t0)
        if on_block is not None:
            on_block(state, rec)
    return record(engine, state, steps, curves, before + time.monotonic() - t0)


def readouts(rec: FlowRecord, threshold: float, half_width: int = 0) -> dict:
    """Per trajectory, ``bea.nn.readout.read_out`` of ||grad E||_{1,eps}, its excess and the
    test accuracy at training loss ``threshold`` (None where it is never reached), with
    ``interp`` the equal-loss read-out used for the mechanism's slopes."""
    out = {}
    for traj, c in rec.curves.items():
        n = len(c["train_loss"])
        rows = [{"step": rec.steps[i], **{k: c[k][i] for k in METRICS}} for i in range(n)]
        out[traj] = read_out(rows, threshold, ["perturbed_one_norm", "norm_excess",
                                               "test_accuracy"], half_width)
    return out


def steps_within(rec: FlowRecord, flow: str, tol: float = 0.1) -> dict:
    """How long flow ``flow`` stays within ``tol`` of Adam relative to Adam's displacement:
    the last read step n such that rel_distance <= tol at every read step 1..n, Adam's
    training loss there, and whether it held to the flow's horizon."""
    rel = rec.curves[flow]["rel_distance"]
    loss = rec.curves["adam"]["train_loss"]
    last = 0
    for i in range(1, len(rel)):
        if not rel[i] <= tol:
            break
        last = i
    return {"steps": rec.steps[last], "adam_loss": loss[last], "to_horizon": last == len(rel) - 1}
