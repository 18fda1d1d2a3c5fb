"""Benchmark 3: a 16-point (beta, rho) grid on the bilinear model (full-batch Adam, order0
and order1, 4 h): one vmapped, device-sharded program (bea.grid) against 16 sequential
runs of the CLI's sweep, each compiling afresh as a new ``python -m experiments.convergence``
process would (process start-up and imports not counted: that favours the sequential side)."""

from __future__ import annotations

import sys

import numpy as np

from benchmarks._common import B3, Timer, emit, sweep


def main(quick: bool = False, skip_other: bool = False):
    import bea
    from bea.problems import bilinear

    bea.enable_x64()

    c = dict(B3)
    hs, T = c["hs"], c["T"]
    if quick:
        hs = hs[:2]
    grid = {"beta": c["betas"], "rho": c["rhos"]}
    with Timer() as tg:
        p = bilinear()
        g = bea.grid(p.loss, p.theta0, p.data, over=grid, optimizer="adam", h=hs, T=T,
                     fields=("order0", "order1"), eps=c["eps"])
    row = {"bench": 3, "name": "16-point (beta, rho) grid, bilinear, vs 16 sequential runs",
           "bea_s": tg.seconds, "steps": [round(T / h) for h in hs], "devices": g.devices}
    if not skip_other:
        with Timer() as ts:
            seq = [sweep(bilinear(), optimizer="adam", h=hs, T=T, fields=("order0", "order1"),
                         eps=c["eps"], beta=q["beta"], rho=q["rho"]) for q in g.params]
        row["other_s"] = ts.seconds
        row["max_rel_diff_errors"] = max(
            float(np.nanmax(np.abs(r.errors[k] - s.errors[k]) / np.abs(s.errors[k])))
            for r, s in zip(g.results, seq, strict=True) for k in ("order0", "order1"))
    emit(row)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, skip_other="--bea-only" in sys.argv)
