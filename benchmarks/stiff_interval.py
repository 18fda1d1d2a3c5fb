"""One stiff interval of the user model (benchmarks/stiff_user.py) under variants of the
implicit solve: accepted and rejected steps, diffrax's result code and seconds per interval
(docs/sweeps.md, "Stiff intervals").

Arguments KEY=VALUE: h (0.1), eps (1e-8), K intervals (1), v = chord | newton (the root
finder: diffrax.VeryChord, Jacobian frozen per step, or optimistix.Newton, refreshed every
iteration), m = kvaerno5 | kvaerno4 | kvaerno3, rtol / atol of the step-size controller
(1e-12 / 1e-14), newton (the root finder's tolerance, 1e-8), max_steps (4096), kind (order1).
E.g. ``python -m benchmarks.stiff_interval v=newton max_steps=100``.
"""

from __future__ import annotations

import sys
import time

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import optax
import optimistix as optx

import bea
from bea import programs
from benchmarks import stiff_user

METHODS = {"kvaerno5": diffrax.Kvaerno5, "kvaerno4": diffrax.Kvaerno4,
           "kvaerno3": diffrax.Kvaerno3}


def main(argv: list[str]) -> None:
    bea.enable_x64()
    args = dict(a.split("=", 1) for a in argv)
    h, eps = float(args.get("h", 0.1)), float(args.get("eps", 1e-8))
    rtol, atol = float(args.get("rtol", 1e-12)), float(args.get("atol", 1e-14))
    newton, variant = float(args.get("newton", 1e-8)), args.get("v", "chord")
    max_steps, K = int(args.get("max_steps", 4096)), int(args.get("K", 1))
    params, data = stiff_user.problem()
    prob = bea.as_problem(stiff_user.loss, params, data)
    loss = programs.compiled_loss(prob, False)

    def factory(lr):
        return optax.adam(lr, b1=0.9, b2=0.95, eps=eps)

    N = int(round(0.4 / h))
    prog = programs.Program(factory, N, False, (), kind=args.get("kind", "order1"),
                            engine="generic")
    f = programs.field(prog, loss, None, None, h, 0.9, 0.95, eps)
    tol = dict(rtol=max(rtol, newton), atol=max(atol, newton * 1e-2), linear_solver=lx.LU())
    root = diffrax.VeryChord(**tol) if variant == "chord" else optx.Newton(**tol)
    solver = METHODS[args.get("m", "kvaerno5")](root_finder=root)
    controller = diffrax.PIDController(rtol=rtol, atol=atol)

    @jax.jit
    def one(theta, n):
        term = diffrax.ODETerm(lambda t, y, a: f(n, y))
        sol = diffrax.diffeqsolve(term, solver, 0.0, h, h, theta, stepsize_controller=controller,
                                  max_steps=max_steps, saveat=diffrax.SaveAt(t1=True),
                                  throw=False)
        stats = sol.stats
        return (sol.ys[-1], stats["num_accepted_steps"], stats["num_rejected_steps"],
                sol.result == diffrax.RESULTS.successful)

    theta = prob.theta0
    t = time.perf_counter()
    one.lower(theta, 0).compile()
    print(f"compiled in {time.perf_counter() - t:.1f} s", flush=True)
    for n in range(K):
        t = time.perf_counter()
        theta, acc, rej, ok = jax.block_until_ready(one(theta, n))
        print(f"{variant} {args.get('m', 'kvaerno5')} rtol={rtol:g} h={h} eps={eps} n={n}: "
              f"accepted {int(acc)}, rejected {int(rej)}, finished {bool(ok)}, "
              f"{time.perf_counter() - t:.2f} s, |theta| = {float(jnp.linalg.norm(theta)):.15g}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
