"""Convergence sweeps: from a loss, its parameters, data and an optimizer to measured orders.

    problem ──> iterations ──> theta^(n) ─────────────────────┐
       └──> fields (closed | generic) ──> solve ──> theta~(nh) ┴──> measure ──> SweepResult

:func:`sweep` runs the optimizer and each modified field over a ladder of h at a fixed
horizon T and measures err(h) = max_n ||theta~(nh) - theta^(n)||_2 and its slopes
(docs/math.md, section 6). :func:`grid` does the same for every combination of a grid of
(beta, rho, eps) in one vmapped program, sharded over the devices. Both are the same path:
a sweep is a grid of one combination. Everything runs in float64 (inside
:func:`bea._precision.float64`; the process's own setting is left as it was).

The solve per interval is the cheapest whose error is measured at least 100x below the
error (:data:`ATTEMPTS`): one step of Dopri5, else of Dopri8, else adaptive Dopri8, and
where that runs out of steps (a stiff interval) implicit Kvaerno5. A
fixed-step solve's error is first bounded for free by its embedded estimates; that bound is
trusted only for a tableau whose bound passed a check against halving (the same program,
two steps per interval) at the coarsest h, where the solver error is largest relative to
the error, and wherever it is not 100x below the error the error is measured by halving.
:class:`SolvePolicy` holds these rules and what it learns (the trust); each field at each h
gives one :class:`bea._measure.Point` per combination, and the points of a field over the
ladder one :class:`bea._result.FieldResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Float, PyTree

from bea import _measure as measure
from bea import _placement as placement
from bea import optimizer_registry as registry
from bea import programs as _programs
from bea._integrate import MAX_STEPS, MAX_STEPS_DEFAULT, NONFINITE
from bea._measure import first_nonfinite
from bea._precision import check_float64_loss, float64
from bea._preflight import BudgetError
from bea._preflight import check as preflight_check
from bea._result import FieldResult, GridResult, Schedule, SweepResult
from bea.optimizers import check_hyperparameters
from bea.problems import Grouped, Problem, as_problem, batch_sequence, epoch_batches

__all__ = ["SweepConfig", "SolvePolicy", "sweep", "grid"]

HYPER = ("beta", "rho", "eps")
DEFAULT_HYPER = {"beta": 0.9, "rho": 0.999, "eps": 1e-8}  # optax's Adam defaults
SOLVERS = ("auto", "fixed", "adaptive", "implicit")
BATCHINGS = ("iid", "epoch")  # a fresh random batch per step | a fixed partition, reshuffled
HISTORIES = ("auto", "direct", "grouped")  # how the mini-batch fields walk their history
# What each solver tries, in order, until its error is measured >= 100x below the error;
# auto's implicit solve only where the adaptive one ran out of steps (a stiff interval).
ATTEMPTS = {"adaptive": (("adaptive", None),),
            "fixed": (("fixed", "dopri5"), ("fixed", "dopri8")),
            "implicit": (("implicit", "kvaerno5"),),
            "auto": (("fixed", "dopri5"), ("fixed", "dopri8"), ("adaptive", None),
                     ("implicit", "kvaerno5"))}
BLOCK = 16
"""Intervals per compiled block of an adaptive or implicit solve (one compilation per
field and method; the host loops over the blocks)."""
QUIET_S = 2.0
"""A solve reports its progress per block once it has run this long, then at most every
QUIET_S seconds: short solves stay silent and pay nothing."""
_ONE, _TWO = np.int64(1), np.int64(2)
UNNAMED = "unnamed factory"  # the name recorded for a lambda given without optimizer_name


def _number(name: str, x: Any, integer: bool = False) -> float | int:
    """``x`` as a Python float (int with ``integer``): Python and numpy scalars and 0-d
    arrays are accepted; a float32 or float16 scalar is read as the shortest decimal it
    round-trips (np.float32(0.2) is 0.2, as typed, not 0.20000000298). ValueError naming
    ``name`` and the value for anything else (bools included)."""
    if isinstance(x, np.ndarray | jax.Array) and np.ndim(x) == 0:
        x = np.asarray(x)[()]
    if isinstance(x, bool | np.bool_):
        raise ValueError(f"{name} must be a{'n integer' if integer else ' real number'}, "
                         f"got {x!r}")
    if integer:
        if not isinstance(x, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {x!r}")
        return int(x)
    if isinstance(x, np.floating) and np.finfo(x.dtype).bits < 64:
        return float(str(x))
    if not isinstance(x, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    return float(x)


def _count(name: str, x: Any) -> int:
    """``x`` as an integer >= 1, or 0 where it is not one (the caller names it)."""
    try:
        n = _number(name, x, integer=True)
    except ValueError:
        return 0
    return n if n >= 1 else 0


def _is_scalar(x: Any) -> bool:
    """A single value (a Python or numpy scalar, a 0-d array, a string) where a list is
    expected."""
    return isinstance(x, str | bytes | int | float | np.generic) or (
        isinstance(x, np.ndarray | jax.Array) and np.ndim(x) == 0)


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
    (its hyperparameters are its own). ``optimizer_name`` names a factory in the results
    (default: its function's name; a lambda has none). Numbers may be Python or numpy
    scalars or 0-d arrays (stored as Python numbers, float32 ones as the decimal they
    show). :meth:`to_dict` and :meth:`from_dict` round-trip a registry optimizer's
    configuration (a result's ``config``)."""

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
    max_steps: int = MAX_STEPS_DEFAULT
    device: str = "auto"
    batching: str = "iid"
    history: str = "auto"
    optimizer_name: str | None = None
    time_budget: float = 300.0
    force: bool = False

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen
        if self.optimizer_name is not None:
            if not callable(self.optimizer):
                raise ValueError(f"optimizer_name={self.optimizer_name!r} names an optimizer "
                                 f"factory; optimizer {self.optimizer!r} has its name")
            if not (isinstance(self.optimizer_name, str) and self.optimizer_name.strip()):
                raise ValueError(f"optimizer_name must be a non-empty string, got "
                                 f"{self.optimizer_name!r}")
        requested = self.engine
        put("engine", registry.engine_for(self.optimizer, self.engine))
        put("fields", tuple([self.fields] if isinstance(self.fields, str) else self.fields))
        registry.check_fields(self.optimizer, self.fields, self.engine,
                              self.batch_size is not None, requested)
        if _is_scalar(self.h):
            hs = [self.h]
        else:
            try:
                hs = list(self.h)
            except TypeError:
                raise ValueError(f"h must be a step size or a list of them, got "
                                 f"{self.h!r}") from None
        if not hs:
            raise ValueError("empty list of step sizes h")
        hs = [_number("h", x) for x in hs]
        for x in hs:
            check_hyperparameters(h=x)
        if len(set(hs)) < len(hs):
            twice = sorted({x for x in hs if hs.count(x) > 1})
            raise ValueError(f"step size h={twice[0]!r} is given twice; give distinct h")
        T = _number("T", self.T)
        if not (math.isfinite(T) and T > 0):
            raise ValueError(f"T must be positive and finite, got {self.T!r}")
        for x in hs:
            num_steps(T, x)
        put("h", tuple(sorted(hs, reverse=True)))
        put("T", T)
        for k in HYPER:
            v = getattr(self, k)
            if callable(self.optimizer):
                if v is not None:
                    raise ValueError(f"{k}={v!r} is given with an optimizer factory, whose "
                                     "hyperparameters are its own: leave it unset")
            else:
                put(k, DEFAULT_HYPER[k] if v is None else _number(k, v))
        if not callable(self.optimizer):
            check_hyperparameters(beta=self.beta, rho=self.rho, eps=self.eps)
        if self.batch_size is not None:
            B = _count("batch size", self.batch_size)
            if not B:
                raise ValueError(f"batch size must be a positive integer, got "
                                 f"{self.batch_size!r}")
            put("batch_size", B)
        put("seed", _number("seed", self.seed, integer=True))
        for k in ("rtol", "atol"):
            v = _number(k, getattr(self, k))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be positive and finite, got {getattr(self, k)!r}")
            put(k, v)
        ms = _count("max_steps", self.max_steps)
        if not ms:
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        put("max_steps", ms)
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
        budget = _number("time_budget", self.time_budget)
        if not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"time_budget must be a positive, finite number of seconds, got "
                             f"{self.time_budget!r}")
        put("time_budget", budget)
        if not isinstance(self.force, bool | np.bool_):
            raise ValueError(f"force must be True or False, got {self.force!r}")
        put("force", bool(self.force))

    def groups(self, kind: str) -> bool:
        """Whether field ``kind`` can walk a history grouped by distinct batch (docs/math.md,
        section 7): a closed form of a registry entry that says ``grouped`` (Theorems 3.6 and
        3.3: Adam and RMSProp)."""
        return self.batching == "epoch" and registry.groups(self.optimizer, kind, self.engine)

    @property
    def N(self) -> tuple[int, ...]:
        return tuple(num_steps(self.T, h) for h in self.h)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON values: an optimizer factory by its name
        (``optimizer_name``, else its function's name, else :data:`UNNAMED`)."""
        d = dataclasses.asdict(self)
        name = d.pop("optimizer_name")
        if callable(self.optimizer):
            d["optimizer"] = name or _factory_name(self.optimizer) or UNNAMED
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **override: Any) -> SweepConfig:
        """The configuration of :meth:`to_dict` (or of a result's ``config``: keys that are
        not options are left out), with ``override``; an optimizer factory is not in the
        dict and is given again as ``optimizer=`` (its recorded name kept)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known} | override
        if callable(kw.get("optimizer")) and "optimizer_name" not in override:
            kw["optimizer_name"] = None if d.get("optimizer") == UNNAMED else d.get("optimizer")
        return cls(**kw)


def _factory_name(factory: Callable) -> str | None:
    """The name an optimizer factory carries: its function's (through functools.partial),
    a callable object's class; None for a lambda."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    name = getattr(factory, "__name__", None) or type(factory).__name__
    return None if name == "<lambda>" else name


def _snake(name: str) -> str:
    """'ScaleByAdamState' -> 'scale_by_adam': optax's name of the transformation whose
    state class is ``name``."""
    name = name.removesuffix("State")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _factory_record(factory: Callable, params: PyTree) -> dict[str, Any]:
    """What an optimizer factory tells of itself, for the result's config:
    ``hyperparameters``, the keywords of a functools.partial and the values an
    ``optax.inject_hyperparams`` transformation holds in its state (all but the learning
    rate; None if it tells none: ``optax.adam(lr, b1=0.5)`` keeps b1 in a closure), and
    ``transforms``, the optax transformations its state shows (e.g. 'scale_by_adam')."""
    hyper: dict[str, Any] = {}
    f = factory
    while isinstance(f, functools.partial):
        hyper = dict(f.keywords) | hyper  # the outer partial's keywords win
        f = f.func
    transforms: list[str] = []

    def walk(x):
        if hasattr(x, "hyperparams") and hasattr(x, "inner_state"):  # inject_hyperparams
            hyper.update(x.hyperparams)
            walk(x.inner_state)
        elif isinstance(x, tuple | list):
            if hasattr(x, "_fields") and type(x).__name__.endswith("State") and (
                    type(x).__name__ != "EmptyState"):
                transforms.append(_snake(type(x).__name__))
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(factory(1.0).init(params))
    told = {}
    for k, v in hyper.items():
        if k in ("learning_rate", "lr"):
            continue
        if isinstance(v, np.ndarray | jax.Array) and np.ndim(v) == 0:
            v = np.asarray(v)[()]
        if isinstance(v, bool | np.bool_ | str) or v is None:
            told[k] = v if not isinstance(v, np.bool_) else bool(v)
        elif isinstance(v, int | float | np.integer | np.floating):
            told[k] = v.item() if isinstance(v, np.generic) else v
    return {"hyperparameters": told or None, "transforms": list(dict.fromkeys(transforms))}


def sweep(loss: Callable[[PyTree, Any], Any], params0: PyTree, data: PyTree, *,
          name: str = "custom", progress: Callable[[dict], None] | None = None,
          **config: Any) -> SweepResult:
    """The convergence sweep of ``optimizer`` on ``loss(params, batch)`` from ``params0``.

    ``data``: a pytree with a leading example axis (full batch: every step uses all of it;
    with ``batch_size``, step k uses batch k of a seeded sequence). ``config``: the fields
    of :class:`SweepConfig`: ``optimizer`` (a registry name, or a factory
    ``lr -> optax.GradientTransformation`` for the generic engine, checked to be linear in
    lr; ``optimizer_name`` names it in the results), ``h`` (the ladder), ``T``, ``fields``,
    ``beta``/``rho``/``eps``, ``batch_size``,
    ``batching`` ("iid" or "epoch") and ``history`` ("auto", "direct" or "grouped";
    docs/math.md, section 7), ``seed``, ``engine``, ``solver`` ("auto", "fixed",
    "adaptive" or "implicit"), ``rtol``/``atol``, ``max_steps`` (per interval of an adaptive
    or implicit solve), ``device``, ``time_budget`` (seconds) and ``force``.
    ``progress(record)`` is called once before solving with the pre-flight check
    (``{"preflight": Preflight, "summary": str}``, :func:`bea.preflight`), after each h
    (keys h, N, errors, combinations) and, during an adaptive or implicit solve that has run
    over :data:`QUIET_S` seconds, per block of intervals (keys h, N, field, solver,
    intervals, elapsed, remaining, failed, combinations). The pre-flight is stored on the
    result (``result.preflight``); a sweep it predicts to take longer than ``time_budget``
    raises :class:`bea.BudgetError` (a ValueError) before solving, unless ``force``.
    Returns a :class:`bea._result.SweepResult`. Bad input (an unknown option included)
    raises ValueError, one line naming the value, before anything is solved."""
    cfg = _config(config, name, progress)
    with float64():
        problem = _problem(loss, params0, data, name, cfg)
        if callable(cfg.optimizer) and cfg.optimizer_name is None and (
                _factory_name(cfg.optimizer) is None):
            warnings.warn(f"the optimizer factory is a lambda, which has no name: the result "
                          f"records it as {UNNAMED!r}; pass optimizer_name='...' to "
                          "bea.sweep to name it", UserWarning, stacklevel=2)
        return _run(problem, cfg, [cfg_hyper(cfg)], progress)[0]


def grid(loss: Callable[[PyTree, Any], Any], params0: PyTree, data: PyTree, *,
         over: Mapping[str, Sequence[float]], name: str = "custom",
         progress: Callable[[dict], None] | None = None, shard_history: bool = False,
         **config: Any) -> GridResult:
    """:func:`sweep` for every combination of ``over`` (lists of values of beta, rho and/or
    eps, e.g. ``over={"beta": [0.5, 0.9]}``; the
    others from ``config``) in one vmapped program whose combination axis is sharded over
    every visible device (results do not depend on the device count).
    ``shard_history``: also place the batch history across the devices (one large
    mini-batch problem). Returns a :class:`bea._result.GridResult` in the order of the
    row-major product of the grid (beta, rho, eps order)."""
    cfg = _config(config, name, progress)
    if callable(cfg.optimizer):
        raise ValueError("a grid varies beta, rho or eps of a registry optimizer; an "
                         "optimizer factory holds its own hyperparameters")
    if not isinstance(shard_history, bool | np.bool_):
        raise ValueError(f"shard_history must be True or False, got {shard_history!r}")
    values = _check_grid(over)
    names = list(values)
    combos = []
    for vals in itertools.product(*(values[k] for k in names)):
        c = cfg_hyper(cfg) | dict(zip(names, vals, strict=True))
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


def _config(config: dict[str, Any], name: Any, progress: Any) -> SweepConfig:
    """The :class:`SweepConfig` of ``config``, and the other arguments of :func:`sweep` and
    :func:`grid` checked: ValueError naming an unknown option or a bad value."""
    known = [f.name for f in dataclasses.fields(SweepConfig)]
    for k in config:
        if k not in known:
            raise ValueError(f"unknown option {k!r}; choose from {', '.join(known)}")
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a function of one record or None, got "
                         f"{progress!r}")
    return SweepConfig(**config)


def _check_grid(grid: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """The grid checked, its values as Python floats, in (beta, rho, eps) order; ValueError
    naming the key or value otherwise (a single value is not a list of values)."""
    if not isinstance(grid, Mapping):
        raise ValueError(f"over must map beta, rho or eps to lists of values, got {grid!r}")
    if not grid:
        raise ValueError("empty grid: give values for beta, rho or eps")
    out = {}
    for k, vals in grid.items():
        if k not in HYPER:
            raise ValueError(f"cannot grid over {k!r}; choose from {', '.join(HYPER)}")
        try:
            if _is_scalar(vals):
                raise TypeError
            vals = list(vals)
        except TypeError:
            raise ValueError(f"the grid's {k!r} must be a list of values, got {vals!r} "
                             f"(write {k!r}: [{vals!r}] for one value)") from None
        if not vals:
            raise ValueError(f"no values for {k!r} in the grid")
        vals = [_number(k, v) for v in vals]
        if len(set(vals)) < len(vals):
            raise ValueError(f"a value of {k!r} is given twice in the grid: {vals}")
        out[k] = vals
    return {k: out[k] for k in HYPER if k in out}


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
    first = problem.data if batch is None else batch
    try:
        check_float64_loss(problem.loss, problem.theta0, first)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    g = _check_start(problem, first, batch is not None)
    if callable(cfg.optimizer):
        registry.check_factory(cfg.optimizer, problem.unravel(problem.theta0),
                               grad=problem.unravel(g))
    return problem


def _check_start(problem: Problem, batch, mini: bool) -> jax.Array:
    """The gradient at theta0, after checking that the loss and its gradient are finite
    there (on the first batch with mini-batches): the runs use only the gradient, so a loss
    that is NaN everywhere would otherwise give clean-looking errors and slopes."""
    value, g = jax.value_and_grad(problem.loss)(problem.theta0, batch)
    where = "at theta0" + (" on the first batch" if mini else "")
    if not np.isfinite(float(value)):
        raise ValueError(f"the loss is {float(value)!r} {where}: a loss that is not finite "
                         "where the runs start measures nothing")
    bad = int(np.sum(~np.isfinite(np.asarray(g))))
    if bad:
        raise ValueError(f"the gradient of the loss is NaN/inf {where} in {bad} of its "
                         f"{g.size} components")
    return g


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
        def short(x):  # h = 1e-300 printed a 300-digit N and a 290-digit GiB
            return f"{x:.3g}" if x >= 1e12 else f"{x:.1f}" if isinstance(x, float) else str(x)

        raise ValueError(f"h={h!r} needs N={short(N_max)} steps: about "
                         f"{short(need / 2**30)} GiB for {C} combination(s) of {p} parameters, "
                         "more than the "
                         f"{short(have / 2**30)} GiB available; use a larger h or a shorter T")


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
        # the pre-flight check (bea._preflight): at the stiffest combination (smallest eps)
        check = preflight_check(problem, cfg, min(combos, key=lambda c: c["eps"] or 0.0), C)
        if progress is not None:
            progress({"preflight": check, "summary": check.summary()})
        if check.over_budget and not cfg.force:
            raise BudgetError(check.reason())
        results = _run_on(problem, cfg, combos, progress, shard_history, where, t0)
    return [dataclasses.replace(r, preflight=check.to_dict()) for r in results]


def _on(tree: PyTree, device: jax.Device) -> PyTree:
    """``tree`` on ``device``: the same object when it is already there (compiled programs
    that close over it are then reused)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if all(isinstance(x, jax.Array) and x.devices() == {device} for x in leaves):
        return tree
    return jax.device_put(tree, device)


def _placement(problem: Problem, cfg: SweepConfig, C: int) -> placement.Placement:
    """Where the sweep runs (bea._placement): the work per field evaluation is that of the
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


class SolvePolicy:
    """How a sweep solves each field and measures the solver error (module docstring), with
    the state it learns along the ladder.

    For one field at one h, :meth:`solve` tries :attr:`ATTEMPTS` ``[solver]`` in order
    until the solver error is measured at least 100x below the error, per combination. A
    fixed-step solve's error is first bounded by its embedded estimates; that bound is
    trusted for a (field, combination, tableau) only once it passed a check against
    halving, made where the tableau is first used (the coarsest h, where the solver error
    is largest relative to the error); wherever the trusted bound is not 100x below the
    error, or the tableau is not trusted, the error is measured by halving. The policy owns
    that trust: one policy per sweep, its h coarsest first."""

    ATTEMPTS = ATTEMPTS
    """What each solver tries, in order: (method, tableau)."""

    def __init__(self, solver: str = "auto"):
        if solver not in self.ATTEMPTS:
            raise ValueError(f"unknown solver {solver!r}; choose from "
                             f"{', '.join(self.ATTEMPTS)}")
        self.solver = solver
        self.attempts: tuple[tuple[str, str | None], ...] = self.ATTEMPTS[solver]
        self._trust: dict[str, list[dict[str, bool]]] = {}  # field -> per combination

    def trust(self, kind: str) -> list[dict[str, bool]]:
        """Per combination, tableau -> whether its embedded bound passed its halving check
        for field ``kind`` (a copy: the policy's own state changes only in :meth:`solve`)."""
        return [dict(t) for t in self._trust.get(kind, [])]

    def solve(self, run: FieldRun, disc: Float[np.ndarray, "C N+1 p"],
              live: Sequence[bool]) -> list[measure.Point]:
        """Solve field ``run.kind`` at one h for every combination, measuring the solver
        error, and return one :class:`bea._measure.Point` per combination against its
        discrete path ``disc[i]`` (:data:`bea._measure.NAN_POINT` where ``live[i]`` is
        False: its discrete run diverged). A path that is not finite from its first
        interval on makes ``run.check_start()`` (which raises if the field itself is
        NaN at theta0) run before anything else is tried. The implicit solve is tried
        (under ``auto``) only for the combinations whose adaptive solve ran out of steps,
        after ``run.check_jvp()``: under ``solver="implicit"`` a field whose Jacobian-vector
        product is NaN/inf at theta0 is refused (ValueError), under ``auto`` it is left
        with the adaptive solve's diagnosis. A solve that failed carries
        ``run.diagnose(...)`` (why, at which interval) in its point's ``failure``."""
        C, N = len(live), run.N
        trust = self._trust.setdefault(run.kind, [{} for _ in range(C)])
        best: list[tuple | None] = [None] * C  # the last attempt: (ys, error, solver error, ...)
        fails: list[tuple[int, int] | None] = [None] * C  # its failure: (interval, code)
        todo = [i for i in range(C) if live[i]]
        checked_start = False
        for method, tableau in self.attempts:
            if method == "implicit" and self.solver == "auto":
                todo = [i for i in todo if fails[i] is not None and fails[i][1] == MAX_STEPS]
            if not todo:
                break
            if method == "implicit" and not run.check_jvp(refuse=self.solver == "implicit"):
                break
            got = run.paths(method, tableau, _ONE)
            ys, serr = got[0], got[1]
            failure = got[2] if len(got) > 2 else np.tile(np.asarray([-1, 0]), (C, 1))
            if not checked_start and any(first_nonfinite(ys[i]) == 1 and
                                         failure[i][1] != MAX_STEPS for i in todo):
                run.check_start()
                checked_start = True
            errs = [measure.global_error(ys[i], disc[i]) for i in range(C)]
            est = ["refined" if method != "fixed" else "embedded"] * C
            check = [i for i in todo if method == "fixed" and (
                trust[i].get(tableau) is not True or not 100 * serr[i] <= errs[i])]
            if check:
                fine = run.paths(method, tableau, _TWO)[0]
                for i in check:
                    with np.errstate(over="ignore", invalid="ignore"):  # a path that blew up
                        d = np.linalg.norm(ys[i] - fine[i, : N + 1], axis=-1)
                    halving = float(np.max(d))
                    if tableau not in trust[i] and np.isfinite(halving):
                        trust[i][tableau] = bool(halving <= serr[i])
                    serr[i], est[i] = halving, "halving"
            for i in todo:
                best[i] = (ys[i], errs[i], float(serr[i]), method, tableau, est[i])
                fails[i] = (int(failure[i][0]), int(failure[i][1])) if failure[i][0] >= 0 \
                    else None
            todo = [i for i in todo if not 100 * best[i][2] <= best[i][1]]
        out = []
        for i, b in enumerate(best):
            if b is None:
                out.append(measure.NAN_POINT)
                continue
            p = measure.point(b[0], disc[i], *b[1:])
            if fails[i] is not None:
                p = p._replace(failure=run.diagnose(i, *fails[i], method=b[3],
                                                    theta=disc[i][fails[i][0]]))
            out.append(p)
        return out


class FieldRun(Protocol):
    """What :meth:`SolvePolicy.solve` asks of one field at one h."""

    kind: str
    N: int

    def paths(self, method: str, tableau: str | None, substeps: np.int64
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(paths, solver-error estimates, first failure) for every combination:
        (C, N+1, p), (C,), (C, 2) (the interval and :mod:`bea._integrate` status code of
        the first interval the solve could not finish; (-1, 0) if none)."""

    def check_start(self) -> None:
        """Raise ValueError if the field is NaN/inf at theta0."""

    def check_jvp(self, refuse: bool) -> bool:
        """Whether the field's Jacobian-vector product at theta0 is finite (the implicit
        solver needs it); with ``refuse``, ValueError naming the field if not."""

    def diagnose(self, i: int, interval: int, code: int, method: str, theta: np.ndarray
                 ) -> dict[str, Any]:
        """Why combination ``i``'s solve failed at ``interval`` (from state ``theta``)."""


@dataclasses.dataclass(frozen=True)
class _FieldRun:
    """The compiled solves of field ``kind`` at one h (:mod:`bea.programs`), fetched to the
    host for the ``C`` combinations, with what :meth:`check_start` needs to name a field
    NaN at theta0 and :meth:`diagnose` to say why a solve failed. Adaptive and implicit
    solves run in blocks of :data:`BLOCK` intervals, reporting to ``progress`` once they
    run long (:data:`QUIET_S`)."""

    kind: str
    N: int
    C: int
    program: _programs.Program
    args: tuple  # theta0, history (batches, grouped or None), data, h, N
    traced: dict
    loss: Callable
    problem: Problem
    batches: PyTree | None
    optimizer: str
    eps: list[float | None] = dataclasses.field(default_factory=list)  # per combination
    progress: Callable[[dict], None] | None = None

    def paths(self, method: str, tableau: str | None, substeps: np.int64
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if method != "fixed":
            return self._blocks(method)
        ys, serr = _programs.ode(*self.args, self.traced, substeps, program=self.program,
                                 loss=self.loss, tableau=tableau or "dopri8")
        none = np.tile(np.asarray([-1, 0]), (self.C, 1))
        return _fetch(ys)[: self.C, : self.N + 1], _fetch(serr)[: self.C], none

    def _blocks(self, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The adaptive or implicit solve and its reference, :data:`BLOCK` intervals per
        compiled call (:func:`bea.programs.ode_block`), the states carried from block to
        block on the device; stops after the block where every combination has failed."""
        C, N = self.C, self.N
        theta0 = self.args[0]
        rows = len(next(iter(self.traced.values()))) if self.traced else 1
        th = ref = _broadcast(theta0, rows)
        p = int(theta0.size)
        ys = np.full((C, N + 1, p), np.nan)
        fine = np.full((C, N + 1, p), np.nan)
        ys[:, 0] = fine[:, 0] = np.asarray(theta0)
        status = np.zeros((C, N), np.int64)
        block = min(BLOCK, self.program.N_max)
        t0 = last = time.perf_counter()
        for start in range(0, N, block):
            out, out_ref, st = _programs.ode_block(
                th, ref, *self.args[1:], self.traced, np.int64(start), program=self.program,
                loss=self.loss, method=method, block=block)
            th, ref = out[:, -1], out_ref[:, -1]
            k = min(block, N - start)
            ys[:, start + 1: start + 1 + k] = _fetch(out)[:C, :k]
            fine[:, start + 1: start + 1 + k] = _fetch(out_ref)[:C, :k]
            status[:, start: start + k] = _fetch(st)[:C, :k]
            done, now = start + k, time.perf_counter()
            failed = ((status == MAX_STEPS) | (status == NONFINITE)).any(axis=1)
            if self.progress is not None and now - t0 >= QUIET_S and (
                    now - last >= QUIET_S or done == N or failed.all()):
                last = now
                self.progress({"h": float(self.args[3]), "N": N, "field": self.kind,
                               "solver": method, "intervals": done,
                               "elapsed": now - t0,
                               "remaining": (now - t0) / done * (N - done),
                               "failed": int(failed.sum()), "combinations": C})
            if failed.all():
                break
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.linalg.norm(ys - fine, axis=-1)
        serr = np.where(np.isfinite(d).all(axis=1), d.max(axis=1, initial=0.0), np.nan)
        bad = (status == MAX_STEPS) | (status == NONFINITE)
        first = np.where(bad.any(axis=1), np.argmax(bad, axis=1), -1)
        codes = np.where(first >= 0, status[np.arange(C), np.maximum(first, 0)], 0)
        return ys, serr, np.stack([first, codes], axis=1)

    def check_start(self) -> None:
        f0 = _fetch(_programs.field_at_start(*self.args[:4], self.traced, program=self.program,
                                             loss=self.loss))[: self.C]
        if not np.all(np.isfinite(f0)):
            mini = self.program.mini
            raise ValueError(f"field {self.kind!r} of {self.optimizer} is NaN/inf at theta0: "
                             f"{_nan_cause(self.problem, self.batches, mini)}")

    def check_jvp(self, refuse: bool) -> bool:
        theta0 = self.args[0]
        tangent = jnp.ones_like(theta0) / math.sqrt(theta0.size)
        jv = _fetch(_programs.jvp_at_start(*self.args[:4], self.traced, tangent,
                                           program=self.program, loss=self.loss))[: self.C]
        ok = bool(np.all(np.isfinite(jv)))
        if refuse and not ok:
            raise ValueError(f"solver 'implicit' needs a differentiable field: the Jacobian-"
                             f"vector product of field {self.kind!r} of {self.optimizer} is "
                             "NaN/inf at theta0; use solver 'adaptive' or 'fixed'")
        return ok

    def diagnose(self, i: int, interval: int, code: int, method: str, theta: np.ndarray
                 ) -> dict[str, Any]:
        return _diagnose(self.problem, self.batches, self.program.mini, self.kind,
                         float(self.args[3]), interval, code, method,
                         self.program.max_steps, theta,
                         self.eps[i] if self.eps else (None, "unknown"))


@jax.jit
def _broadcast_rows(x, like):
    return jnp.broadcast_to(x, like.shape + x.shape)


def _broadcast(theta0, rows: int):
    """theta0 repeated ``rows`` times (C, p), made by a compiled call so that it is an
    array of the same kind as theta0 (a global array across processes)."""
    return _broadcast_rows(theta0, np.zeros(rows))


def _diagnose(problem: Problem, batches, mini: bool, kind: str, h: float, interval: int,
              code: int, method: str, max_steps: int, theta: np.ndarray,
              eps: tuple[float | None, str]) -> dict[str, Any]:
    """Why a solve failed at ``interval`` n, from the discrete state theta^(n): for a solve
    that ran out of steps, the step count, the gradient components below the eps scale
    s at theta^(n) (``eps`` = (eps, place): s = sqrt(eps) inside the root, eps outside it,
    ``bea._preflight.eps_scale``; there Adam-like updates step by about h g / s: gradient
    descent with step h / s; h itself for an update without eps) and that effective step
    times the largest curvature there (20 Hessian-vector power iterations), i.e. the
    stiffness the explicit solver faced;
    for a field NaN/inf near theta^(n) (the solver did not run out of steps), that the
    field is not defined (not smooth) there. A dict of JSON values with the ``message``."""
    out: dict[str, Any] = {"cause": "max_steps" if code == MAX_STEPS else "nonfinite",
                           "interval": int(interval), "solver": method}
    where = f"the {kind} field's {method} solve"
    if code != MAX_STEPS:
        out["message"] = (f"h={h:g}: {where} stopped at interval n={interval}: the field is "
                          "NaN/inf at or near theta~(nh) while the discrete run is finite "
                          "and the solver did not run out of steps: the loss or the update "
                          "is not differentiable (smooth enough) there")
        return out
    theta = jnp.asarray(theta)
    if mini:
        batch = jax.tree_util.tree_map(lambda b: b[interval], batches)
        E = lambda t: problem.loss(t, batch)  # noqa: E731
    else:
        E = lambda t: problem.loss(t, problem.data)  # noqa: E731
    g = np.asarray(jax.grad(E)(theta))
    v = jnp.ones_like(theta) / math.sqrt(theta.size)
    lam = 0.0
    for _ in range(20):
        hv = jax.jvp(jax.grad(E), (theta,), (v,))[1]
        lam = float(jnp.linalg.norm(hv))
        if not (lam > 0 and math.isfinite(lam)):
            break
        v = hv / lam
    eps, place = eps
    out.update(max_steps=int(max_steps), parameters=int(g.size), curvature=lam, eps=eps)
    text = (f"h={h:g}: {where} ran out of steps ({max_steps} per interval) at interval "
            f"n={interval}, a stiff interval, not a non-smooth loss: ")
    if place == "none":
        out.update(small_gradients=None, effective_step=h, stiffness=h * lam)
        text += (f"the update has no eps; h times the largest curvature {lam:.3g} at "
                 f"theta^(n) is {h * lam:.3g}")
    elif eps is None:
        out.update(small_gradients=None, effective_step=None)
        text += ("eps is unknown (the optimizer factory does not tell it), so the gradient "
                 f"components below sqrt(eps) at theta^(n) are unknown; the largest curvature "
                 f"there is {lam:.3g}")
    else:
        from bea._preflight import eps_scale

        s = eps_scale(eps, place)
        name = "eps" if place == "outside" else "sqrt(eps)"
        small = int(np.sum(np.abs(g) < s))
        step = h / s
        out.update(small_gradients=small, effective_step=step, stiffness=step * lam)
        text += (f"{small} of the {g.size} gradient components are below {name} = "
                 f"{s:.3g} at theta^(n), where the update steps by about "
                 f"h/{name} = {step:.3g} times the gradient (x the largest curvature "
                 f"{lam:.3g}: {step * lam:.3g})")
    text += ("; raise max_steps, use solver 'implicit' (auto does where it can), a smaller "
             "h" + ("" if place == "none" else " or a larger eps"))
    out["message"] = text
    return out


def _eps_of(cfg: SweepConfig, combo: dict, problem: Problem) -> tuple[float | None, str]:
    """(eps, where it sits) of a combination, as the pre-flight reads it
    (``bea._preflight._eps``: the registry optimizer's, or what a factory tells)."""
    from bea._preflight import _eps

    eps, _, place = _eps(cfg, problem, combo)
    return eps, place


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
    schedule = Schedule(batching=cfg.batching, batch_size=cfg.batch_size,
                        histories=_histories(cfg, grouped, N_max),
                        distinct_batches=None if grouped is None else grouped.num_batches,
                        left_out=left_out)
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
    programs = {kind: base._replace(kind=kind, engine=registry.field_engine(kind, cfg.engine),
                                    rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps)
                for kind in cfg.fields}
    eps = [_eps_of(cfg, c, problem) for c in combos]
    optimizer = cfg.to_dict()["optimizer"]
    policy = SolvePolicy(cfg.solver)
    points: list[dict[str, list[measure.Point]]] = [
        {k: [] for k in cfg.fields} for _ in range(C)]
    diverged: list[dict[float, int]] = [{} for _ in range(C)]
    for h, N in zip(cfg.h, cfg.N, strict=True):
        args = (theta0, batches, data, jnp.asarray(h, float), jnp.asarray(N))
        disc = _fetch(_programs.discrete(*args, traced, program=base, loss=loss))[:C, : N + 1]
        bad = [first_nonfinite(d) for d in disc]
        for i in range(C):
            if bad[i] is not None:
                diverged[i][h] = bad[i]
        for kind in cfg.fields:
            history = grouped if schedule.histories[kind] == "grouped" else batches
            run = _FieldRun(kind, N, C, programs[kind], (theta0, history, *args[2:]), traced,
                            loss, problem, batches, optimizer, eps, progress)
            for i, p in enumerate(policy.solve(run, disc, [b is None for b in bad])):
                points[i][kind].append(p)
        if progress is not None:
            progress({"h": h, "N": N, "errors": {k: points[0][k][-1].error
                                                 for k in cfg.fields},
                      "combinations": C})
    seconds = time.perf_counter() - t0
    config = cfg.to_dict()
    if callable(cfg.optimizer):
        config["factory"] = _factory_record(cfg.optimizer, problem.unravel(problem.theta0))
    h, Ns = np.asarray(cfg.h), np.asarray(cfg.N)
    return [SweepResult(
        config=config | ({} if callable(cfg.optimizer) else combos[i]), problem=problem.name,
        h=h, N=Ns, fields={k: FieldResult.from_points(h, Ns, points[i][k]) for k in cfg.fields},
        schedule=schedule, diverged_at=diverged[i], seconds=seconds,
        devices=len(jax.devices(where.platform)), platform=where.platform,
        placement=where.reason) for i in range(C)]
