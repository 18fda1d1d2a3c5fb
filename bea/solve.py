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

__all__ = ["solve", "solve_fixed", "solve_with_error"]


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


def solve_fixed(field, theta0, h, num_steps, *, substeps: int = 1,
                solver: diffrax.AbstractSolver | None = None,
                active_steps: Int[Array, ""] | None = None) -> Float[Array, "num_steps+1 p"]:
    """Like :func:`solve` with ``substeps`` equal steps of ``solver`` (default Dopri8) per
    interval and no step-size control: the solver's ``step`` is called directly (no
    rejected steps). Its error is not controlled, so use it through
    :func:`solve_with_error` (``method="fixed"``), which measures it.

    Two choices make it fast when h is traced (a padded sweep): each interval is solved in
    the unit time s = (t - nh)/h of d theta/ds = h f(n, theta), so the tableau's step is the
    constant 1; and the intervals run in a ``fori_loop`` of exactly ``active_steps``
    iterations writing into a buffer of ``num_steps + 1`` rows (rows after it hold the last
    state), instead of a masked scan: no work on padding, and no ``cond`` per interval
    (measured 6x slower on CPU)."""
    solver = diffrax.Dopri8() if solver is None else solver
    ds = 1.0 / substeps

    def integrate(theta, n):
        term = diffrax.ODETerm(lambda s, y, args: h * field(n, y))
        for i in range(substeps):
            s0, s1 = i * ds, (i + 1) * ds
            state = solver.init(term, s0, s1, theta, None)
            theta = solver.step(term, s0, s1, theta, None, state, False)[0]
        return theta

    def body(n, carry):
        theta, buf = carry
        theta = integrate(theta, n)
        return theta, jax.lax.dynamic_update_index_in_dim(buf, theta, n + 1, 0)

    stop = num_steps if active_steps is None else jnp.minimum(active_steps, num_steps)
    buf = jnp.zeros((num_steps + 1,) + theta0.shape, theta0.dtype).at[0].set(theta0)
    theta, buf = jax.lax.fori_loop(0, stop, body, (theta0, buf))
    return jnp.where((jnp.arange(num_steps + 1) > stop)[:, None], theta, buf)


def solve_with_error(field, theta0, h, num_steps, *, rtol=1e-12, atol=1e-14, refine=100.0,
                     substeps: int = 4, method: str = "adaptive", **kw):
    """The solve, and an estimate of its error: max_n ||theta~(nh) - theta~_ref(nh)||_2 with
    the reference solved at ``refine`` times tighter tolerances and at least ``substeps``
    steps per interval (tighter tolerances alone often take the same single step and would
    report a spurious zero).

    ``method="fixed"``: one Dopri8 step per interval (:func:`solve_fixed`), the reference
    two steps per interval; for an order-8 method the reference's error is 2^8 times
    smaller, so the difference measures the fixed solve's error. Several times cheaper;
    callers fall back to ``"adaptive"`` when the measured error is not far below theirs."""
    if method == "fixed":
        act = kw.get("active_steps")
        ys = solve_fixed(field, theta0, h, num_steps, active_steps=act)
        fine = solve_fixed(field, theta0, h, num_steps, substeps=2, active_steps=act)
        return ys, jnp.max(jnp.linalg.norm(ys - fine, axis=-1))
    if method != "adaptive":
        raise ValueError(f"unknown method {method!r}; use 'adaptive' or 'fixed'")
    max_steps = kw.pop("max_steps", 1024)
    ys = solve(field, theta0, h, num_steps, rtol=rtol, atol=atol, max_steps=max_steps, **kw)
    fine = solve(field, theta0, h, num_steps, rtol=rtol / refine, atol=atol / refine,
                 dtmax=h / substeps, max_steps=max_steps * substeps, **kw)
    return ys, jnp.max(jnp.linalg.norm(ys - fine, axis=-1))
