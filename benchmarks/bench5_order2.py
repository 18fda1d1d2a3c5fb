"""Benchmark 5: what the second-order field costs. One evaluation of the order-2 modified
field f_n + h c_n + h^2 e_n (docs/math.md, section 8) against one evaluation of the
order-1 field f_n + h c_n, both from the generic engine
(``bea.fields.generic.modified_field``), on the mini-batch tanh MLP at steps n of a
history of K batches. Target: at most 10x. Each field is jit-compiled once (n traced) and
called once before timing; then the two are timed alternately (so a change of the
machine's load hits both alike), and the medians and minima of the repeats are reported.
Run times only."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit

TARGET = 10.0  # an order-2 evaluation should cost at most this many order-1 evaluations
# Adam (eps inside the root) at the short memory of benchmark 2 and docs/orders.md; K
# history slots, batch 16; the MLP of docs/second_order.md (hidden 8, 256 digits) and
# bea.problems.mlp's default (hidden 16, 512 digits).
HYPER = dict(beta=0.5, rho=0.7, eps=1e-3)
CASES = (dict(hidden=8, num_examples=256), dict(hidden=16, num_examples=512))
BATCH, K, STEPS, H = 16, 64, (30, 45, 60), 0.01


def _time_pair(f1, f2, n, theta, reps: int) -> tuple[list[float], list[float]]:
    """Seconds per call of f1(n, theta) and f2(n, theta), ``reps`` alternating calls each
    (after one warm call of each)."""
    jax.block_until_ready(f1(n, theta))
    jax.block_until_ready(f2(n, theta))
    t1, t2 = [], []
    for _ in range(reps):
        for f, ts in ((f1, t1), (f2, t2)):
            t0 = time.perf_counter()
            jax.block_until_ready(f(n, theta))
            ts.append(time.perf_counter() - t0)
    return t1, t2


def main(quick: bool = False, reps: int | None = None, steps=None) -> dict:
    import bea
    from bea import optimizer_registry as registry
    from bea.fields.generic import modified_field
    from bea.problems import batch_sequence, mlp

    bea.enable_x64()
    reps = reps or (5 if quick else 100)
    steps = steps or ((15,) if quick else STEPS)
    cases = CASES[:1] if quick else CASES
    rows = []
    for case in cases:
        problem = mlp(seed=0, **case)
        batches = batch_sequence(problem, BATCH, K, 0)
        F = registry.transformation("adam", 1.0, HYPER["beta"], HYPER["rho"], HYPER["eps"])
        f1, f2 = (jax.jit(modified_field(F, problem.loss, batches, H, order=k))
                  for k in (1, 2))
        theta = problem.theta0
        for n in steps:
            t1, t2 = _time_pair(f1, f2, jnp.asarray(n), theta, reps)
            m1, m2 = float(np.median(t1)), float(np.median(t2))
            rows.append(dict(case=f"MLP hidden {case['hidden']}, {case['num_examples']} "
                                  f"digits, p={theta.size}, batch {BATCH}",
                             p=int(theta.size), n=n, order1_ms=1e3 * m1, order2_ms=1e3 * m2,
                             ratio=m2 / m1, ratio_of_minima=min(t2) / min(t1)))
    worst = max(r["ratio"] for r in rows)
    out = {"bench": 5, "name": "order-2 field evaluation vs order-1 (generic engine)",
           "optimizer": "adam", **HYPER, "history_slots": K, "reps": reps,
           "target": TARGET, "max_ratio": worst, "met": bool(worst <= TARGET), "rows": rows}
    emit(out)
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
