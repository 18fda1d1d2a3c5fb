"""The compiled programs of a convergence sweep (what :func:`bea.sweep` runs; public so that
benchmarks can time them and users reuse them).

Three compiled functions, each compiled once for the whole ladder of h: the discrete runs
(:func:`discrete`), the piecewise solves (:func:`ode`, once per field and tableau; the
halving reference is the same program), and the field at theta0 (:func:`field_at_start`,
compiled only when a solve is NaN from its first interval, to say why). The first two are
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
from bea._integrate import TABLEAUS, solve_fixed, solve_with_error
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


@partial(jax.jit, static_argnames=("program", "loss", "method", "tableau"))
def ode(theta0: Float[Array, " p"], batches: PyTree | None, data: PyTree,
        h: Float[Array, ""], N: Int[Array, ""], traced: dict, substeps: Int[Array, ""], *,
        program: Program, loss: Callable, method: str, tableau: str):
    """(paths, solver-error estimates) of the field ``program.kind`` for every combination.

    ``method="fixed"``: ``substeps`` (traced: 1 for the solve, 2 for its halving reference,
    one program) steps of ``tableau`` per interval, and the embedded error bound;
    ``"adaptive"``: the adaptive Dopri8 solve and its difference from a refined one."""

    def one(beta, rho, eps):
        f = field(program, loss, batches, data, h, beta, rho, eps)
        if method == "fixed":
            return solve_fixed(f, theta0, h, program.N_max, substeps=substeps,
                               solver=TABLEAUS[tableau](), active_steps=N, return_error=True)
        return solve_with_error(f, theta0, h, program.N_max, rtol=program.rtol,
                                atol=program.atol, active_steps=N, method="adaptive")

    return per_combination(one, traced, program.static)


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
