"""Convergence sweeps: from a loss, its parameters, data and an optimizer to measured orders.

    problem ──> iterations ──> theta^(n) ─────────────────────┐
       └──> fields (closed | generic) ──> solve ──> theta~(nh) ┴──> measure ──> SweepResult

:func:`sweep` runs the optimizer and each modified field over a ladder of h at a fixed
horizon T and measures err(h) = max_n ||theta~(nh) - theta^(n)||_2 and its slopes
(docs/math.md, section 6). :func:`grid` does the same for every combination of a grid of
(beta, rho, eps) in one vmapped program, sharded over the devices. Both are the same path:
a sweep is a grid of one combination. Everything runs in float64 (inside
:func:`bea.precision.float64`; the process's own setting is left as it was).

The solve per interval is the cheapest whose error is measured at least 100x below the
error (:data:`ATTEMPTS`): one step of Dopri5, else of Dopri8, else adaptive Dopri8. A
fixed-step solve's error is first bounded for free by its embedded estimates; that bound is
trusted only for a tableau whose bound passed a check against halving (the same program,
two steps per interval) at the coarsest h, where the solver error is largest relative to
the error, and wherever it is not 100x below the error the error is measured by halving.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree

from bea import _programs, measure, placement
from bea import optimizer_registry as registry
from bea.measure import first_nonfinite
from bea.optimizers import check_hyperparameters
from bea.precision import check_float64_loss, float64
from bea.problems import Grouped, Problem, as_problem, batch_sequence, epoch_batches
from bea.result import GridResult, SweepResult

__all__ = ["SweepConfig", "sweep", "grid"]

HYPER = ("beta", "rho", "eps")
DEFAULT_HYPER = {"beta": 0.9, "rho": 0.999, "eps": 1e-8}  # optax's Adam defaults
SOLVERS = ("auto", "fixed", "adaptive")
BATCHINGS = ("iid", "epoch")  # a fresh random batch per step | a fixed partition, reshuffled
HISTORIES = ("auto", "direct", "grouped")  # how the mini-batch fields walk their history
# What each solver tries, in order, until its error is measured >= 100x below the error.
ATTEMPTS = {"adaptive": (("adaptive", None),),
            "fixed": (("fixed", "dopri5"), ("fixed", "dopri8")),
            "auto": (("fixed", "dopri5"), ("fixed", "dopri8"), ("adaptive", None))}
_ONE, _TWO = np.int64(1), np.int64(2)


def num_steps(T: float, h: float) -> int:
    """N = T/h, which must be an integer to 1e-9 (docs/math.md, section 1)."""
    N = round(T / h)
    if N < 1 or abs(T / h - N) > 1e-9 * max(1.0, T / h):
        raise ValueError(f"T/h must be a positive integer: T={T!r}, h={h!r} gives "
                         f"T/h={T / h!r}")
    return N


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep is, checked on construction (ValueError, one line naming the
    offending value). ``h`` is stored coarsest first; ``engine`` is resolved ('closed'
    where the paper gives the fields, else 'generic'); beta, rho, eps default to optax's
    Adam defaults for a registry name and must be left unset for an optimizer factory
    (its hyperparameters are its own)."""

    optimizer: str | Callable = "adam"
    h: tuple[float, ...] = (0.04, 0.02, 0.01, 0.005)
    T: float = 1.0
    fields: tuple[str, ...] = ("order0", "order1")
    beta: float | None = None
    rho: float | None = None
    eps: float | None = None
    batch_size: int | None = None
    seed: int = 0
    engine: str | None = None
    solver: str = "auto"
    rtol: float = 1e-12
    atol: float = 1e-14
    device: str = "auto"
    batching: str = "iid"
    history: str = "auto"

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen
        requested = self.engine
        put("engine", registry.engine_for(self.optimizer, self.engine))
        put("fields", tuple([self.fields] if isinstance(self.fields, str) else self.fields))
        registry.check_fields(self.optimizer, self.fields, self.engine,
                              self.batch_size is not None, requested)
        hs = [self.h] if isinstance(self.h, int | float) else list(self.h)
        if not hs:
            raise ValueError("empty list of step sizes h")
        for x in hs:
            check_hyperparameters(h=x)
        if len(set(hs)) < len(hs):
            twice = sorted({x for x in hs if hs.count(x) > 1})
            raise ValueError(f"step size h={twice[0]!r} is given twice; give distinct h")
        if not (isinstance(self.T, int | float) and math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"T must be positive and finite, got {self.T!r}")
        for x in hs:
            num_steps(self.T, x)
        put("h", tuple(sorted((float(x) for x in hs), reverse=True)))
        put("T", float(self.T))
        for k in HYPER:
            v = getattr(self, k)
            if callable(self.optimizer):
                if v is not None:
                    raise ValueError(f"{k}={v!r} is given with an optimizer factory, whose "
                                     "hyperparameters are its own: leave it unset")
            else:
                put(k, float(DEFAULT_HYPER[k] if v is None else v))
        if not callable(self.optimizer):
            check_hyperparameters(beta=self.beta, rho=self.rho, eps=self.eps)
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not
                                            isinstance(self.batch_size, int) or
                                            self.batch_size < 1):
            raise ValueError(f"batch size must be a positive integer, got {self.batch_size!r}")
        for k in ("rtol", "atol"):
            v = getattr(self, k)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be positive and finite, got {v!r}")
        for k, options in (("solver", SOLVERS), ("device", placement.DEVICES),
                           ("batching", BATCHINGS), ("history", HISTORIES)):
            if getattr(self, k) not in options:
                raise ValueError(f"unknown {k} {getattr(self, k)!r}; choose from "
                                 f"{', '.join(options)}")
        if self.batching == "epoch" and self.batch_size is None:
            raise ValueError("batching 'epoch' cuts the data into batches: give a batch size")
        if self.history == "grouped":
            if self.batching != "epoch":
                raise ValueError("history 'grouped' needs the epoch schedule (batching "
                                 "'epoch'): i.i.d. batches are all distinct")
            if not any(self.groups(k) for k in self.fields):
                raise ValueError(f"history 'grouped' exists for the closed-form adam and "
                                 f"rmsprop fields (Theorems 3.6, 3.3), not for "
                                 f"{self.to_dict()['optimizer']!r} with fields "
                                 f"{', '.join(self.fields)}")

    def groups(self, kind: str) -> bool:
        """Whether field ``kind`` can walk a history grouped by distinct batch (docs/math.md,
        section 7): a closed form of a registry entry that says ``grouped`` (Theorems 3.6 and
        3.3: Adam and RMSProp)."""
        return self.batching == "epoch" and registry.groups(self.optimizer, kind, self.engine)

    @property
    def N(self) -> tuple[int, ...]:
        return tuple(num_steps(self.T, h) for h in self.h)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if callable(self.optimizer):
            d["optimizer"] = getattr(self.optimizer, "__name__", repr(self.optimizer))
        return d


class _Point(NamedTuple):
    """One field at one h for one combination: the error and how it was measured."""

    error: float
    solver_error: float
    floor: bool
    solver: str | None
    tableau: str | None
    estimate: str | None
    ode_diverged_at: int | None
    outside: bool = False


_NAN_POINT = _Point(float("nan"), float("nan"), False, None, None, None, None)


def sweep(loss: Callable[[PyTree, Any], Any], params0: PyTree, data: PyTree, *,
          name: str = "custom", progress: Callable[[dict], None] | None = None,
          **config: Any) -> SweepResult:
    """The convergence sweep of ``optimizer`` on ``loss(params, batch)`` from ``params0``.

    ``data``: a pytree with a leading example axis (full batch: every step uses all of it;
    with ``batch_size``, step k uses batch k of a seeded sequence). ``config``: the fields
    of :class:`SweepConfig`: ``optimizer`` (a registry name, or a factory
    ``lr -> optax.GradientTransformation`` for the generic engine, checked to be linear in
    lr), ``h`` (the ladder), ``T``, ``fields``, ``beta``/``rho``/``eps``, ``batch_size``,
    ``batching`` ("iid" or "epoch") and ``history`` ("auto", "direct" or "grouped";
    docs/math.md, section 7), ``seed``, ``engine``, ``solver``, ``rtol``/``atol``,
    ``device``. ``progress(record)`` is called
    after each h. Returns a :class:`bea.result.SweepResult`."""
    cfg = SweepConfig(**config)
    with float64():
        problem = _problem(loss, params0, data, name, cfg)
        return _run(problem, cfg, [cfg_hyper(cfg)], progress)[0]


def grid(loss: Callable[[PyTree, Any], Any], params0: PyTree, data: PyTree, *,
         grid: Mapping[str, Sequence[float]], name: str = "custom",
         progress: Callable[[dict], None] | None = None, shard_history: bool = False,
         **config: Any) -> GridResult:
    """:func:`sweep` for every combination of ``grid`` (values of beta, rho and/or eps; the
    others from ``config``) in one vmapped program whose combination axis is sharded over
    every visible device (results do not depend on the device count).
    ``shard_history``: also place the batch history across the devices (one large
    mini-batch problem). Returns a :class:`bea.result.GridResult` in the order of the
    row-major product of the grid (beta, rho, eps order)."""
    cfg = SweepConfig(**config)
    if callable(cfg.optimizer):
        raise ValueError("a grid varies beta, rho or eps of a registry optimizer; an "
                         "optimizer factory holds its own hyperparameters")
    names = _check_grid(grid)
    combos = []
    for vals in itertools.product(*(grid[k] for k in names)):
        c = cfg_hyper(cfg) | {k: float(v) for k, v in zip(names, vals, strict=True)}
        check_hyperparameters(**c)
        combos.append(c)
    t0 = time.perf_counter()
    with float64():
        problem = _problem(loss, params0, data, name, cfg)
        results = _run(problem, cfg, combos, progress, shard_history=shard_history)
    return GridResult(tuple(names), combos, results, time.perf_counter() - t0,
                      results[0].devices, jax.process_count())


def cfg_hyper(cfg: SweepConfig) -> dict[str, float]:
    return {k: getattr(cfg, k) for k in HYPER}


def _check_grid(grid: Mapping[str, Sequence[float]]) -> list[str]:
    if not grid:
        raise ValueError("empty grid: give values for beta, rho or eps")
    for k, vals in grid.items():
        if k not in HYPER:
            raise ValueError(f"cannot grid over {k!r}; choose from {', '.join(HYPER)}")
        vals = list(vals)
        if not vals:
            raise ValueError(f"no values for {k!r} in the grid")
        if len(set(vals)) < len(vals):
            raise ValueError(f"a value of {k!r} is given twice in the grid: {vals}")
    return [k for k in HYPER if k in grid]


def _problem(loss, params0, data, name: str, cfg: SweepConfig) -> Problem:
    """The problem in float64, checked: the loss is a float64 scalar, the batch size fits
    the data, and an optimizer factory is linear in the learning rate."""
    problem = as_problem(loss, params0, data, name=name)
    batch = None
    if cfg.batch_size is not None:
        if problem.num_examples is None:
            raise ValueError("a batch size needs data with an example axis")
        if cfg.batch_size > problem.num_examples:
            raise ValueError(f"batch size {cfg.batch_size} exceeds the "
                             f"{problem.num_examples} examples of the data")
        batch = jax.tree_util.tree_map(lambda x: x[: cfg.batch_size], problem.data)
    try:
        check_float64_loss(problem.loss, problem.theta0, problem.data if batch is None
                           else batch)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if callable(cfg.optimizer):
        registry.check_factory(cfg.optimizer, problem.unravel(problem.theta0))
    return problem


def _mesh(platform: str) -> Mesh:
    return Mesh(np.asarray(jax.devices(platform)), ("grid",))


def _fetch(x) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.array(multihost_utils.process_allgather(x, tiled=True))  # writable
    return np.array(x)  # a writable copy


def _split_hyper(combos: list[dict], mesh: Mesh | None) -> tuple[tuple, dict]:
    """(static, traced): hyperparameters equal in every combination are static; the others
    are arrays over the combinations, padded to a multiple of the device count (repeating
    the last) and sharded over ``mesh``."""
    static, traced = [], {}
    pad = 0 if mesh is None else (-len(combos)) % mesh.size
    for k in HYPER:
        vals = [c[k] for c in combos]
        if len(set(vals)) == 1:
            static.append((k, vals[0]))
        else:
            x = np.asarray(vals + [vals[-1]] * pad, float)
            traced[k] = jax.device_put(x, NamedSharding(mesh, P("grid"))) if mesh else x
    return tuple(static), traced


def _memory_available() -> float:
    """Bytes the sweep may use: the accelerator's memory limit, or the host's available
    memory (Linux /proc/meminfo; physical memory elsewhere)."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" in stats:
            return float(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _check_memory(problem: Problem, cfg: SweepConfig, C: int) -> None:
    """Refuse, naming h and N, a ladder whose padded paths cannot fit in memory: the
    discrete path, a solve and its halving reference, (N_max + 1) x p float64 each, for
    every combination, and the batch history."""
    N_max, p = max(cfg.N), int(problem.theta0.size)
    need = 4 * 8 * C * (N_max + 1) * p
    if cfg.batch_size is not None and problem.num_examples:
        per_example = sum(np.asarray(x[:1]).nbytes for x in
                          jax.tree_util.tree_leaves(problem.data))
        need += N_max * cfg.batch_size * per_example
    have = _memory_available()
    if need > 0.8 * have:
        h = min(cfg.h)
        raise ValueError(f"h={h!r} needs N={N_max} steps: about {need / 2**30:.1f} GiB for "
                         f"{C} combination(s) of {p} parameters, more than the "
                         f"{have / 2**30:.1f} GiB available; use a larger h or a shorter T")


def _nan_cause(problem: Problem, batches, mini: bool) -> str:
    """Why a field can be NaN at theta0, where it can be known: gradient components that
    are exactly 0 there (an update with eps outside a square root is not differentiable
    at nu = 0)."""
    grad = jax.grad(problem.loss)
    if mini:
        g = jax.vmap(grad, in_axes=(None, 0))(problem.theta0, jax.tree_util.tree_map(
            lambda b: b[:1], batches))[0]
    else:
        g = grad(problem.theta0, problem.data)
    zero = int(np.sum(np.asarray(g) == 0))
    if zero:
        return (f"{zero} of the {g.size} gradient components are exactly 0 at theta0, where "
                "an update with eps outside a square root, g/(sqrt(nu) + eps), is not "
                "differentiable; use an eps-inside optimizer or data without constant "
                "features (e.g. --problem mlp_centered)")
    return "the loss or the update is not differentiable (smooth enough) at theta0"


def _run(problem: Problem, cfg: SweepConfig, combos: list[dict], progress,
         shard_history: bool = False) -> list[SweepResult]:
    """The one path: every h of the ladder (coarsest first: its run checks the embedded
    error bounds for the others), every field, every combination."""
    t0 = time.perf_counter()
    C = len(combos)
    _check_memory(problem, cfg, C)
    where = _placement(problem, cfg, C)
    problem = problem._replace(theta0=_on(problem.theta0, where.device),
                               data=_on(problem.data, where.device))
    with jax.default_device(where.device):
        return _run_on(problem, cfg, combos, progress, shard_history, where, t0)


def _on(tree: PyTree, device: jax.Device) -> PyTree:
    """``tree`` on ``device``: the same object when it is already there (compiled programs
    that close over it are then reused)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if all(isinstance(x, jax.Array) and x.devices() == {device} for x in leaves):
        return tree
    return jax.device_put(tree, device)


def _placement(problem: Problem, cfg: SweepConfig, C: int) -> placement.Placement:
    """Where the sweep runs (bea.placement): the work per field evaluation is that of the
    batches its history holds (all N_max slots in the worst case, B distinct batches when
    every field walks the history grouped, 1 in full batch)."""
    mini = cfg.batch_size is not None
    examples = cfg.batch_size if mini else (problem.num_examples or 1)
    slots = max(cfg.N) if mini else 1
    if mini and cfg.history != "direct" and all(cfg.groups(k) for k in cfg.fields):
        slots = min(slots, problem.num_examples // cfg.batch_size)
    return placement.choose(cfg.device, placement.work_per_evaluation(
        int(problem.theta0.size), examples, slots, C))


def _histories(cfg: SweepConfig, grouped: Grouped | None, N_max: int) -> dict[str, str]:
    """How each field walks its history: 'grouped' (docs/math.md, section 7) where it can
    and either asked for or (auto) the schedule has fewer distinct batches than the history
    is long; else 'direct'; 'full batch' without mini-batches."""
    if cfg.batch_size is None:
        return {k: "full batch" for k in cfg.fields}
    out = {}
    for k in cfg.fields:
        can = grouped is not None and cfg.groups(k)
        fewer = can and grouped.num_batches < N_max
        out[k] = "grouped" if can and (cfg.history == "grouped" or
                                       (cfg.history == "auto" and fewer)) else "direct"
    return out


def _run_on(problem: Problem, cfg: SweepConfig, combos: list[dict], progress,
            shard_history: bool, where: placement.Placement, t0: float) -> list[SweepResult]:
    mini = cfg.batch_size is not None
    N_max = max(cfg.N)
    C = len(combos)
    mesh = _mesh(where.device.platform) if C > 1 else None
    static, traced = _split_hyper(combos, mesh)
    grouped = left_out = None
    if mini and cfg.batching == "epoch":
        grouped = epoch_batches(problem, cfg.batch_size, N_max, cfg.seed)
        batches = grouped.materialize()  # the discrete run (and direct fields) step through it
        left_out = problem.num_examples - grouped.num_batches * cfg.batch_size
    else:
        batches = batch_sequence(problem, cfg.batch_size, N_max, cfg.seed) if mini else None
    histories = _histories(cfg, grouped, N_max)
    theta0 = problem.theta0
    if mesh is not None and (jax.process_count() > 1 or shard_history):
        # a mesh over several processes takes global arrays: the history sharded (with
        # shard_history) or replicated, like theta0
        spec = P("grid") if shard_history and N_max % mesh.size == 0 else P()
        put = lambda x, s: jax.device_put(np.asarray(x), NamedSharding(mesh, s))  # noqa: E731
        batches = jax.tree_util.tree_map(lambda b: put(b, spec), batches) if mini else None
        if grouped is not None:
            grouped = jax.tree_util.tree_map(lambda b: put(b, P()), grouped)
        theta0 = put(theta0, P())
    loss = _programs.compiled_loss(problem, mini)
    data = problem.data if mini else None  # full batch: the data are baked into ``loss``
    base = _programs.Program(cfg.optimizer, N_max, mini, static)
    trust: list[dict] = [{k: {} for k in cfg.fields} for _ in range(C)]
    points: list[list[dict[str, _Point]]] = [[] for _ in range(C)]
    diverged: list[dict[float, int]] = [{} for _ in range(C)]
    for h, N in zip(cfg.h, cfg.N, strict=True):
        args = (theta0, batches, data, jnp.asarray(h, float), jnp.asarray(N))
        disc = _fetch(_programs.discrete(*args, traced, program=base, loss=loss))[:C, : N + 1]
        bad = [first_nonfinite(d) for d in disc]
        for i in range(C):
            if bad[i] is not None:
                diverged[i][h] = bad[i]
        per = [{} for _ in range(C)]
        for kind in cfg.fields:
            program = base._replace(kind=kind, engine=registry.field_engine(kind, cfg.engine),
                                    rtol=cfg.rtol, atol=cfg.atol)

            fargs = (args[0], grouped, *args[2:]) if histories[kind] == "grouped" else args

            def call(method, tableau, substeps, program=program, fargs=fargs):
                return _programs.ode(*fargs, traced, substeps, program=program, loss=loss,
                                     method=method, tableau=tableau or "dopri8")

            def check_start(program=program, fargs=fargs, kind=kind):
                f0 = _fetch(_programs.field_at_start(*fargs[:4], traced, program=program,
                                                     loss=loss))[:C]
                if not np.all(np.isfinite(f0)):
                    opt = cfg.to_dict()["optimizer"]
                    raise ValueError(f"field {kind!r} of {opt} is NaN/inf at theta0: "
                                     f"{_nan_cause(problem, batches, mini)}")

            got = _solve_measured(call, disc, N, cfg.solver, [t[kind] for t in trust],
                                  [b is None for b in bad], check_start)
            for i in range(C):
                per[i][kind] = got[i]
        for i in range(C):
            points[i].append(per[i])
        if progress is not None:
            progress({"h": h, "N": N, "errors": {k: per[0][k].error for k in cfg.fields},
                      "combinations": C})
    seconds = time.perf_counter() - t0
    schedule = {"histories": histories, "left_out": left_out,
                "distinct_batches": None if grouped is None else grouped.num_batches}
    return [_result(problem, cfg, combos[i], points[i], diverged[i], seconds, where, schedule)
            for i in range(C)]


def _solve_measured(call, disc: np.ndarray, N: int, solver: str, trust: list[dict],
                    live: list[bool], check_start: Callable[[], None] | None = None
                    ) -> list[_Point]:
    """Solve one field for every combination as ``solver`` says (:data:`ATTEMPTS`),
    measuring the solver error, and return one point per combination. ``trust[i]``
    (tableau -> bool) records whether combination i's embedded bound passed its halving
    check; a tableau not yet checked is checked here and recorded (mutating ``trust``).
    A path that is not finite from its first interval on calls ``check_start`` (which
    raises if the field itself is NaN at theta0) before anything else is tried."""
    C = len(live)
    roundoff = [measure.roundoff_floor(d) for d in disc]
    best: list[dict | None] = [None] * C
    todo = [i for i in range(C) if live[i]]
    for method, tableau in ATTEMPTS[solver]:
        if not todo:
            break
        ys, serr = call(method, tableau, _ONE)
        ys, serr = _fetch(ys)[:C, : N + 1], _fetch(serr)[:C]
        if check_start is not None and any(first_nonfinite(ys[i]) == 1 for i in todo):
            check_start()
            check_start = None
        errs = [measure.global_error(ys[i], disc[i]) for i in range(C)]
        est = ["refined" if method == "adaptive" else "embedded"] * C
        check = [i for i in todo if method == "fixed" and (
            trust[i].get(tableau) is not True or not 100 * serr[i] <= errs[i])]
        if check:
            fine = _fetch(call(method, tableau, _TWO)[0])
            for i in check:
                with np.errstate(over="ignore", invalid="ignore"):  # a path that blew up
                    d = np.linalg.norm(ys[i] - fine[i, : N + 1], axis=-1)
                halving = float(np.max(d))
                if tableau not in trust[i] and np.isfinite(halving):
                    trust[i][tableau] = bool(halving <= serr[i])
                serr[i], est[i] = halving, "halving"
        for i in todo:
            best[i] = dict(ys=ys[i], error=errs[i], solver_error=float(serr[i]),
                           solver=method, tableau=tableau, estimate=est[i])
        todo = [i for i in todo if not 100 * best[i]["solver_error"] <= best[i]["error"]]
    out = []
    for i in range(C):
        r = best[i]
        if r is None:
            out.append(_NAN_POINT)
            continue
        out.append(_Point(r["error"], r["solver_error"],
                          measure.at_floor(r["error"], r["solver_error"], roundoff[i]),
                          r["solver"], r["tableau"], r["estimate"], first_nonfinite(r["ys"]),
                          measure.outside_expansion(r["error"], r["ys"])))
    return out


def _result(problem: Problem, cfg: SweepConfig, hyper: dict, points: list[dict[str, _Point]],
            diverged: dict[float, int], seconds: float,
            where: placement.Placement, schedule: dict) -> SweepResult:
    h = np.asarray(cfg.h)

    def col(kind, attr, dtype=float):
        return np.asarray([getattr(p[kind], attr) for p in points], dtype)

    errors = {k: col(k, "error") for k in cfg.fields}
    floor = {k: col(k, "floor", bool) for k in cfg.fields}
    outside = {k: col(k, "outside", bool) for k in cfg.fields}
    return SweepResult(
        config=cfg.to_dict() | ({} if callable(cfg.optimizer) else hyper) | schedule,
        problem=problem.name, h=h, N=np.asarray(cfg.N),
        errors=errors, solver_error={k: col(k, "solver_error") for k in cfg.fields},
        floor=floor, outside=outside,
        slopes={k: measure.fit_slope(h, errors[k], use=~(floor[k] | outside[k]))
                for k in cfg.fields},
        local_slopes={k: np.asarray(measure.local_slopes(h, errors[k])) for k in cfg.fields},
        solver={k: tuple(p[k].solver for p in points) for k in cfg.fields},
        tableau={k: tuple(p[k].tableau for p in points) for k in cfg.fields},
        estimate={k: tuple(p[k].estimate for p in points) for k in cfg.fields},
        diverged_at=diverged,
        ode_diverged_at={k: tuple(p[k].ode_diverged_at for p in points) for k in cfg.fields},
        seconds=seconds, devices=len(jax.devices(where.platform)), platform=where.platform,
        placement=where.reason)
