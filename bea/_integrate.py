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
import lineax as lx
from jaxtyping import Array, Float, Int

__all__ = ["solve", "solve_fixed", "solve_with_error", "implicit_solver", "first_failure",
           "TABLEAUS", "METHODS", "MAX_STEPS_DEFAULT", "DENSE_MAX_P"]

METHODS = ("fixed", "adaptive", "implicit")
MAX_STEPS_DEFAULT = 4096
"""Steps an adaptive or implicit solve may take per interval (the main solve; its reference
at tighter tolerance may take ``substeps`` times more)."""
DENSE_MAX_P = 1000
"""The most parameters for which the implicit solver's Newton systems are solved by a dense
LU of the Jacobian (p forward-mode products per step); above, matrix-free GMRES."""
NEWTON_RTOL, NEWTON_ATOL = 1e-8, 1e-10
"""The implicit solver's Newton tolerances (:func:`implicit_solver`)."""
# Why an interval's solve stopped (:func:`solve` with ``return_status``).
OK, MAX_STEPS, NONFINITE, SKIPPED = 0, 1, 2, 3

# The fixed-step tableaus, cheapest first: 7 stages (order 5, embedded 4) and 14 (8, 7),
# first-same-as-last stage included (the field changes with n, so it is not reused).
# Bosh3 (4 stages, order 3) was tried and dropped: its embedded bound failed the halving
# check on the MLP sweeps, and measuring by halving cost more than Dopri5 saves.
TABLEAUS = {"dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


def implicit_solver(p: int, rtol: float = 1e-12, atol: float = 1e-14) -> diffrax.Kvaerno5:
    """Kvaerno5 (ESDIRK, order 5 with an embedded 4, L-stable) for a field of ``p``
    parameters. Its stages are solved by diffrax's VeryChord (a Newton iteration with the
    Jacobian frozen per step); the Jacobian acts by forward-mode products (lineax
    linearises the field with ``jax.linearize``). Up to :data:`DENSE_MAX_P` parameters it
    is materialised by p of them and LU-factored once per step; above, the Newton systems
    are solved matrix-free by GMRES, one product per iteration (a dense Jacobian of 10^4
    parameters would cost 10^4 products and an 800 MB LU per step).

    The Newton iteration stops at :data:`NEWTON_RTOL` / :data:`NEWTON_ATOL` (or the step
    controller's ``rtol``/``atol`` where looser), times VeryChord's kappa = 0.01: at the
    controller's own 1e-12 a field of stiffness 10^7 (Adam's order-1 field at eps = 1e-8)
    cannot converge in float64, every step is rejected and the solve runs out of steps;
    at 1e-8 the end state agrees with the one at 1e-9 and 1e-10 to 1e-15 (measured on the
    2-parameter case of tests/test_convergence_stiff.py)."""
    linear = lx.LU() if p <= DENSE_MAX_P else lx.GMRES(rtol=1e-10, atol=1e-12, restart=40,
                                                        stagnation_iters=40)
    chord = diffrax.VeryChord(rtol=max(rtol, NEWTON_RTOL), atol=max(atol, NEWTON_ATOL),
                              linear_solver=linear)
    return diffrax.Kvaerno5(root_finder=chord)


def _status(sol, field, n) -> Int[Array, ""]:
    """Why an interval's solve stopped: :data:`OK`, :data:`MAX_STEPS` or :data:`NONFINITE`.

    diffrax says "max steps reached" both when a stiff interval needs more steps and when
    a field NaN/inf rejects every step until the steps run out; on failure it holds the
    last accepted state in ``sol.ys``. The interval counts as out of steps (a stiff
    interval, not a broken field) when the field is finite there and at the points
    10^-k (1 + ||y||) along it, k = 4..14 (where a solver stuck at a NaN barrier, its step
    shrunk by each rejection, was trying to go); as :data:`NONFINITE` otherwise. Only
    computed for a failed interval."""

    def why(_):
        y = sol.ys[-1]
        f = field(n, y)
        unit = f / jnp.maximum(jnp.linalg.norm(f), jnp.finfo(f.dtype).tiny)
        size = 1.0 + jnp.linalg.norm(y)
        probes = jax.vmap(lambda s: field(n, y + s * size * unit))(10.0 ** -jnp.arange(4, 15))
        finite = jnp.all(jnp.isfinite(y)) & jnp.all(jnp.isfinite(f)) & jnp.all(
            jnp.isfinite(probes))
        return jnp.where((sol.result == diffrax.RESULTS.max_steps_reached) & finite,
                         MAX_STEPS, NONFINITE)

    ok = sol.result == diffrax.RESULTS.successful
    return jax.lax.cond(ok, lambda _: jnp.asarray(OK), why, None)


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
    start: Int[Array, ""] | int = 0,
    return_status: bool = False,
):
    """theta~(nh) for n = 0..num_steps: the solution of d theta/dt = field(n, theta) on each
    [nh, (n+1)h], restarted at every nh. An interval the solver cannot finish (a NaN or
    inf in the field, or more than ``max_steps`` steps) yields NaN from there on; the
    intervals after it are not attempted.

    ``active_steps`` (traced) integrates only the intervals n < ``active_steps`` and holds
    the state after them, so one compiled program of length ``num_steps`` serves every
    shorter run of a sweep (pad and mask, instead of one compilation per h). ``start``
    (traced) numbers the first interval: a block of ``num_steps`` intervals from
    n = ``start`` on (rows 1.. are theta~((start + 1)h), ...). ``return_status=True`` also
    returns, per interval, :data:`OK`, :data:`MAX_STEPS` or :data:`NONFINITE`
    (:func:`_status`)."""
    solver = diffrax.Dopri8() if solver is None else solver
    controller = diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax)

    def integrate(theta, n, live):
        # under vmap (a grid) lax.cond runs both branches on every lane: a lane that is not
        # live integrates over [0, 0] from a finite state (no steps), instead of rejecting
        # steps from a NaN state until max_steps while the live lanes wait for it
        term = diffrax.ODETerm(lambda t, y, args: field(n, y))
        sol = diffrax.diffeqsolve(
            term, solver, t0=0.0, t1=jnp.where(live, h, 0.0), dt0=h,
            y0=jnp.where(live, theta, jnp.zeros_like(theta)),
            stepsize_controller=controller, max_steps=max_steps,
            saveat=diffrax.SaveAt(t1=True), throw=False,
        )
        status = _status(sol, field, n)
        return jnp.where(status == OK, sol.ys[-1], jnp.nan), status

    def skip(theta, n, live):  # a masked interval holds the state; after a failure: NaN
        return theta, jnp.where(jnp.all(jnp.isfinite(theta)), OK, SKIPPED)

    def interval(theta, n):
        live = jnp.all(jnp.isfinite(theta))
        if active_steps is not None:
            live &= n < active_steps
        nxt, status = jax.lax.cond(live, integrate, skip, theta, n, live)
        return nxt, (nxt, status)

    _, (ys, status) = jax.lax.scan(interval, theta0, start + jnp.arange(num_steps))
    ys = jnp.concatenate([theta0[None], ys])
    return (ys, status) if return_status else ys


def first_failure(status: Int[Array, " n"]) -> Int[Array, "2"]:
    """(index, code) of the first interval whose status is :data:`MAX_STEPS` or
    :data:`NONFINITE`; (-1, :data:`OK`) if none failed."""
    bad = (status == MAX_STEPS) | (status == NONFINITE)
    i = jnp.argmax(bad)
    return jnp.where(bad.any(), jnp.stack([i, status[i]]), jnp.array([-1, OK]))


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
                     tableau: str = "dopri8", return_status: bool = False, **kw):
    """The solve, and an estimate of its error max_n ||theta~(nh) - theta~_exact(nh)||_2.

    ``method="adaptive"``: Dopri8 under PID control at ``rtol``/``atol``; the estimate is
    the difference from a reference solved at ``refine`` times tighter tolerances and at
    least ``substeps`` steps per interval (tighter tolerances alone often take the same
    single step and would report a spurious zero). ``method="implicit"``: the same with
    Kvaerno5 (:func:`implicit_solver`), for stiff intervals (issue 21: Adam at small eps
    steps by about h/sqrt(eps) in gradient components below sqrt(eps)). Both take
    ``max_steps`` per interval (default :data:`MAX_STEPS_DEFAULT`); with
    ``return_status=True`` they also return :func:`first_failure` of the solve (always
    (-1, OK) for the fixed-step method, whose failures show as non-finite rows).

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
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use {', '.join(METHODS)}")
    ys, fine, status = solve_pair(field, theta0, theta0, h, num_steps, rtol=rtol, atol=atol,
                                  refine=refine, substeps=substeps, method=method, **kw)
    err = jnp.max(jnp.linalg.norm(ys - fine, axis=-1))
    return (ys, err, first_failure(status)) if return_status else (ys, err)


def solve_pair(field, theta, theta_ref, h, num_steps, *, rtol=1e-12, atol=1e-14,
               refine=100.0, substeps: int = 4, method: str = "adaptive",
               max_steps: int = MAX_STEPS_DEFAULT, active_steps=None, start=0):
    """The adaptive (``method="adaptive"``: Dopri8) or implicit (``"implicit"``:
    :func:`implicit_solver`) solve of ``num_steps`` intervals from ``theta`` and its
    reference from ``theta_ref``, at ``refine`` times tighter tolerances with at least
    ``substeps`` steps per interval and ``substeps`` times the steps: (ys, reference,
    status per interval: the solve's, else its reference's). The reference is solved only
    over the intervals the solve finished (a solve that ran out of steps is not made to
    wait for a reference that would run out of four times as many). ``start`` and
    ``active_steps`` as in
    :func:`solve`: a block of intervals from n = ``start``, whose last rows the caller
    passes back as ``theta`` and ``theta_ref`` of the next block."""
    if method == "implicit":
        solver = implicit_solver(int(theta.size), rtol, atol)
    elif method == "adaptive":
        solver = diffrax.Dopri8()
    else:
        raise ValueError(f"unknown method {method!r}; use 'adaptive' or 'implicit'")
    kw = dict(solver=solver, start=start, return_status=True)
    ys, status = solve(field, theta, h, num_steps, rtol=rtol, atol=atol, max_steps=max_steps,
                       active_steps=active_steps, **kw)
    # the reference goes as far as the solve finished: to its first interval that failed
    # or was skipped (a block after a failure starts from NaN: every interval SKIPPED)
    stopped = status != OK
    done = start + jnp.where(stopped.any(), jnp.argmax(stopped), num_steps)
    if active_steps is not None:
        done = jnp.minimum(done, active_steps)
    fine, fine_status = solve(field, theta_ref, h, num_steps, rtol=rtol / refine,
                              atol=atol / refine, dtmax=h / substeps,
                              max_steps=max_steps * substeps, active_steps=done, **kw)
    return ys, fine, jnp.where(status == OK, fine_status, status)
