"""The full-batch training loop of Section 6, its run directory, sweeps and resume.

One step n, at parameters theta^(n):

    E, acc, g = full-batch loss, accuracy, gradient  (bea.nn._exact)
    test loss and accuracy at theta^(n)
    ||g||_{1,eps}, ||g||_2, ||g||_1, mean/std |g_i|, ||g||_{1,eps} - P sqrt(eps),
    ||g||_2^2 / (2 sqrt(eps)), share of |g_i| > sqrt(eps); c and E + c ||g||_{1,eps}
    (bea.nn._metrics)
    theta^(n+1) = a step of the optimizer with g  (by name from bea.optimizer_registry:
    ``adam`` is Definition 3.1, ``adam_eps_outside`` Remark 3.2's variant, ...)
    or, for ``modified_gd`` ("GD on the modified loss, finite-n c(n)": a stand-in, not
    the preconditioned flow (8)), a gradient-descent step on E + c(n) ||grad E||_{1,eps}:
    theta^(n+1) = theta^(n) - gd_lr (g + c(n) H (g / sqrt(g^2 + eps))),
    c(n) = h (c_beta(n) - c_rho(n))   (Remark 3.7; bea._finite_n; GD: optax.scale_by_schedule)

and row n of the history holds the quantities at theta^(n). A run stops when the
training loss has been below ``stop_loss`` (the first such row is the paper's stopping
point, "the first point the training loss drops below 0.01") for ``steps_after_stop``
further steps (0: at that row), when a loss or gradient entry is not finite
(divergence, recorded with its step), or at ``max_steps`` / ``max_minutes``.

Members: every configuration of the sweep (h, beta, rho or eps) times ``seeds``
initialisations (seed = ``seed``, ``seed`` + 1, ...; seed s has the same
initialisation in every configuration). They share the model and the data, so by
default they run as one ``vmap``ped compiled program (one optimizer state per member,
members that stopped are no longer logged); ``chunk_size`` bounds the members per
program (memory), ``sweep_mode="sequential"`` runs them one at a time through one
compiled program (on CPU a vmapped convolution over member weights is 2-3x slower per
member than one member alone). Run directory layout::

    OUT/history.csv, OUT/config.json, OUT/checkpoints/        (single run)
    OUT/sweep.json, OUT/checkpoints/, OUT/rho=0.99/{history.csv,config.json}, ...  (sweep)
    OUT/sweep.json, OUT/checkpoints/, OUT/rho=0.99/seed=3/{history.csv,...}, ...   (seeds)

Checkpoints: ``OUT/checkpoints/`` for one program, ``OUT/checkpoints-chunk{i}/`` for
chunks, the member's own ``checkpoints/`` when sequential.

The network and its data are shared with the sweeps (``bea.models``, ``bea.data``):
:func:`problem` turns a configuration's network at its initialisation and its training set
into a ``bea.problems.Problem`` whose loss is the training loss, so the modified flows of
a training run come from the sweep path (``bea.sweep``) while this module knows no ODE.

Resume and safety (:func:`run`): before writing, ``bea.nn._rundir.inspect`` checks that
configuration, histories and checkpoints agree (else one-line refusal, nothing changed);
a damaged newest checkpoint is moved aside and the previous one restored; one writer per
directory (``OUT/train.lock``); SIGTERM / SIGINT stop at the next step with a checkpoint
and the histories saved (:class:`Interrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Float, PyTree

from bea import optimizer_registry as registry
from bea._finite_n import correction_coefficient_n
from bea._result import member_name
from bea.data import DATASET_NAMES, DataError, Dataset, load_dataset
from bea.models import MODEL_NAMES, make_model
from bea.nn import _run_files as hist
from bea.nn import _rundir as rundir
from bea.nn._checkpoint import Checkpointer, DamagedCheckpoints
from bea.nn._exact import (
    Batches,
    batch_sums,
    data_mesh,
    evaluate,
    hvp,
    loss_and_grad,
    make_batches,
    replicate,
    shard_batches,
)
from bea.nn._metrics import (
    FINITE_N_COLUMNS,
    first_order_prediction,
    gradient_metrics,
)
from bea.nn._rundir import RunLock
from bea.nn.readout import first_crossing
from bea.optimizers import check_hyperparameters
from bea.problems import Problem, as_problem

__all__ = [
    "MODIFIED_GD",
    "OPTIMIZERS",
    "SWEEP_KEYS",
    "ConfigError",
    "Interrupted",
    "TrainConfig",
    "HParams",
    "OnStep",
    "validate",
    "members",
    "load_data",
    "init_model",
    "problem",
    "all_agree",
    "make_step",
    "run",
]

# gradient descent on E + c(n) ||grad E||_{1,eps}, c(n) = h (c_beta(n) - c_rho(n)) (Remark
# 3.7's finite-n coefficient, bea._finite_n): a stand-in, not the preconditioned flow (8)
MODIFIED_GD = "modified_gd"
OPTIMIZERS = (*registry.NAMES, MODIFIED_GD)
"""Every optimizer of ``bea.optimizer_registry`` by its name there, and ``modified_gd``."""
SWEEP_KEYS = ("h", "beta", "rho", "eps")
# fields that may change between a run and its --resume
_RESUMABLE = ("max_steps", "max_minutes", "checkpoint_every", "write_every")


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending value."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "cnn_small"
    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    optimizer: str = "adam"
    h: float = 1e-3
    beta: float = 0.9
    rho: float = 0.999
    eps: float = 1e-3
    stop_loss: float | None = None
    max_steps: int = 1000
    max_minutes: float | None = None
    seed: int = 0
    seeds: int = 1
    steps_after_stop: int = 0
    gd_lr: float | None = None
    dtype: str = "float32"
    physical_batch: int = 500
    checkpoint_every: int = 100
    write_every: int = 10
    sweep: tuple[str, tuple[float, ...]] | None = None  # (key, values): ("rho", (0.99, 0.995))
    sweep_mode: str = "vmap"
    chunk_size: int | None = None


class HParams(NamedTuple):
    h: Float[Array, "..."]
    beta: Float[Array, "..."]
    rho: Float[Array, "..."]
    eps: Float[Array, "..."]
    gd_lr: Float[Array, "..."]  # modified_gd's step size (h unless given)


def _check_hparams(h, beta, rho, eps, where=""):
    """Definition 3.1's ranges, by the check the sweeps use too
    (:func:`bea.optimizers.check_hyperparameters`), as a ConfigError."""
    try:
        check_hyperparameters(h=h, beta=beta, rho=rho, eps=eps)
    except ValueError as e:
        raise ConfigError(f"{e}{where}") from None


def _sweep(cfg: TrainConfig) -> tuple[str, tuple[float, ...]] | None:
    """``cfg.sweep`` checked: (key, values), key in SWEEP_KEYS, values distinct, at least one.
    (The command line parses ``KEY=V1,V2,...`` into this: ``experiments._cli.key_values``.)"""
    if cfg.sweep is None:
        return None
    try:
        key, values = cfg.sweep
        if not all(isinstance(v, numbers.Real) for v in values):
            raise TypeError
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"sweep must be (key, values) with key in {SWEEP_KEYS}, got "
                          f"{cfg.sweep!r}") from None
    if key not in SWEEP_KEYS:
        raise ConfigError(f"sweep key must be one of {SWEEP_KEYS}, got {key!r}")
    if not values:
        raise ConfigError(f"sweep {key}= needs at least one value")
    if len(set(values)) != len(values):
        raise ConfigError(f"sweep values repeat: {key}={list(values)}")
    return key, values


MAX_MEMBERS = 10**4
"""The most members (sweep values x seeds) one training runs."""


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid field of ``cfg``."""
    if cfg.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {cfg.model!r}; choose from {', '.join(MODEL_NAMES)}")
    if cfg.dataset not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose from "
                          f"{', '.join(DATASET_NAMES)}")
    if cfg.optimizer in registry.REFUSED:
        raise ConfigError(f"optimizer {cfg.optimizer!r} is refused: "
                          f"{registry.REFUSED[cfg.optimizer]}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose from "
                          f"{', '.join(OPTIMIZERS)}")
    if cfg.dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, got {cfg.dtype!r}")
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("dtype float64 needs float64 turned on before any array exists: "
                          "call bea.enable_x64() first")
    if cfg.sweep_mode not in ("vmap", "sequential"):
        raise ConfigError(f"sweep mode must be vmap or sequential, got {cfg.sweep_mode!r}")
    _check_hparams(cfg.h, cfg.beta, cfg.rho, cfg.eps)
    sweep = _sweep(cfg)
    where = "" if sweep is None else f" (in the sweep {sweep[0]}={','.join(map(str, sweep[1]))})"
    if cfg.seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {cfg.seeds}")
    count = cfg.seeds * (1 if sweep is None else len(sweep[1]))
    if count > MAX_MEMBERS:  # before the members are listed (a huge --seeds hung here)
        raise ConfigError(f"{count:.3g} members (seeds {cfg.seeds:.3g} x "
                          f"{1 if sweep is None else len(sweep[1])} sweep value(s)) exceed "
                          f"{MAX_MEMBERS:.0e}")
    for m in members(cfg):
        _check_hparams(m["h"], m["beta"], m["rho"], m["eps"], where)
    if cfg.stop_loss is not None and not (cfg.stop_loss > 0 and math.isfinite(cfg.stop_loss)):
        raise ConfigError(f"stop-loss must be > 0 and finite, got {cfg.stop_loss}")
    if not 0 <= cfg.seed or cfg.seed + cfg.seeds > 2**32:
        raise ConfigError(f"seed must lie in [0, 2**32 - seeds], got {cfg.seed}")
    if cfg.data_dir is not None and cfg.dataset == "digits":
        raise ConfigError(f"--data-dir {cfg.data_dir} applies to cifar10 and cifar100; digits "
                          "ships with scikit-learn")
    if cfg.max_steps < 1:
        raise ConfigError(f"max-steps must be >= 1, got {cfg.max_steps}")
    if cfg.steps_after_stop < 0:
        raise ConfigError(f"steps-after-stop must be >= 0, got {cfg.steps_after_stop}")
    if cfg.chunk_size is not None and cfg.chunk_size < 1:
        raise ConfigError(f"chunk-size must be >= 1, got {cfg.chunk_size}")
    if cfg.chunk_size is not None and cfg.sweep_mode == "sequential":
        raise ConfigError(f"chunk-size {cfg.chunk_size} applies to --sweep-mode vmap, "
                          "not sequential")
    if cfg.gd_lr is not None:
        if cfg.optimizer != MODIFIED_GD:
            raise ConfigError(f"gd-lr {cfg.gd_lr} applies only to --optimizer {MODIFIED_GD}, "
                              f"not {cfg.optimizer!r}")
        if not (cfg.gd_lr > 0 and math.isfinite(cfg.gd_lr)):
            raise ConfigError(f"gd-lr must be > 0, got {cfg.gd_lr}")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ConfigError(f"max-minutes must be > 0, got {cfg.max_minutes}")
    for name in ("physical_batch", "checkpoint_every", "write_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("train_size", "test_size"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {v}")


def members(cfg: TrainConfig) -> list[dict]:
    """One dict per member: configurations of the sweep (one if none) times seeds, keys
    h, beta, rho, eps, gd_lr, seed, ``config_name`` (``"rho=0.99"``, None without a
    sweep) and ``name`` (its directory below OUT: ``"rho=0.99/seed=3"``, ``"rho=0.99"``
    with one seed, None for a single run)."""
    base = {"h": cfg.h, "beta": cfg.beta, "rho": cfg.rho, "eps": cfg.eps}
    sweep = _sweep(cfg)
    if sweep is None:
        configs = [dict(base, config_name=None)]
    else:
        key, vals = sweep
        configs = [dict(base, **{key: v}, config_name=member_name({key: v}, [key])) for v in vals]
    out = []
    for c in configs:
        c["gd_lr"] = c["h"] if cfg.gd_lr is None else cfg.gd_lr
        for s in range(cfg.seeds):
            seed_name = f"seed={cfg.seed + s}" if cfg.seeds > 1 else None
            parts = [p for p in (c["config_name"], seed_name) if p is not None]
            out.append(dict(c, seed=cfg.seed + s, name="/".join(parts) if parts else None))
    return out


def _all_finite(tree: PyTree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _optimizer(name: str, hp: HParams) -> optax.GradientTransformation:
    """The optax transformation of optimizer ``name`` at hyperparameters ``hp``: the
    registry's (``bea.optimizer_registry.transformation``), or GD for ``modified_gd``
    (``optax.scale_by_schedule`` at the constant -gd_lr: GD whose state counts the steps
    n, which c(n) needs, and which the checkpoints keep)."""
    if name == MODIFIED_GD:
        return optax.scale_by_schedule(lambda n: -hp.gd_lr)
    return registry.transformation(name, hp.h, hp.beta, hp.rho, hp.eps)


def make_step(static: PyTree, optimizer: str, n_train: int, n_test: int, members: int = 2,
              mesh=None):
    """The jitted, member-vmapped step (params, opt_state, hp, train xyw, test xyw) ->
    (params', opt_state', metrics) of the module docstring; leading axis = member.
    With one member the axis is squeezed instead of vmapped (a vmap over weights turns
    convolutions into slower batched-kernel ones).

    ``modified_gd`` ("GD on the modified loss, finite-n c(n)"; a stand-in, not the
    preconditioned flow (8)) descends E + c(n) ||grad E||_{1,eps} at its step n, with
    c(n) = h/2 ((2 c_beta(n) + 1) - (2 c_rho(n) + 1)) = h (c_beta(n) - c_rho(n)),
    ``bea._finite_n.correction_coefficient_n``: Remark 3.7's full-batch field is
    -(1/R) grad(E + c(n) ||grad E||_{1,eps}) where |g_j| >> sqrt(eps) (docs/math.md,
    section 4), and the stand-in drops the preconditioner 1/R. c(0) = 0 (the first step
    is plain GD); c(n) tends to eq. (8)'s large-n c. n is the run's own step count (with
    the default gd_lr = h, GD step n sits at time nh, as Adam's step n). Its gradient is
    g + c(n) H (g / sqrt(g^2 + eps)), one full-batch Hessian-vector product
    (``bea.nn._exact.hvp``) per step on top of the gradient. The logged
    ``correction_coefficient`` and ``modified_loss`` columns stay eq. (8)'s large-n
    ones for every optimizer; the run loop adds the finite-n pair
    ``correction_coefficient_n`` / ``modified_loss_n`` at each row's step."""

    def one(params, opt_state, hp, train, test):
        tr = Batches(*train, n_train)
        te = Batches(*test, n_test)
        loss, acc, g = loss_and_grad(params, static, tr)
        test_loss, test_acc = evaluate(params, static, te)
        m = gradient_metrics(g, hp.eps)
        m.update(first_order_prediction(loss, m["perturbed_one_norm"], hp.h, hp.beta, hp.rho))
        finite = jnp.isfinite(loss) & _all_finite(g)
        direction = g
        if optimizer == MODIFIED_GD:
            u = jax.tree_util.tree_map(lambda a: a / jnp.sqrt(a * a + hp.eps), g)
            c = correction_coefficient_n(hp.h, hp.beta, hp.rho, opt_state.count)
            direction = jax.tree_util.tree_map(lambda a, b: a + c.astype(a.dtype) * b, g,
                                               hvp(params, static, tr, u))
            finite = finite & _all_finite(direction)
        m.update(train_loss=loss, train_accuracy=acc, test_loss=test_loss,
                 test_accuracy=test_acc, finite=finite)
        updates, opt_state = _optimizer(optimizer, hp).update(direction, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, m

    if members == 1:
        sq = lambda t: jax.tree_util.tree_map(lambda a: a[0], t)  # noqa: E731
        ex = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)  # noqa: E731

        def stepped(params, opt_state, hp, train, test):
            return ex(one(sq(params), sq(opt_state), sq(hp), train, test))
    else:
        stepped = jax.vmap(one, in_axes=(0, 0, 0, None, None))
    if mesh is None:
        return jax.jit(stepped, donate_argnums=(0, 1))
    # the state and the metrics replicated on every device of every process (each process
    # reads the metrics from its own copy)
    return jax.jit(stepped, donate_argnums=(0, 1),
                   out_shardings=NamedSharding(mesh, PartitionSpec()))


def load_data(cfg: TrainConfig) -> Dataset:
    """The data set of ``cfg`` (``bea.data.load_dataset``) in ``cfg.dtype``, cut to its
    first ``train_size`` / ``test_size`` examples; DataError or ConfigError (one line)."""
    return _subset(load_dataset(cfg.dataset, cfg.data_dir, np.dtype(cfg.dtype)), cfg)


def init_model(cfg: TrainConfig, data: Dataset, seed: int) -> eqx.Module:
    """``cfg.model`` (``bea.models.make_model``) for ``data``'s images, initialised with
    ``PRNGKey(seed)``, parameters in ``cfg.dtype``."""
    c, s = data.x_train.shape[1:3]
    return make_model(cfg.model, c, s, data.num_classes, jax.random.PRNGKey(seed),
                      jnp.dtype(cfg.dtype))


def problem(cfg: TrainConfig, seed: int | None = None, data: Dataset | None = None) -> Problem:
    """The network of ``cfg`` at its initialisation ``seed`` (default ``cfg.seed``) on
    ``cfg``'s training set as a sweep problem (``bea.problems.as_problem``): E(theta, batch)
    is the training loss, the mean cross-entropy over the batch (``bea.nn._exact``'s
    ``batch_sums``, what :func:`run` descends), theta0 the flattened initial parameters,
    data {"x": images, "y": labels}. Floats become the default float dtype (float64 inside
    ``bea.enable_x64``). ``data``: the loaded data set, if at hand (else loaded).

    With a smooth network (``mlp``, ``cnn_smooth``) the modified flows of a training run
    come from ``bea.sweep(problem.loss, problem.theta0, problem.data, ...)``."""
    validate(cfg)
    data = load_data(cfg) if data is None else data
    model = init_model(cfg, data, cfg.seed if seed is None else seed)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, batch):
        y = batch["y"]
        w = jnp.ones(y.shape, jax.tree_util.tree_leaves(p)[0].dtype)
        return batch_sums(p, static, batch["x"], y, w)[0] / y.shape[0]

    return as_problem(loss, params, {"x": data.x_train, "y": data.y_train}, name=cfg.model)


def _init_state(cfg: TrainConfig, seeds: Sequence[int], data: Dataset):
    """Stacked (params, opt_state) of the members initialised with ``seeds`` (PRNGKey(s)
    each), and the shared static part of the model."""
    one = {}
    for s in dict.fromkeys(seeds):
        model = init_model(cfg, data, s)
        params, static = eqx.partition(model, eqx.is_inexact_array)
        hp1 = HParams(*([1.0] * len(HParams._fields)))
        opt_state = _optimizer(cfg.optimizer, hp1._replace(beta=0.0, rho=0.5)).init(params)
        one[s] = jax.tree_util.tree_map(np.asarray, (params, opt_state))
    params, opt_state = jax.tree_util.tree_map(lambda *a: np.stack(a), *[one[s] for s in seeds])
    return params, opt_state, static


def _status(rows: Sequence[dict], cfg: TrainConfig) -> str:
    """"diverged" (a non-finite value in the last row), "stop_loss" (the loss first got
    below stop_loss at least steps_after_stop rows ago) or "running"."""
    if not rows:
        return "running"
    # the columns an earlier history lacks read as NaN there (a non-finite gradient shows
    # in the norms every history has)
    if not all(math.isfinite(rows[-1][c]) for c in hist.COLUMNS
               if c != "step" and c not in hist.ADDED_COLUMNS):
        return "diverged"
    if cfg.stop_loss is not None:
        k = first_crossing(np.array([r["train_loss"] for r in rows]), cfg.stop_loss)
        if k is not None and rows[-1]["step"] >= rows[k]["step"] + cfg.steps_after_stop:
            return "stop_loss"
    return "running"


class _Member:
    def __init__(self, spec: dict, directory: str):
        self.spec = spec
        self.dir = directory
        self.rows: list[dict] = []
        self.status = "running"

    @property
    def history_path(self):
        return os.path.join(self.dir, "history.csv")

    def summary(self, cfg: TrainConfig, steps_done: int, elapsed: float, devices: int) -> dict:
        out = {"config": _record(cfg), "h": self.spec["h"], "beta": self.spec["beta"],
               "rho": self.spec["rho"], "eps": self.spec["eps"], "seed": self.spec["seed"],
               "sweep_member": self.spec["config_name"], "member": self.spec["name"],
               "status": self.status, "steps_done": steps_done, "rows": len(self.rows),
               "elapsed_seconds": round(elapsed, 3), "devices": devices,
               "stop_step": None, "diverged_step": None}
        if cfg.optimizer == MODIFIED_GD:
            out["gd_lr"] = self.spec["gd_lr"]
            # which coefficient it descended: Remark 3.7's finite-n c(n) (runs without
            # this key used eq. (8)'s large-n c; experiments.figures refuses them)
            out["modified_loss_coefficient"] = "finite_n"
        if self.status == "stop_loss":  # the first row below stop_loss
            k = first_crossing(np.array([r["train_loss"] for r in self.rows]), cfg.stop_loss)
            out["stop_step"] = self.rows[k]["step"]
            out.update({f"stop_{c}": self.rows[k][c] for c in hist.COLUMNS if c != "step"})
        if self.status == "diverged":
            out["diverged_step"] = self.rows[-1]["step"]
        return out


class Interrupted(Exception):
    """Training stopped on SIGTERM or SIGINT after saving a checkpoint and the histories
    at the step reached; ``--resume`` continues it to the same history."""

    def __init__(self, signum: int, step: int, out: str):
        self.signum, self.step, self.out = signum, step, out
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}: checkpoint and history saved in "
                         f"{out}; continue with --resume")


class _StopOnSignal:
    """While active, SIGTERM and SIGINT only record that a stop was asked for (the loop
    stops at the next step boundary, saves, and raises Interrupted); signals are only
    caught in the main thread (elsewhere Python cannot install handlers)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def all_agree(ok: bool) -> bool:
    """True when ``ok`` holds in every process (one small collective when there are
    several; several processes must take the same branches around collectives)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.array([int(ok)], np.int32))
    return bool(np.all(np.asarray(flags)))


def _group_run(cfg, specs, dirs, ckpt_dir, data, mesh, *, resume, progress, on_step,
               is_main, log, step_fns, stop, on_start):
    """Run the members ``specs`` together (vmapped), writing into ``dirs``. ``step_fns``
    caches the compiled step by member count across the groups of one run (the groups
    share the model structure, the data shapes and the optimizer). ``on_start`` runs
    before this group's first write, once its checkpoint is restored; ``on_step`` (if
    any) after every step's writes."""
    dtype = jnp.dtype(cfg.dtype)
    k = len(specs)
    ms = [_Member(s, d) for s, d in zip(specs, dirs, strict=True)]
    finite_n_hp = jnp.asarray([[m.spec[k] for k in ("h", "beta", "rho")] for m in ms], float)
    params, opt_state, static = _init_state(cfg, [s["seed"] for s in specs], data)
    hp = HParams(*(np.array([s[key] for s in specs], dtype=dtype) for key in HParams._fields))
    params, opt_state, hp = replicate((params, opt_state, hp), mesh)
    nd = mesh.devices.size
    train = shard_batches(make_batches(data.x_train, data.y_train, cfg.physical_batch, nd,
                                       dtype), mesh)
    test = shard_batches(make_batches(data.x_test, data.y_test, cfg.physical_batch, nd,
                                      dtype), mesh)
    if k not in step_fns:
        step_fns[k] = make_step(static, cfg.optimizer, train.n, test.n, k, mesh=mesh)
    step_fn = step_fns[k]

    ckpt = Checkpointer(ckpt_dir)
    step = 0
    found = ckpt.restore_latest((params, opt_state), log, all_agree, is_main) if resume else None
    if found is not None:
        step, (params, opt_state) = found
        for m in ms:
            rows = hist.read_history(m.history_path) if os.path.exists(m.history_path) else []
            m.rows = [r for r in rows if r["step"] < step]
            m.status = _status(m.rows, cfg)
            if m.status == "running" and m.rows and m.rows[-1]["step"] < step - 1:
                m.status = "diverged"  # stopped on a non-finite update (modified_gd's HVP)
        log(f"resumed from step {step} ({ckpt_dir})")
    on_start()
    if is_main:
        for m in ms:
            os.makedirs(m.dir, exist_ok=True)

    t0 = time.monotonic()

    def write_all(final=False):
        if not is_main:
            return
        for m in ms:
            hist.write_history(m.history_path, m.rows)
            hist.write_json(os.path.join(m.dir, "config.json"),
                            m.summary(cfg, step, time.monotonic() - t0, nd))

    def active():
        return [m.status == "running" for m in ms]

    def stop_asked():
        return not all_agree(stop.signum is None)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and is_main),
               desc="full-batch steps", dynamic_ncols=True)
    train_xyw, test_xyw = (train.x, train.y, train.w), (test.x, test.y, test.w)
    while any(active()) and step < cfg.max_steps:
        if stop_asked():
            bar.close()
            write_all()  # history first: it may run ahead of the checkpoint, never behind
            if ckpt.latest_step() != step:
                ckpt.save(step, (params, opt_state))
            ckpt.close()
            raise Interrupted(stop.signum or signal.SIGTERM, step, ckpt_dir)
        if cfg.max_minutes is not None and time.monotonic() - t0 > 60 * cfg.max_minutes:
            for m in ms:
                if m.status == "running":
                    m.status = "max_minutes"
            break
        was_active = active()
        params, opt_state, met = step_fn(params, opt_state, hp, train_xyw, test_xyw)
        met = jax.device_get(met)
        # Remark 3.7's c(n) of every member at this step: one compiled call, not an eager
        # one per member (2.5 ms each)
        cn = np.asarray(_coefficients_n(finite_n_hp, jnp.asarray(step)))
        for i, m in enumerate(ms):
            if not was_active[i]:
                continue
            row = {"step": step, **{c: float(met[c][i]) for c in hist.COLUMNS
                                    if c != "step" and c not in FINITE_N_COLUMNS}}
            # the columns of bea.nn._metrics.finite_n_prediction, from this step's c(n)
            row.update(correction_coefficient_n=float(cn[i]),
                       modified_loss_n=row["train_loss"] + float(cn[i])
                       * row["perturbed_one_norm"])
            m.rows.append(row)
            why = "diverged" if not bool(met["finite"][i]) else _status(m.rows, cfg)
            if why != "running":
                m.status = why
                log(f"{m.spec['name'] or 'run'}: {why} at step {step} "
                    f"(train loss {row['train_loss']:.4g}, test acc {row['test_accuracy']:.4f})")
        step += 1
        bar.update(1)
        finite = np.asarray(met["train_loss"])[np.isfinite(met["train_loss"])]
        bar.set_postfix(loss=f"{float(finite.min()):.4g}" if finite.size else "nan",
                        active=sum(active()))
        if step % cfg.checkpoint_every == 0:
            write_all()  # history first: it may run ahead of the checkpoint, never behind
            ckpt.save(step, (params, opt_state))
        elif step % cfg.write_every == 0:
            write_all()
        if on_step is not None:
            on_step(step, lambda: stop.signum is not None)
    bar.close()
    for m in ms:
        if m.status == "running":
            m.status = "max_steps"
    write_all(final=True)
    if ckpt.latest_step() != step:
        ckpt.save(step, (params, opt_state))
    ckpt.close()
    return [m.summary(cfg, step, time.monotonic() - t0, nd) for m in ms]


def _layout(cfg: TrainConfig, specs: list[dict], out: str):
    """(several, member directories, [(member indices, checkpoint directory)])."""
    several = cfg.sweep is not None or cfg.seeds > 1
    if not several:
        return several, [out], [([0], os.path.join(out, "checkpoints"))]
    dirs = [os.path.join(out, *s["name"].split("/")) for s in specs]
    if cfg.sweep_mode == "sequential":
        return several, dirs, [([i], os.path.join(d, "checkpoints")) for i, d in enumerate(dirs)]
    size = cfg.chunk_size or len(specs)
    groups = [list(range(i, min(i + size, len(specs)))) for i in range(0, len(specs), size)]
    ckpts = ([os.path.join(out, "checkpoints")] if len(groups) == 1 else
             [os.path.join(out, f"checkpoints-chunk{i}") for i in range(len(groups))])
    return several, dirs, list(zip(groups, ckpts, strict=True))


OnStep = Callable[[int, Callable[[], bool]], None]
"""``on_step(step, stop_asked)``: called after every training step (``step`` steps done,
its history and checkpoint writes made); ``stop_asked()`` is True once SIGTERM or SIGINT
has asked the run to stop (it stops when the callback returns). For monitoring and fault
injection (the training tests kill or signal a run at a given step through it)."""


@jax.jit
def _coefficients_n(hp: Float[Array, "m 3"], n) -> Float[Array, " m"]:
    """Remark 3.7's c(n) = h (c_beta(n) - c_rho(n)) for rows (h, beta, rho) at step n."""
    return jax.vmap(lambda r: correction_coefficient_n(r[0], r[1], r[2], n))(hp)


def run(
    cfg: TrainConfig,
    out: str,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: OnStep | None = None,
    log=print,
) -> list[dict]:
    """Train ``cfg`` into directory ``out`` (see the module docstring); return the
    per-member summaries also written to each ``config.json``. ``on_step``: see
    :data:`OnStep`.

    Before writing anything: ConfigError (one line, naming the file or value) for an
    invalid configuration, a training set smaller than ``train_size``, ``out`` holding
    another run (or any run without ``resume``) or a run that cannot be continued
    consistently (``bea.nn._rundir.inspect``), or a live writer holding ``out``'s lock;
    DataError if the data is missing or damaged. While running, SIGTERM / SIGINT stop
    at the next step with a checkpoint and the histories saved (Interrupted). With
    several processes (``bea.distributed``) every process runs this with the same
    ``out`` (a file system all of them see), all take the same branches, and only
    process 0 writes the run files and holds the lock.
    """
    validate(cfg)
    is_main = jax.process_index() == 0
    specs = members(cfg)
    several, dirs, groups = _layout(cfg, specs, out)
    root_file = os.path.join(out, "sweep.json" if several else "config.json")
    lock = contextlib.ExitStack()
    error = None
    try:
        if is_main and os.path.isdir(out):
            RunLock.check(out)  # a live writer first: its files are in flux
        plan = rundir.inspect(out, several=several, config=_record(cfg),
                              specs=specs, groups=groups, dirs=dirs, resume=resume,
                              resumable=_RESUMABLE, defaults=_record(TrainConfig()),
                              legacy={"sweep": _sweep_text(cfg)})
        data = load_data(cfg)
        if is_main:
            lock.enter_context(RunLock(out, log))
    except (rundir.RunDirError, hist.HistoryError) as e:
        error = ConfigError(f"{e}; nothing changed" if resume and isinstance(
            e, hist.HistoryError) else str(e))
    except (ConfigError, DataError) as e:
        error = e
    if not all_agree(error is None):
        lock.close()
        raise error or ConfigError("another process of this run refused it (process 0 says "
                                   "why)")
    with lock, _StopOnSignal() as stop:
        for note in plan.notes:
            log(note)
        mesh = data_mesh()
        step_fns: dict = {}
        written = []

        def on_start():
            if is_main and several and not written:
                hist.write_json(root_file, {"config": _record(cfg),
                                            "members": [s["name"] for s in specs]})
            written.append(True)

        summaries = []
        for group, ckpt in groups:
            try:
                summaries += _group_run(cfg, [specs[i] for i in group], [dirs[i] for i in group],
                                        ckpt, data, mesh, resume=resume, progress=progress,
                                        on_step=on_step, is_main=is_main, log=log,
                                        step_fns=step_fns, stop=stop, on_start=on_start)
            except DamagedCheckpoints as e:
                raise ConfigError(str(e)) from None
            except Interrupted as e:
                raise Interrupted(e.signum, e.step, out) from None
        return summaries


def _record(cfg: TrainConfig) -> dict:
    """``cfg`` as its run files record it (JSON values: the sweep's tuples become lists), so
    that a configuration compares equal to the one read back from them."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _sweep_text(cfg: TrainConfig) -> str | None:
    """The sweep as run files before (key, values) recorded it: ``"rho=0.99,0.995"``."""
    sweep = _sweep(cfg)
    return None if sweep is None else f"{sweep[0]}={','.join(map(repr, sweep[1]))}"


def _subset(data, cfg: TrainConfig):
    """The first ``train_size`` / ``test_size`` examples; ConfigError if the data set has
    fewer (the standardisation uses the whole set)."""
    for name, n, x, y in (("train", cfg.train_size, "x_train", "y_train"),
                          ("test", cfg.test_size, "x_test", "y_test")):
        have = len(getattr(data, y))
        if n is not None and n > have:
            raise ConfigError(f"--{name}-size {n} exceeds the {have} {name} examples of "
                              f"{cfg.dataset}")
        if n is not None:
            data = data._replace(**{x: getattr(data, x)[:n], y: getattr(data, y)[:n]})
    return data


def summaries_table(summaries: Sequence[dict]) -> str:
    """A plain-text table of member summaries (for the CLI)."""
    lines = [f"{'member':>20} {'status':>12} {'steps':>6} {'stop step':>9} "
             f"{'||g||_1,eps':>12} {'test acc':>8}"]
    for s in summaries:
        pn = s.get("stop_perturbed_one_norm")
        ta = s.get("stop_test_accuracy")
        lines.append(f"{s['member'] or 'run':>20} {s['status']:>12} {s['steps_done']:>6} "
                     f"{str(s['stop_step']):>9} {'' if pn is None else f'{pn:.5g}':>12} "
                     f"{'' if ta is None else f'{ta:.4f}':>8}")
    return "\n".join(lines)
