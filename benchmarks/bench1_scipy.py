"""Benchmark 1: full-batch Adam on the bilinear model at beta=0.9, rho=0.999, eps=1e-3, T=1,
h = 1e-4 ... 1.25e-5 (10^4 to 8*10^4 steps), fields order0 and order1: bea's sweep (as the
CLI runs it, compile time and solver-error estimate included) against the NumPy + SciPy
program a scientist without JAX would write (hand-derived gradient and Hessian, a Python
loop for Adam, solve_ivp DOP853 per interval at rtol 1e-12, atol 1e-14)."""

from __future__ import annotations

import sys

import numpy as np
from scipy.integrate import solve_ivp

from benchmarks._common import B1, Timer, emit, sweep

X, Y, THETA0 = 2.0, 1.5, np.array([2.8, 3.5])


def grad(th):
    r = Y - th[0] * th[1] * X
    return np.array([-r * th[1] * X, -r * th[0] * X])


def hess(th):
    a, b = th
    r = Y - a * b * X
    off = a * b * X * X - r * X
    return np.array([[b * b * X * X, off], [off, a * a * X * X]])


def c(a, n):
    """c_a(n) = a/(1-a) - (n+1) a^(n+1)/(1-a^(n+1)) (Remark 3.7), via expm1."""
    d = -np.log(a)
    with np.errstate(over="ignore"):  # expm1 -> inf for large n: the term is 0
        return 1 / np.expm1(d) - (n + 1) / np.expm1((n + 1) * d)


def adam_path(h, N, beta, rho, eps):
    th, m, v = THETA0.copy(), np.zeros(2), np.zeros(2)
    out = np.empty((N + 1, 2))
    out[0] = th
    for n in range(N):
        g = grad(th)
        m = beta * m + (1 - beta) * g
        v = rho * v + (1 - rho) * g * g
        th = th - h * (m / (1 - beta ** (n + 1))) / np.sqrt(v / (1 - rho ** (n + 1)) + eps)
        out[n + 1] = th
    return out


def field(order, h, beta, rho, eps):
    def f(n, th):
        g = grad(th)
        R = np.sqrt(g * g + eps)
        if order == 0:
            return -g / R
        dN1 = hess(th) @ (g / R)
        kb, kr = 2 * c(beta, n) + 1, 2 * c(rho, n) + 1
        return -g / R + h * dN1 * (kr * g * g / (2 * R**3) - kb / (2 * R))
    return f


def ode_path(f, h, N):
    th = THETA0.copy()
    out = np.empty((N + 1, 2))
    out[0] = th
    for n in range(N):
        sol = solve_ivp(lambda t, y, n=n: f(n, y), (0.0, h), th, method="DOP853",
                        rtol=1e-12, atol=1e-14)
        th = sol.y[:, -1]
        out[n + 1] = th
    return out


def scipy_sweep(hs, T, beta, rho, eps, fields=("order0", "order1")):
    errs = {k: [] for k in fields}
    for h in hs:
        N = round(T / h)
        disc = adam_path(h, N, beta, rho, eps)
        for k in fields:
            ys = ode_path(field(0 if k == "order0" else 1, h, beta, rho, eps), h, N)
            errs[k].append(float(np.max(np.linalg.norm(ys - disc, axis=1))))
    return errs


def main(quick: bool = False, skip_other: bool = False):
    import bea
    from bea.problems import bilinear

    bea.enable_x64()

    hs, T = B1["hs"], B1["T"]
    kw = dict(beta=B1["beta"], rho=B1["rho"], eps=B1["eps"])
    if quick:
        hs = [h * 8 for h in hs]  # same ladder shape, 8x fewer steps
    with Timer() as tb:
        res = sweep(bilinear(), optimizer="adam", h=hs, T=T, fields=("order0", "order1"), **kw)
    row = {"bench": 1, "name": "bilinear full-batch Adam, 4 h x 2 fields, vs NumPy+SciPy",
           "bea_s": tb.seconds, "steps": [round(T / h) for h in hs],
           "errors_bea": res.errors, "solver": res.solver, "solver_error": res.solver_error}
    if not skip_other:
        with Timer() as ts:
            errs = scipy_sweep(hs, T, **kw)
        row["other_s"] = ts.seconds
        row["errors_other"] = errs
        row["max_rel_diff_errors"] = max(
            abs(a - b) / b for k in errs for a, b in zip(res.errors[k], errs[k], strict=True))
    emit(row)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, skip_other="--bea-only" in sys.argv)
