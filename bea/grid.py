"""Hyperparameter grids in one compiled program, sharded across devices.

A grid is a product of values of ``beta``, ``rho`` and ``eps``. For each h of the ladder
the discrete runs of every combination are one ``vmap`` of the padded program of
:mod:`bea.sweep` (``N_max`` static, h and N traced), and so are the solves of each field:
a grid sweep compiles one discrete program and one (or, where the fixed-step solve is
not measured safe, two) programs per field, whatever the number of h values and
combinations. The combination axis is sharded over every visible device with
``jax.sharding`` (padded to a multiple of the device count by repeating the last
combination); each combination is computed independently, so results do not depend on
the device count. For one large mini-batch problem ``shard_history=True`` also places
the batch history (the K axis the fields vmap over) across the devices.

Multi-host: start every process with ``BEA_DISTRIBUTED=1`` (and the usual
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``, or a cluster
``jax.distributed.initialize`` detects); :func:`init_distributed` then joins them, the
mesh spans all processes' devices, and the results are gathered to every process.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bea import measure
from bea.optimizers import first_nonfinite
from bea.problems import Problem, batch_sequence
from bea.sweep import (
    _ONE,
    _TWO,
    ATTEMPTS,
    _discrete,
    _ode,
    compiled_loss,
    merge_trust,
    num_steps,
    resolve_engine,
    summarise,
    validate,
)

__all__ = ["GRID_PARAMS", "parse_grid", "combinations", "grid_sweep", "init_distributed",
           "run_grid_h"]

GRID_PARAMS = ("beta", "rho", "eps")


def init_distributed() -> None:
    """``jax.distributed.initialize()`` when ``BEA_DISTRIBUTED=1`` (multi-host runs)."""
    if os.environ.get("BEA_DISTRIBUTED") == "1" and jax.process_count() == 1:
        jax.distributed.initialize()


def parse_grid(specs: Sequence[str]) -> dict[str, list[float]]:
    """``["beta=0.5,0.7", "rho=0.9"]`` -> ``{"beta": [0.5, 0.7], "rho": [0.9]}``; raises
    ValueError (one line) naming a malformed item or an unknown name."""
    grid: dict[str, list[float]] = {}
    for spec in specs:
        name, sep, vals = spec.partition("=")
        if not sep or not vals:
            raise ValueError(f"grid item {spec!r} is not NAME=v1,v2,...")
        if name not in GRID_PARAMS:
            raise ValueError(f"cannot grid over {name!r}; choose from {', '.join(GRID_PARAMS)}")
        if name in grid:
            raise ValueError(f"{name!r} given twice in --grid")
        try:
            grid[name] = [float(v) for v in vals.split(",")]
        except ValueError:
            raise ValueError(f"grid item {spec!r}: values must be numbers") from None
    return grid


def combinations(grid: dict[str, list[float]], **defaults: float) -> list[dict[str, float]]:
    """Every combination of the grid (row-major in GRID_PARAMS order), with ``defaults``
    for the parameters the grid does not name."""
    names = [k for k in GRID_PARAMS if k in grid]
    out = []
    for vals in itertools.product(*(grid[k] for k in names)):
        c = {k: float(defaults[k]) for k in GRID_PARAMS}
        c.update(zip(names, vals, strict=True))
        out.append(c)
    return out


def _mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("grid",))


def _put(x: np.ndarray, mesh: Mesh, spec: P):
    return jax.device_put(x, NamedSharding(mesh, spec))


def _fetch(x) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.array(x)  # a writable copy


@partial(jax.jit, static_argnames=("optimizer", "N_max", "mini", "loss"))
def _grid_discrete(theta0, batches, data, h, beta, rho, eps, N, *, optimizer, N_max, mini, loss):
    one = partial(_discrete, optimizer=optimizer, N_max=N_max, mini=mini, loss=loss)
    return jax.vmap(lambda b, r, e: one(theta0, batches, data, h, b, r, e, N))(beta, rho, eps)


@partial(jax.jit, static_argnames=("optimizer", "kind", "N_max", "mini", "rtol", "atol", "loss",
                                   "engine", "method", "tableau", "eps_fixed"))
def _grid_ode(theta0, batches, data, h, beta, rho, eps, N, substeps=1, eps_fixed=None,
              **static):
    one = partial(_ode.__wrapped__, **static)  # eps traced (vmapped) only when gridded
    if eps_fixed is not None:
        return jax.vmap(lambda b, r: one(theta0, batches, data, h, b, r, eps_fixed, N,
                                         substeps))(beta, rho)
    return jax.vmap(lambda b, r, e: one(theta0, batches, data, h, b, r, e, N, substeps))(
        beta, rho, eps)


def run_grid_h(problem: Problem, optimizer: str, h: float, T: float, fields: Sequence[str],
               combos: Sequence[dict], *, batch_size: int | None = None, seed: int = 0,
               rtol: float = 1e-12, atol: float = 1e-14, N_max: int | None = None,
               engine: str | None = None, solver: str = "auto",
               shard_history: bool = False, trust: list[dict] | None = None) -> list[dict]:
    """:func:`bea.sweep.run_h` for every combination at once: one dict per combination
    (``trust``: one dict per combination, as run_h's)."""
    engine = resolve_engine(optimizer, engine)
    N = num_steps(T, h)
    N_max = N if N_max is None else N_max
    mini = batch_size is not None
    mesh = _mesh()
    C = len(combos)
    pad = (-C) % mesh.size
    cols = [np.asarray([c[k] for c in combos] + [combos[-1][k]] * pad, float)
            for k in GRID_PARAMS]
    beta, rho, eps = (_put(x, mesh, P("grid")) for x in cols)
    batches = batch_sequence(problem, batch_size, N_max, seed) if mini else None
    if mini and shard_history and N_max % mesh.size == 0:
        batches = jax.tree_util.tree_map(lambda b: _put(np.asarray(b), mesh, P("grid")),
                                         batches)
    args = (problem.theta0, batches, problem.data, jnp.asarray(h, float), beta, rho, eps,
            jnp.asarray(N))
    disc = _fetch(_grid_discrete(*args, optimizer=optimizer, N_max=N_max, mini=mini,
                                 loss=compiled_loss(problem, mini)))[:C, : N + 1]
    outs = [{"h": h, "N": N, "diverged_at": first_nonfinite(disc[i]), "errors": {},
             "solver_error": {}, "floor": {}, "solver": {}} for i in range(C)]
    roundoff = [measure.roundoff_floor(d) for d in disc]
    if solver not in ("auto", "adaptive", "fixed"):
        raise ValueError(f"unknown solver {solver!r}; use auto, adaptive or fixed")
    eps_all = {c["eps"] for c in combos}
    static = dict(optimizer=optimizer, N_max=N_max, mini=mini, rtol=rtol, atol=atol,
                  loss=compiled_loss(problem, mini), engine=engine,
                  eps_fixed=eps_all.pop() if len(eps_all) == 1 else None)
    for kind in fields:  # bea.sweep.solve_measured for every combination at once
        call = partial(_grid_ode, *args, kind=kind, **static)
        best: list[dict | None] = [None] * C
        todo = [i for i in range(C) if outs[i]["diverged_at"] is None]
        ok: dict[int, dict] = {i: {} for i in todo}  # embedded bounds checked, per tableau
        for method, tableau in ATTEMPTS[solver]:
            if not todo:
                break
            ys, serr = call(method=method, tableau=tableau or "dopri8", substeps=_ONE)
            ys, serr = _fetch(ys)[:C, : N + 1], _fetch(serr)[:C]
            errs = [measure.global_error(ys[i], disc[i]) for i in range(C)]
            tr = [None if trust is None else trust[i].get(kind, {}).get(tableau)
                  for i in range(C)]
            est = ["refined" if method == "adaptive" else "embedded"] * C
            if method == "fixed" and any(tr[i] is not True or not 100 * serr[i] <= errs[i]
                                         for i in todo):
                fine = _fetch(call(method=method, tableau=tableau, substeps=_TWO)[0])
                for i in todo:
                    if tr[i] is not True or not 100 * serr[i] <= errs[i]:
                        d = np.linalg.norm(ys[i] - fine[i, : N + 1], axis=-1)
                        halving = float(np.max(d))
                        if tr[i] is None and np.isfinite(halving):
                            ok[i][tableau] = bool(halving <= serr[i])
                        serr[i], est[i] = halving, "halving"
            for i in todo:
                best[i] = dict(ys=ys[i], error=errs[i], solver_error=float(serr[i]),
                               solver=method, tableau=tableau, estimate=est[i])
            todo = [i for i in todo if not 100 * best[i]["solver_error"] <= best[i]["error"]]
        for i, o in enumerate(outs):
            if o["diverged_at"] is not None:
                o["errors"][kind] = o["solver_error"][kind] = float("nan")
                o["floor"][kind] = False
                continue
            r = best[i]
            o["errors"][kind] = r["error"]
            o["solver_error"][kind] = r["solver_error"]
            o["floor"][kind] = measure.at_floor(r["error"], r["solver_error"], roundoff[i])
            for key in ("solver", "tableau", "estimate"):
                o.setdefault(key, {})[kind] = r[key]
            o.setdefault("embedded_ok", {})[kind] = ok[i]
            o.setdefault("ode_diverged_at", {})[kind] = first_nonfinite(r["ys"])
    return outs


def grid_sweep(problem: Problem, optimizer: str, hs: Sequence[float], T: float,
               fields: Sequence[str] = ("order0", "order1"), *,
               grid: dict[str, list[float]], beta: float = 0.9, rho: float = 0.999,
               eps: float = 1e-8, batch_size: int | None = None, seed: int = 0,
               rtol: float = 1e-12, atol: float = 1e-14, engine: str | None = None,
               solver: str = "auto", shard_history: bool = False, progress=None) -> dict:
    """The h-sweep of :func:`bea.sweep.sweep` for every combination of ``grid`` (values of
    beta, rho, eps; the others fixed at ``beta``, ``rho``, ``eps``), vmapped and sharded.

    Returns ``{"params": [...], "results": [sweep-schema dict per combination],
    "seconds": ...}`` in the order of :func:`combinations`."""
    combos = combinations(grid, beta=beta, rho=rho, eps=eps)
    for c in combos:
        validate(h=hs, T=T, optimizer=optimizer, fields=fields, batch_size=batch_size,
                 engine=engine, **c)
    hs = sorted(hs, reverse=True)
    t0 = time.perf_counter()
    N_max = max(num_steps(T, h) for h in hs)
    per_h, trust = [], None
    for h in hs:  # coarsest first: its run checks the embedded error bounds (bea.sweep)
        per_h.append(run_grid_h(problem, optimizer, h, T, fields, combos,
                                batch_size=batch_size, seed=seed, rtol=rtol, atol=atol,
                                N_max=N_max, engine=engine, solver=solver,
                                shard_history=shard_history, trust=trust))
        trust = [merge_trust(trust[i] if trust else None, o.get("embedded_ok", {}))
                 for i, o in enumerate(per_h[-1])]
        if progress is not None:
            progress(h, per_h[-1])
    results = [summarise(hs, [runs[i] for runs in per_h], fields) for i in range(len(combos))]
    return {"params": combos, "results": results, "seconds": time.perf_counter() - t0,
            "devices": len(jax.devices())}
