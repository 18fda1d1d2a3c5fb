"""python -m experiments.orders: the measured-order table of docs/orders.md, from its runs.

    python -m experiments.orders run [NAME ...]   # run the sweeps into results/orders/NAME/
    python -m experiments.orders run --long       # the long-memory sweeps (hours on a CPU)
    python -m experiments.orders report           # rewrite docs/orders.md's tables from them
    python -m experiments.orders list             # the sweeps and their commands

``report`` refuses (one line, the document untouched) a --results directory that does not
exist or holds none of the sweeps, and a rewrite that would drop rows the document already
shows (sweeps measured before whose results are not in --results) unless told to keep
those rows (--keep-missing, what ``make orders`` does) or to drop them (--drop-missing).

Every row of the table is one ``python -m experiments.convergence`` command (the CLI's own
defaults fill in what it does not say), run into ``results/orders/NAME`` and read back from
its ``convergence.json``: the documentation shows what the command prints, and nothing is
pasted by hand. ``make orders`` runs and reports the short ones (minutes); ``make
orders-long`` the long-memory mini-batch sweeps of docs/math.md section 7 (each up to an hour
on two cores).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from typing import NamedTuple

from experiments._cli import Parser, fail, interruptible

PROG = "python -m experiments.orders"
RESULTS = "results/orders"
DOC = "docs/orders.md"
BEGIN, END = "<!-- orders:begin (python -m experiments.orders report) -->", "<!-- orders:end -->"


class Sweep(NamedTuple):
    name: str
    what: str
    args: str  # experiments.convergence flags
    long: bool = False  # run by ``run --long`` / ``make orders-long`` only


_BILINEAR = "--fields order0 order1 order2 order1_typo limit"
_CENTERED = ("--problem mlp_centered --batch-size 8 --beta 0.5 --rho 0.7 --eps 0.1 --T 0.25 "
             "--h 0.025 0.0125 0.00625 0.003125")
_EPOCH = "--problem mlp --batch-size 16 --batching epoch"
SWEEPS = [
    Sweep("bilinear_adam", "bilinear, full-batch Adam (Remark 3.7), short memory", _BILINEAR),
    Sweep("bilinear_rmsprop", "bilinear, full-batch RMSProp (Remark 3.4), short memory",
          f"--optimizer rmsprop {_BILINEAR}"),
    Sweep("bilinear_adam_practical", "bilinear, full-batch Adam at (0.9, 0.999), 10^4 to "
          "8x10^4 steps", "--beta 0.9 --rho 0.999 --eps 1e-3 --T 1 "
          "--h 1e-4 5e-5 2.5e-5 1.25e-5"),
    Sweep("logistic_gd", "logistic regression, gradient descent (Barrett-Dherin)",
          "--problem logistic --optimizer gd --T 1 --h 0.1 0.05 0.025 0.0125 "
          "--fields order0 order1 order2"),
    Sweep("logistic_heavy_ball", "logistic regression, heavy ball beta 0.7 (Ghosh et al.)",
          "--problem logistic --optimizer heavy_ball --beta 0.7 --T 2 "
          "--h 0.02 0.01 0.005 0.0025 --fields order0 order1 order2"),
    Sweep("mlp_adam", "tanh MLP on digits (p = 1210), mini-batch 16, Adam (Theorem 3.6)",
          "--problem mlp --batch-size 16 --T 0.08 --h 0.01 0.005 0.0025 0.00125"),
    Sweep("mlp_adam_order2", "the same, second order (docs/math.md, section 8), one h finer",
          "--problem mlp --batch-size 16 --T 0.08 --h 0.005 0.0025 0.00125 0.000625 "
          "--fields order1 order2"),
    Sweep("mlp_rmsprop", "the same, RMSProp (Theorem 3.3)",
          "--problem mlp --optimizer rmsprop --batch-size 16 --T 0.08 "
          "--h 0.01 0.005 0.0025 0.00125"),
    Sweep("bilinear_adam_generic", "bilinear Adam through the generic engine (equals the "
          "closed form)", "--engine generic"),
    Sweep("generic_adam_eps_outside", "centred digits MLP, mini-batch 8, Kingma-Ba Adam "
          "(generic engine)", f"--optimizer adam_eps_outside {_CENTERED}"),
    Sweep("generic_adamw", "the same, optax.adamw, weight decay 0.1",
          f"--optimizer adamw {_CENTERED} --fields order0 order1 order2"),
    Sweep("generic_nesterov", "the same, optax.sgd(momentum=0.5, nesterov=True)",
          f"--optimizer nesterov {_CENTERED}"),
    Sweep("generic_rmsprop_centered", "the same, optax.rmsprop(centered=True)",
          f"--optimizer rmsprop_centered {_CENTERED}"),
    Sweep("mlp_adam_epoch_0.95", "tanh MLP on 128 digits, mini-batch 16 of a fixed partition "
          "(8 batches, reshuffled every epoch; grouped history), Adam at (0.9, 0.95)",
          "--problem mlp --num-examples 128 --batch-size 16 --batching epoch --beta 0.9 "
          "--rho 0.95 --eps 1e-6 --T 0.05 --h 5e-4 2.5e-4 1.25e-4 6.25e-5"),
    # Long memories (docs/math.md, section 7): the epoch schedule, the history grouped by
    # distinct batch, N up to 1/(1 - rho) x 128; hours of CPU, so run apart.
    Sweep("mlp_adam_epoch_0.99", "tanh MLP, mini-batch 16 of a fixed partition (32 batches),"
          " Adam at (0.9, 0.99)", f"{_EPOCH} --beta 0.9 --rho 0.99 --eps 1e-6 --T 0.2 "
          "--h 1.25e-4 6.25e-5 3.125e-5 1.5625e-5", long=True),
    Sweep("mlp_rmsprop_epoch_0.99", "the same, RMSProp at rho = 0.99",
          f"{_EPOCH} --optimizer rmsprop --rho 0.99 --eps 1e-6 --T 0.2 "
          "--h 2.5e-4 1.25e-4 6.25e-5 3.125e-5", long=True),
    Sweep("mlp_adam_epoch_0.999", "the same, Adam at (0.9, 0.999) (PyTorch's default): the "
          "ladder that fits in 30 minutes", f"{_EPOCH} --beta 0.9 --rho 0.999 --eps 1e-6 "
          "--T 0.2 --h 1.25e-4 6.25e-5 3.125e-5", long=True),
    Sweep("cnn_adam_epoch_0.95", "convolutional tanh network (p = 3658) on 256 digits, "
          "mini-batch 16 (16 batches), Adam at (0.9, 0.95)", "--problem cnn --num-examples 256 "
          "--batch-size 16 --batching epoch --beta 0.9 --rho 0.95 --eps 1e-6 --T 0.05 "
          "--h 5e-4 2.5e-4 1.25e-4 6.25e-5", long=True),
]
BY_NAME = {s.name: s for s in SWEEPS}


def command(s: Sweep) -> str:
    return f"python -m experiments.convergence {s.args}"


def run(names: list[str], results: str = RESULTS) -> None:
    from experiments import convergence

    for name in names:
        s = BY_NAME[name]
        print(f"== {name}: {command(s)}", flush=True)
        t0 = time.perf_counter()
        rc = convergence.main([*shlex.split(s.args), "--out", os.path.join(results, name)])
        if rc:
            fail(PROG, f"{name} failed with status {rc}")
        print(f"   {time.perf_counter() - t0:.1f} s", flush=True)


def _fmt(x: float, spec: str) -> str:
    return "–" if x != x else format(x, spec)


def table(results: str = RESULTS, kept: dict[str, list[str]] | None = None) -> str:
    """The markdown table of every sweep whose results exist under ``results``; a sweep
    without them keeps its rows from ``kept`` (``{name: rows}``, see :func:`measured`)."""
    from bea import SweepResult

    rows = ["| sweep | field | errors (coarsest h → finest h) | local slopes | fitted slope "
            "| solve | seconds |", "|---|---|---|---|---|---|---|"]
    missing, reused = [], []
    for s in SWEEPS:
        path = os.path.join(results, s.name, "convergence.json")
        if not os.path.exists(path) and s.name in (kept or {}):
            rows += kept[s.name]
            reused.append(s.name)
            continue
        if not os.path.exists(path):
            missing.append(s.name)
            continue
        r = SweepResult.load(path)
        h = r.h
        for i, k in enumerate(r.fields):
            e = r.errors[k]
            floor = " (* at floor)" if r.floor[k].any() else ""
            local = ", ".join(_fmt(x, ".2f") for x in r.local_slopes[k])
            solve = "/".join(sorted({t or "adaptive" for t in r.tableau[k]}))
            name = f"`{s.name}`" if i == 0 else ""
            secs = f"{r.seconds:.1f}" if i == 0 else ""
            rows.append(f"| {name} | {k} | {_fmt(e[0], '.2e')} → {_fmt(e[-1], '.2e')}{floor} "
                        f"| {local} | **{_fmt(r.slopes[k], '.3f')}** | {solve} | {secs} |")
        rows.append(f"| | h = {h[0]:g} … {h[-1]:g}, N = {r.N[0]} … {r.N[-1]} | | | | | |")
    if reused:
        rows.append(f"\n(rows kept from the previous report, their runs not at hand: "
                    f"{', '.join(reused)})")
    if missing:
        rows.append(f"\n(not run yet: {', '.join(missing)})")
    return "\n".join(rows)


def commands() -> str:
    return "\n".join(f"| `{s.name}` | {s.what} | `{command(s)}` |" for s in SWEEPS)


def measured(text: str) -> dict[str, list[str]]:
    """``{sweep: its rows}`` of the measured table in a generated section ``text``."""
    head = text.find("| sweep | field |")
    out: dict[str, list[str]] = {}
    name = None
    for line in text[head:].splitlines()[2:] if head >= 0 else []:
        if not line.startswith("|"):
            break
        m = re.match(r"\| `([^`]+)` \| ", line)
        name = m.group(1) if m else name
        if name is not None:
            out.setdefault(name, []).append(line)
    return out


def report(results: str = RESULTS, doc: str = DOC, missing: str = "refuse") -> str:
    """Rewrite the generated part of ``doc`` (between the markers) from ``results``.
    ValueError (one line, ``doc`` untouched) if ``results`` is not a directory or holds
    none of the sweeps; a sweep whose rows ``doc`` shows but whose results are not in
    ``results`` is refused (``missing="refuse"``), keeps its rows (``"keep"``) or is
    dropped (``"drop"``)."""
    if missing not in ("refuse", "keep", "drop"):
        raise ValueError(f"missing must be refuse, keep or drop, got {missing!r}")
    from bea.io import write_atomic

    if not os.path.isdir(results):
        raise ValueError(f"--results {results!r} is not a directory (no runs to report)")
    have = [s.name for s in SWEEPS
            if os.path.exists(os.path.join(results, s.name, "convergence.json"))]
    if not have:
        raise ValueError(f"--results {results!r} holds none of the {len(SWEEPS)} sweeps "
                         f"(NAME/convergence.json, e.g. {SWEEPS[0].name}): nothing to report")
    with open(doc) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no generated section ({BEGIN} ... {END})")
    old = measured(text[text.index(BEGIN):text.index(END)])
    dropped = [n for n in old if n not in have]
    if dropped and missing == "refuse":
        names = ", ".join(dropped[:4]) + (f" and {len(dropped) - 4} more" if len(dropped) > 4
                                          else "")
        raise ValueError(f"the rewrite would drop the measured rows of {names} from {doc} (no "
                         f"results in {results}): run them, or pass --keep-missing or "
                         "--drop-missing")
    kept = {n: old[n] for n in dropped} if missing == "keep" else None
    body = ("| sweep | what | command |\n|---|---|---|\n" + commands() + "\n\n"
            + table(results, kept))
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{body}\n{END}",
                 text, flags=re.S)
    write_atomic(doc, new)
    return body


@interruptible(PROG, "; the sweeps finished before it are kept under --results, the one "
                     "running wrote nothing, the document is rewritten whole or not at all")
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["run", "report", "list"])
    p.add_argument("names", nargs="*", help="sweeps to run (default: all but the long ones)")
    p.add_argument("--long", action="store_true", help="run the long-memory sweeps")
    p.add_argument("--results", default=RESULTS, help="where the runs are written/read")
    p.add_argument("--doc", default=DOC, help="the document whose table is rewritten")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-missing", action="store_true",
                      help="report: keep the document's rows of sweeps without results in "
                           "--results (else refused)")
    keep.add_argument("--drop-missing", action="store_true",
                      help="report: drop the document's rows of sweeps without results in "
                           "--results (else refused)")
    args = p.parse_args(argv)
    for n in args.names:
        if n not in BY_NAME:
            fail(PROG, f"unknown sweep {n!r}; choose from {', '.join(BY_NAME)}")
    if args.action == "list":
        print("\n".join(f"{s.name:<28} {command(s)}" for s in SWEEPS))
    elif args.action == "run":
        run(args.names or [s.name for s in SWEEPS if s.long == args.long], args.results)
    else:
        try:
            report(args.results, args.doc, "keep" if args.keep_missing else
                   "drop" if args.drop_missing else "refuse")
        except (OSError, ValueError) as e:
            fail(PROG, str(e))
        print(f"rewrote the tables of {args.doc} from {args.results}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
