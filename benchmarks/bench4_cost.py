"""Benchmark 4: what the ODE verification costs relative to the discrete run it verifies,
and the floor: (stages of the tableau the sweep uses, Dopri5: 7) x (one gradient + one
Hessian-vector product), per interval, for every batch of the history the field needs (n+1
of them at step n in the mini-batch case). The ODE is timed as a sweep runs it at all but
its coarsest h: one fixed step per interval with the (free) embedded error bound.
Programs compiled first; run times only."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

from benchmarks._common import B1, B2, emit


def _time(fn, *a, reps=3):
    jax.block_until_ready(fn(*a))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*a))
        best = min(best, time.perf_counter() - t)
    return best


TABLEAU = "dopri5"  # what bea.sweep's auto solver tries first, and uses on these problems


def stages() -> int:
    import diffrax

    return len({"dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}[TABLEAU]().tableau.c) + 1


def _gh_loop(loss, theta0, batches, M):
    """M evaluations of (gradient + HVP) over ``batches`` (None: full batch), in one loop."""
    g = jax.grad(loss)

    def one(theta, b):
        gr = g(theta, b)
        return gr + jax.jvp(lambda t: g(t, b), (theta,), (gr,))[1]

    def body(i, theta):
        if batches is None:
            d = one(theta, None)
        else:
            d = jnp.sum(jax.vmap(one, in_axes=(None, 0))(theta, batches), 0)
        return theta + 1e-30 * d

    return jax.jit(lambda th: jax.lax.fori_loop(0, M, body, th))


def main(quick: bool = False, skip_other: bool = False):
    import bea
    from bea import programs as pg
    from bea.problems import batch_sequence, bilinear, mlp

    bea.enable_x64()
    hyper = (("beta", B1["beta"]), ("rho", B1["rho"]), ("eps", B1["eps"]))

    S = stages()
    rows = []
    # full batch: bilinear, the largest N of benchmark 1
    p = bilinear()
    N = 10000 if quick else round(B1["T"] / B1["hs"][-1])
    h = 1.0 / N
    loss = pg.compiled_loss(p, False)
    args = (p.theta0, None, p.data, jnp.asarray(h), jnp.asarray(N), {})
    prog = pg.Program("adam", N, False, hyper)
    t_disc = _time(lambda: pg.discrete(*args, program=prog, loss=loss))
    field = prog._replace(kind="order1", engine="closed")
    t_ode = _time(lambda: pg.ode(*args, jnp.asarray(1), program=field, loss=loss,
                                 method="fixed", tableau=TABLEAU))
    M = S * N
    t_floor = _time(_gh_loop(lambda t, b: loss(t, None), p.theta0, None, M), p.theta0)
    rows.append(dict(case=f"full batch, bilinear, N={N}", disc_s=t_disc, ode_s=t_ode,
                     floor_s=t_floor))
    # mini-batch: the MLP of benchmark 2 at its smallest h
    c = B2
    q = mlp(seed=c["seed"], hidden=c["hidden"], num_examples=c["num_examples"])
    N = 16 if quick else round(c["T"] / c["hs"][-1])  # benchmark 2's longest run
    h = c["T"] / N
    batches = batch_sequence(q, c["batch_size"], N, c["seed"])
    args = (q.theta0, batches, q.data, jnp.asarray(h), jnp.asarray(N), {})
    prog = pg.Program("adam", N, True, (("beta", c["beta"]), ("rho", c["rho"]),
                                        ("eps", c["eps"])))
    t_disc = _time(lambda: pg.discrete(*args, program=prog, loss=q.loss))
    field = prog._replace(kind="order1", engine="closed")
    t_ode = _time(lambda: pg.ode(*args, jnp.asarray(1), program=field, loss=q.loss,
                                 method="fixed", tableau=TABLEAU), reps=1)
    # floor: sum_n (n+1) batch evaluations per stage = N(N+1)/2; measured on N batches
    per_batch = _time(_gh_loop(q.loss, q.theta0, batches, S), q.theta0) / N
    t_floor = per_batch * N * (N + 1) / 2
    rows.append(dict(case=f"mini-batch, MLP p={q.theta0.size}, N={N}", disc_s=t_disc,
                     ode_s=t_ode, floor_s=t_floor))
    for r in rows:
        r["ode_over_disc"] = r["ode_s"] / r["disc_s"]
        r["floor_over_disc"] = r["floor_s"] / r["disc_s"]
        r["ode_over_floor"] = r["ode_s"] / r["floor_s"]
    emit({"bench": 4, "name": "ODE verification cost vs discrete run", "stages": S,
          "tableau": TABLEAU,
          "rows": rows})


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
