"""Figures 3 to 8 of Section 6 from run histories, with seeds and verdicts:
``python -m experiments.figures --help``.

    3: ||grad E||_{1,eps} at equal training loss against rho   (paper: rises)
    4: test accuracy at equal training loss against rho         (paper: falls)
    5: ||grad E||_{1,eps} at equal training loss against beta  (paper: falls)
    6: test accuracy at equal training loss against beta        (paper: rises)
    7: training loss and ||grad E||_{1,eps} per step for each beta; test accuracy at
       loss 0.1 against beta (paper: rises), the norm (falls) and its hill (falls)
    8: ||grad E||_{1,eps} per step for each rho; the hill against rho (paper: rises)
    holm: no --runs; reads OUT/figure3.json ... figure8.json and adjusts the declared
       headline tests (``HEADLINE``, one per panel: 7 tests) for their number (Holm),
       writing OUT/headlines.json
    mechanism: --runs ADAM_SWEEP --runs MODIFIED_GD_SWEEP (same rho values and seeds):
       the norm at equal loss along training, Adam against the stand-in "GD on the
       modified loss, finite-n c(n)" (gradient descent on E + c(n) ||grad E||_{1,eps},
       Remark 3.7's coefficient; a stand-in, not the preconditioned flow (8)), and each
       one's trend in rho

``--runs`` is a directory written by ``experiments.train`` (a sweep, with or without
``--seeds``, or one run); repeat it for several panels (Figure 4: beta = 0.97 and 0.99).
Every run is read out at each threshold of ``--thresholds`` and at ``--threshold`` (the
paper's 0.01; 0.1 for Figure 7's accuracy) three ways (``bea.nn.readout``): ``first``,
the first row below the loss (the paper's); ``interp``, interpolated on log loss to
exactly that loss; ``window``, the mean over the 2w + 1 steps around the crossing
(``--window`` w). Per configuration: the mean over seeds and its 95% interval
(``--interval``: ``t``, the Student-t interval, the default, K >= 2; ``bootstrap-t``,
K >= 6; ``bea.nn.stats``); per panel: the least-squares slope against x with its
interval and two-sided p-value (paired over seeds) and the verdict "holds" / "is
absent" / "is reversed". The headline of each panel is declared in ``HEADLINE`` (not
chosen after the runs; ``--threshold`` moves the plots, not the headline), and
``--figure holm`` adjusts the seven headline p-values together. Every run is classified
by ``bea.nn.readout.regime`` as "spike" (the loss rises more than ``--spike-factor``
times within ``--spike-within`` steps) or "oscillation"; spike runs are listed apart and
the headline is repeated over the seeds none of whose runs spike. The hill is
``bea.nn.readout.hill_height`` (on a smoothed curve; the older first-local-minimum hill
is reported beside it). Writes ``OUT/figureN.png`` and ``OUT/figureN.json`` (every
number, the verdicts; ``"version": 2``, version 1 had no p-values, regimes or
``"interval"``) and prints a table. One seed: the numbers, no intervals, no verdict.

Errors (one line, exit 2): a threshold some runs never reach (they are named), a window
that leaves a run's history, a panel whose configurations have different seeds, or
whose runs differ in anything but x, fewer seeds than the interval method needs, a
mechanism sweep written before modified_gd used c(n), a holm family with a figure
missing or drawn before version 2.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from bea.io import write_json
from experiments._cli import (
    Parser,
    check_out_dir,
    check_size,
    fail,
    integer,
    interruptible,
    number,
    save_png,
)
from experiments._cli import numbers as number_list

METHODS = ("t", "bootstrap-t")  # bea.nn.stats.METHODS (not imported at start-up)

PROG = "experiments.figures"
VERSION = 2  # of figureN.json: 2 added p-values, "interval", regimes, the smoothed hill
MAX_BOOT = 10**6  # bootstrap resamples (memory: resamples x seeds per configuration)
FIGURES = ("3", "4", "5", "6", "7", "8", "holm", "mechanism")
X_OF = {3: "rho", 4: "rho", 5: "beta", 6: "beta", 7: "beta", 8: "rho"}
# (quantity, the sign of its slope against x that the paper reports)
QUANTITIES = {
    3: [("perturbed_one_norm", +1)],
    4: [("test_accuracy", -1)],
    5: [("perturbed_one_norm", -1)],
    6: [("test_accuracy", +1)],
    7: [("test_accuracy", +1), ("perturbed_one_norm", -1), ("hill", -1),
        ("hill_first_minimum", -1)],
    8: [("hill", +1), ("perturbed_one_norm", +1), ("hill_first_minimum", +1)],
}
# The one headline test of each figure's panels, declared before the runs (issue 22):
# (quantity, read-out, training loss); the hills are read over the whole run. Figure 4
# has two panels (beta = 0.97, 0.99), so the family adjusted by ``--figure holm`` has 7
# tests. docs/training.md lists the same.
HEADLINE = {
    3: ("perturbed_one_norm", "window", 0.01),
    4: ("test_accuracy", "window", 0.01),
    5: ("perturbed_one_norm", "window", 0.01),
    6: ("test_accuracy", "window", 0.01),
    7: ("test_accuracy", "window", 0.1),
    8: ("hill", None, None),
}
HILLS = ("hill", "hill_first_minimum")
ALPHA = 0.05  # the family-wise level of the Holm verdicts
LABEL = {"perturbed_one_norm": r"$\|\nabla E\|_{1,\varepsilon}$",
         "test_accuracy": "test accuracy", "hill": r"hill of $\|\nabla E\|_{1,\varepsilon}$",
         "hill_first_minimum": "hill after the first local minimum"}
STAND_IN = ("GD on the modified loss, finite-n c(n) (a stand-in, not the preconditioned "
            "flow (8))")
WORD = {"holds": "holds", "absent": "is absent", "reversed": "is reversed"}
HPARAMS = ("h", "beta", "rho", "eps")
DPI = 80


class FigureError(ValueError):
    """Runs that cannot make the figure asked for; the message names them."""


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN where a column has no finite entry."""
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    return np.where(n > 0, np.where(ok, a, 0).sum(axis=0) / np.maximum(n, 1), np.nan)


def load_runs(directory: str) -> list[dict]:
    """[{h, beta, rho, eps, seed, name, dir, rows, status, model, dataset, optimizer,
    gd_lr}] for every run (a directory with history.csv) at or below ``directory``."""
    from bea import nn as H

    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FigureError(f"--runs {directory} is a file, not a run directory")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no run directory {directory}")
    dirs = sorted(root for root, _, files in os.walk(directory) if "history.csv" in files)
    if not dirs:
        raise FileNotFoundError(f"no history.csv in {directory} or its subdirectories")
    runs = []
    for d in dirs:
        path = os.path.join(d, "config.json")
        cfg = H.read_json(path)  # HistoryError (a ValueError) naming a damaged file
        c = cfg.get("config")
        missing = [k for k in (*HPARAMS, "status") if k not in cfg]
        if not isinstance(c, dict) or missing or not {"model", "dataset"} <= set(c):
            what = f"no {missing[0]!r}" if missing else "no 'config' with model and dataset"
            raise FigureError(f"{path} is not a training run's summary ({what})")
        rows = H.read_history(os.path.join(d, "history.csv"))
        if not rows:
            raise FigureError(f"{d}/history.csv has no rows")
        runs.append({k: cfg[k] for k in HPARAMS} | {
            "seed": cfg.get("seed", c.get("seed", 0)), "status": cfg["status"], "dir": d,
            "name": os.path.relpath(d, directory) if d != directory else os.path.basename(d),
            "rows": rows, "model": c["model"], "dataset": c["dataset"],
            "optimizer": c.get("optimizer", "adam"), "gd_lr": cfg.get("gd_lr"),
            "coefficient": cfg.get("modified_loss_coefficient")})
    return runs


def grid(runs: list[dict], x: str, where: str) -> tuple[list[float], list[int], dict]:
    """(sorted x values, sorted seeds, {(x, seed): run}) of one panel, after checking
    that the runs differ only in x and seed and that every x has the same seeds."""
    fixed = [k for k in (*HPARAMS, "model", "dataset", "optimizer", "gd_lr") if k != x]
    ref = runs[0]
    for r in runs[1:]:
        for k in fixed:
            if r[k] != ref[k]:
                raise FigureError(f"runs in {where} mix configurations: {k}={ref[k]!r} in "
                                  f"{ref['name']} but {k}={r[k]!r} in {r['name']}")
    table: dict = {}
    for r in runs:
        key = (r[x], r["seed"])
        if key in table:
            raise FigureError(f"runs in {where} repeat {x}={r[x]:g} seed={r['seed']}: "
                              f"{table[key]['name']} and {r['name']}")
        table[key] = r
    xs = sorted({r[x] for r in runs})
    seeds = {v: sorted(s for (xv, s) in table if xv == v) for v in xs}
    first = seeds[xs[0]]
    for v in xs[1:]:
        if seeds[v] != first:
            raise FigureError(f"runs in {where} have different seeds per configuration: "
                              f"{x}={xs[0]:g} has seeds {first}, {x}={v:g} has {seeds[v]}")
    return xs, first, table


def read_outs(table: dict, xs, seeds, thresholds, window: int, columns) -> dict:
    """{threshold: {(x, seed): bea.nn.readout.read_out(...)}}; FigureError naming the
    runs that never reach a threshold or whose window leaves the history."""
    from bea.nn.readout import read_out

    out = {}
    for thr in thresholds:
        out[thr] = {}
        never, short = [], []
        for v in xs:
            for s in seeds:
                run = table[(v, s)]
                ro = read_out(run["rows"], thr, columns, window)
                if ro is None:
                    never.append(f"{run['name']} ({run['status']}, last train loss "
                                 f"{run['rows'][-1]['train_loss']:.3g})")
                elif not ro["window_complete"]:
                    short.append(run["name"])
                out[thr][(v, s)] = ro
        if never:
            raise FigureError(f"threshold {thr:g} never reached by {len(never)} run(s): "
                              + ", ".join(never))
        if short:
            raise FigureError(f"the window of +-{window} steps around loss {thr:g} leaves the "
                              f"history of {len(short)} run(s): {', '.join(short)} (train "
                              f"with --steps-after-stop {window} or pass a smaller --window)")
    return out


def analyse(xs, y: np.ndarray, expected: int, *, method: str = "t", n_boot: int,
            seed: int) -> dict:
    """Per-configuration means with intervals, the slope against x with its interval,
    its two-sided p-value and the verdict, for ``y`` of shape (configurations, seeds);
    ``method`` one of ``bea.nn.stats.METHODS``."""
    from bea.nn import stats as S

    k = y.shape[1]
    kw = {"n_boot": n_boot, "seed": seed}
    per = []
    for v, row in zip(xs, y, strict=True):
        iv = S.mean_interval(row, method, **kw) if k > 1 else None
        per.append({"x": v, "mean": float(np.mean(row)), "lo": iv and iv.lo,
                    "hi": iv and iv.hi, "values": [float(a) for a in row]})
    out = {"expected_sign": expected, "per_config": per, "seeds": k, "interval": method}
    if k < 2 or len(xs) < 2:
        out.update(slope=None, p_value=None, verdict="undetermined", seeds_needed=None)
        return out
    slopes = S.per_seed_slopes(np.array(xs), y)
    sl = S.mean_interval(slopes, method, **kw)
    mean = float(np.mean(y))
    span = xs[-1] - xs[0]
    out.update(slope={"estimate": sl.estimate, "lo": sl.lo, "hi": sl.hi},
               p_value=S.p_value(slopes, method, **kw),
               verdict=S.verdict(sl, expected), seeds_needed=S.seeds_needed(sl, k),
               # the fitted change from the first to the last x, absolute and relative
               sweep_change={"estimate": sl.estimate * span, "lo": sl.lo * span,
                             "hi": sl.hi * span},
               change_over_sweep=sl.estimate * span / mean if mean else None)
    return out


def _values(quantity, readout, thr, ros, table, xs, seeds) -> np.ndarray:
    from bea.nn.readout import hill_first_minimum, hill_height

    if quantity in HILLS:
        fn = hill_height if quantity == "hill" else hill_first_minimum
        out = np.empty((len(xs), len(seeds)))
        for i, v in enumerate(xs):
            for j, s in enumerate(seeds):
                run = table[(v, s)]
                try:
                    out[i, j] = fn([q["perturbed_one_norm"] for q in run["rows"]])
                except ValueError as e:
                    raise FigureError(f"no hill for {run['name']}: {e}") from None
        return out
    return np.array([[ros[thr][(v, s)][readout][quantity] for s in seeds] for v in xs])


def verdict_line(figure, panel: dict, a: dict, x: str) -> str:
    fixed = ", ".join(f"{k}={v:g}" for k, v in panel["fixed"].items())
    q = a["quantity"]
    trend = f"{q} {'rises' if a['expected_sign'] > 0 else 'falls'} with {x}"
    where = ("over the whole run" if q in HILLS else
             f"{a['readout']} read-out at loss {a['threshold']:g}")
    head = f"Figure {figure} ({panel['model']} on {panel['dataset']}, {fixed}): "
    if a["slope"] is None:
        return head + f"no verdict on '{trend}' with {a['seeds']} seed(s)"
    s = a["slope"]
    return (head + f"the paper's trend ({trend}) {WORD[a['verdict']]} at this size: slope "
            f"{s['estimate']:.3g} [{s['lo']:.3g}, {s['hi']:.3g}] per unit {x} "
            f"({where}, {a['seeds']} seeds, 95% {a['interval']}, p = {a['p_value']:.2g})")


def _is_headline(figure: int, a: dict) -> bool:
    q, ro, thr = HEADLINE[figure]
    return a["quantity"] == q and (q in HILLS or (a["readout"] == ro and a["threshold"] == thr))


def panel_numbers(figure: int, runs: list[dict], where: str, thresholds, primary: float,
                  window: int, n_boot: int, seed: int, method: str = "t",
                  spike: tuple[float, int] = (10.0, 10)) -> dict:
    from bea.nn import stats as S
    from bea.nn.readout import regime

    x = X_OF[figure]
    xs, seeds, table = grid(runs, x, where)
    if 1 < len(seeds) < S.MIN_SEEDS[method]:
        raise FigureError(f"{where} has {len(seeds)} seeds per configuration: the {method} "
                          f"interval needs at least {S.MIN_SEEDS[method]} (--interval t "
                          f"needs {S.MIN_SEEDS['t']})")
    ref = runs[0]
    fixed = {k: ref[k] for k in HPARAMS if k != x}
    columns = ["perturbed_one_norm", "test_accuracy"]
    head_thr = HEADLINE[figure][2]
    ros = read_outs(table, xs, seeds, sorted(set(thresholds) | {primary} | (
        set() if head_thr is None else {head_thr})), window, columns)
    regimes = {key: regime([q["train_loss"] for q in r["rows"]], *spike)
               for key, r in table.items()}
    calm = [s for s in seeds if all(regimes[(v, s)] == "oscillation" for v in xs)]
    panel = {"dir": where, "model": ref["model"], "dataset": ref["dataset"],
             "optimizer": ref["optimizer"], "fixed": fixed, "seeds": seeds, "x_values": xs,
             "runs": [{x: v, "seed": s, "name": table[(v, s)]["name"],
                       "status": table[(v, s)]["status"],
                       "rows": len(table[(v, s)]["rows"]),
                       "crossing_step": ros[primary][(v, s)]["step"],
                       "regime": regimes[(v, s)]}
                      for v in xs for s in seeds],
             "spike_runs": [table[key]["name"] for key in sorted(regimes)
                            if regimes[key] == "spike"],
             "oscillation_seeds": calm, "analyses": []}
    for q, sign in QUANTITIES[figure]:
        combos = ([(None, None)] if q in HILLS else
                  [(ro, thr) for thr in sorted(ros, reverse=True)
                   for ro in ("window", "interp", "first")])
        for ro, thr in combos:
            a = analyse(xs, _values(q, ro, thr, ros, table, xs, seeds), sign, method=method,
                        n_boot=n_boot, seed=seed)
            a.update(quantity=q, readout=ro, threshold=thr)
            a["headline"] = _is_headline(figure, a)
            panel["analyses"].append(a)
    head = next(a for a in panel["analyses"] if a["headline"])
    # the headline again over the seeds none of whose runs spike (the paper's regime);
    # None when no run spikes (it is the headline) or too few such seeds remain
    panel["headline_oscillation_only"] = None
    if panel["spike_runs"] and len(calm) >= max(2, S.MIN_SEEDS[method]):
        a = analyse(xs, _values(head["quantity"], head["readout"], head["threshold"], ros,
                                table, xs, calm), head["expected_sign"], method=method,
                    n_boot=n_boot, seed=seed)
        a.update(quantity=head["quantity"], readout=head["readout"],
                 threshold=head["threshold"], seed_list=calm)
        panel["headline_oscillation_only"] = a
    panel["verdict"] = verdict_line(figure, panel, head, x)
    panel["verdict_word"] = head["verdict"]
    return panel


def _errorbars(ax, a: dict, color, marker, label, offset=0.0, mfc=None):
    xs = np.array([p["x"] for p in a["per_config"]])
    m = np.array([p["mean"] for p in a["per_config"]])
    xo = xs + offset
    for p, xv in zip(a["per_config"], xo, strict=True):
        ax.plot([xv] * len(p["values"]), p["values"], ".", color=color, alpha=0.25, ms=3)
    if a["per_config"][0]["lo"] is not None:
        lo = np.array([p["lo"] for p in a["per_config"]])
        hi = np.array([p["hi"] for p in a["per_config"]])
        ax.errorbar(xo, m, yerr=[m - lo, hi - m], fmt=marker, color=color, mfc=mfc or color,
                    capsize=3, label=label)
    else:
        ax.plot(xo, m, marker, color=color, mfc=mfc or color, label=label)
    ax.plot(xo, m, "-", color=color, alpha=0.4)


def _find(panel, quantity, readout=None, threshold=None):
    return next(a for a in panel["analyses"] if a["quantity"] == quantity
                and (quantity in HILLS or (a["readout"] == readout
                                            and a["threshold"] == threshold)))


def _readout_axis(ax, panel, quantity, x, primary):
    span = panel["x_values"][-1] - panel["x_values"][0]
    if quantity == "hill":
        _errorbars(ax, _find(panel, "hill"), "C0", "o", "hill height")
        ax.set_ylabel(LABEL["hill"])
    else:
        _errorbars(ax, _find(panel, quantity, "window", primary), "C0", "o",
                   "window mean")
        _errorbars(ax, _find(panel, quantity, "first", primary), "C1", "s",
                   "first row below (paper)", offset=0.012 * span, mfc="none")
        ax.set_ylabel(f"{LABEL[quantity]} at loss {primary:g}")
        ax.legend(fontsize=7)
    ax.set_xlabel({"rho": r"$\rho$", "beta": r"$\beta$"}[x])


def _curves(ax, runs, x, column, label):
    xs = sorted({r[x] for r in runs})
    for r in runs:
        i = xs.index(r[x])
        ax.plot([q["step"] for q in r["rows"]], [q[column] for q in r["rows"]], color=f"C{i}",
                lw=0.7, alpha=0.35, label=f"{x}={r[x]:g}" if r["seed"] == min(
                    q["seed"] for q in runs) else None)
    ax.set_yscale("log")
    ax.set_xlabel("step (= epoch, full batch)")
    ax.set_ylabel(label)
    ax.legend(fontsize=7)


def draw(figure: int, run_dirs: list[str], out: str, threshold: float | None,
         thresholds=(0.1, 0.03, 0.01), window: int = 5, n_boot: int = 10_000,
         seed: int = 0, method: str = "t", spike: tuple[float, int] = (10.0, 10)) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = X_OF[figure]
    primary = threshold if threshold is not None else (HEADLINE[figure][2] or 0.01)
    if figure in (7, 8) and len(run_dirs) > 1:  # refused, never silently ignored
        raise FigureError(f"figure {figure} takes one --runs directory, got {len(run_dirs)} "
                          f"({', '.join(run_dirs)})")
    groups = [load_runs(d) for d in run_dirs]
    head = HEADLINE[figure]
    numbers: dict = {"figure": figure, "version": VERSION, "x": x, "threshold": primary,
                     "thresholds": sorted(set(thresholds) | {primary} | (
                         set() if head[2] is None else {head[2]}), reverse=True),
                     "window": window, "interval": method, "n_boot": n_boot,
                     "bootstrap_seed": seed,
                     "headline": dict(zip(("quantity", "readout", "threshold"), head,
                                          strict=True)),
                     "spike_criterion": {"factor": spike[0], "within_steps": spike[1]},
                     "hill": "max rise of the moving median (11 steps) of two-step means "
                             "(bea.nn.readout.hill_height)",
                     "panels": []}
    for d, runs in zip(run_dirs, groups, strict=True):
        numbers["panels"].append(panel_numbers(figure, runs, d, thresholds, primary, window,
                                               n_boot, seed, method, spike))
    if figure <= 6:
        q = QUANTITIES[figure][0][0]
        fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6),
                                 squeeze=False)
        for ax, panel in zip(axes[0], numbers["panels"], strict=True):
            _readout_axis(ax, panel, q, x, primary)
            ax.set_title(_short_title(panel, x), fontsize=8)
    else:
        runs, panel = groups[0], numbers["panels"][0]
        fig, axes = plt.subplots(2, 2, figsize=(9, 6.4))
        axes = axes.ravel()
        if figure == 7:
            _curves(axes[0], runs, x, "train_loss", "training loss")
        else:
            _readout_axis(axes[0], panel, "perturbed_one_norm", x, primary)
        _curves(axes[1], runs, x, "perturbed_one_norm", LABEL["perturbed_one_norm"])
        if figure == 7:
            _readout_axis(axes[2], panel, "test_accuracy", x, primary)
            _readout_axis(axes[3], panel, "perturbed_one_norm", x, primary)
        else:
            _readout_axis(axes[2], panel, "hill", x, primary)
            axes[3].axis("off")
        axes[0].set_title(_short_title(panel, x), fontsize=8)
        if figure == 7:
            axes[1].set_title("hills: " + ", ".join(
                f"{p['x']:g}: {p['mean']:.2g}" for p in _find(panel, "hill")["per_config"]),
                fontsize=7)
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    save_png(fig, os.path.join(out, f"figure{figure}.png"), DPI)
    numbers["verdict"] = "\n".join(p["verdict"] for p in numbers["panels"])
    write_json(os.path.join(out, f"figure{figure}.json"), numbers)
    return numbers


def _short_title(panel, x):
    fixed = ", ".join(f"{k}={v:g}" for k, v in panel["fixed"].items())
    return (f"{panel['model']} on {panel['dataset']}: {fixed}; {len(panel['seeds'])} seeds\n"
            f"paper's trend {WORD.get(panel['verdict_word'], panel['verdict_word'])}")


def draw_mechanism(run_dirs: list[str], out: str, threshold: float | None, window: int = 5,
                   n_boot: int = 10_000, seed: int = 0, n_grid: int = 25,
                   method: str = "t") -> dict:
    """Adam (first ``--runs``) against the stand-in ``STAND_IN`` (second: GD on
    E + c(n) ||grad E||_{1,eps} with Remark 3.7's finite-n c(n), not the preconditioned
    flow (8)), same rho values and seeds: the norm at equal loss along a grid of losses,
    and each one's trend. modified_gd runs written with the large-n c (before c(n);
    no ``modified_loss_coefficient`` in their config.json) are refused."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bea.nn import stats as S
    from bea.nn.readout import at_equal_loss

    if len(run_dirs) != 2:
        raise FigureError(f"--figure mechanism takes two --runs (Adam, modified_gd), got "
                          f"{len(run_dirs)}")
    primary = 0.01 if threshold is None else threshold
    sides = []
    for d in run_dirs:
        runs = load_runs(d)
        xs, seeds, table = grid(runs, "rho", d)
        sides.append({"dir": d, "optimizer": runs[0]["optimizer"], "xs": xs, "seeds": seeds,
                      "table": table, "runs": runs})
    if [s["optimizer"] == "modified_gd" for s in sides] != [False, True]:
        raise FigureError("--figure mechanism wants an Adam sweep then a modified_gd sweep, got "
                          + " and ".join(s["optimizer"] for s in sides))
    a, g = sides
    old = [r["name"] for r in g["runs"] if r["coefficient"] != "finite_n"]
    if old:
        raise FigureError(f"{len(old)} modified_gd run(s) in {g['dir']} descend the large-n "
                          f"c of eq. (8), not c(n) (written before the finite-n stand-in; "
                          f"rerun them): {', '.join(old[:3])}{' ...' if len(old) > 3 else ''}")
    if 1 < len(a["seeds"]) < S.MIN_SEEDS[method]:
        raise FigureError(f"{a['dir']} has {len(a['seeds'])} seeds per configuration: the "
                          f"{method} interval needs at least {S.MIN_SEEDS[method]}")
    if (a["xs"], a["seeds"]) != (g["xs"], g["seeds"]):
        raise FigureError(f"the two sweeps differ: rho {a['xs']} seeds {a['seeds']} against "
                          f"rho {g['xs']} seeds {g['seeds']}")
    for k in ("h", "beta", "eps"):
        if a["runs"][0][k] != g["runs"][0][k]:
            raise FigureError(f"the two sweeps differ in {k}: {a['runs'][0][k]} against "
                              f"{g['runs'][0][k]}")
    xs, seeds = a["xs"], a["seeds"]
    top = min(min(r["rows"][0]["train_loss"] for r in s["runs"]) for s in sides)
    losses = np.geomspace(0.9 * top, primary, n_grid)
    numbers = {"figure": "mechanism", "version": VERSION, "stand_in": STAND_IN,
               "interval": method, "threshold": primary, "window": window,
               "losses": losses.tolist(), "rho": xs, "seeds": seeds,
               "fixed": {k: a["runs"][0][k] for k in ("h", "beta", "eps")},
               "gd_lr": g["runs"][0]["gd_lr"], "sides": []}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    n_early = 1 + min(max(len(r["rows"]) for r in g["runs"]), 40)
    for side, ls in zip(sides, ("-", "--"), strict=True):
        paths, unreached, diverged, per_x = {}, [], [], {}
        for v in xs:
            steps = []
            curve = np.full((len(seeds), len(losses)), np.nan)
            for j, s in enumerate(seeds):
                r = side["table"][(v, s)]
                lo = np.array([q["train_loss"] for q in r["rows"]])
                pn = np.array([q["perturbed_one_norm"] for q in r["rows"]])
                for i, L in enumerate(losses):
                    got = at_equal_loss(lo, pn, L)
                    curve[j, i] = np.nan if got is None else got[0]
                if r["status"] == "diverged":
                    diverged.append(f"{r['name']} (step {r['rows'][-1]['step']})")
                    steps.append(r["rows"][-1]["step"])
                elif np.isnan(curve[j, -1]):
                    unreached.append(r["name"])
            paths[v] = curve
            if steps:
                per_x[f"{v:g}"] = f"{len(steps)}/{len(seeds)} by step {min(steps)}-{max(steps)}"
        entry = {"dir": side["dir"], "optimizer": side["optimizer"], "diverged": diverged,
                 "diverged_per_rho": per_x, "unreached": unreached, "paths": {
                     f"{v:g}": {"reached": int(np.sum(np.all(np.isfinite(paths[v]), axis=1))),
                                "mean_norm": [None if np.isnan(c) else float(c)
                                              for c in _nanmean(paths[v])]}
                     for v in xs}}
        # trend in rho at the thresholds every run reaches (runs that do not are named)
        entry["trends"] = []
        for i in sorted({*range(0, len(losses), 4), len(losses) - 1}):
            y = np.array([paths[v][:, i] for v in xs])
            if np.all(np.isfinite(y)) and len(seeds) > 1:
                L = losses[i]
                sl = S.slope_interval(np.array(xs), y, method, n_boot=n_boot, seed=seed)
                entry["trends"].append({"loss": float(L), "slope": sl._asdict(),
                                        "verdict": S.verdict(sl, +1)})
        numbers["sides"].append(entry)
        for c, v in enumerate(xs):
            early = np.full((len(seeds), n_early), np.nan)
            for j, s in enumerate(seeds):
                pn = [q["perturbed_one_norm"] for q in side["table"][(v, s)]["rows"][:n_early]]
                early[j, :len(pn)] = pn
            early[~np.isfinite(early)] = np.nan
            axes[2].plot(np.arange(n_early), _nanmean(early), ls, color=f"C{c}")
            axes[0].plot(losses, _nanmean(paths[v]), ls, color=f"C{c}",
                         label=f"rho={v:g} {'Adam' if ls == '-' else 'GD, c(n)'}")
    axes[0].set(xscale="log", yscale="log", xlabel="training loss",
                ylabel=r"$\|\nabla E\|_{1,\varepsilon}$ at equal loss (mean over seeds)")
    axes[0].invert_xaxis()
    axes[0].legend(fontsize=6, ncol=2)
    for side, col in zip(numbers["sides"], ("C0", "C3"), strict=True):
        t = side["trends"]
        if t:
            ax = axes[1]
            ls_ = [q["loss"] for q in t]
            ax.errorbar(ls_, [q["slope"]["estimate"] for q in t],
                        yerr=[[q["slope"]["estimate"] - q["slope"]["lo"] for q in t],
                              [q["slope"]["hi"] - q["slope"]["estimate"] for q in t]],
                        fmt="o-", color=col, capsize=3, label=side["optimizer"])
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set(xscale="log", xlabel="training loss",
                ylabel="slope of the norm against rho (95%)")
    axes[1].invert_xaxis()
    axes[1].legend(fontsize=7)
    axes[2].set(yscale="log", xlabel="step",
                ylabel=r"$\|\nabla E\|_{1,\varepsilon}$ (mean over seeds while finite)")
    fig.suptitle(f"h={numbers['fixed']['h']:g}, beta={numbers['fixed']['beta']:g}, "
                 f"{len(seeds)} seeds; dashed: {STAND_IN}, GD step {numbers['gd_lr']}",
                 fontsize=8)
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    save_png(fig, os.path.join(out, "mechanism.png"), DPI)
    lines = []
    for side in numbers["sides"]:
        last = side["trends"][-1] if side["trends"] else None
        tail = (f"norm at loss {last['loss']:.3g} against rho: slope "
                f"{last['slope']['estimate']:.3g} [{last['slope']['lo']:.3g}, "
                f"{last['slope']['hi']:.3g}], the rise eq. (8) predicts "
                f"{WORD[last['verdict']]}" if last else "no loss reached by every run")
        extra = ("; diverged: " + ", ".join(f"rho={k}: {v}" for k, v in
                                            side["diverged_per_rho"].items())
                 if side["diverged"] else "")
        lines.append(f"{side['optimizer']}: {tail}{extra}")
    numbers["verdict"] = "\n".join(lines)
    write_json(os.path.join(out, "mechanism.json"), numbers)
    return numbers


def holm_family(out: str) -> dict:
    """The declared headline tests (``HEADLINE``) of ``OUT/figure3.json`` ...
    ``figure8.json``, one per panel, with Holm-adjusted p-values and the verdicts read
    from them at family-wise level ``ALPHA``; written to ``OUT/headlines.json``."""
    from bea import nn as H
    from bea.nn import stats as S

    paths = {f: os.path.join(out, f"figure{f}.json") for f in sorted(HEADLINE)}
    missing = [os.path.basename(p) for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise FigureError(f"the headline family is Figures 3-8; {out} has no "
                          f"{', '.join(missing)} (draw them first)")
    tests = []
    for f, path in paths.items():
        numbers = H.read_json(path)
        if not isinstance(numbers, dict) or numbers.get("version", 1) < VERSION:
            raise FigureError(f"{path} was written before version {VERSION} (no p-values); "
                              f"redraw it")
        for panel in numbers["panels"]:
            a = next(a for a in panel["analyses"] if a["headline"])
            if a["p_value"] is None:
                raise FigureError(f"{path}: panel {panel['dir']} has no headline test "
                                  f"({a['seeds']} seed)")
            tests.append({"figure": f, "dir": panel["dir"], "fixed": ", ".join(
                f"{k}={v:g}" for k, v in panel["fixed"].items()), "quantity": a["quantity"],
                "readout": a["readout"], "threshold": a["threshold"], "seeds": a["seeds"],
                "interval": a["interval"], "expected_sign": a["expected_sign"],
                **a["slope"], "p_value": a["p_value"], "verdict": a["verdict"]})
    for t, q in zip(tests, S.holm(np.array([t["p_value"] for t in tests])), strict=True):
        t["p_holm"] = float(q)
        t["verdict_holm"] = S.verdict_from_p(t["estimate"], q, t["expected_sign"], ALPHA)
    numbers = {"figure": "holm", "version": VERSION, "alpha": ALPHA, "tests": tests,
               "verdict": "\n".join(f"Figure {t['figure']} ({t['fixed']}): "
                                    f"{t['verdict_holm']}" for t in tests)}
    write_json(os.path.join(out, "headlines.json"), numbers)
    return numbers


def table(numbers: dict) -> str:
    if numbers["figure"] == "mechanism":
        return f"Mechanism stand-in (Adam against {STAND_IN}):\n" + numbers["verdict"]
    if numbers["figure"] == "holm":
        return "\n".join([f"Headline tests of Figures 3-8 ({len(numbers['tests'])}), Holm-"
                          f"adjusted at family-wise level {numbers['alpha']:g}:"] + [
            f"  Figure {t['figure']} ({t['fixed']}): {t['quantity']} slope {t['estimate']:.3g}"
            f" [{t['lo']:.3g}, {t['hi']:.3g}], p = {t['p_value']:.2g}, Holm p = "
            f"{t['p_holm']:.2g} -> the paper's trend {WORD[t['verdict_holm']]}"
            for t in numbers["tests"]])
    lines = [f"Figure {numbers['figure']} (read-outs at equal training loss; window "
             f"+-{numbers['window']} steps; mean [95% {numbers['interval']} interval] "
             f"over seeds)"]
    for panel in numbers["panels"]:
        lines.append("  " + ", ".join(f"{k}={v:g}" for k, v in panel["fixed"].items())
                     + f"; seeds {panel['seeds']}")
        for a in panel["analyses"]:
            if not (a["quantity"] in HILLS or a["threshold"] == numbers["threshold"]
                    or a["headline"]):
                continue
            name = a["quantity"] if a["quantity"] in HILLS else (
                f"{a['quantity']} {a['readout']} @ {a['threshold']:g}")
            cells = " ".join(
                f"{p['x']:g}: {p['mean']:.4g}" + (f" [{p['lo']:.4g}, {p['hi']:.4g}]"
                                                 if p["lo"] is not None else "")
                for p in a["per_config"])
            sl = a["slope"]
            trend = ("" if sl is None else f" | slope {sl['estimate']:.3g} "
                     f"[{sl['lo']:.3g}, {sl['hi']:.3g}] -> {a['verdict']}")
            lines.append(f"    {name:<36} {cells}{trend}" + ("  (headline)" if a["headline"]
                                                             else ""))
        lines.append("  " + panel["verdict"])
        spikes = panel.get("spike_runs", [])
        if spikes:
            calm = panel["headline_oscillation_only"]
            lines.append(f"  spike regime: {len(spikes)} of {len(panel['runs'])} run(s) ("
                         + ", ".join(spikes[:6]) + (" ..." if len(spikes) > 6 else "") + ")")
            lines.append("  headline over the oscillation-regime seeds "
                         f"{panel['oscillation_seeds']}: " + (
                             "too few seeds" if calm is None or calm["slope"] is None else
                             f"slope {calm['slope']['estimate']:.3g} [{calm['slope']['lo']:.3g},"
                             f" {calm['slope']['hi']:.3g}] -> {calm['verdict']}"))
        else:
            lines.append("  no spike runs (loss never up more than "
                         f"{numbers['spike_criterion']['factor']:g}x within "
                         f"{numbers['spike_criterion']['within_steps']} steps)")
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    try:
        vals = number_list(text)
    except argparse.ArgumentTypeError as e:
        raise FigureError(f"--thresholds must be numbers: {e}") from None
    if not vals or not all(v > 0 and math.isfinite(v) for v in vals):
        raise FigureError(f"--thresholds must be positive numbers, got {text!r}")
    return vals


@interruptible(PROG)
def main(argv: list[str] | None = None) -> dict:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--figure", choices=FIGURES, required=True)
    p.add_argument("--runs", action="append", default=[],
                   help="run or sweep directory; repeat for several panels (figure 4); "
                        "none for --figure holm")
    p.add_argument("--out", required=True, help="directory for figureN.png / figureN.json")
    p.add_argument("--threshold", type=number, default=None,
                   help="the headline loss (0.01; 0.1 for figure 7)")
    p.add_argument("--thresholds", default="0.1,0.03,0.01",
                   help="further losses to read out at (comma-separated)")
    p.add_argument("--window", type=integer, default=5,
                   help="half-width w of the window read-out (2w + 1 steps)")
    p.add_argument("--interval", choices=METHODS, default="t",
                   help="95%% interval over seeds: t (Student-t, K >= 2) or bootstrap-t "
                        "(K >= 6)")
    p.add_argument("--spike-factor", type=number, default=10.0,
                   help="a run is in the spike regime if its loss rises more than this "
                        "factor ...")
    p.add_argument("--spike-within", type=integer, default=10,
                   help="... within this many steps")
    p.add_argument("--n-boot", type=integer, default=10_000,
                   help="bootstrap resamples (--interval bootstrap-t)")
    p.add_argument("--bootstrap-seed", type=integer, default=0)
    args = p.parse_args(argv)
    try:
        if args.threshold is not None and not (args.threshold > 0
                                               and math.isfinite(args.threshold)):
            raise FigureError(f"--threshold must be positive and finite, got {args.threshold}")
        thresholds = None if args.figure == "mechanism" else _floats(args.thresholds)
        if args.figure == "holm" and args.runs:
            raise FigureError("--figure holm reads OUT's figure JSONs and takes no --runs, "
                              f"got {', '.join(args.runs)}")
        if args.figure != "holm" and not args.runs:
            raise FigureError(f"--figure {args.figure} needs --runs")
        if not (args.spike_factor > 1 and math.isfinite(args.spike_factor)):
            raise FigureError(f"--spike-factor must be > 1 and finite, got {args.spike_factor}")
        if args.spike_within < 1:
            raise FigureError(f"--spike-within must be >= 1, got {args.spike_within}")
        check_out_dir(args.out)  # before reading and computing
        if args.window < 0:
            raise FigureError(f"--window must be >= 0, got {args.window}")
        if args.n_boot < 100:
            raise FigureError(f"--n-boot must be >= 100, got {args.n_boot}")
        check_size("--n-boot", args.n_boot, MAX_BOOT)
        if args.figure == "holm":
            numbers = holm_family(args.out)
        elif args.figure == "mechanism":
            numbers = draw_mechanism(args.runs, args.out, args.threshold, args.window,
                                     args.n_boot, args.bootstrap_seed, method=args.interval)
        else:
            numbers = draw(int(args.figure), args.runs, args.out, args.threshold,
                           thresholds, args.window, args.n_boot,
                           args.bootstrap_seed, args.interval,
                           (args.spike_factor, args.spike_within))
    except (FileNotFoundError, KeyError, ValueError) as e:
        fail(PROG, str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(table(numbers))
    return numbers


if __name__ == "__main__":
    main()
