"""python -m experiments.convergence: one h-sweep of the modified-equation error.

Runs the discrete optimizer and each requested modified field on a ladder of h at fixed
T (``bea.sweep``; with --grid, every combination of beta/rho/eps values with ``bea.grid``),
prints a table (h, error per field, local slopes, fitted slope) and writes
convergence.json, convergence.csv and convergence.png under --out (with --grid: grid.json,
grid_slopes.png and one directory per combination). --out holds one configuration: the
files of an earlier run there that the new one does not overwrite are removed, with a
notice. Ctrl-C / SIGTERM: one line, exit status 130 / 143 (results are written only at
the end, each file whole).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

from experiments._cli import (
    Parser,
    check_out_dir,
    check_size,
    enable_compile_cache,
    fail,
    integer,
    interruptible,
    number,
)

PROG = "python -m experiments.convergence"
DEFAULT_H = [0.04, 0.02, 0.01, 0.005]
MAX_STEPS = 10**9  # N = T/h of one run, and N_max x combinations of a grid
MAX_COMBINATIONS = 10**4  # of --grid
SINGLE = ("convergence.json", "convergence.csv", "convergence.png")
GRID = ("grid.json", "grid_slopes.png")


def parser() -> Parser:
    from bea import optimizer_registry as registry
    from bea.problems import PROBLEMS

    closed = ", ".join(registry.CLOSED_FORM)
    generic = ", ".join(n for n in registry.NAMES if n not in registry.CLOSED_FORM)
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("--problem", default="bilinear", help=f"{' | '.join(PROBLEMS)} "
                   "(default bilinear)")
    p.add_argument("--optimizer", default="adam",
                   help=f"{closed} (closed forms), or for the generic engine {generic}")
    p.add_argument("--engine", choices=["closed", "generic"], default=None,
                   help="derive the fields from the paper's closed forms or by the generic "
                        "construction (docs/math.md, section 5; default: closed where it "
                        "exists)")
    p.add_argument("--beta", type=number, default=0.5, help="momentum / first-moment decay")
    p.add_argument("--rho", type=number, default=0.7, help="second-moment decay")
    p.add_argument("--eps", type=number, default=1e-3)
    p.add_argument("--T", type=number, default=1.0, help="horizon; T/h must be an integer")
    p.add_argument("--h", type=number, nargs="*", default=DEFAULT_H, help="step sizes")
    p.add_argument("--batch-size", type=integer, default=None, help="mini-batch size (else full)")
    p.add_argument("--seed", type=integer, default=0, help="seed of the problem and batch sequence")
    p.add_argument("--num-examples", type=integer, default=None,
                   help="data-set size: the problem's first NUM examples (default: its own)")
    p.add_argument("--batching", choices=["iid", "epoch"], default="iid",
                   help="iid: a fresh random batch every step; epoch: a fixed seeded "
                        "partition visited in an order reshuffled every epoch")
    p.add_argument("--history", choices=["auto", "direct", "grouped"], default="auto",
                   help="how the Adam/RMSProp fields walk their history: grouped by distinct "
                        "batch (docs/math.md, section 7; epoch batching) or step by step; "
                        "auto: grouped when there are fewer distinct batches than steps")
    p.add_argument("--fields", nargs="*", default=["order0", "order1"],
                   help=f"any of {' '.join(registry.FIELDS)}")
    p.add_argument("--rtol", type=number, default=1e-12, help="ODE relative tolerance")
    p.add_argument("--atol", type=number, default=1e-14, help="ODE absolute tolerance")
    p.add_argument("--out", default="results/convergence", help="output directory")
    p.add_argument("--grid", nargs="+", default=None, metavar="NAME=v1,v2",
                   help="sweep every combination of beta/rho/eps values in one vmapped, "
                        "device-sharded program, e.g. --grid beta=0.5,0.9 rho=0.7,0.99")
    p.add_argument("--solver", choices=["auto", "adaptive", "fixed", "implicit"],
                   default="auto",
                   help="ODE solve per interval: one fixed Dopri5 (else Dopri8) step whose "
                        "error is measured >= 100x below the error, else adaptive Dopri8, "
                        "and where that runs out of steps (a stiff interval: small eps) "
                        "implicit Kvaerno5 (auto); the JSON records solver, tableau, "
                        "estimate and why a solve failed per h")
    p.add_argument("--max-steps", type=integer, default=4096,
                   help="steps an adaptive or implicit solve may take per interval "
                        "(default 4096)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where the sweep runs: auto takes the host CPU for small sequential "
                        "work and an accelerator for wide or heavy work (docs/sweeps.md)")
    p.add_argument("--time-budget", type=number, default=300.0, metavar="SECONDS",
                   help="refuse, before solving, a sweep the pre-flight check predicts to "
                        "take longer (docs/sweeps.md; default 300)")
    p.add_argument("--force", action="store_true",
                   help="run a sweep predicted to exceed --time-budget anyway")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache")
    return p


def parse_grid(specs: list[str]) -> dict[str, list[float]]:
    """``["beta=0.5,0.7", "rho=0.9"]`` -> ``{"beta": [0.5, 0.7], "rho": [0.9]}``; raises
    ValueError (one line) naming a malformed item (the names are checked by bea.grid)."""
    grid: dict[str, list[float]] = {}
    for spec in specs:
        name, sep, vals = spec.partition("=")
        if not sep or not vals:
            raise ValueError(f"grid item {spec!r} is not NAME=v1,v2,...")
        if name in grid:
            raise ValueError(f"{name!r} given twice in --grid")
        try:
            grid[name] = [number(v) for v in vals.split(",")]
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"grid item {spec!r}: {e}") from None
    return grid


def check_sizes(N: list[int], grid: dict[str, list[float]] | None, h: list[float],
                T: float) -> None:
    """ValueError (one line) when the ladder or the grid exceeds :data:`MAX_STEPS` /
    :data:`MAX_COMBINATIONS`, before the problem or any combination is built."""
    i = max(range(len(N)), key=N.__getitem__)
    check_size(f"--h {h[i]:g} with --T {T:g}: N = T/h", N[i], MAX_STEPS,
               "use a larger h or a shorter T")
    if grid:
        C = math.prod(len(v) for v in grid.values())
        check_size("--grid combinations", C, MAX_COMBINATIONS, "split the grid")
        check_size(f"--grid combinations x N ({C} x {N[i]})", C * N[i], MAX_STEPS,
                   "use fewer combinations or a larger h")


def earlier_files(out: str) -> list[str]:
    """The result files of an earlier run in ``out``: convergence.{json,csv,png}, grid.json,
    grid_slopes.png, and the convergence files of the combinations its grid.json lists;
    ValueError (one line) if that grid.json cannot be read."""
    from bea.io import read_json

    if not os.path.isdir(out):
        return []
    found = [os.path.join(out, f) for f in (*SINGLE, *GRID) if os.path.isfile(os.path.join(out, f))]
    index = os.path.join(out, "grid.json")
    if os.path.isfile(index):
        try:
            names = [c["name"] for c in read_json(index)["combinations"]]
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"--out {out!r} holds an unreadable grid.json ({e}): remove it or "
                             "choose another --out") from None
        for n in names:
            if isinstance(n, str) and n and os.sep not in n and n not in (".", ".."):
                found += [os.path.join(out, n, f) for f in SINGLE
                          if os.path.isfile(os.path.join(out, n, f))]
    return found


def remove_stale(out: str, earlier: list[str], written: list[str]) -> list[str]:
    """Remove the files of ``earlier`` that ``written`` did not replace, and the
    combination directories this empties; returns the removed files."""
    new = {os.path.abspath(p) for p in written}
    stale = [p for p in earlier if os.path.abspath(p) not in new and os.path.exists(p)]
    for p in stale:
        os.remove(p)
    for d in dict.fromkeys(os.path.dirname(p) for p in stale):
        if os.path.abspath(d) != os.path.abspath(out):
            with contextlib.suppress(OSError):  # not empty: something else lives there
                os.rmdir(d)
    return stale


@interruptible(PROG, "; results are written only at the end, each file whole")
def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    from bea import distributed

    try:  # before any JAX computation: join the cluster the environment describes, if any
        distributed.initialize(PROG)
    except ValueError as e:
        fail(PROG, str(e))
    with distributed.fail_cleanly(PROG):
        return _main(args, distributed.is_main(), p.given)


def _main(args, main_process: bool, given: set[str] = frozenset()) -> int:
    """The sweep; in a multi-process run every process computes its share of the grid and
    only process 0 checks and writes --out and prints."""
    import bea
    from bea import distributed
    from bea.problems import PROBLEMS, make_problem

    bea.enable_x64()  # before any array: the problem's data are built in float64
    if not args.no_compile_cache:
        enable_compile_cache()
    if args.problem not in PROBLEMS:
        fail(PROG, f"unknown problem {args.problem!r}; choose from {', '.join(PROBLEMS)}")
    config = dict(optimizer=args.optimizer, h=args.h, T=args.T, fields=args.fields,
                  beta=args.beta, rho=args.rho, eps=args.eps, batch_size=args.batch_size,
                  seed=args.seed, engine=args.engine, solver=args.solver, rtol=args.rtol,
                  atol=args.atol, max_steps=args.max_steps, device=args.device,
                  batching=args.batching, history=args.history,
                  time_budget=args.time_budget, force=args.force)
    say = print if main_process else (lambda *a, **k: None)
    try:
        if not 0 <= args.seed < 2**32:
            raise ValueError(f"--seed must be an integer in [0, 2**32 - 1], got {args.seed}")
        cfg = bea.SweepConfig(**config)
        if args.problem == "bilinear" and args.batch_size is not None:
            raise ValueError("the bilinear problem has one example: drop --batch-size")
        grid = parse_grid(args.grid) if args.grid else None
        for name in grid or ():
            if name in given:
                raise ValueError(f"--{name} {getattr(args, name)} conflicts with --grid "
                                 f"{name}=...: give {name} in one of them")
        check_sizes(list(cfg.N), grid, args.h, args.T)
        names = GRID[:1] if grid else SINGLE
        replaced = check_out_dir(args.out, names) if main_process else []
        earlier = earlier_files(args.out) if main_process else []
        problem = make_problem(args.problem, seed=args.seed, num_examples=args.num_examples)
        where = (f"mini-batch {args.batch_size}" if args.batch_size else "full batch")
        hyper = " ".join(f"{k}={grid[k] if grid and k in grid else getattr(args, k)}"
                         for k in ("beta", "rho", "eps"))
        say(f"{args.optimizer} ({cfg.engine} fields) on {args.problem} ({where}), "
            f"{hyper} T={args.T}", flush=True)

        def progress(r):
            if "preflight" in r:  # before solving: stiffness, h*, predicted seconds
                say(r["summary"], file=sys.stderr, flush=True)
                return
            if "intervals" in r:  # a long adaptive or implicit solve, per block of intervals
                say(f"    h={r['h']:g} {r['field']} ({r['solver']}): {r['intervals']}/{r['N']} "
                    f"intervals, {r['elapsed']:.0f} s, about {r['remaining']:.0f} s left",
                    file=sys.stderr, flush=True)
                return
            errs = ", ".join(f"{k} {v:.3e}" for k, v in r["errors"].items())
            what = f" ({r['combinations']} combinations)" if grid else ""
            say(f"  h={r['h']:g} N={r['N']}: {errs}{what}", file=sys.stderr, flush=True)

        run = bea.grid if grid else bea.sweep
        extra = {"over": grid} if grid else {}
        res = run(problem.loss, problem.theta0, problem.data, name=problem.name,
                  progress=progress, **extra, **config)
    except ValueError as e:
        if distributed.broken(e):
            raise  # distributed.fail_cleanly says so, in one line
        fail(PROG, str(e))
    if not main_process:
        return 0
    first = res.results[0] if grid else res
    print(f"ran on {first.platform} ({first.placement})", file=sys.stderr)
    s = first.schedule
    if s.distinct_batches:
        kinds = ", ".join(f"{k} {v}" for k, v in s.histories.items())
        print(f"epoch schedule: {s.distinct_batches} batches of {s.batch_size}, "
              f"{s.left_out} example(s) left out; history: {kinds}", file=sys.stderr)
    if replaced:
        print(f"replacing {', '.join(replaced)} of an earlier run in {args.out}",
              file=sys.stderr)
    stale = remove_stale(args.out, earlier, res.save(args.out, plot=True))
    if stale:
        shown = [os.path.relpath(p, args.out) for p in stale]
        print(f"removed {len(stale)} file(s) of an earlier run in {args.out} that this one "
              f"does not replace: {', '.join(shown[:6])}{' ...' if len(shown) > 6 else ''} "
              "(--out holds one configuration)", file=sys.stderr)
    print(res.table())
    if grid:
        print(f"{res.seconds:.1f} s on {res.devices} device(s) in {res.processes} "
              f"process(es); wrote {args.out}/grid.json, grid_slopes.png and "
              f"{len(res.results)} x <combination>/convergence.{{json,csv}}")
    else:
        print(f"{res.seconds:.1f} s; wrote {args.out}/convergence.{{json,csv,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
