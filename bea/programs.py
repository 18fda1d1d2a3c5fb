"""The compiled programs of a convergence sweep (what :func:`bea.sweep` runs; public so that
benchmarks can time them and users reuse them).

Compiled functions, each compiled once for the whole ladder of h: the discrete runs
(:func:`discrete`), the fixed-step solves (:func:`ode`, once per field and tableau; the
halving reference is the same program), the adaptive and implicit solves in blocks of
intervals (:func:`ode_block`, once per field, method and block length: the host loops over
the blocks and reports progress), and the field at theta0 (:func:`field_at_start`,
compiled only when a solve is NaN from its first interval, to say why) and its
Jacobian-vector product there (:func:`jvp_at_start`, before an implicit solve). The first two are
padded to the longest run, ``N_max`` steps, with h and N traced, and both run every hyperparameter
combination of a grid at once: hyperparameters that are the same for every combination are
static (concrete beta and rho let the mini-batch fields drop history below round-off, and a
concrete eps makes XLA's CPU code for the first-order fields about 6x faster: measured),
the others are traced and vmapped over the combination axis. A single sweep is a grid of
one combination, all static.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
from jaxtyping import Array, Float, Int, PyTree

from bea import optimizer_registry as registry
from bea._integrate import MAX_STEPS_DEFAULT, TABLEAUS, solve_fixed, solve_pair
from bea.fields import make_field
from bea.fields.generic import modified_field
from bea.optimizers import trajectory
from bea.problems import Problem

ORDER = {"order0": 0, "order1": 1, "order2": 2}


class Program(NamedTuple):
    """What a compiled program is specialised on (its static arguments)."""

    optimizer: str | Callable
    N_max: int
    mini: bool
    static: tuple[tuple[str, float], ...]
    kind: str | None = None  # the field (None: the discrete program)
    engine: str | None = None
    rtol: float = 1e-12
    atol: float = 1e-14
    max_steps: int = MAX_STEPS_DEFAULT  # per interval, adaptive and implicit solves


def per_combination(fn: Callable, hyper_traced: dict, static: tuple) -> PyTree:
    """``fn(beta=, rho=, eps=)`` for every combination: vmapped over the traced
    hyperparameters, or computed once with a leading axis of 1 when all are static."""
    fixed = dict(static)
    if not hyper_traced:
        return jax.tree_util.tree_map(lambda x: x[None], fn(**fixed))
    return jax.vmap(lambda t: fn(**fixed, **t))(hyper_traced)


_BAKED: dict = {}


def compiled_loss(problem: Problem, mini: bool) -> Callable:
    """The loss the programs take: ``problem.loss`` for mini-batch runs; for full batch
    E(theta, _) = E(theta, data) with the data baked in as constants (XLA's CPU code for a
    small full-batch problem runs about 7x faster than with the data as a traced argument:
    measured on the bilinear model). Cached per (loss, data), so every h of a sweep, and
    every sweep of the same problem, gets the same function and the programs compile once."""
    if mini:
        return problem.loss
    key = (id(problem.loss), id(problem.data))
    if key not in _BAKED:
        if len(_BAKED) >= 64:
            _BAKED.pop(next(iter(_BAKED)))
        loss, data = problem.loss, problem.data
        _BAKED[key] = (loss, data, lambda theta, batch: loss(theta, data))
    return _BAKED[key][2]


@partial(jax.jit, static_argnames=("program", "loss"))
def discrete(theta0: Float[Array, " p"], batches: PyTree | None, data: PyTree,
             h: Float[Array, ""], N: Int[Array, ""], traced: dict, *, program: Program,
             loss: Callable) -> Float[Array, "C N_max+1 p"]:
    """theta^(0..N) of the optimizer at step size h (rows after N hold theta^(N)), for every
    combination."""

    def one(beta, rho, eps):
        opt = registry.transformation(program.optimizer, h, beta, rho, eps)
        return trajectory(opt, loss, theta0, batches if program.mini else None,
                          program.N_max, data=data, active_steps=N)

    return per_combination(one, traced, program.static)


def field(program: Program, loss: Callable, batches: PyTree | None, data: PyTree, h,
          beta, rho, eps):
    """The modified field ``program.kind`` of ``program.optimizer``: the paper's closed form
    (engine 'closed') or the generic construction (docs/math.md, section 5: the optimizer at
    learning rate 1 gives F_n)."""
    mini = program.mini
    if program.engine == "generic":
        F = registry.transformation(program.optimizer, 1.0, beta, rho, eps)
        return modified_field(F, loss, batches if mini else None, h,
                              order=ORDER[program.kind], data=data, num_steps=program.N_max)
    E = loss if mini else (lambda t: loss(t, data))
    return make_field(program.optimizer, program.kind, E, h, beta=beta, rho=rho, eps=eps,
                      batches=batches if mini else None, num_steps=program.N_max)


@partial(jax.jit, static_argnames=("program", "loss", "tableau"))
def ode(theta0: Float[Array, " p"], batches: PyTree | None, data: PyTree,
        h: Float[Array, ""], N: Int[Array, ""], traced: dict, substeps: Int[Array, ""], *,
        program: Program, loss: Callable, tableau: str):
    """(paths, solver-error estimates) of the field ``program.kind`` for every combination:
    ``substeps`` (traced: 1 for the solve, 2 for its halving reference, one program) fixed
    steps of ``tableau`` per interval, and the embedded error bound."""

    def one(beta, rho, eps):
        f = field(program, loss, batches, data, h, beta, rho, eps)
        return solve_fixed(f, theta0, h, program.N_max, substeps=substeps,
                           solver=TABLEAUS[tableau](), active_steps=N, return_error=True)

    return per_combination(one, traced, program.static)


@partial(jax.jit, static_argnames=("program", "loss", "method", "block"))
def ode_block(theta: Float[Array, "C p"], theta_ref: Float[Array, "C p"],
              batches: PyTree | None, data: PyTree, h: Float[Array, ""], N: Int[Array, ""],
              traced: dict, start: Int[Array, ""], *, program: Program, loss: Callable,
              method: str, block: int):
    """Intervals n = start .. start + block - 1 (those below N) of the adaptive
    (``method="adaptive"``, Dopri8) or implicit (``"implicit"``, Kvaerno5) solve of field
    ``program.kind`` from ``theta`` and of its reference at tighter tolerance from
    ``theta_ref`` (:func:`bea._integrate.solve_pair`), for every combination: (states
    (C, block, p), reference states (C, block, p), status per interval (C, block)). With
    ``program.max_steps`` steps per interval. ``theta`` has one row per combination (as
    many as the traced hyperparameters have, padding included; 1 when all are static)."""

    def one(th, th_ref, beta, rho, eps):
        f = field(program, loss, batches, data, h, beta, rho, eps)
        ys, fine, status = solve_pair(f, th, th_ref, h, block, rtol=program.rtol,
                                      atol=program.atol, method=method,
                                      max_steps=program.max_steps, active_steps=N,
                                      start=start)
        return ys[1:], fine[1:], status

    fixed = dict(program.static)
    if not traced:
        return jax.tree_util.tree_map(lambda x: x[None], one(theta[0], theta_ref[0], **fixed))
    return jax.vmap(lambda a, b, t: one(a, b, **fixed, **t))(theta, theta_ref, traced)


@partial(jax.jit, static_argnames=("program", "loss"))
def field_at_start(theta0: Float[Array, " p"], batches: PyTree | None, data: PyTree,
                   h: Float[Array, ""], traced: dict, *, program: Program,
                   loss: Callable) -> Float[Array, "C p"]:
    """The field ``program.kind`` at n = 0 and theta0, for every combination: where a solve
    fails on its first interval, this tells a field that is not defined there (NaN) from a
    step the solver could not take."""

    def one(beta, rho, eps):
        return field(program, loss, batches, data, h, beta, rho, eps)(0, theta0)

    return per_combination(one, traced, program.static)



@partial(jax.jit, static_argnames=("program", "loss"))
def jvp_at_start(theta0: Float[Array, " p"], batches: PyTree | None, data: PyTree,
                 h: Float[Array, ""], traced: dict, tangent: Float[Array, " p"], *,
                 program: Program, loss: Callable) -> Float[Array, "C p"]:
    """The forward-mode product of the Jacobian of field ``program.kind`` at n = 0 and
    theta0 with ``tangent``, for every combination: what the implicit solver's Newton
    iteration is built from (NaN/inf: the field is not differentiable there)."""

    def one(beta, rho, eps):
        f = field(program, loss, batches, data, h, beta, rho, eps)
        return jax.jvp(lambda t: f(0, t), (theta0,), (tangent,))[1]

    return per_combination(one, traced, program.static)
