"""The pre-flight check of a sweep: what it will cost and where order 2 can show, in seconds,
from the discrete run alone, before any ODE is solved (docs/sweeps.md, "The pre-flight
check").

Where a gradient component sits below sqrt(eps), Adam's step in it is about h g / sqrt(eps):
gradient descent with step h / sqrt(eps) (the paper's Section 7: the constant of its
estimate (7) grows as eps -> 0). The zeroth-order field f_n is then stiff: the spectral radius
lambda of its Jacobian along the trajectory is about lambda_max(H) / sqrt(eps). Two things
follow from lambda alone:

- **where the modified equation holds**: the first-order field shows order 2 below about
  h* = kappa / lambda (:data:`KAPPA`, measured by ``python -m experiments.small_eps``,
  docs/small_eps.md) where the stiffness sets h*;
- **what the solves cost**: one explicit step per interval is stable only while h lambda
  stays inside the tableau's stability interval (:data:`STABILITY`); beyond it the
  adaptive solve needs about h lambda / 5.17 Dopri8 steps per interval.

:func:`check` measures, from the discrete run at the ladder's finest h, subsampled to at
most :data:`SAMPLES` iterates: the share of gradient components with |g_j| below
3 sqrt(eps) (3 eps for an update with eps outside the root), lambda by power iteration
(:data:`POWER_ITERATIONS` Jacobian-vector products of the zeroth-order field per sampled
iterate; closed form or generic engine, so any optimizer), and the seconds of one compiled
evaluation of each field (timed after a warm-up call). From these it predicts, per h, the
solve, its evaluations and seconds (:class:`Preflight`). :func:`bea.sweep` runs it before
solving, stores it on the result (``result.preflight``) and raises :class:`BudgetError`
when the predicted seconds exceed ``time_budget`` (unless ``force``). :func:`preflight`
runs it alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from bea import optimizer_registry as registry
from bea import programs
from bea.problems import Problem, batch_sequence, epoch_batches

__all__ = ["Preflight", "BudgetError", "preflight", "check", "STABILITY", "STAGES", "KAPPA",
           "SAMPLES", "POWER_ITERATIONS"]

STABILITY = {"dopri5": 3.307, "dopri8": 5.167}
"""Where the tableau's stability interval ends on the negative real axis: |R(-z)| <= 1 for
z up to this (computed from diffrax's tableaus in tests/test_preflight.py)."""
STAGES = {"dopri5": 7, "dopri8": 14}
"""Field evaluations per step (first-same-as-last stage included: the field changes with n)."""
KAPPA = 0.19
"""h* lambda: where the stiffness sets it, the first-order field's local slope reaches 1.8
near h* = KAPPA / lambda. Measured (``python -m experiments.small_eps --out
results/small_eps``, docs/small_eps.md): the geometric mean of h* lambda over the bilinear
model (beta 0.5, rho 0.7, T 4) and the digits MLP at eps = 1e-1 ... 1e-8 where h* was
reached (11 points, every one within a factor 2.5 of it). It collapses h* within a model
(bilinear: h* lambda 0.12 to 0.21 over four decades of eps), not across models: on the
held-out user-style network order 2 still shows at 3 to 4 KAPPA / lambda, so h <= KAPPA /
lambda is sufficient there, and conservative. Where lambda is small (gradients above
sqrt(eps)), h* is set by the non-stiff part of the field and by memory (N (1 - rho)), and
can lie below KAPPA / lambda."""
SAMPLES = 32  # iterates of the discrete run whose stiffness the check measures
CANDIDATES = 1024  # iterates whose gradients it looks at
POWER_ITERATIONS = 16  # Jacobian-vector products per sampled iterate
NO_EPS = ("gd", "heavy_ball", "nesterov")  # registry entries whose update has no eps
EPS_OUTSIDE = ("adam_eps_outside", "rmsprop_eps_outside", "nadam")  # g / (sqrt(nu) + eps)
# optax transforms (as a factory's record names them) that divide by sqrt(nu) + eps
EPS_OUTSIDE_TRANSFORMS = frozenset({"scale_by_adam", "scale_by_belief", "scale_by_amsgrad",
                                    "scale_by_adamax", "scale_by_radam"})


class BudgetError(ValueError):
    """A sweep predicted to take longer than its ``time_budget``; the one-line message says
    why (the predicted seconds, the h) and what h or eps would fit."""


@dataclasses.dataclass(frozen=True)
class Preflight:
    """What :func:`check` measured and predicts (docs/sweeps.md, "The pre-flight check").

    ``eps``: the optimizer's eps (None: unknown, e.g. a factory that keeps it in a closure,
    or none); ``small_share``: the share of gradient components with |g_j| < ``threshold``
    (3 sqrt(eps), or 3 eps with eps outside the root) over the sampled iterates (None if
    eps is unknown); ``min_grad``: the smallest |g_j| seen; ``stiffness``: lambda, the
    largest spectral radius of the zeroth-order field's Jacobian over the sampled iterates;
    ``h_star`` = ``kappa`` / lambda. Per h (coarsest first): ``h_lambda``, ``solve`` (what
    the sweep's solver will use: 'dopri5', 'dopri8', 'adaptive' with ``steps`` Dopri8 steps
    per interval, 'unstable' or 'max_steps'), ``evaluations`` (of all fields, solver-error
    measurements included: an upper estimate) and ``seconds``; ``eval_seconds``: one
    evaluation of each field; ``total_seconds`` (NaN: a solver the model does not cover);
    ``check_seconds``: what the check took; ``advice``: what h or eps would fit the budget
    ('' if it fits)."""

    optimizer: str
    solver: str
    eps: float | None
    threshold: float | None
    small_share: float | None
    min_grad: float
    stiffness: float
    kappa: float
    h_star: float
    h: tuple[float, ...]
    N: tuple[int, ...]
    h_lambda: tuple[float, ...]
    solve: tuple[str, ...]
    steps: tuple[int, ...]
    evaluations: tuple[int, ...]
    seconds: tuple[float, ...]
    eval_seconds: dict[str, float]
    combinations: int
    total_seconds: float
    time_budget: float
    check_seconds: float
    advice: str = ""
    eps_place: str = "root"  # 'root', 'outside', 'none' (no eps in the update), 'unknown'

    @property
    def over_budget(self) -> bool:
        return bool(self.total_seconds > self.time_budget)

    def summary(self) -> str:
        """A few lines: the gradients below the eps scale, lambda, h* and the predicted cost."""
        if self.eps_place == "none":
            grads = f"no eps in the update; smallest |g_j| {self.min_grad:.2g}"
        elif self.eps is None:
            grads = f"eps unknown; smallest |g_j| {self.min_grad:.2g}"
        else:
            grads = (f"{100 * self.small_share:.1f}% of gradient components below "
                     f"{self.threshold:.2g} (eps = {self.eps:.2g}); smallest |g_j| "
                     f"{self.min_grad:.2g}")
        lines = [f"pre-flight ({self.check_seconds:.1f} s): {grads}",
                 f"  stiffness lambda = {self.stiffness:.3g}: order 2 below about "
                 f"h* = {self.kappa:g}/lambda = {self.h_star:.3g} (docs/small_eps.md)"]
        for h, z, s, k, sec in zip(self.h, self.h_lambda, self.solve, self.steps, self.seconds,
                                   strict=True):
            how = f"{s} x{_many(k)}" if s in ("adaptive", "max_steps") else s
            lines.append(f"  h={h:g}: h*lambda = {z:.3g}, {how}, ~{_secs(sec)}")
        per = ", ".join(f"{k} {1e3 * v:.3g} ms" for k, v in self.eval_seconds.items())
        lines.append(f"  predicted {_secs(self.total_seconds)} (budget {self.time_budget:g} s; "
                     f"one evaluation: {per}"
                     + (f"; {self.combinations} combinations" if self.combinations > 1 else "")
                     + ")")
        if self.advice:
            lines.append(f"  over budget: {self.advice}")
        return "\n".join(lines)

    def reason(self) -> str:
        """The one line of :class:`BudgetError`: the predicted seconds, the h that costs
        most and why, and what would fit."""
        i = int(np.nanargmax(self.seconds))
        how = (f"{_many(self.steps[i])} adaptive Dopri8 steps per interval"
               if self.solve[i] in ("adaptive", "max_steps") else
               f"{self.solve[i]} at {self.evaluations[i]} field evaluations")
        return (f"the sweep is predicted to take {_secs(self.total_seconds)}, over "
                f"time_budget={self.time_budget:g} s: at h={self.h[i]:g}, N={self.N[i]}, "
                f"h*lambda = {self.h_lambda[i]:.3g} (lambda = {self.stiffness:.3g}) needs "
                f"{how} ({_secs(self.seconds[i])}); {self.advice}; or force=True "
                f"(--force) runs it anyway")

    def to_dict(self) -> dict[str, Any]:
        """JSON values (NaN stays NaN: :func:`bea.io.write_json` writes it as null)."""
        d = dataclasses.asdict(self)
        for k in ("h", "N", "h_lambda", "solve", "steps", "evaluations", "seconds"):
            d[k] = list(d[k])
        d["summary"] = self.summary()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preflight:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        nan = lambda x: math.nan if x is None else float(x)  # noqa: E731 - null is NaN
        for k in ("h", "h_lambda", "seconds"):
            kw[k] = tuple(nan(x) for x in kw[k])
        for k in ("N", "steps", "evaluations"):
            kw[k] = tuple(int(x) for x in kw[k])
        kw["solve"] = tuple(kw["solve"])
        for k in ("min_grad", "stiffness", "h_star", "total_seconds"):
            kw[k] = nan(kw[k])
        return cls(**kw)


def _secs(s: float) -> str:
    if not math.isfinite(s):
        return "? s (cost not modelled)"
    return f"{s:.2g} s" if s < 100 else f"{s:.0f} s"


def solve_cost(z: float, N: int, solver: str, max_steps: int = 4096) -> tuple[str, int, int]:
    """(solve, Dopri8 steps per interval, field evaluations) of one field at one h with
    h lambda = ``z``, for :func:`bea.sweep`'s ``solver``: each fixed tableau that is tried
    costs its solve and its halving reference (3 steps per interval: an upper estimate, the
    reference is skipped where the embedded bound is trusted), and is stable only for
    z <= :data:`STABILITY`; the adaptive Dopri8 solve and its refined reference (at least 4
    steps per interval) need about z / 5.17 steps per interval each. ('?', 0, -1) for a
    solver the model does not cover."""
    attempts = {"fixed": ("dopri5", "dopri8"), "auto": ("dopri5", "dopri8", "adaptive"),
                "adaptive": ("adaptive",)}.get(solver)
    if attempts is None:
        return "?", 0, -1
    evals = 0
    for a in attempts:
        if a == "adaptive":
            s = max(1, math.ceil(z / STABILITY["dopri8"]))
            if s > max_steps:
                return "max_steps", s, evals + 2 * STAGES["dopri8"] * max_steps * N
            return "adaptive", s, evals + STAGES["dopri8"] * (s + max(4, s)) * N
        evals += 3 * STAGES[a] * N
        if z <= STABILITY[a]:
            return a, 1, evals
    return "unstable", 1, evals


def check(problem: Problem, cfg: Any, hyper: Mapping[str, Any] | None = None,
          combinations: int = 1) -> Preflight:
    """The pre-flight check of sweep ``cfg`` (a :class:`bea.SweepConfig`) on ``problem``
    (float64, as :func:`bea.sweep` holds it), at hyperparameters ``hyper`` (default the
    config's; a grid passes its stiffest combination and ``combinations``). Runs the
    discrete program the sweep runs (compiled once, reused by the sweep), the power
    iteration and one timed evaluation per field; solves nothing."""
    t0 = time.perf_counter()
    hyper = dict(hyper or {k: getattr(cfg, k) for k in ("beta", "rho", "eps")})
    mini = cfg.batch_size is not None
    N_max, h_min = max(cfg.N), min(cfg.h)
    batches = grouped = None
    if mini and cfg.batching == "epoch":
        grouped = epoch_batches(problem, cfg.batch_size, N_max, cfg.seed)
        batches = grouped.materialize()
    elif mini:
        batches = batch_sequence(problem, cfg.batch_size, N_max, cfg.seed)
    loss = programs.compiled_loss(problem, mini)
    data = problem.data if mini else None
    static = tuple((k, hyper[k]) for k in ("beta", "rho", "eps"))
    base = programs.Program(cfg.optimizer, N_max, mini, static)
    disc = np.asarray(programs.discrete(problem.theta0, batches, data, jnp.asarray(h_min, float),
                                        jnp.asarray(N_max), {}, program=base, loss=loss))[0]
    ok = np.all(np.isfinite(disc), axis=-1)
    last = N_max - 1 if ok.all() else max(0, int(np.argmin(ok)) - 1)
    # the gradients at up to CANDIDATES evenly spaced iterates (their share below the eps
    # scale), then half the samples evenly spaced, half where a component is smallest
    size = int(min(CANDIDATES, max(SAMPLES, 2 * 10**7 // max(1, disc.shape[-1]))))
    cands = np.unique(np.linspace(0, last, size).round().astype(int))
    g = np.asarray(_gradients(loss, jnp.asarray(disc[cands]), batches, jnp.asarray(cands),
                              data, mini))
    eps, threshold, place = _eps(cfg, problem, hyper)
    small = None if threshold is None else float(np.mean(np.abs(g) < threshold))
    a = np.where(g == 0, np.inf, np.abs(g)).min(axis=-1)  # exact zeros: dead inputs
    even = np.unique(np.linspace(0, len(cands) - 1, SAMPLES // 2).round().astype(int))
    rest = np.setdiff1d(np.argsort(a, kind="stable"), even, assume_unique=True)
    ns = cands[np.sort(np.concatenate([even, rest[: SAMPLES - len(even)]]))]
    thetas = disc[ns]

    order0 = base._replace(kind="order0", engine=registry.field_engine("order0", cfg.engine))
    v0 = np.random.default_rng(0).normal(size=thetas.shape)
    lams = _power(order0, loss, h_min, ns, thetas, v0, batches, data)
    lam = float(np.max(lams[np.isfinite(lams)])) if np.isfinite(lams).any() else math.nan

    n_mid = int(ns[len(ns) // 2])
    histories = _histories(cfg, grouped, N_max)
    eval_seconds = {}
    for kind in cfg.fields:
        program = base._replace(kind=kind, engine=registry.field_engine(kind, cfg.engine))
        history = grouped if histories.get(kind) == "grouped" else batches
        eval_seconds[kind] = _time_field(program, loss, h_min, n_mid, jnp.asarray(disc[n_mid]),
                                         history, data)

    max_steps = int(getattr(cfg, "max_steps", None) or 4096)
    rows = []
    for h, N in zip(cfg.h, cfg.N, strict=True):
        z = h * lam
        if not ok.all():
            # the discrete run at the finest h diverges (a coarser one, as a rule, sooner):
            # the sweep solves no field along a diverged run, so it costs nothing; lambda
            # there is that of a run blowing up, not of a solve
            solve, steps, evals = "diverged", 0, 0
        else:
            solve, steps, evals = solve_cost(z, N, cfg.solver, max_steps)
        evals_all = evals * len(cfg.fields)
        secs = (math.nan if evals < 0 else
                combinations * evals * float(np.mean(list(eval_seconds.values()))))
        rows.append((z, solve, steps, evals_all, secs))
    z, solve, steps, evals, secs = (tuple(c) for c in zip(*rows, strict=True))
    total = float(sum(secs))
    pf = Preflight(
        optimizer=cfg.to_dict()["optimizer"], solver=cfg.solver, eps=eps, threshold=threshold,
        small_share=small, min_grad=float(np.min(np.abs(g))),
        stiffness=lam, kappa=KAPPA, h_star=KAPPA / lam if lam > 0 else math.inf,
        h=tuple(cfg.h), N=tuple(cfg.N), h_lambda=z, solve=solve, steps=steps,
        evaluations=evals, seconds=secs, eval_seconds=eval_seconds, combinations=combinations,
        total_seconds=total, time_budget=float(cfg.time_budget),
        check_seconds=time.perf_counter() - t0, eps_place=place)
    if pf.over_budget:
        pf = dataclasses.replace(pf, advice=_advice(pf, cfg))
    return dataclasses.replace(pf, check_seconds=time.perf_counter() - t0)


def _histories(cfg, grouped, N_max) -> dict[str, str]:
    from bea._convergence import _histories

    return _histories(cfg, grouped, N_max)


def _many(k: int) -> str:
    """A step count as text: three digits for a huge one (a run that blew up printed a
    115-digit count)."""
    return f"{float(k):.3g}" if k >= 10**6 else str(k)


def eps_scale(eps: float, place: str) -> float:
    """The |g_j| below which an update with ``eps`` at ``place`` is gradient descent:
    sqrt(eps) inside the root (the paper's g / sqrt(nu + eps)), eps outside it
    (g / (sqrt(nu) + eps)); its step there is h / eps_scale."""
    return eps if place == "outside" else math.sqrt(eps)


def _eps(cfg, problem: Problem, hyper) -> tuple[float | None, float | None, str]:
    """(eps, the |g_j| below which the update is gradient descent with step h/eps_scale
    (3 eps_scale), where eps sits: 'root', 'outside', 'none' (no eps in the update:
    gd, heavy ball, Nesterov) or 'unknown' (a factory that does not tell its eps)):
    from the registry entry, or from what a factory tells of itself."""
    opt = cfg.optimizer
    if callable(opt):
        from bea._convergence import _factory_record

        record = _factory_record(opt, problem.unravel(problem.theta0))
        told = record["hyperparameters"] or {}
        eps = told.get("eps")
        if not isinstance(eps, int | float) or isinstance(eps, bool) or eps <= 0:
            return None, None, "unknown"
        # where eps sits, from what the factory tells: optax's scale_by_adam (adam, adamw,
        # nadam, ...) and scale_by_belief divide by sqrt(nu) + eps, so their update is
        # gradient descent with step h/eps below |g_j| ~ eps; optax.rmsprop says it with
        # eps_in_sqrt=False; otherwise the paper's sqrt(nu + eps) is assumed
        outside = bool(EPS_OUTSIDE_TRANSFORMS & set(record.get("transforms") or ())) or (
            told.get("eps_in_sqrt") is False)
        place = "outside" if outside else "root"
        return float(eps), 3 * eps_scale(eps, place), place
    if opt in NO_EPS:
        return None, None, "none"
    eps = float(hyper["eps"])
    place = "outside" if opt in EPS_OUTSIDE else "root"
    return eps, 3 * eps_scale(eps, place), place


@partial(jax.jit, static_argnames=("loss", "mini"))
def _gradients(loss, thetas, batches, ns, data, mini):
    if mini:
        step = jax.tree_util.tree_map(lambda b: b[ns], batches)
        return jax.vmap(jax.grad(loss))(thetas, step)
    return jax.vmap(jax.grad(loss), in_axes=(0, None))(thetas, None)


@partial(jax.jit, static_argnames=("program", "loss"))
def _evaluate(program, loss, h, n, theta, history, data) -> Float[Array, " p"]:
    """f_n(theta) of field ``program.kind``, as :func:`bea.sweep` builds it."""
    hp = dict(program.static)
    return programs.field(program, loss, history, data, h, hp["beta"], hp["rho"],
                          hp["eps"])(n, theta)


def _power(program, loss, h, ns, thetas, v0, batches, data) -> np.ndarray:
    """Per sampled iterate, the spectral radius of d f_n / d theta at theta^(n): power
    iteration, :data:`POWER_ITERATIONS` Jacobian-vector products, each a central difference
    of the compiled field (step 1e-8 max(1, ||theta||): far below the scale sqrt(eps) /
    lambda_max(H) on which the field bends, round-off 1e-8 ||f|| / ||theta||). The same
    compiled evaluation is what :func:`_time_field` times: compiling a jvp of the field, or
    a product vmapped over the iterates (a batched walk of the history), cost more than
    the products (measured on the digits MLP, mini-batch)."""
    out = []
    for n, theta, v in zip(ns, np.asarray(thetas), v0, strict=True):
        n = jnp.asarray(n)
        d = 1e-8 * max(1.0, float(np.linalg.norm(theta)))
        norm = math.nan
        for _ in range(POWER_ITERATIONS):
            v = v / np.linalg.norm(v)
            w = (np.asarray(_evaluate(program, loss, h, n, jnp.asarray(theta + d * v), batches,
                                      data))
                 - np.asarray(_evaluate(program, loss, h, n, jnp.asarray(theta - d * v),
                                        batches, data))) / (2 * d)
            norm = float(np.linalg.norm(w))
            if not (math.isfinite(norm) and norm > 0):
                break
            v = w
        out.append(norm)
    return np.asarray(out)


def _time_field(program, loss, h, n, theta, history, data) -> float:
    """Seconds of one compiled evaluation of the field, timed after a warm-up call
    (compilation): the best of three, so that a busy machine's pauses do not count."""
    n = jnp.asarray(n)
    _evaluate(program, loss, h, n, theta, history, data).block_until_ready()
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        _evaluate(program, loss, h, n, theta, history, data).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best


def _advice(pf: Preflight, cfg: Any) -> str:
    """What would fit the budget: a ladder whose coarsest h is within one Dopri5 step's
    stability (h lambda <= 3.3; at the same T, or a shorter one), or (lambda set by
    gradients below sqrt(eps)) the eps at which the coarsest h is."""
    lam, R = pf.stiffness, STABILITY["dopri5"]
    per_eval = float(np.mean(list(pf.eval_seconds.values())))
    out = []
    if lam > 0 and math.isfinite(lam):
        h_ok = R / lam
        scale = min(1.0, h_ok / max(pf.h))
        cost = sum(3 * STAGES["dopri5"] * N / scale for N in pf.N) * len(pf.eval_seconds) * \
            per_eval * pf.combinations
        if cost <= pf.time_budget:
            out.append(f"h <= {h_ok:.2g} (one Dopri5 step per interval; the ladder times "
                       f"{scale:.2g}: ~{_secs(cost)}; order 2 below h* = {pf.h_star:.2g})")
        else:
            T = cfg.T * pf.time_budget / cost
            out.append(f"h <= {h_ok:.2g} with T <= {T:.2g} (one Dopri5 step per interval; "
                       f"order 2 below h* = {pf.h_star:.2g})")
    if pf.eps is not None and pf.small_share and not callable(cfg.optimizer):
        z = max(pf.h) * lam
        if z > R:
            # lambda ~ 1/eps_scale where |g_j| << eps_scale: 1/sqrt(eps) inside the root,
            # 1/eps outside it
            power, scale = (1, "eps") if pf.eps_place == "outside" else (2, "sqrt(eps)")
            eps = pf.eps * (z / R) ** power
            out.append(f"eps >= {10 ** math.ceil(math.log10(eps)):.0e} (lambda falls as "
                       f"1/{scale} where gradients sit below {scale})")
    return "use " + ", or ".join(out) if out else "use a shorter T or fewer h"


def preflight(loss: Callable[[PyTree, Any], Any], params0: PyTree, data: PyTree, *,
              name: str = "custom", **config: Any) -> Preflight:
    """The pre-flight check of ``bea.sweep(loss, params0, data, **config)`` alone, without
    solving (the same arguments; docs/sweeps.md). Raises ValueError for bad input, as
    :func:`bea.sweep` does; never :class:`BudgetError` (read ``.over_budget``)."""
    from bea._convergence import _config, _placement, _problem
    from bea._precision import float64

    cfg = _config(config, name, None)
    with float64():
        problem = _problem(loss, params0, data, name, cfg)
        where = _placement(problem, cfg, 1)
        with jax.default_device(where.device):
            problem = problem._replace(theta0=jax.device_put(problem.theta0, where.device),
                                       data=jax.device_put(problem.data, where.device))
            return check(problem, cfg)
