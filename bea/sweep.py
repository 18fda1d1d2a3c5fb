"""One straight path from a problem to a measured slope: run the discrete optimizer and
each modified field over a ladder of h at fixed T, and measure the errors and orders."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp

from bea import measure
from bea.fields import FIELD_KINDS, check_field, make_field
from bea.optimizers import adam, first_nonfinite, gd, heavy_ball, rmsprop, trajectory
from bea.problems import Problem, batch_sequence
from bea.solve import solve_with_error

__all__ = ["num_steps", "discrete_optimizer", "run_h", "sweep", "validate", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "rmsprop", "gd", "heavy_ball")


def validate(*, h: Sequence[float], beta: float, rho: float, eps: float, T: float,
             optimizer: str, fields: Sequence[str], batch_size: int | None = None) -> None:
    """Raise ValueError with a one-line message naming the first offending value."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
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
    raise ValueError(f"unknown optimizer {name!r}")


@partial(jax.jit, static_argnames=("optimizer", "kind", "N_max", "mini", "rtol", "atol", "loss"))
def _ode(theta0, batches, data, h, beta, rho, eps, N, *, optimizer, kind, N_max, mini, rtol,
         atol, loss):
    E = loss if mini else (lambda t: loss(t, data))
    f = make_field(optimizer, kind, E, h, beta=beta, rho=rho, eps=eps,
                   batches=batches if mini else None, num_steps=N_max)
    return solve_with_error(f, theta0, h, N_max, rtol=rtol, atol=atol, active_steps=N)


@partial(jax.jit, static_argnames=("optimizer", "N_max", "mini", "loss"))
def _discrete(theta0, batches, data, h, beta, rho, eps, N, *, optimizer, N_max, mini, loss):
    opt = discrete_optimizer(optimizer, h, beta, rho, eps)
    return trajectory(opt, loss, theta0, batches if mini else None, N_max, data=data,
                      active_steps=N)


def run_h(problem: Problem, optimizer: str, h: float, T: float, fields: Sequence[str], *,
          beta: float, rho: float, eps: float, batch_size: int | None = None, seed: int = 0,
          rtol: float = 1e-12, atol: float = 1e-14, N_max: int | None = None) -> dict:
    """Errors of every field against the discrete run for one h. ``N_max`` (>= T/h) pads
    the run to a common length so a whole sweep compiles one program per field."""
    N = num_steps(T, h)
    N_max = N if N_max is None else N_max
    mini = batch_size is not None
    batches = batch_sequence(problem, batch_size, N_max, seed) if mini else None
    args = (problem.theta0, batches, problem.data, jnp.asarray(h, float), beta, rho, eps,
            jnp.asarray(N))
    disc = _discrete(*args, optimizer=optimizer, N_max=N_max, mini=mini,
                     loss=problem.loss)[: N + 1]
    bad = first_nonfinite(disc)
    out = {"h": h, "N": N, "diverged_at": bad, "errors": {}, "solver_error": {}, "floor": {}}
    if bad is not None:
        for k in fields:
            out["errors"][k] = float("nan")
            out["solver_error"][k] = float("nan")
            out["floor"][k] = False
        return out
    roundoff = measure.roundoff_floor(disc)
    for kind in fields:
        ys, serr = _ode(*args, optimizer=optimizer, kind=kind, N_max=N_max, mini=mini,
                        rtol=rtol, atol=atol, loss=problem.loss)
        ys = ys[: N + 1]
        e = measure.global_error(ys, disc)
        out["errors"][kind] = e
        out["solver_error"][kind] = float(serr)
        out["floor"][kind] = measure.at_floor(e, float(serr), roundoff)
        out.setdefault("ode_diverged_at", {})[kind] = first_nonfinite(ys)
    return out


def sweep(problem: Problem, optimizer: str, hs: Sequence[float], T: float,
          fields: Sequence[str] = ("order0", "order1"), *, beta: float = 0.9, rho: float = 0.999,
          eps: float = 1e-8, batch_size: int | None = None, seed: int = 0,
          rtol: float = 1e-12, atol: float = 1e-14, progress=None) -> dict:
    """The convergence sweep: errors per field and h, fitted and local slopes, floor flags.

    Returns the dictionary written to ``convergence.json`` (without ``config``)."""
    validate(h=hs, beta=beta, rho=rho, eps=eps, T=T, optimizer=optimizer, fields=fields,
             batch_size=batch_size)
    hs = sorted(hs, reverse=True)
    t0 = time.perf_counter()
    N_max = max(num_steps(T, h) for h in hs)
    runs = []
    for h in hs:
        runs.append(run_h(problem, optimizer, h, T, fields, beta=beta, rho=rho, eps=eps,
                          batch_size=batch_size, seed=seed, rtol=rtol, atol=atol, N_max=N_max))
        if progress is not None:
            progress(runs[-1])
    res = {"h": hs, "N": [r["N"] for r in runs], "errors": {}, "slopes": {}, "local_slopes": {},
           "floor": {}, "solver_error": {},
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
    res["seconds"] = time.perf_counter() - t0
    return res


