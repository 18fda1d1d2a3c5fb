"""python -m experiments.convergence: one h-sweep of the modified-equation error.

Runs the discrete optimizer and each requested modified field on a ladder of h at fixed
T, prints a table (h, error per field, local slopes, fitted slope) and writes
convergence.json, convergence.csv and convergence.png under --out.
"""

from __future__ import annotations

import csv
import io
import os
import sys

from experiments._cli import Parser, fail, write_atomic, write_json

DEFAULT_H = [0.04, 0.02, 0.01, 0.005]


def parser() -> Parser:
    p = Parser(prog="python -m experiments.convergence", description=__doc__)
    p.add_argument("--problem", default="bilinear",
                   help="bilinear | quadratic | logistic | mlp | mlp_centered (default bilinear)")
    p.add_argument("--optimizer", default="adam",
                   help="adam | rmsprop | gd | heavy_ball (closed forms), or any smooth "
                        "optimizer of bea.optimizer_registry for the generic engine: "
                        "adam_eps_outside, rmsprop_eps_outside, adamw, nesterov, "
                        "rmsprop_centered, rmsprop_momentum, adabelief, nadam, "
                        "adam_optax_eps_root")
    p.add_argument("--engine", choices=["closed", "generic"], default=None,
                   help="derive the fields from the paper's closed forms or by the generic "
                        "construction of MATH.md section 5 (default: closed where it exists)")
    p.add_argument("--beta", type=float, default=0.5, help="momentum / first-moment decay")
    p.add_argument("--rho", type=float, default=0.7, help="second-moment decay")
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--T", type=float, default=1.0, help="horizon; T/h must be an integer")
    p.add_argument("--h", type=float, nargs="*", default=DEFAULT_H, help="step sizes")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (else full)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problem and batch sequence")
    p.add_argument("--fields", nargs="*", default=["order0", "order1"],
                   help="any of order0 order1 order1_typo limit")
    p.add_argument("--rtol", type=float, default=1e-12, help="ODE relative tolerance")
    p.add_argument("--atol", type=float, default=1e-14, help="ODE absolute tolerance")
    p.add_argument("--out", default="results/convergence", help="output directory")
    p.add_argument("--grid", nargs="+", default=None, metavar="NAME=v1,v2",
                   help="sweep every combination of beta/rho/eps values in one vmapped, "
                        "device-sharded program, e.g. --grid beta=0.5,0.9 rho=0.7,0.99")
    p.add_argument("--solver", choices=["auto", "adaptive", "fixed"], default="auto",
                   help="ODE solve per interval: one fixed Dopri5 (else Dopri8) step whose "
                        "error is measured >= 100x below the error, else adaptive Dopri8 "
                        "(auto); the JSON records solver, tableau and estimate per h")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (.jax_cache/)")
    return p


def table(res: dict) -> str:
    fields = list(res["errors"])
    lines = []
    head = f"{'h':>10} {'N':>7} " + " ".join(f"{k:>12}" for k in fields)
    head += " | local slope " + " ".join(f"{k:>11}" for k in fields)
    lines.append(head)
    for i, h in enumerate(res["h"]):
        errs = []
        for k in fields:
            e = res["errors"][k][i]
            mark = "*" if res["floor"][k][i] else " "
            errs.append(f"{e:11.3e}{mark}" if e == e else f"{'diverged':>12}")
        loc = []
        for k in fields:
            s = res["local_slopes"][k][i - 1] if i > 0 else float("nan")
            loc.append(f"{s:11.3f}" if i > 0 and s == s else f"{'':>11}")
        lines.append(f"{h:>10.4g} {res['N'][i]:>7d} " + " ".join(errs) + " | " + " " * 11
                     + " ".join(loc))
    lines.append("fitted slope " + "  ".join(f"{k}: {res['slopes'][k]:.3f}" for k in fields))
    if any(any(f) for f in res["floor"].values()):
        lines.append("* at the solver/round-off floor: left out of the fit")
    for h, step in res.get("diverged_at", {}).items():
        lines.append(f"h={h}: the discrete run diverged (NaN/inf) at step {step}")
    return "\n".join(lines)


def csv_text(res: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    fields = list(res["errors"])
    w.writerow(["h", "N"] + [f"error_{k}" for k in fields] + [f"floor_{k}" for k in fields]
               + [f"solver_error_{k}" for k in fields])
    for i, h in enumerate(res["h"]):
        w.writerow([h, res["N"][i]] + [res["errors"][k][i] for k in fields]
                   + [res["floor"][k][i] for k in fields]
                   + [res["solver_error"][k][i] for k in fields])
    return buf.getvalue()


def plot(res: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    h = np.asarray(res["h"])
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    finite = []
    for k, err in res["errors"].items():
        e = np.asarray(err, float)
        ok = np.isfinite(e)
        if ok.any():
            ax.loglog(h[ok], e[ok], "o-", label=f"{k} (slope {res['slopes'][k]:.2f})")
            finite.append(e[ok])
            fl = ok & np.asarray(res["floor"][k])
            if fl.any():
                ax.loglog(h[fl], e[fl], "kx", ms=10)
    if finite:
        top = max(float(e.max()) for e in finite)
        for order, style in ((1, ":"), (2, "--")):
            ax.loglog(h, top * (h / h.max()) ** order, "k" + style, lw=0.8,
                      label=f"slope {order}")
    ax.set_xlabel("step size h")
    ax.set_ylabel(r"$\max_n \|\tilde\theta(nh) - \theta^{(n)}\|_2$")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    prog = "python -m experiments.convergence"
    import bea  # noqa: F401  (float64 before any array)
    from experiments._grid import enable_compile_cache, run_grid

    if not args.no_compile_cache:
        enable_compile_cache()
    from bea.problems import PROBLEMS, make_problem
    from bea.sweep import resolve_engine, sweep, validate

    if args.problem not in PROBLEMS:
        fail(prog, f"unknown problem {args.problem!r}; choose from {', '.join(PROBLEMS)}")
    try:
        validate(h=args.h, beta=args.beta, rho=args.rho, eps=args.eps, T=args.T,
                 optimizer=args.optimizer, fields=args.fields, batch_size=args.batch_size,
                 engine=args.engine)
        args.engine = resolve_engine(args.optimizer, args.engine)
        if args.problem == "bilinear" and args.batch_size is not None:
            raise ValueError("the bilinear problem has one example: drop --batch-size")
        problem = make_problem(args.problem, seed=args.seed)
        if args.batch_size is not None and args.batch_size > problem.num_examples:
            raise ValueError(f"batch size {args.batch_size} exceeds the "
                             f"{problem.num_examples} examples of {args.problem!r}")
    except ValueError as e:
        fail(prog, str(e))

    config = dict(vars(args))
    if args.grid:
        return run_grid(args, problem, config, prog)
    print(f"{args.optimizer} ({args.engine} fields) on {args.problem}"
          f" ({'mini-batch ' + str(args.batch_size) if args.batch_size else 'full batch'}),"
          f" beta={args.beta} rho={args.rho} eps={args.eps} T={args.T}", flush=True)

    def progress(r):
        errs = ", ".join(f"{k} {v:.3e}" for k, v in r["errors"].items())
        print(f"  h={r['h']:g} N={r['N']}: {errs}", file=sys.stderr, flush=True)

    res = sweep(problem, args.optimizer, args.h, args.T, args.fields, beta=args.beta,
                rho=args.rho, eps=args.eps, batch_size=args.batch_size, seed=args.seed,
                rtol=args.rtol, atol=args.atol, progress=progress, engine=args.engine,
                solver=args.solver)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "convergence.json"), {"config": config, **res})
    write_atomic(os.path.join(args.out, "convergence.csv"), csv_text(res))
    title = (f"{args.optimizer}, {args.problem}, beta={args.beta}, rho={args.rho}, "
             f"eps={args.eps}, T={args.T}")
    plot(res, os.path.join(args.out, "convergence.png"), title)
    print(table(res))
    print(f"{res['seconds']:.1f} s; wrote {args.out}/convergence.{{json,csv,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
