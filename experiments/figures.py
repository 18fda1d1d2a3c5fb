"""Figures 3 to 8 of Section 6 from run histories: ``python -m experiments.figures --help``.

    3: ||grad E||_{1,eps} at the stopping point against rho     (one panel per --runs)
    4: test accuracy at the stopping point against rho          (one panel per --runs)
    5: ||grad E||_{1,eps} at the stopping point against beta
    6: test accuracy at the stopping point against beta
    7: training loss and ||grad E||_{1,eps} per step for each beta, and test accuracy
       where the loss first drops below --threshold (0.1 in the paper) against beta
    8: ||grad E||_{1,eps} per step for each rho

``--runs`` is a sweep directory written by ``experiments.train --sweep`` (or a single run
directory; give several). The stopping point is the first row whose training loss is
below ``--threshold`` (default 0.01, the paper's; 0.1 for figure 7). Members that never
get there are drawn hollow at their last row and flagged in the table. Writes
``OUT/figureN.png`` and ``OUT/figureN.json`` (the plotted numbers) and prints a table.
"""

from __future__ import annotations

import json
import os

from experiments._cli import Parser, fail  # noqa: E402

PROG = "experiments.figures"
X_OF = {3: "rho", 4: "rho", 5: "beta", 6: "beta", 7: "beta", 8: "rho"}
Y_OF = {3: "perturbed_one_norm", 4: "test_accuracy", 5: "perturbed_one_norm",
        6: "test_accuracy"}
LABEL = {"perturbed_one_norm": r"$\|\nabla E\|_{1,\varepsilon}$ at stop",
         "test_accuracy": "test accuracy at stop"}


def load_runs(directory: str) -> list[dict]:
    """[{h, beta, rho, eps, dir, rows, status}] for the run(s) in ``directory``."""
    from bea.nn import history as H

    dirs = [directory] if os.path.exists(os.path.join(directory, "history.csv")) else sorted(
        os.path.join(directory, d) for d in os.listdir(directory)
        if os.path.exists(os.path.join(directory, d, "history.csv")))
    if not dirs:
        raise FileNotFoundError(f"no history.csv in {directory} or its subdirectories")
    runs = []
    for d in dirs:
        cfg = H.read_json(os.path.join(d, "config.json"))
        runs.append({k: cfg[k] for k in ("h", "beta", "rho", "eps", "status")}
                    | {"dir": d, "rows": H.read_history(os.path.join(d, "history.csv")),
                       "model": cfg["config"]["model"], "dataset": cfg["config"]["dataset"]})
    return runs


def stop_points(runs: list[dict], x: str, threshold: float) -> list[dict]:
    """Per run: x, the stopping row (first train loss < threshold) or the last row."""
    from bea.nn.history import first_below

    pts = []
    for r in sorted(runs, key=lambda r: r[x]):
        row = first_below(r["rows"], threshold)
        pts.append({x: r[x], "reached": row is not None, "status": r["status"],
                    **(row or r["rows"][-1])})
    return pts


def _title(runs: list[dict], fixed: list[str]) -> str:
    r = runs[0]
    return (f"{r['model']} on {r['dataset']}: "
            + ", ".join(f"{k}={r[k]:g}" for k in fixed))


def _scatter(ax, pts, x, y):
    xs = [p[x] for p in pts]
    ax.plot(xs, [p[y] for p in pts], "-", color="C0", alpha=0.5)
    for p in pts:
        ax.plot(p[x], p[y], "o", color="C0", mfc="C0" if p["reached"] else "none")
    ax.set_xlabel({"rho": r"$\rho$", "beta": r"$\beta$"}[x])
    ax.set_ylabel(LABEL[y])


def draw(figure: int, run_dirs: list[str], out: str, threshold: float | None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = X_OF[figure]
    threshold = threshold if threshold is not None else (0.1 if figure == 7 else 0.01)
    groups = [load_runs(d) for d in run_dirs]
    fixed = [k for k in ("h", "beta", "rho", "eps") if k != x]
    numbers: dict = {"figure": figure, "x": x, "threshold": threshold, "panels": []}
    if figure in Y_OF:
        y = Y_OF[figure]
        fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6),
                                 squeeze=False)
        for ax, runs in zip(axes[0], groups, strict=True):
            pts = stop_points(runs, x, threshold)
            _scatter(ax, pts, x, y)
            ax.set_title(_title(runs, fixed), fontsize=9)
            numbers["panels"].append({"fixed": {k: runs[0][k] for k in fixed}, "points": [
                {x: p[x], "step": p["step"], y: p[y], "train_loss": p["train_loss"],
                 "reached": p["reached"], "status": p["status"]} for p in pts]})
    else:
        runs = groups[0]
        n_panels = 3 if figure == 7 else 1
        fig, axes = plt.subplots(n_panels, 1, figsize=(6, 3.2 * n_panels), squeeze=False)
        axes = axes[:, 0]
        curves = [("train_loss", "training loss")] if figure == 7 else []
        curves.append(("perturbed_one_norm", r"$\|\nabla E\|_{1,\varepsilon}$"))
        for ax, (col, label) in zip(axes, curves, strict=False):
            for i, r in enumerate(sorted(runs, key=lambda r: r[x])):
                ax.plot([q["step"] for q in r["rows"]], [q[col] for q in r["rows"]],
                        color=f"C{i}", label=f"{x}={r[x]:g}")
            ax.set_yscale("log")
            ax.set_xlabel("step (= epoch, full batch)")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        axes[0].set_title(_title(runs, fixed), fontsize=9)
        pts = stop_points(runs, x, threshold)
        if figure == 7:
            _scatter(axes[2], pts, x, "test_accuracy")
            axes[2].set_ylabel(f"test accuracy at loss < {threshold:g}")
        numbers["panels"].append({"fixed": {k: runs[0][k] for k in fixed}, "points": [
            {x: p[x], "step": p["step"], "test_accuracy": p["test_accuracy"],
             "perturbed_one_norm": p["perturbed_one_norm"], "reached": p["reached"],
             "max_norm_after_first_min": _hill(r["rows"])}
            for p, r in zip(pts, sorted(runs, key=lambda r: r[x]), strict=True)]})
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"figure{figure}.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    with open(os.path.join(out, f"figure{figure}.json"), "w") as f:
        json.dump(numbers, f, indent=2)
    return numbers


def _hill(rows: list[dict]) -> float:
    """Height of the "hill" of the norm curve: max after its first local minimum over
    that minimum (1.0 if the curve only falls)."""
    v = [q["perturbed_one_norm"] for q in rows]
    i = next((k for k in range(1, len(v) - 1) if v[k] <= v[k - 1] and v[k] < v[k + 1]), None)
    return 1.0 if i is None else max(v[i:]) / v[i]


def table(numbers: dict) -> str:
    x = numbers["x"]
    lines = [f"Figure {numbers['figure']} (stop: first train loss < {numbers['threshold']:g})"]
    for panel in numbers["panels"]:
        lines.append("  " + ", ".join(f"{k}={v:g}" for k, v in panel["fixed"].items()))
        keys = [k for k in panel["points"][0] if k not in (x, "reached", "status")]
        lines.append(f"  {x:>7} " + " ".join(f"{k:>24}" for k in keys))
        for p in panel["points"]:
            flag = "" if p["reached"] else "  (not reached: last row)"
            lines.append(f"  {p[x]:>7g} " + " ".join(f"{p[k]:>24.6g}" for k in keys) + flag)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--figure", type=int, choices=sorted(X_OF), required=True)
    p.add_argument("--runs", action="append", required=True,
                   help="sweep (or run) directory; repeat for several panels (figures 3-6)")
    p.add_argument("--out", required=True, help="directory for figureN.png / figureN.json")
    p.add_argument("--threshold", type=float, default=None,
                   help="stopping point: first train loss below this (0.01; 0.1 for fig. 7)")
    args = p.parse_args(argv)
    try:
        numbers = draw(args.figure, args.runs, args.out, args.threshold)
    except (FileNotFoundError, KeyError) as e:
        fail(PROG, str(e))
    print(table(numbers))
    return numbers


if __name__ == "__main__":
    main()
