"""Run the benchmarks, each in a fresh process (so compile time counts and nothing is
shared), and print one table: ``python -m benchmarks.run [--quick] [--only 1 3]``.

Writes ``--out``/benchmarks.json and table.md. Benchmark 2 needs torch and torchdiffeq
(``pip install -r benchmarks/requirements.txt``); without them its PyTorch column is empty.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MODULES = {1: "bench1_scipy", 2: "bench2_torch", 3: "bench3_grid", 4: "bench4_cost",
           5: "bench5_order2", 6: "bench6_grouped"}
# Benchmark 2 runs twice, each in its own process: the ladder N = 8..128 and, to show how
# the ratio grows once compilation is amortised, the same h ladder over twice the horizon.
VARIANTS = {2: ([], ["--long"])}
TARGETS = {1: 20.0, 2: 10.0, 3: 4.0}
OTHER = {1: "NumPy+SciPy", 2: "PyTorch+torchdiffeq", 3: "16 sequential runs"}


def run_one(k: int, flags: list[str], timeout: float | None = None) -> dict:
    cmd = [sys.executable, "-m", f"benchmarks.{MODULES[k]}", *flags]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"bench": k, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")]
    if out.returncode != 0 or not lines:
        return {"bench": k, "error": (out.stderr or out.stdout)[-800:]}
    return json.loads(lines[-1][6:])


def table(rows: list[dict], machine: str, quick: bool = False) -> str:
    t = [f"Machine: {machine}", "",
         "| # | benchmark | bea (s) | competitor | competitor (s) | ratio | target | met |",
         "|---|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        k = r["bench"]
        if "error" in r:
            t.append(f"| {k} | failed: {r['error'][-200:]!r} | | | | | | |")
            continue
        if k in (4, 5, 6):  # their own tables below
            continue
        other = r.get("other_s")
        ratio = other / r["bea_s"] if other else None
        met = ("n/a (--quick; targets are for the full size)" if quick else
               "yes" if ratio is not None and ratio >= TARGETS[k] else "NO")
        t.append(f"| {k} | {r['name']} | {r['bea_s']:.1f} | {OTHER[k]} | "
                 + (f"{other:.1f} | {ratio:.1f}x | {TARGETS[k]:.0f}x | "
                    f"{met} |" if other else
                    f"{r.get('note', 'not run')} | | {TARGETS[k]:.0f}x | |"))
    for r in rows:
        if r.get("bench") == 4 and "rows" in r:
            t += ["", f"Benchmark 4 ({r.get('tableau', 'dopri5')}: {r['stages']} stages, one "
                  "step per interval, embedded error bound; run times, compiled):", "",
                  "| case | discrete (s) | ODE + error estimate (s) | ODE / discrete | "
                  "floor / discrete | ODE / floor |", "|---|---:|---:|---:|---:|---:|"]
            for c in r["rows"]:
                t.append(f"| {c['case']} | {c['disc_s']:.4f} | {c['ode_s']:.3f} | "
                         f"{c['ode_over_disc']:.0f} | {c['floor_over_disc']:.0f} | "
                         f"{c['ode_over_floor']:.2f} |")
    for r in rows:
        if r.get("bench") == 5 and "rows" in r:
            met = ("n/a (--quick)" if quick else "yes" if r["met"] else "NO")
            t += ["", f"Benchmark 5 (one order-2 field evaluation / one order-1 evaluation, "
                  f"generic engine, Adam, {r['history_slots']} history slots; median of "
                  f"{r['reps']} alternating repeats, compiled, warm; target <= "
                  f"{r['target']:.0f}x, met: {met}):", "",
                  "| case | n | order 1 (ms) | order 2 (ms) | ratio | ratio of minima |",
                  "|---|---:|---:|---:|---:|---:|"]
            for c in r["rows"]:
                t.append(f"| {c['case']} | {c['n']} | {c['order1_ms']:.3f} | "
                         f"{c['order2_ms']:.3f} | {c['ratio']:.2f}x | "
                         f"{c['ratio_of_minima']:.2f}x |")
    for r in rows:
        if r.get("bench") == 6 and "rows" in r:
            t += ["", "Benchmark 6a (one Theorem 3.6 field evaluation, Adam "
                  f"({r['beta']}, {r['rho']}), B = {r['rows'][0]['B']} distinct batches; "
                  "least ms of repeats, compiled, warm; 'at n = 0': the B gradients "
                  "and 2B HVPs alone):", "",
                  "| n | direct | grouped seq. | its elementwise | grouped at n = 0 | "
                  "grouped assoc. | its elementwise | direct / best grouped |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for c in r["rows"]:
                t.append(f"| {c['n']} | {c['direct_ms']:.2f} | {c['sequential_ms']:.2f} | "
                         f"{c['sequential_elementwise_ms']:.2f} | {c['grad_hvp_ms']:.2f}"
                         f" | {c['associative_ms']:.2f} | {c['associative_elementwise_ms']:.2f}"
                         f" | {c['direct_over_grouped']:.1f}x |")
            if "end_to_end" not in r:
                continue
            e = r["end_to_end"]
            met = ("n/a (--quick)" if quick else "yes" if r["met"] else "NO")
            t += ["", f"Benchmark 6b (the sweep, N = {e['N'][0]} ... {e['N'][-1]}, direct "
                  f"against grouped history; target >= {r['target']:.0f}x, met: {met}):", "",
                  "| history | wall (s) | CPU (s) |", "|---|---:|---:|",
                  f"| direct | {e['direct_wall_s']:.1f} | {e['direct_cpu_s']:.1f} |",
                  f"| grouped | {e['grouped_wall_s']:.1f} | {e['grouped_cpu_s']:.1f} |",
                  f"| ratio | {e['wall_ratio']:.1f}x | {e['cpu_ratio']:.1f}x |", "",
                  f"(errors of the two sweeps agree to {e['max_rel_difference']:.1e} relative)"]
    return "\n".join(t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller problems (smoke test)")
    p.add_argument("--only", type=int, nargs="*", default=list(MODULES))
    p.add_argument("--bea-only", action="store_true", help="skip the competitors")
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    a = p.parse_args(argv)
    flags = (["--quick"] if a.quick else []) + (["--bea-only"] if a.bea_only else [])
    import jax

    from benchmarks._common import machine

    rows = []
    for k in a.only:
        for extra in VARIANTS.get(k, ([],)):
            if a.quick and extra:
                continue
            rows.append(run_one(k, flags + extra, a.timeout))
            print(json.dumps(rows[-1])[:300], file=sys.stderr, flush=True)
    text = table(rows, machine(), a.quick)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "benchmarks.json"), "w") as f:
        json.dump({"machine": machine(), "devices": [str(d) for d in jax.devices()],
                   "rows": rows}, f, indent=1)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
