"""One straight path from a problem to a measured slope: run the discrete optimizer and
each modified field over a ladder of h at fixed T, and measure the errors and orders."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bea import measure
from bea import optimizer_registry as registry
from bea.fields import FIELD_KINDS, check_field, make_field
from bea.fields.generic import modified_field
from bea.optimizers import adam, first_nonfinite, gd, heavy_ball, rmsprop, trajectory
from bea.problems import Problem, batch_sequence, epoch_batches
from bea.solve import TABLEAUS, solve_fixed, solve_with_error

__all__ = ["num_steps", "discrete_optimizer", "run_h", "sweep", "validate", "OPTIMIZERS",
           "ALL_OPTIMIZERS", "summarise", "ENGINES", "GENERIC_FIELDS", "resolve_engine",
           "ATTEMPTS", "solve_measured", "merge_trust"]

OPTIMIZERS = ("adam", "rmsprop", "gd", "heavy_ball")  # those with closed-form fields
ALL_OPTIMIZERS = registry.NAMES  # every name the generic engine takes (MATH.md section 5)
ENGINES = ("closed", "generic")
GENERIC_FIELDS = ("order0", "order1")


def resolve_engine(optimizer: str, engine: str | None = None) -> str:
    """The engine that derives ``optimizer``'s fields: ``engine`` if given and possible,
    else 'closed' where a closed form exists and 'generic' otherwise. Raises ValueError
    (one line) for unknown or refused (non-smooth) optimizers and impossible pairs."""
    registry.check(optimizer)
    if engine is None:
        return "closed" if optimizer in OPTIMIZERS else "generic"
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "closed" and optimizer not in OPTIMIZERS:
        raise ValueError(f"no closed-form field for optimizer {optimizer!r}; use the generic "
                         f"engine (closed forms exist for {', '.join(OPTIMIZERS)})")
    return engine


def validate(*, h: Sequence[float], beta: float, rho: float, eps: float, T: float,
             optimizer: str, fields: Sequence[str], batch_size: int | None = None,
             engine: str | None = None) -> None:
    """Raise ValueError with a one-line message naming the first offending value."""
    engine = resolve_engine(optimizer, engine)
    if len(h) == 0:
        raise ValueError("empty list of step sizes h")
    for f in fields:
        if f not in FIELD_KINDS:
            raise ValueError(f"unknown field {f!r}; choose from {', '.join(FIELD_KINDS)}")
    if not fields:
        raise ValueError("empty list of fields")
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"T must be positive and finite, got {T}")
    for x in h:
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"step size h must be positive and finite, got {x}")
        num_steps(T, x)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    if not 0 < rho < 1:
        raise ValueError(f"rho must lie in (0, 1), got {rho}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be positive, got {eps}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    for f in fields:
        if engine == "generic":
            if f not in GENERIC_FIELDS:
                raise ValueError(f"field {f!r} has no generic derivation (optimizer "
                                 f"{optimizer!r}); the generic engine gives "
                                 f"{', '.join(GENERIC_FIELDS)}")
        else:
            check_field(optimizer, f, batch_size is not None)


def num_steps(T: float, h: float) -> int:
    """N = T/h, which must be an integer to 1e-9 (MATH.md section 1)."""
    N = round(T / h)
    if N < 1 or abs(T / h - N) > 1e-9 * max(1.0, T / h):
        raise ValueError(f"T/h must be a positive integer: T={T}, h={h} gives T/h={T / h!r}")
    return N


def discrete_optimizer(name: str, h, beta, rho, eps):
    """The discrete iteration ``name`` (Definition 3.1) as an optax transformation."""
    if name == "adam":
        return adam(h, beta, rho, eps)
    if name == "rmsprop":
        return rmsprop(h, rho, eps)
    if name == "gd":
        return gd(h)
    if name == "heavy_ball":
        return heavy_ball(h, beta)
    return registry.transformation(name, h, beta, rho, eps)  # raises for unknown/refused


# beta, rho, eps are static: fixed for a whole sweep (still one program per field); a
# traced eps makes XLA's CPU code for the order-1 fields about 6x slower (measured), and
# concrete beta, rho let the mini-batch fields drop history below round-off
# (bea.fields._window). bea.grid traces them (vmapped) instead.
@partial(jax.jit, static_argnames=("optimizer", "kind", "N_max", "mini", "rtol", "atol", "loss",
                                   "engine", "method", "tableau", "eps", "beta", "rho"))
def _ode(theta0, batches, data, h, beta, rho, eps, N, substeps=1, *, optimizer, kind, N_max,
         mini, rtol, atol, loss, engine="closed", method="adaptive", tableau="dopri8"):
    """(path, solver-error estimate): for ``method="fixed"`` the path with ``substeps``
    (traced: 1 for the solve, 2 for its halving reference, one program) steps of
    ``tableau`` per interval and its embedded bound; for "adaptive" the adaptive solve and
    its difference from a refined one."""
    if engine == "generic":  # MATH.md section 5: the optimizer at learning rate 1 gives F_n
        f = modified_field(registry.transformation(optimizer, 1.0, beta, rho, eps), loss,
                           batches if mini else None, h, order=0 if kind == "order0" else 1,
                           data=data, num_steps=N_max)
    else:
        E = loss if mini else (lambda t: loss(t, data))
        f = make_field(optimizer, kind, E, h, beta=beta, rho=rho, eps=eps,
                       batches=batches if mini else None, num_steps=N_max)
    if method == "fixed":
        return solve_fixed(f, theta0, h, N_max, substeps=substeps, solver=TABLEAUS[tableau](),
                           active_steps=N, return_error=True)
    return solve_with_error(f, theta0, h, N_max, rtol=rtol, atol=atol, active_steps=N,
                            method="adaptive")


@partial(jax.jit, static_argnames=("optimizer", "N_max", "mini", "loss"))
def _discrete(theta0, batches, data, h, beta, rho, eps, N, *, optimizer, N_max, mini, loss):
    opt = discrete_optimizer(optimizer, h, beta, rho, eps)
    return trajectory(opt, loss, theta0, batches if mini else None, N_max, data=data,
                      active_steps=N)


# What each ``solver`` tries, in order, until its error is measured >= 100x below the error:
# one step per interval of the 7-stage Dopri5, then of the 14-stage Dopri8, then (auto only)
# the adaptive Dopri8 (MATH.md section 6: the least work whose error is far below the error).
ATTEMPTS = {"adaptive": (("adaptive", None),),
            "fixed": (("fixed", "dopri5"), ("fixed", "dopri8")),
            "auto": (("fixed", "dopri5"), ("fixed", "dopri8"), ("adaptive", None))}
_ONE, _TWO = np.int64(1), np.int64(2)


def solve_measured(call, disc: np.ndarray, N: int, solver: str,
                   trust: dict[str, dict[str, bool]] | None = None) -> dict:
    """Solve one field as ``solver`` says (:data:`ATTEMPTS`), measuring the solver error.

    ``call(method=, tableau=, substeps=)`` runs the compiled program. A fixed-step path's
    error is first bounded by its embedded estimates (free). That bound is used only for a
    tableau whose ``trust`` entry is True: otherwise (not yet checked, or failed) and
    wherever the bound is not 100x below the error, the error is measured by halving (the
    same program with two steps per interval, 2^5 or 2^8 times more accurate). A tableau
    not yet checked gets checked here: ``out["embedded_ok"][tableau]`` says whether its
    bound covered the halving measurement (a sweep checks at its coarsest h, where the
    solver error is largest relative to the error, and trusts the result at the others)."""
    trust = trust or {}
    out: dict = {"embedded_ok": {}}
    for method, tableau in ATTEMPTS[solver]:
        ys, serr = call(method=method, tableau=tableau or "dopri8", substeps=_ONE)
        ys, serr = np.asarray(ys)[: N + 1], float(serr)
        e = measure.global_error(ys, disc)
        estimate = "refined" if method == "adaptive" else "embedded"
        if method == "fixed" and (trust.get(tableau) is not True or not 100 * serr <= e):
            fine = np.asarray(call(method=method, tableau=tableau, substeps=_TWO)[0])[: N + 1]
            halving = float(np.max(np.linalg.norm(ys - fine, axis=-1)))
            if tableau not in trust and np.isfinite(halving):
                out["embedded_ok"][tableau] = halving <= serr
            serr, estimate = halving, "halving"
        if 100 * serr <= e:
            break
    out.update(ys=ys, error=e, solver_error=serr, solver=method, tableau=tableau,
               estimate=estimate)
    return out


_BOUND: dict = {}


def compiled_loss(problem: Problem, mini: bool):
    """The loss the compiled programs take: ``problem.loss`` for mini-batch runs; for full
    batch E(theta, _) = E(theta, data) with the data baked in as constants (XLA's CPU code
    for a small full-batch problem runs about 7x faster than with the data as a traced
    argument: measured on the bilinear model). Cached per problem, so every h of a sweep
    gets the same function and the programs compile once."""
    if mini:
        return problem.loss
    key = (id(problem.loss), id(problem.data))
    if key not in _BOUND:
        loss, data = problem.loss, problem.data
        _BOUND[key] = (problem, lambda theta, batch: loss(theta, data))
    return _BOUND[key][1]


def run_h(problem: Problem, optimizer: str, h: float, T: float, fields: Sequence[str], *,
          beta: float, rho: float, eps: float, batch_size: int | None = None, seed: int = 0,
          rtol: float = 1e-12, atol: float = 1e-14, N_max: int | None = None,
          engine: str | None = None, solver: str = "auto",
          trust: dict[str, dict[str, bool]] | None = None, batching: str = "iid",
          history: str = "direct") -> dict:
    """Errors of every field against the discrete run for one h. ``N_max`` (>= T/h) pads
    the run to a common length so a whole sweep compiles one program per field.
    ``engine`` ('closed' | 'generic', default: closed where it exists) derives the fields.
    ``solver``: 'adaptive' (Dopri8, PID control), 'fixed' (one Dopri5, else one Dopri8 step
    per interval, whichever first has its error measured >= 100x below the error), or
    'auto': fixed, redone adaptive for any field whose solver error is still not 100x below
    its error (``out["solver"]``, ``out["tableau"]``, ``out["estimate"]``;
    :func:`solve_measured`). ``trust``: per field and tableau, whether the embedded error
    bound passed its check at an earlier h; unchecked ones are checked here
    (``out["embedded_ok"]``). ``batching``: 'iid' (:func:`bea.problems.batch_sequence`) or
    'epoch' (:func:`bea.problems.epoch_batches`); ``history``: 'direct' (the per-step
    history) or 'grouped' (epoch batching, Adam/RMSProp closed forms: the history grouped by
    distinct batch, MATH.md section 7)."""
    engine = resolve_engine(optimizer, engine)
    _check_history(batching, history, batch_size, optimizer, engine)
    N = num_steps(T, h)
    N_max = N if N_max is None else N_max
    mini = batch_size is not None
    batches = field_batches = None
    if mini and batching == "epoch":
        grouped = epoch_batches(problem, batch_size, N_max, seed)
        batches = grouped.materialize()
        field_batches = grouped if history == "grouped" else batches
    elif mini:
        batches = field_batches = batch_sequence(problem, batch_size, N_max, seed)
    args = (problem.theta0, batches, problem.data, jnp.asarray(h, float), beta, rho, eps,
            jnp.asarray(N))
    disc = np.asarray(_discrete(*args, optimizer=optimizer, N_max=N_max, mini=mini,
                                loss=compiled_loss(problem, mini)))[: N + 1]
    args = (problem.theta0, field_batches) + args[2:]
    bad = first_nonfinite(disc)
    out = {"h": h, "N": N, "diverged_at": bad, "errors": {}, "solver_error": {}, "floor": {},
           "solver": {}}
    if bad is not None:
        for k in fields:
            out["errors"][k] = float("nan")
            out["solver_error"][k] = float("nan")
            out["floor"][k] = False
        return out
    roundoff = measure.roundoff_floor(disc)
    if solver not in ("auto", "adaptive", "fixed"):
        raise ValueError(f"unknown solver {solver!r}; use auto, adaptive or fixed")
    for kind in fields:
        call = partial(_ode, *args, optimizer=optimizer, kind=kind, N_max=N_max, mini=mini,
                       rtol=rtol, atol=atol, loss=compiled_loss(problem, mini), engine=engine)
        r = solve_measured(call, disc, N, solver, (trust or {}).get(kind))
        e, serr = r["error"], r["solver_error"]
        out["errors"][kind] = e
        out["solver_error"][kind] = serr
        out["floor"][kind] = measure.at_floor(e, serr, roundoff)
        out.setdefault("ode_diverged_at", {})[kind] = first_nonfinite(r["ys"])
        for key in ("solver", "tableau", "estimate"):
            out.setdefault(key, {})[kind] = r[key]
        out.setdefault("embedded_ok", {})[kind] = r["embedded_ok"]
    return out


def _check_history(batching: str, history: str, batch_size, optimizer: str, engine: str):
    """Raise ValueError (one line) for an unknown or impossible batching/history pair."""
    if batching not in ("iid", "epoch"):
        raise ValueError(f"unknown batching {batching!r}; use 'iid' or 'epoch'")
    if history not in ("direct", "grouped"):
        raise ValueError(f"unknown history {history!r}; use 'direct' or 'grouped'")
    if history == "grouped" and (batch_size is None or batching != "epoch"):
        raise ValueError("history 'grouped' needs mini-batches from a fixed partition: "
                         "batch_size and batching='epoch'")
    if history == "grouped" and (engine != "closed" or optimizer not in ("adam", "rmsprop")):
        raise ValueError(f"history 'grouped' exists for the closed-form adam and rmsprop "
                         f"fields, not {optimizer!r} with engine {engine!r}")


def sweep(problem: Problem, optimizer: str, hs: Sequence[float], T: float,
          fields: Sequence[str] = ("order0", "order1"), *, beta: float = 0.9, rho: float = 0.999,
          eps: float = 1e-8, batch_size: int | None = None, seed: int = 0,
          rtol: float = 1e-12, atol: float = 1e-14, progress=None,
          engine: str | None = None, solver: str = "auto", batching: str = "iid",
          history: str = "direct") -> dict:
    """The convergence sweep: errors per field and h, fitted and local slopes, floor flags.
    ``engine``: 'closed' (the paper's formulas) or 'generic' (MATH.md section 5, any
    smooth optax optimizer of :mod:`bea.optimizer_registry`); default closed where it exists.

    ``batching``/``history``: see :func:`run_h`.

    Returns the dictionary written to ``convergence.json`` (without ``config``)."""
    validate(h=hs, beta=beta, rho=rho, eps=eps, T=T, optimizer=optimizer, fields=fields,
             batch_size=batch_size, engine=engine)
    engine = resolve_engine(optimizer, engine)
    _check_history(batching, history, batch_size, optimizer, engine)
    hs = sorted(hs, reverse=True)
    t0 = time.perf_counter()
    N_max = max(num_steps(T, h) for h in hs)
    runs, trust = [], None
    for h in hs:  # coarsest first: its run checks the embedded error bound for the others
        runs.append(run_h(problem, optimizer, h, T, fields, beta=beta, rho=rho, eps=eps,
                          batch_size=batch_size, seed=seed, rtol=rtol, atol=atol, N_max=N_max,
                          engine=engine, solver=solver, trust=trust, batching=batching,
                          history=history))
        trust = merge_trust(trust, runs[-1].get("embedded_ok", {}))
        if progress is not None:
            progress(runs[-1])
    res = summarise(hs, runs, fields)
    res["seconds"] = time.perf_counter() - t0
    return res


def merge_trust(trust: dict | None, checked: dict) -> dict:
    """``trust`` (field -> tableau -> bool) with the checks of a new run added."""
    out = {k: dict(v) for k, v in (trust or {}).items()}
    for kind, by_tableau in checked.items():
        out.setdefault(kind, {}).update(by_tableau)
    return out


def summarise(hs: Sequence[float], runs: Sequence[dict], fields: Sequence[str]) -> dict:
    """The sweep's result (errors, slopes, floors per field) from one :func:`run_h` per h."""
    res = {"h": list(hs), "N": [r["N"] for r in runs], "errors": {}, "slopes": {},
           "local_slopes": {}, "floor": {}, "solver_error": {}, "solver": {},
           "tableau": {}, "estimate": {},
           "diverged_at": {str(r["h"]): r["diverged_at"] for r in runs
                           if r["diverged_at"] is not None}}
    for k in fields:
        err = [r["errors"][k] for r in runs]
        flo = [r["floor"][k] for r in runs]
        res["errors"][k] = err
        res["floor"][k] = flo
        res["solver_error"][k] = [r["solver_error"][k] for r in runs]
        res["slopes"][k] = measure.fit_slope(hs, err, use=[not f for f in flo])
        res["local_slopes"][k] = measure.local_slopes(hs, err)
        res["solver"][k] = [r["solver"].get(k) for r in runs]
        res["tableau"][k] = [r.get("tableau", {}).get(k) for r in runs]
        res["estimate"][k] = [r.get("estimate", {}).get(k) for r in runs]
    return res


