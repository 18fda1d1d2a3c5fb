"""Figures 1 and 2 of the paper (Section 5, bilinear model), with measured numbers.

    python -m experiments.bilinear --figure 1 --out results/bilinear
    python -m experiments.bilinear --figure 2 --out results/bilinear

Writes OUT/figureK.png (top: whole paths; bottom: zoom on where they meet the minima) and
OUT/figureK.json (per trajectory: hyperparameters, end point, norms along the path, drift
observed and predicted by (8), distance to the modified-ODE paths). The hyperparameters live in
``bea.bilinear.FIGURES``; the mathematics in ``bea.bilinear``. Bad flags exit with status 2 and
one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import time

from experiments._cli import Parser, check_out_dir, fail, interruptible, save_png

PROG = "experiments.bilinear"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--figure", required=True, help="which figure: 1 (beta, rho) or 2 (h)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--contours", default="one-norm", help="background: one-norm or perturbed")
    p.add_argument("--dpi", default="72", help="PNG resolution")
    return p


def _check(args) -> tuple[int, int]:
    if args.figure not in ("1", "2"):
        fail(PROG, f"--figure must be 1 or 2, got {args.figure!r}")
    if args.contours not in ("one-norm", "perturbed"):
        fail(PROG, f"--contours must be one-norm or perturbed, got {args.contours!r}")
    try:
        dpi = int(args.dpi)
    except ValueError:
        dpi = 0
    if not 20 <= dpi <= 300:
        fail(PROG, f"--dpi must be an integer in [20, 300], got {args.dpi!r}")
    try:
        check_out_dir(args.out)
    except ValueError as e:
        fail(PROG, str(e))
    return int(args.figure), dpi


def _label(panel, rec) -> str:
    return f"{panel.vary} = {rec[panel.vary]:g}  (drift {rec['drift']:+.4f})"


def _draw(figure: int, results, contours: str, path: str, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from bea import bilinear as B

    eps = B.EPS if contours == "perturbed" else None
    cx = np.asarray(B.cross())
    zeroth = B.zeroth_order_line()
    fig, axes = plt.subplots(2, len(results), figsize=(5.6 * len(results), 10), squeeze=False)
    for col, (panel, runs) in enumerate(results):
        ends = np.array([np.asarray(paths.discrete[-1]) for paths, _ in runs])
        zoom = ((ends[:, 0].min() - 0.08, ends[:, 0].max() + 0.08),
                (ends[:, 1].min() - 0.12, ends[:, 1].max() + 0.12))
        for row, (xl, yl) in enumerate((((0.0, 3.2), (0.0, 3.8)), zoom)):
            ax = axes[row, col]
            t1 = jnp.linspace(max(xl[0], 1e-3), xl[1], 200)
            t2 = jnp.linspace(max(yl[0], 1e-3), yl[1], 200)
            Z = np.asarray(B.norm_grid(B.default_problem(), t1, t2, eps))
            lo = max(float(Z.min()), 1e-3)
            levels = np.geomspace(lo, float(Z.max()), 14)
            ax.contour(np.asarray(t1), np.asarray(t2), Z, levels=levels, colors="0.75",
                       linewidths=0.6)
            hx = np.linspace(max(xl[0], 0.15), xl[1], 300)
            ax.plot(hx, np.asarray(B.hyperbola(hx)), color="darkviolet", lw=1.8,
                    label="minima  theta1 theta2 = y/x")
            ax.plot(*cx, "kx", ms=11, mew=2.5, label="cross (min one-norm)")
            z0 = np.asarray(zeroth)
            ax.plot(z0[:, 0], z0[:, 1], ":", color="k", lw=1.2,
                    label="zeroth-order flow (no drift)")
            colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(runs)))
            for (paths, rec), c in zip(runs, colors, strict=True):
                d = np.asarray(paths.discrete)
                ax.plot(d[:, 0], d[:, 1], color=c, lw=1.4, label=_label(panel, rec))
                ax.plot(d[-1, 0], d[-1, 1], "o", color=c, ms=4)
                if len(paths.order1):
                    o = np.asarray(paths.order1)
                    ax.plot(o[:, 0], o[:, 1], "--", color=c, lw=1.6, dashes=(3, 2))
                    ax.plot(o[-1, 0], o[-1, 1], "o", mfc="none", color=c, ms=6)
            ax.set_xlim(*xl)
            ax.set_ylim(*yl)
            ax.set_xlabel("theta1")
            ax.set_ylabel("theta2")
            if row == 0:
                ax.plot(*np.asarray(B.default_problem().theta0), "ks", ms=5)
                ax.set_title(panel.title, fontsize=10)
                ax.plot([], [], "k--", lw=1.2, label="first-order modified ODE (o: |r| = r_min)")
                ax.legend(fontsize=7.5, loc="upper left")
            else:
                ax.set_title("zoom: where the paths meet the minima (dots: t = T)", fontsize=9)
    what = "||grad E||_{1,eps}" if eps else "||grad E||_1"
    fig.suptitle(f"Figure {figure}: full-batch Adam on E = (y - x theta1 theta2)^2 / 2, "
                 f"eps = {B.EPS:g}, T = {B.T:g}; grey: contours of {what}; "
                 f"drift = change of lim ||grad E||_1/sqrt(2E)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_png(fig, path, dpi)


@interruptible(PROG)
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    figure, dpi = _check(args)

    import numpy as np

    import bea

    bea.enable_x64()  # before any array: the figures are float64 computations
    from bea import bilinear as B
    from bea.io import write_json

    start = time.perf_counter()
    results = B.figure_records(figure)
    problem = B.default_problem()
    theta0 = np.asarray(problem.theta0)
    out = {
        "figure": figure,
        "model": {"x": float(problem.data["x"][0]), "y": float(problem.data["y"][0]),
                  "theta0": [float(v) for v in theta0]},
        "settings": {"eps": B.EPS, "T": B.T, "r_min": B.R_MIN, "drift_tol": B.DRIFT_TOL,
                     "ode": "Remark 3.7 first-order field, piecewise Dopri8, rtol 1e-9"},
        "cross": [float(v) for v in B.cross()],
        "cross_closed_form": [float(np.sqrt(problem.data["y"][0] / problem.data["x"][0]))] * 2,
        "reference_limiting_one_norm": float(B.limiting_one_norm(problem.theta0)),
        "panels": [{"title": panel.title, "vary": panel.vary,
                    "trajectories": [rec for _, rec in runs]} for panel, runs in results],
    }
    png = os.path.join(args.out, f"figure{figure}.png")
    _draw(figure, results, args.contours, png, dpi)
    out["seconds"] = round(time.perf_counter() - start, 2)
    write_json(os.path.join(args.out, f"figure{figure}.json"), out)
    print(f"{'vary':>5} {'h':>8} {'beta':>5} {'rho':>5} {'nu(T)':>8} {'drift':>8} "
          f"{'pred':>4} {'obs':>4} {'|gradE|_1(T)':>12} {'dist1':>8} {'dist0':>8}")
    for panel in out["panels"]:
        for r in panel["trajectories"]:
            print(f"{panel['vary']:>5} {r['h']:>8g} {r['beta']:>5g} {r['rho']:>5g} "
                  f"{r['end_limiting_one_norm']:>8.4f} {r['drift']:>+8.4f} "
                  f"{r['predicted_sign']:>+4d} {r['observed_sign']:>+4d} "
                  f"{r['end_grad_one_norm']:>12.3e} {r['distance_order1']:>8.2e} "
                  f"{r['distance_order0']:>8.2e}")
    print(f"wrote {png} and figure{figure}.json in {out['seconds']} s")
    return out


if __name__ == "__main__":
    main()
