"""Calibrate the paper-size training run on this machine: ``python -m experiments.calibrate``.

Section 6 trains ResNet-50 and ResNet-101 on CIFAR-10/100 with full-batch Adam: every step
is the gradient of the mean loss over the whole training set (50 000 images), accumulated
over physical batches. This command runs that step here, through the training loop itself
(``bea.nn.train.run``, the code a paper-size run uses), and reports:

* seconds per full-batch step (median over the timed steps; the first step, with setup and
  compilation, apart), with the step's training-set gradient, test-set evaluation and the
  logged metrics;
* the peak device memory (``memory_stats()['peak_bytes_in_use']``; a CPU reports none,
  and then the host's peak resident memory is given instead, said so);
* at each eps of ``--eps`` (default the paper's 1e-3 and Adam's usual 1e-8): the share of
  gradient entries with |g_j| > sqrt(eps) at theta0 and after the timed steps (each eps
  is trained from the same theta0 at its own eps), and the norm's excess over P sqrt(eps)
  against the two-norm penalty ||g||_2^2 / (2 sqrt eps) (``bea.nn._metrics``): where the
  share is ~0, ||grad E||_{1,eps} is a two-norm penalty, not a one-norm;
* the projected GPU-hours per figure (3 to 8) at K seeds (``--seeds``): seconds per step
  x steps per run x runs, the runs being docs/training.md's paper-size commands (5 values
  of the swept hyperparameter per panel, sequential). The paper gives no step counts:
  ``--run-steps`` (default 1000, the order of magnitude docs/training.md assumes for the
  paper's h = 7.5e-5 and 1e-4 to reach a training loss of 0.01; an assumption, not a
  measurement) and, beside it, the cap of those commands (``--max-steps 5000``). A
  figure's network other than the measured one is scaled by XLA's count of floating-point
  operations per example of a training step (forward and backward), and a measurement on
  fewer than CIFAR's 50 000 training images by the ratio of the counts; the table says so.

Data: with ``--data-dir DIR``, CIFAR-10/100 from DIR in the python-pickle layout
(``DIR/cifar-10-batches-py/``, ``DIR/cifar-100-python/``; the flag and layout of
``experiments.train``; nothing is downloaded). Without it, synthetic data of CIFAR's shape
(50 000 training and 10 000 test images of 3 x 32 x 32, uniform pixels and labels)
written in that layout to a temporary directory: the step time does not depend on the
values, the gradient shares do (they are then of random data, said so).

``--small``: a small model (``resnet_small``) on a small synthetic set (128 training, 32
test images of CIFAR's shape, physical batch 128): seconds on a CPU, the test's size; its
projection stands the small model in for every figure's (a check of the arithmetic, not
a forecast). Everything it prints on a CPU is CPU time.

Writes ``OUT/calibrate.json`` (atomically). Bad flags or data: one line, exit 2, nothing
written. SIGINT / SIGTERM: one line, exit 130 / 143, nothing written.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time

from experiments._cli import (
    Parser,
    check_out_dir,
    check_size,
    fail,
    integer,
    interruptible,
    number,
    numbers,
)

PROG = "experiments.calibrate"

RUN_SETS = {
    # name: (model, dataset, fixed hyperparameters, swept key, its values) -- the
    # paper-size commands of docs/training.md (the paper's h and eps; 5 values per panel,
    # 8 for Figure 8)
    "fig3": ("resnet50", "cifar10", "h=7.5e-5 beta=0.97", "rho",
             (0.97, 0.98, 0.99, 0.995, 0.999)),
    "fig4_beta0.99": ("resnet50", "cifar10", "h=7.5e-5 beta=0.99", "rho",
                      (0.99, 0.993, 0.995, 0.997, 0.999)),
    "fig5": ("resnet50", "cifar10", "h=1e-4 rho=0.999", "beta", (0.9, 0.93, 0.95, 0.97, 0.99)),
    "fig7": ("resnet101", "cifar10", "h=1e-4 rho=0.999", "beta", (0.9, 0.95, 0.97, 0.99, 0.999)),
    # Figure 8 reaches below beta (rho < beta, where the paper sees hills "even if
    # beta > rho"), as Makefile.train's resnet_rho_wide does at CPU size
    "fig8": ("resnet101", "cifar100", "h=7.5e-5 beta=0.97", "rho",
             (0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)),
}
FIGURE_RUNS = {3: ("fig3",), 4: ("fig3", "fig4_beta0.99"), 5: ("fig5",), 6: ("fig5",),
               7: ("fig7",), 8: ("fig8",)}
"""The run sets each figure reads (Figure 4's left panel is Figure 3's runs; Figure 6 reads
Figure 5's)."""
CAP_STEPS = 5000
"""The ``--max-steps`` of docs/training.md's paper-size commands."""
RUN_STEPS = 1000
CIFAR_SIZES = (50_000, 10_000)
SMALL = {"model": "resnet_small", "sizes": (128, 32), "physical_batch": 128}
DEFAULTS = {"model": "resnet50", "physical_batch": 500}
MAX_TIMED_STEPS = 1000
MIN_SECONDS = 1.0
"""Each eps trains at least this long (and at least its first step), whatever the limit."""


def build_parser() -> argparse.ArgumentParser:
    from bea.models import MODEL_NAMES

    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default=None,
                   help=f"network to time (default {DEFAULTS['model']}; {SMALL['model']} "
                        "with --small)")
    p.add_argument("--dataset", choices=("cifar10", "cifar100"), default="cifar10")
    p.add_argument("--data-dir", default=None,
                   help="directory holding cifar-10-batches-py/ or cifar-100-python/ "
                        "(default: synthetic data of CIFAR's shape)")
    p.add_argument("--physical-batch", type=integer, default=None,
                   help=f"examples per accumulation batch (default {DEFAULTS['physical_batch']}"
                        f", {SMALL['physical_batch']} with --small)")
    p.add_argument("--steps", type=integer, default=3,
                   help="timed full-batch steps per eps, after the first (compiling) one")
    p.add_argument("--time-limit", type=number, default=540.0,
                   help="seconds for the whole command; checked between steps (a step "
                        "that has begun runs to its end)")
    p.add_argument("--seeds", type=integer, default=8, help="K: seeds per configuration")
    p.add_argument("--run-steps", type=integer, default=RUN_STEPS,
                   help="full-batch steps per run assumed by the projection (the paper "
                        "gives none)")
    p.add_argument("--eps", type=numbers, default=[1e-3, 1e-8],
                   help="eps values (comma-separated) at which to train and measure the "
                        "share of |g_j| > sqrt(eps)")
    p.add_argument("--h", type=number, default=1e-4, help="Adam's step size for the timed steps")
    p.add_argument("--beta", type=number, default=0.97)
    p.add_argument("--rho", type=number, default=0.999)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=integer, default=0, help="initialisation (and synthetic "
                                                           "data) seed")
    p.add_argument("--small", action="store_true",
                   help="a small model on a small synthetic set: seconds on a CPU")
    p.add_argument("--out", default="results/calibrate", help="directory for calibrate.json")
    return p


def check_args(args) -> None:
    """ValueError (one line naming the value) for flags that cannot be run; fills in the
    defaults that depend on --small."""
    from bea.optimizers import check_hyperparameters

    if args.small and args.data_dir is not None:
        raise ValueError(f"--data-dir {args.data_dir} applies without --small (--small trains "
                         "on a small synthetic set)")
    for name in ("steps", "seeds", "run_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.physical_batch is not None and args.physical_batch < 1:
        raise ValueError(f"--physical-batch must be >= 1, got {args.physical_batch}")
    if not (args.time_limit > 0 and math.isfinite(args.time_limit)):
        raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    if args.seed < 0 or args.seed >= 2**32:
        raise ValueError(f"--seed must lie in [0, 2**32), got {args.seed}")
    if len(set(args.eps)) != len(args.eps):
        raise ValueError(f"--eps values repeat: {','.join(map(repr, args.eps))}")
    check_size("--steps", args.steps, MAX_TIMED_STEPS)
    check_size("--seeds", args.seeds, 10**4)
    check_size("--run-steps", args.run_steps, 10**7)
    check_size("--eps values", len(args.eps), 10)
    for eps in args.eps:
        check_hyperparameters(h=args.h, beta=args.beta, rho=args.rho, eps=eps)
    if args.data_dir is not None:
        from bea.data import DataError, cifar_files

        try:
            cifar_files(args.data_dir, args.dataset)
        except DataError as e:
            raise ValueError(str(e)) from None
    size = SMALL if args.small else DEFAULTS
    args.model = args.model or size["model"]
    args.physical_batch = args.physical_batch or size["physical_batch"]
    n_train = (SMALL["sizes"] if args.small else CIFAR_SIZES)[0]  # CIFAR's, on disk or not
    if args.physical_batch > n_train:
        raise ValueError(f"--physical-batch {args.physical_batch} exceeds the {n_train} "
                         "training images: one batch would be the whole set, and the "
                         "report would name a batch that never ran")


def flops_per_example(model: str, num_classes: int, image_shape=(3, 32, 32), batch: int = 8
                      ) -> float:
    """XLA's count of floating-point operations of one training example's forward and
    backward pass through ``model`` (mean cross-entropy, float32), from the lowered
    program (traced on abstract shapes: nothing is allocated or run)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from bea.models import make_model

    net = eqx.filter_eval_shape(make_model, model, image_shape[0], image_shape[1],
                                num_classes, jax.random.PRNGKey(0))
    params, static = eqx.partition(net, lambda a: isinstance(a, jax.ShapeDtypeStruct)
                                   and jnp.issubdtype(a.dtype, jnp.floating))

    def loss(p, x, y):
        logits = jax.vmap(eqx.combine(p, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    cost = jax.jit(jax.value_and_grad(loss)).lower(params, x, y).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"]) / batch


def parameter_count(model: str, num_classes: int, image_shape=(3, 32, 32)) -> int:
    """The number of trainable entries P of ``model`` (abstract shapes only)."""
    import equinox as eqx
    import jax
    import numpy as np

    from bea.models import make_model

    net = eqx.filter_eval_shape(make_model, model, image_shape[0], image_shape[1],
                                num_classes, jax.random.PRNGKey(0))
    leaves = jax.tree_util.tree_leaves(net)
    return int(sum(np.prod(a.shape) for a in leaves if isinstance(a, jax.ShapeDtypeStruct)))


def project(step_seconds: dict, run_steps: int, seeds: int, cap: int = CAP_STEPS) -> dict:
    """GPU-hours per figure: ``step_seconds[(model, dataset)] = (seconds, how)``; each run
    set of :data:`RUN_SETS` costs seconds x steps x (values x seeds) / 3600 at
    ``run_steps`` and at ``cap`` steps per run (runs one after the other; a figure that
    reads another's runs says so and costs only its own new ones)."""
    sets = {}
    for name, (model, dataset, fixed, key, values) in RUN_SETS.items():
        s, how = step_seconds[(model, dataset)]
        runs = len(values) * seeds
        sets[name] = {"model": model, "dataset": dataset, "fixed": fixed,
                      "sweep": f"{key}={','.join(map(str, values))}", "runs": runs,
                      "seconds_per_step": s, "how": how,
                      "gpu_hours": s * run_steps * runs / 3600,
                      "gpu_hours_at_cap": s * cap * runs / 3600}
    figures, done = [], set()
    for fig, names in FIGURE_RUNS.items():
        new = [n for n in names if n not in done]
        shared = [n for n in names if n in done]
        done.update(names)
        figures.append({
            "figure": fig, "run_sets": list(names), "reads_runs_of": shared,
            "model": sets[names[-1]]["model"], "dataset": sets[names[-1]]["dataset"],
            "runs": sum(sets[n]["runs"] for n in names),
            "new_runs": sum(sets[n]["runs"] for n in new),
            "seconds_per_step": sets[names[-1]]["seconds_per_step"],
            "how": sets[names[-1]]["how"],
            "gpu_hours": sum(sets[n]["gpu_hours"] for n in new),
            "gpu_hours_at_cap": sum(sets[n]["gpu_hours_at_cap"] for n in new)})
    return {"run_steps": run_steps, "cap_steps": cap, "seeds": seeds, "run_sets": sets,
            "figures": figures,
            "total_gpu_hours": sum(s["gpu_hours"] for s in sets.values()),
            "total_gpu_hours_at_cap": sum(s["gpu_hours_at_cap"] for s in sets.values())}


class _Clock:
    """``bea.nn.train.run``'s ``on_step`` callback: the time at the end of every step,
    per member (the sequential members restart their step count at 1)."""

    def __init__(self):
        self.start = time.monotonic()
        self.members: list[list[float]] = []

    def __call__(self, step: int, stop_asked) -> None:
        if step == 1:
            self.members.append([])
        self.members[-1].append(time.monotonic())


def _peak_memory() -> dict:
    import jax

    dev = jax.local_devices()[0]
    stats = dev.memory_stats() or {}
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    out = {"device_peak_bytes": stats.get("peak_bytes_in_use"),
           "device_bytes_limit": stats.get("bytes_limit"), "host_peak_rss_bytes": host}
    out["note"] = ("device peak from memory_stats()" if out["device_peak_bytes"] is not None
                   else f"{dev.platform} reports no device memory statistics: host peak "
                        "resident memory instead")
    return out


def measure(args, log, budget: float) -> dict:
    """Train ``args``'s configuration for 1 + ``args.steps`` full-batch steps at each eps
    (sequential members of one ``bea.nn.train.run``, same theta0) in a temporary
    directory, each eps within an equal share of the ``budget`` seconds left after the
    data are ready, and read back the times, the memory and the histories."""
    import jax

    from bea.data import load_dataset, write_cifar_pickles
    from bea.nn import read_history
    from bea.nn.train import TrainConfig, run

    t0 = time.monotonic()
    n_train, n_test = SMALL["sizes"] if args.small else CIFAR_SIZES
    num_classes = 10 if args.dataset == "cifar10" else 100
    with tempfile.TemporaryDirectory(prefix="bea-calibrate-") as tmp:
        if args.data_dir is not None:
            data_dir, train_size, test_size = args.data_dir, None, None
            sizes = load_dataset(args.dataset, data_dir)  # DataError if damaged, before run
            n_train, n_test = len(sizes.y_train), len(sizes.y_test)
            del sizes
            source = (f"{args.dataset} from {os.path.abspath(args.data_dir)} ({n_train} "
                      f"training and {n_test} test images)")
        else:
            data_dir = os.path.join(tmp, "data")
            write_cifar_pickles(data_dir, args.dataset, n_train, n_test, seed=args.seed)
            train_size, test_size = n_train, n_test
            source = (f"synthetic, CIFAR's shape ({n_train} training and {n_test} test images "
                      f"of 3x32x32, {num_classes} classes, uniform pixels and labels; no "
                      "--data-dir)")
        eps = tuple(args.eps)
        budget -= time.monotonic() - t0
        cfg = TrainConfig(model=args.model, dataset=args.dataset, data_dir=data_dir,
                          train_size=train_size, test_size=test_size, h=args.h,
                          beta=args.beta, rho=args.rho, eps=eps[0], max_steps=args.steps + 1,
                          max_minutes=max(budget / len(eps), MIN_SECONDS) / 60, seed=args.seed,
                          dtype=args.dtype, physical_batch=args.physical_batch,
                          sweep=("eps", eps) if len(eps) > 1 else None,
                          sweep_mode="sequential")
        clock = _Clock()
        out = os.path.join(tmp, "run")
        summaries = run(cfg, out, progress=False, on_step=clock, log=log)
        histories = [read_history(os.path.join(out, *(s["member"] or "").split("/"),
                                               "history.csv")) for s in summaries]
        memory = _peak_memory()
    gaps = [b - a for times in clock.members for a, b in zip(times, times[1:], strict=False)]
    first = clock.members[0][0] - clock.start if clock.members else None
    per_eps = []
    for e, s, rows in zip(eps, summaries, histories, strict=True):
        first_row, last = (rows[0], rows[-1]) if rows else ({}, {})
        per_eps.append({
            "eps": e, "status": s["status"], "steps": len(rows),
            "share_above_sqrt_eps_theta0": first_row.get("share_above_sqrt_eps"),
            "share_above_sqrt_eps_after": last.get("share_above_sqrt_eps"),
            "after_step": last.get("step"),
            "excess_over_floor_theta0": first_row.get("perturbed_one_norm_excess"),
            "two_norm_penalty_theta0": first_row.get("two_norm_penalty"),
            "perturbed_one_norm_theta0": first_row.get("perturbed_one_norm"),
            "train_loss": [r["train_loss"] for r in rows]})
    dev = jax.local_devices()[0]
    return {
        "platform": dev.platform, "device_kind": dev.device_kind,
        "devices": jax.device_count(),
        "jax_version": jax.__version__, "model": args.model,
        "parameters": parameter_count(args.model, num_classes), "dataset": args.dataset,
        "data": source, "train_examples": n_train, "test_examples": n_test,
        "physical_batch": args.physical_batch, "dtype": args.dtype,
        "h": args.h, "beta": args.beta, "rho": args.rho,
        "setup_compile_first_step_seconds": first,
        "step_seconds": gaps,
        "seconds_per_step": statistics.median(gaps) if gaps else first,
        "seconds_per_step_from": (f"median of {len(gaps)} timed step(s)" if gaps else
                                  "the first step (with setup and compilation): no other step "
                                  "fitted in --time-limit"),
        "memory": memory, "eps": per_eps}


def _classes(dataset: str) -> int:
    return 10 if dataset == "cifar10" else 100


def cost_ratios(args) -> dict:
    """``(model, dataset) -> ratio`` for every network of :data:`RUN_SETS`: its flops per
    training example over the measured network's (:func:`flops_per_example`), 1 for the
    measured one; None for all with ``--small`` (the small model stands in for all)."""
    key = (args.model, args.dataset)
    nets = dict.fromkeys((m, d) for m, d, *_ in RUN_SETS.values())
    if args.small:
        return dict.fromkeys(nets)
    counts: dict = {}
    for model, dataset in [key, *nets]:
        k = (model, _classes(dataset))
        if k not in counts:
            counts[k] = flops_per_example(*k)
    base = counts[(args.model, _classes(args.dataset))]
    return {(m, d): (1.0 if (m, d) == key else counts[(m, _classes(d))] / base)
            for m, d in nets} | {"flops_per_example": {f"{m}/{k} classes": v
                                                        for (m, k), v in counts.items()}}


def step_seconds_table(args, seconds: float, ratios: dict, train_examples: int) -> dict:
    """``(model, dataset) -> (seconds per step, how)`` for every run set of
    :data:`RUN_SETS`: ``seconds`` (measured on ``train_examples`` training images) for the
    measured network, scaled by ``ratios`` (XLA's flop count per example) otherwise, and
    by 50 000 / ``train_examples`` when the measured set is not CIFAR's size;
    ``--small``: ``seconds`` for all, said so."""
    out = {}
    scale = CIFAR_SIZES[0] / train_examples
    for model, dataset, *_ in RUN_SETS.values():
        ratio = ratios[(model, dataset)]
        if ratio is None:
            how = "measured" if (model, dataset) == (args.model, args.dataset) else \
                f"{args.model}'s (--small)"
            out[(model, dataset)] = (seconds, how)
            continue
        how = "measured" if ratio == 1.0 else f"{args.model} x {ratio:.3g} (flops)"
        if scale != 1:
            how += f" x {scale:.3g} (examples)"
        out[(model, dataset)] = (seconds * ratio * scale, how)
    return out


def _gib(b) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def report(result: dict) -> str:
    """The calibration as a plain-text table."""
    m, p = result["measurement"], result["projection"]
    lines = []
    where = f"{m['platform']} ({m['device_kind']})"
    if m["platform"] == "cpu":
        where += ": CPU times, not a GPU calibration"
    lines.append(f"{PROG} on {where}, jax {m['jax_version']}, {m['dtype']}")
    lines.append(f"model {m['model']} (P = {m['parameters']:,} parameters); data: {m['data']}")
    lines.append(f"physical batch {m['physical_batch']}; Adam h = {m['h']:g}, beta = "
                 f"{m['beta']:g}, rho = {m['rho']:g}")
    first = m["setup_compile_first_step_seconds"]
    lines.append(f"setup, compilation and first step: {first:.2f} s; full-batch step: "
                 f"{m['seconds_per_step']:.3g} s ({m['seconds_per_step_from']})")
    if m["devices"] > 1:
        lines.append(f"{m['devices']} devices share each step (data-parallel): the projection "
                     f"counts {m['devices']} x {m['seconds_per_step']:.3g} device-seconds per step")
    mem = m["memory"]
    if mem["device_peak_bytes"] is not None:
        lines.append(f"peak device memory: {_gib(mem['device_peak_bytes'])} (of "
                     f"{_gib(mem['device_bytes_limit'])})")
    else:
        lines.append(f"peak memory: host {_gib(mem['host_peak_rss_bytes'])} ({mem['note']})")
    lines.append(f"{'eps':>8} {'|g_j| > sqrt(eps): theta0':>26} {'after':>8} {'at step':>7} "
                 f"{'excess/floor':>12} {'excess/penalty':>14}")
    for e in m["eps"]:
        if not e["steps"]:
            lines.append(f"{e['eps']:>8.0e} not measured (status {e['status']})")
            continue
        floor = m["parameters"] * math.sqrt(e["eps"])
        ratio = e["excess_over_floor_theta0"] / e["two_norm_penalty_theta0"]
        why = {"max_steps": "", "max_minutes": "  (stopped by --time-limit)"}
        lines.append(f"{e['eps']:>8.0e} {e['share_above_sqrt_eps_theta0']:>26.4g} "
                     f"{e['share_above_sqrt_eps_after']:>8.4g} {e['after_step']:>7} "
                     f"{e['excess_over_floor_theta0'] / floor:>12.3g} {ratio:>14.4g}"
                     + why.get(e["status"], f"  ({e['status']})"))
    lines.append("(excess = ||g||_{1,eps} - P sqrt(eps) at theta0; floor = P sqrt(eps); "
                 "penalty = ||g||_2^2/(2 sqrt eps): a ratio ~1 means a two-norm penalty)")
    lines.append(f"projection: K = {p['seeds']} seeds, {p['run_steps']} full-batch steps per "
                 f"run (assumed: --run-steps; the paper gives none), runs one after the other")
    cap = f"at {p['cap_steps']}"
    lines.append(f"{'figure':>6} {'model':>10} {'dataset':>9} {'runs':>5} {'new':>5} "
                 f"{'s/step':>8}  {'how':<40} {'GPU-h':>8} {cap:>9}")
    for f in p["figures"]:
        lines.append(f"{f['figure']:>6} {f['model']:>10} {f['dataset']:>9} {f['runs']:>5} "
                     f"{f['new_runs']:>5} {f['seconds_per_step']:>8.3g}  {f['how']:<40} "
                     f"{f['gpu_hours']:>8.3g} {f['gpu_hours_at_cap']:>9.3g}"
                     + (f"  (reads {', '.join(f['reads_runs_of'])})" if f["reads_runs_of"]
                        else ""))
    lines.append(f"all figures: {p['total_gpu_hours']:.3g} GPU-hours ({p['cap_steps']}-step "
                 f"cap: {p['total_gpu_hours_at_cap']:.3g})")
    if result["args"]["small"]:
        lines.append("--small: the small model stands in for every figure's network: a check "
                     "of the arithmetic, not a forecast")
    return "\n".join(lines)


@interruptible(PROG, "; nothing written")
def main(argv: list[str] | None = None) -> dict:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        check_args(args)
        check_out_dir(args.out)
    except ValueError as e:
        fail(PROG, str(e))
    if args.dtype == "float64":  # before any array exists (bea changes no setting itself)
        import bea

        bea.enable_x64()
    from bea.data import DataError
    from bea.io import write_json
    from bea.nn.train import ConfigError, Interrupted

    t0 = time.monotonic()
    notes: list[str] = []
    try:
        ratios = cost_ratios(args)  # tracing only, before the clock of --time-limit runs out
        measured = measure(args, notes.append, args.time_limit - (time.monotonic() - t0))
        measured["flops_per_example"] = ratios.pop("flops_per_example", None)
        # device-seconds: a step on n devices (the data split over them) costs n x its time
        table = step_seconds_table(args, measured["seconds_per_step"] * measured["devices"],
                                   ratios, measured["train_examples"])
        projection = project(table, args.run_steps, args.seeds)
    except (ConfigError, DataError) as e:
        fail(PROG, str(e))
    except Interrupted as e:  # a signal during the training steps: stopped there
        sys.stderr.write(f"{PROG}: interrupted ({signal.Signals(e.signum).name}) at step "
                         f"{e.step}; nothing written\n")
        raise SystemExit(128 + e.signum) from None
    result = {"command": ["python", "-m", PROG, *(sys.argv[1:] if argv is None else argv)],
              "args": vars(args), "measurement": measured, "projection": projection,
              "elapsed_seconds": time.monotonic() - t0, "time_limit": args.time_limit,
              "notes": [n for n in notes if not n.startswith("resumed")]}
    text = report(result)
    print(text)
    path = os.path.join(args.out, "calibrate.json")
    write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
