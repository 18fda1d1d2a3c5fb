"""python -m experiments.second_order: how large the second-order term of the modified
equation is along real runs (docs/second_order.md; the field is docs/math.md, section 8).

The second-order field is f~_n = f_n + h c_n + h^2 e_n. Along full-batch Adam runs on the
bilinear model and mini-batch Adam runs on a tanh MLP, at several h, the three terms are
evaluated apart at the discrete iterates theta^(n) (``bea.fields.generic.second_order_terms``,
vmapped over n in one compiled program per setting), and the ratio

    ||h^2 e_n|| / ||h c_n||

says how much the next term adds to the first-order correction, the term that carries the
paper's implicit regulariser. Writes OUT/second_order_size.json (every number, and the
claims below computed from them) and OUT/second_order_size.png, and prints a table.

The runs of one setting share a grid of times t_i = i T / points (n_i = t_i / h), so the
ratio at h and at h/2 is compared at the same t: ``halving`` is the median over the
setting's window of t of ratio_h(t) / ratio_{h/2}(t). In the asymptotic regime (N >> 1/(1 -
max(beta, rho)) and every |g_j| >> sqrt(eps)) the ratio is O(h) and ``halving`` is 2; within
the optimizer's memory (n << 1/(1 - rho)), where c_n grows like n and e_n like n^2, the ratio
depends on t = nh alone and ``halving`` is 1. On the MLP step k uses batch k, so runs at
different h have seen different batches by the same t: there the comparison is between two
paths that share only their start.

    python -m experiments.second_order --out results/second_order   # ~1.5 min on 2 cores
    python -m experiments.second_order --small --out DIR  # the test's size (20 points)
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import NamedTuple

from experiments._cli import (
    Parser,
    check_out_dir,
    enable_compile_cache,
    fail,
    integer,
    interruptible,
    save_png,
)

PROG = "python -m experiments.second_order"
FILES = ("second_order_size.json", "second_order_size.png")
VALLEY = 10.0  # "near the valley": some |g_j| below VALLEY * sqrt(eps) (full-batch gradient)


class Setting(NamedTuple):
    """One optimizer setting on one problem, measured at every h of ``hs`` (a halving
    ladder) up to the horizon T; ``window`` is the range of t = nh the claims are read on."""

    name: str
    problem: str  # "bilinear" or "mlp"
    beta: float
    rho: float
    eps: float
    hs: tuple[float, ...]
    T: float
    window: tuple[float, float]
    batch_size: int | None = None
    why: str = ""


# Bilinear: the two settings of bea.bilinear.FIGURES[2] with its eps (bea.bilinear.EPS =
# 1e-8), its h and its horizon (bea.bilinear.T = 3), and the practical rho = 0.999 (beta
# 0.9) at eps = 1e-4, whose run never comes near the valley (every |g_j| > 10 sqrt(eps) up
# to T). MLP (bea.problems.mlp, hidden 8, 256 digits, batch 16): optax's Adam defaults, and
# the short memory of the order sweeps (docs/orders.md, mlp_adam).
SETTINGS = (
    Setting("bilinear (0.9, 0.5, 1e-8)", "bilinear", 0.9, 0.5, 1e-8,
            (0.01, 0.005, 0.0025, 0.00125), 3.0, (0.5, 1.0), None,
            "bea.bilinear.FIGURES[2], beta > rho"),
    Setting("bilinear (0.5, 0.9, 1e-8)", "bilinear", 0.5, 0.9, 1e-8,
            (0.01, 0.005, 0.0025, 0.00125), 3.0, (0.5, 1.0), None,
            "bea.bilinear.FIGURES[2], rho > beta"),
    Setting("bilinear (0.9, 0.999, 1e-4)", "bilinear", 0.9, 0.999, 1e-4,
            (0.01, 0.005, 0.0025, 0.00125), 3.0, (0.5, 1.0), None,
            "practical rho: every n < 1/(1 - rho) = 1000 in the window"),
    Setting("mlp (0.9, 0.999, 1e-8)", "mlp", 0.9, 0.999, 1e-8,
            (1e-3, 5e-4, 2.5e-4), 0.2, (0.02, 0.1), 16,
            "optax's Adam defaults; n <= 400 < 1/(1 - rho) in the window"),
    Setting("mlp (0.5, 0.7, 1e-3)", "mlp", 0.5, 0.7, 1e-3,
            (0.01, 0.005, 0.0025), 1.0, (0.2, 1.0), 16,
            "the short memory of docs/orders.md's mlp_adam"),
)
# --small (the test): two bilinear settings (one per regime) and the short-memory MLP,
# two h each, short horizons, few points.
SMALL = (
    Setting("bilinear (0.5, 0.9, 1e-8)", "bilinear", 0.5, 0.9, 1e-8, (0.01, 0.005), 1.0,
            (0.5, 1.0), None, "asymptotic regime"),
    Setting("bilinear (0.9, 0.999, 1e-4)", "bilinear", 0.9, 0.999, 1e-4, (0.01, 0.005), 1.0,
            (0.5, 1.0), None, "within the memory"),
    Setting("mlp (0.5, 0.7, 1e-3)", "mlp", 0.5, 0.7, 1e-3, (0.01, 0.005), 0.2, (0.1, 0.2),
            16, "coarse h"),
)
MLP = dict(hidden=8, num_examples=256, seed=0)
TIMES = (0.1, 0.5, 1.0, 2.0)  # the ratio is printed at these t (where t <= T)
BLOCK = 8  # iterates evaluated together (vmapped) in one step of a lax.map


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--points", type=integer, default=None,
                   help="iterates evaluated per run (a common grid of t; must divide every "
                        "N = T/h; default 100, with --small 20)")
    p.add_argument("--small", action="store_true",
                   help="tiny sizes (the test): two bilinear settings and one MLP, two h each")
    p.add_argument("--dpi", type=integer, default=90, help="PNG resolution")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache")
    return p


def _check(args, settings) -> None:
    if not 2 <= args.points <= 10000:
        fail(PROG, f"--points must be an integer in [2, 10000], got {args.points}")
    for s in settings:
        for h in s.hs:
            N = round(s.T / h)
            if N % args.points:
                fail(PROG, f"--points {args.points} does not divide N = {N} (T = {s.T}, "
                           f"h = {h} of {s.name}); try a divisor of {N}")
    if not 20 <= args.dpi <= 300:
        fail(PROG, f"--dpi must be an integer in [20, 300], got {args.dpi}")
    try:
        check_out_dir(args.out)
    except ValueError as e:
        fail(PROG, str(e))


def measure(s: Setting, points: int) -> list[dict]:
    """The terms' norms at theta^(n), n = i N / points (i < points), for every h of ``s``:
    one compiled program serves every h (h and N traced; the history has N_max slots)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bea import optimizer_registry as registry
    from bea.fields.generic import second_order_terms
    from bea.optimizers import trajectory
    from bea.problems import batch_sequence, bilinear, mlp

    problem = bilinear() if s.problem == "bilinear" else mlp(**MLP)
    N_max = round(s.T / min(s.hs)) + 1  # history slots: F_n for n = 0..N
    batches = (None if s.batch_size is None else
               batch_sequence(problem, s.batch_size, N_max, MLP["seed"]))
    # full batch: every slot holds the same gradient, so long chunks cost nothing extra
    chunk = 64 if batches is None else 8
    terms = second_order_terms(registry.transformation("adam", 1.0, s.beta, s.rho, s.eps),
                               problem.loss, batches, data=problem.data, num_steps=N_max,
                               chunk=chunk)
    full_grad = jax.grad(problem.loss)
    # components whose full-batch gradient is exactly 0 at theta0 (the MLP's weights of
    # always-blank pixels) stay 0 along every run, and every term vanishes there: they are
    # left out of min_j |g_j|
    g0 = full_grad(problem.theta0, problem.data)
    moving = g0 != 0
    # the share of the moving components below the eps scale at the start (docs/orders.md:
    # there the effective step is about h / sqrt(eps))
    below = float(np.mean(np.abs(np.asarray(g0)[np.asarray(moving)]) < math.sqrt(s.eps)))

    @jax.jit
    def sizes(h, N, ns):
        disc = trajectory(registry.transformation("adam", h, s.beta, s.rho, s.eps),
                          problem.loss, problem.theta0, batches, N_max, data=problem.data,
                          active_steps=N)

        def one(n):
            theta = disc[n]
            f, c, e = terms(n, theta)
            g = full_grad(theta, problem.data)
            return jnp.stack([jnp.linalg.norm(f), jnp.linalg.norm(c), jnp.linalg.norm(e),
                              jnp.min(jnp.where(moving, jnp.abs(g), jnp.inf))])

        # blocks of BLOCK neighbouring n (increasing): each block's history walk stops at
        # its own largest n
        return jax.lax.map(one, ns, batch_size=BLOCK)

    runs = []
    for h in s.hs:
        N = round(s.T / h)
        ns = np.arange(points + 1) * (N // points)  # t_i = i T / points, i = 0..points
        padded = np.pad(ns, (0, -len(ns) % BLOCK), mode="edge")  # whole blocks: one program
        out = np.asarray(sizes(jnp.asarray(h), jnp.asarray(N), jnp.asarray(padded)))[: len(ns)]
        f, c, e, gmin = out.T
        runs.append(dict(h=h, N=N, n=ns, t=ns * h, f=f, hc=h * c, h2e=h * h * e,
                         ratio=(h * e) / c, gmin_over_sqrt_eps=gmin / math.sqrt(s.eps),
                         below_sqrt_eps_at_theta0=below))
    return runs


def summarise(s: Setting, runs: list[dict]) -> dict:
    """The numbers read off the runs of one setting: per h, the ratio at n = 0 and at the
    times TIMES, its median in the window and beyond it, its largest value near the valley
    (some |g_j| < VALLEY sqrt(eps)), the median of ||h c_n|| / ||f_n||; per pair (h, h/2),
    ``halving``."""
    import numpy as np

    lo, hi = s.window
    per_h = []
    for r in runs:
        t, ratio = r["t"], r["ratio"]
        win = (t >= lo - 1e-12) & (t <= hi + 1e-12)
        near = r["gmin_over_sqrt_eps"] < VALLEY
        per_h.append(dict(
            h=r["h"], N=r["N"], memory_steps=1 / (1 - max(s.beta, s.rho)),
            ratio_n0=float(ratio[0]),
            ratio_at={repr(x): float(np.interp(x, t, ratio)) for x in TIMES if x <= t[-1]},
            median_window=float(np.median(ratio[win])),
            n_window=[int(round(lo / r["h"])), int(round(hi / r["h"]))],
            median_all=float(np.median(ratio)),
            fraction_near_valley=float(near.mean()),
            max_near_valley=float(ratio[near].max()) if near.any() else None,
            median_away_from_valley=float(np.median(ratio[~near])) if (~near).any() else None,
            hc_over_f_median=float(np.median(r["hc"] / r["f"])),
            hc_over_f_window=float(np.median((r["hc"] / r["f"])[win])),
            below_sqrt_eps_at_theta0=r["below_sqrt_eps_at_theta0"],
            window_near_valley=bool(near[win].any()),
            t_first_above_1=(float(t[1:][ratio[1:] >= 1][0]) if np.any(ratio[1:] >= 1)
                             else None),
        ))
    pairs = []
    for a, b in zip(runs, runs[1:], strict=False):
        if not math.isclose(a["h"], 2 * b["h"]):
            continue
        t = a["t"]
        win = (t >= lo - 1e-12) & (t <= hi + 1e-12)
        # the same t on both runs: run b's grid is run a's (both t_i = i T / points)
        q = a["ratio"][win] / b["ratio"][win]
        pairs.append(dict(h=a["h"], h_half=b["h"], halving=float(np.median(q)),
                          halving_min=float(q.min()), halving_max=float(q.max())))
    return dict(setting=s._asdict(), per_h=per_h, pairs=pairs)


def _plot(settings, results, path: str, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np


    k = len(settings)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, s, runs in zip(axes.flat, settings, results, strict=False):
        colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(runs)))
        for r, col in zip(runs, colors, strict=True):
            ax.semilogy(r["t"][1:], r["ratio"][1:], color=col, lw=1.2, label=f"h = {r['h']:g}")
            near = r["gmin_over_sqrt_eps"][1:] < VALLEY
            if near.any():
                ax.semilogy(r["t"][1:][near], r["ratio"][1:][near], ".", color=col, ms=2.5)
        ax.axvspan(*s.window, color="0.92", zorder=0)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_title(f"{s.name}, T = {s.T:g}", fontsize=9)
        ax.set_xlabel("t = n h", fontsize=8)
        ax.set_ylabel("||h^2 e_n|| / ||h c_n||", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle("Size of the second-order term along Adam's iterates (grey: the window of "
                 "the claims; dots: some |g_j| < 10 sqrt(eps))", fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi)


def table(summaries: list[dict]) -> str:
    head = (f"{'setting':<28} {'h':>8} {'N':>5} {'n=0':>8} "
            + " ".join(f"{'t=' + repr(x):>7}" for x in TIMES)
            + f" {'window':>8} {'halving':>7} {'valley':>8} {'hc/f':>6} {'t(>=1)':>6}")
    lines = [head]
    for sm in summaries:
        pairs = {p["h"]: p["halving"] for p in sm["pairs"]}
        for r in sm["per_h"]:
            at = " ".join(f"{r['ratio_at'][repr(x)]:7.3g}" if repr(x) in r["ratio_at"] else
                          f"{'':>7}" for x in TIMES)
            hv = f"{pairs[r['h']]:7.2f}" if r["h"] in pairs else f"{'':>7}"
            valley = (f"{r['max_near_valley']:8.3g}" if r["max_near_valley"] is not None else
                      f"{'-':>8}")
            lines.append(f"{sm['setting']['name']:<28} {r['h']:>8g} {r['N']:>5d} "
                         f"{r['ratio_n0']:8.2g} {at} {r['median_window']:8.3g} {hv} "
                         f"{valley} {r['hc_over_f_median']:6.3f} "
                         + (f"{r['t_first_above_1']:6.3g}" if r["t_first_above_1"] is not None
                            else f"{'-':>6}"))
    lines.append("ratio ||h^2 e_n|| / ||h c_n|| at n = 0 and at t = nh; window: its median on "
                 "the setting's window of t; halving: median over the window of ratio_h(t) / "
                 "ratio_{h/2}(t) (2: O(h), 1: a function of t alone); valley: its largest "
                 f"value where some |g_j| < {VALLEY:g} sqrt(eps); hc/f: median ||h c_n|| / "
                 "||f_n||; t(>=1): the first t where the ratio reaches 1")
    return "\n".join(lines)


@interruptible(PROG)
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = SMALL if args.small else SETTINGS
    if args.points is None:
        args.points = 20 if args.small else 100
    _check(args, settings)

    import bea

    bea.enable_x64()  # before any array: the terms are float64 computations
    if not args.no_compile_cache:
        enable_compile_cache()
    from bea.io import jsonable, write_json

    t0 = time.perf_counter()
    results, summaries = [], []
    for s in settings:
        t1 = time.perf_counter()
        runs = measure(s, args.points)
        results.append(runs)
        summaries.append(summarise(s, runs) | {"seconds": round(time.perf_counter() - t1, 2)})
    png = os.path.join(args.out, FILES[1])
    _plot(settings, results, png, args.dpi)
    doc = {
        "what": "||h^2 e_n|| / ||h c_n|| of the second-order modified field f_n + h c_n + "
                "h^2 e_n (docs/math.md, section 8) at Adam's discrete iterates theta^(n)",
        "optimizer": "adam (bea.optimizers.adam, eps inside the root; Definition 3.1)",
        "mlp": MLP,
        "points": args.points,
        "small": args.small,
        "valley_threshold": f"some |g_j| < {VALLEY:g} sqrt(eps), g the full-batch gradient "
                            "(components exactly 0 at theta0 left out: they never move)",
        "settings": summaries,
        "runs": [[{k: v for k, v in r.items()} for r in runs] for runs in results],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(os.path.join(args.out, FILES[0]), jsonable(doc))
    print(table(summaries))
    print(f"{doc['seconds']} s; wrote {args.out}/{FILES[0]} and {FILES[1]}")
    return doc


if __name__ == "__main__":
    main()
