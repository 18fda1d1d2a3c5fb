"""Piecewise integration of a modified field with diffrax (MATH.md sections 3 and 6).

The ODE changes at every t = nh, so the solver is restarted on each interval
[nh, (n+1)h] with n passed as an integer: a single solve over [0, T] choosing the
piece by floor(t/h) puts stage evaluations at an interval's end into the wrong piece
and costs a whole order. The intervals run in one ``lax.scan``; knows nothing of
optimizers.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

__all__ = ["solve", "solve_with_error"]


def solve(
    field: Callable[[Int[Array, ""], Float[Array, " p"]], Float[Array, " p"]],
    theta0: Float[Array, " p"],
    h,
    num_steps: int,
    *,
    rtol: float = 1e-12,
    atol: float = 1e-14,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 1024,
    dtmax=None,
    active_steps: Int[Array, ""] | None = None,
) -> Float[Array, "num_steps+1 p"]:
    """theta~(nh) for n = 0..num_steps: the solution of d theta/dt = field(n, theta) on each
    [nh, (n+1)h], restarted at every nh. An interval the solver cannot finish (a NaN or
    inf in the field, or more than ``max_steps`` steps) yields NaN from there on.

    ``active_steps`` (traced) integrates only the first ``active_steps`` intervals and holds
    the state after them, so one compiled program of length ``num_steps`` serves every
    shorter run of a sweep (pad and mask, instead of one compilation per h)."""
    solver = diffrax.Dopri8() if solver is None else solver
    controller = diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax)

    def integrate(theta, n):
        term = diffrax.ODETerm(lambda t, y, args: field(n, y))
        sol = diffrax.diffeqsolve(
            term, solver, t0=0.0, t1=h, dt0=h, y0=theta,
            stepsize_controller=controller, max_steps=max_steps,
            saveat=diffrax.SaveAt(t1=True), throw=False,
        )
        ok = sol.result == diffrax.RESULTS.successful
        return jnp.where(ok, sol.ys[-1], jnp.nan)

    def interval(theta, n):
        if active_steps is None:
            nxt = integrate(theta, n)
        else:
            nxt = jax.lax.cond(n < active_steps, integrate, lambda th, _: th, theta, n)
        return nxt, nxt

    _, ys = jax.lax.scan(interval, theta0, jnp.arange(num_steps))
    return jnp.concatenate([theta0[None], ys])


def solve_with_error(field, theta0, h, num_steps, *, rtol=1e-12, atol=1e-14, refine=100.0,
                     substeps: int = 4, **kw):
    """The solve, and an estimate of its error: max_n ||theta~(nh) - theta~_ref(nh)||_2 with
    the reference solved at ``refine`` times tighter tolerances and at least ``substeps``
    steps per interval (tighter tolerances alone often take the same single step and would
    report a spurious zero)."""
    ys = solve(field, theta0, h, num_steps, rtol=rtol, atol=atol, **kw)
    fine = solve(field, theta0, h, num_steps, rtol=rtol / refine, atol=atol / refine,
                 dtmax=h / substeps, max_steps=kw.pop("max_steps", 1024) * substeps, **kw)
    return ys, jnp.max(jnp.linalg.norm(ys - fine, axis=-1))
