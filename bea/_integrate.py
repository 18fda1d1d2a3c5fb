"""Piecewise integration of a modified field with diffrax (docs/math.md, sections 3 and 6).

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

__all__ = ["solve", "solve_fixed", "solve_with_error", "TABLEAUS"]

# The fixed-step tableaus, cheapest first: 7 stages (order 5, embedded 4) and 14 (8, 7),
# first-same-as-last stage included (the field changes with n, so it is not reused).
# Bosh3 (4 stages, order 3) was tried and dropped: its embedded bound failed the halving
# check on the MLP sweeps, and measuring by halving cost more than Dopri5 saves.
TABLEAUS = {"dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


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


def solve_fixed(field, theta0, h, num_steps, *, substeps=1,
                solver: diffrax.AbstractSolver | None = None,
                active_steps: Int[Array, ""] | None = None, return_error: bool = False):
    """Like :func:`solve` with ``substeps`` equal steps of ``solver`` (default Dopri8) per
    interval and no step-size control: the solver's ``step`` is called directly (no
    rejected steps). Its error is not controlled, so measure it: ``return_error=True``
    returns ``(ys, bound)`` with ``bound`` the sum over all steps of the norm of the step's
    embedded error estimate (the difference between the tableau's two solutions, e.g.
    Dopri8's 8th-order step minus its 7th-order companion) plus the round-off floor
    2^-52 N max_n ||theta~(nh)||, which that difference cannot see.

    ``substeps`` may be traced: the same compiled program then gives both a solve and its
    ``substeps=2`` reference (:func:`bea.sweep` measures the error so, without a second
    compilation).

    Choices that make it fast when h is traced (a padded sweep): each step is taken in unit
    time s, d theta/ds = (h / substeps) f(n, theta), so the tableau's step is the constant 1
    (a traced step size made XLA's CPU code 7x slower); and the steps run in a
    ``fori_loop`` of exactly ``active_steps * substeps`` iterations writing into a buffer of
    ``num_steps + 1`` rows (rows after it hold the last state), instead of a masked scan:
    no work on padding, and no ``cond`` per interval (measured 6x slower on CPU)."""
    solver = diffrax.Dopri8() if solver is None else solver
    m = jnp.asarray(substeps)

    def body(i, carry):
        theta, buf, err = carry
        n = i // m
        term = diffrax.ODETerm(lambda s, y, args: (h / m) * field(n, y))
        state = solver.init(term, 0.0, 1.0, theta, None)
        theta, y_err = solver.step(term, 0.0, 1.0, theta, None, state, False)[:2]
        buf = jax.lax.dynamic_update_index_in_dim(buf, theta, n + 1, 0)  # last write wins
        return theta, buf, err + jnp.linalg.norm(y_err)

    stop = num_steps if active_steps is None else jnp.minimum(active_steps, num_steps)
    buf = jnp.zeros((num_steps + 1,) + theta0.shape, theta0.dtype).at[0].set(theta0)
    zero = jnp.zeros((), theta0.dtype)
    theta, buf, err = jax.lax.fori_loop(0, stop * m, body, (theta0, buf, zero))
    ys = jnp.where((jnp.arange(num_steps + 1) > stop)[:, None], theta, buf)
    if not return_error:
        return ys
    roundoff = jnp.finfo(ys.dtype).eps * stop * m * jnp.max(jnp.linalg.norm(ys, axis=-1))
    return ys, err + roundoff


def solve_with_error(field, theta0, h, num_steps, *, rtol=1e-12, atol=1e-14, refine=100.0,
                     substeps: int = 4, method: str = "adaptive", estimate: str = "halving",
                     tableau: str = "dopri8", **kw):
    """The solve, and an estimate of its error max_n ||theta~(nh) - theta~_exact(nh)||_2.

    ``method="adaptive"``: Dopri8 under PID control at ``rtol``/``atol``; the estimate is
    the difference from a reference solved at ``refine`` times tighter tolerances and at
    least ``substeps`` steps per interval (tighter tolerances alone often take the same
    single step and would report a spurious zero).

    ``method="fixed"``: one step of ``tableau`` (a key of :data:`TABLEAUS`) per interval
    (:func:`solve_fixed`), with one of two estimates of its error:

    - ``estimate="halving"``: the difference from the same solve with two steps per
      interval, whose error is 2^p times smaller for a method of order p: a measurement of
      the global error, its propagation from interval to interval included;
    - ``estimate="embedded"`` (free): the sum of the steps' embedded error estimates plus
      round-off (:func:`solve_fixed`). The embedded difference estimates the error of the
      lower-order companion, so it over-estimates each step's own error, but it does not
      propagate errors: where the flow expands them by more than that margin it
      under-estimates. :func:`bea.sweep` therefore checks it against the halving
      measurement at the coarsest h of every sweep before trusting it at the others.
    """
    if method == "fixed":
        if tableau not in TABLEAUS:
            raise ValueError(f"unknown tableau {tableau!r}; use {', '.join(TABLEAUS)}")
        act = kw.get("active_steps")
        solver = TABLEAUS[tableau]()
        ys, bound = solve_fixed(field, theta0, h, num_steps, solver=solver, active_steps=act,
                                return_error=True)
        if estimate == "embedded":
            return ys, bound
        if estimate != "halving":
            raise ValueError(f"unknown estimate {estimate!r}; use 'embedded' or 'halving'")
        fine = solve_fixed(field, theta0, h, num_steps, substeps=2, solver=solver,
                           active_steps=act)
        return ys, jnp.max(jnp.linalg.norm(ys - fine, axis=-1))
    if method != "adaptive":
        raise ValueError(f"unknown method {method!r}; use 'adaptive' or 'fixed'")
    max_steps = kw.pop("max_steps", 4096)  # a stiff interval can need over 1024 steps
    ys = solve(field, theta0, h, num_steps, rtol=rtol, atol=atol, max_steps=max_steps, **kw)
    fine = solve(field, theta0, h, num_steps, rtol=rtol / refine, atol=atol / refine,
                 dtmax=h / substeps, max_steps=max_steps * substeps, **kw)
    return ys, jnp.max(jnp.linalg.norm(ys - fine, axis=-1))
