"""The discrete iterations of Definition 3.1 and Remark 3.2, and the scan that runs them.

Each optimizer is an optax ``GradientTransformation`` written from the paper's
recursion (not by wrapping optax), so that the tests comparing them with optax
check the paper's definition against an independent implementation. Updates are
linear in the step size h: ``update = h * F_n``, which is what the modified-equation
construction needs (docs/math.md, section 5).

    RMSProp (eps inside):  nu <- rho nu + (1-rho) g^2;  theta <- theta - h g / sqrt(nu + eps)
    Adam (eps inside):     m <- beta m + (1-beta) g;    nu as above;
                           theta <- theta - h (m/(1-beta^(n+1))) / sqrt(nu/(1-rho^(n+1)) + eps)
    originals (eps outside): ... / (sqrt(nu_hat) + eps)
    GD:                    theta <- theta - h g
    heavy ball:            v <- g + beta v;  theta <- theta - h v   (v = 0 at the start)

Bias correction at step n divides by 1 - a^(n+1), and eps is added after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

__all__ = [
    "adam",
    "rmsprop",
    "gd",
    "heavy_ball",
    "adam_eps_outside",
    "rmsprop_eps_outside",
    "ScaleByAdamState",
    "trajectory",
    "check_hyperparameters",
]


def check_hyperparameters(*, h: float | None = None, beta: float | None = None,
                          rho: float | None = None, eps: float | None = None) -> None:
    """Raise ValueError, one line naming the value, unless the given hyperparameters are
    those of Definition 3.1: step size h > 0, beta in [0, 1), rho in (0, 1), eps > 0, all
    finite. The one check shared by the sweeps and the training experiments."""
    def real(name, x):
        if isinstance(x, bool) or not isinstance(x, int | float | np.floating | np.integer):
            raise ValueError(f"{name} must be a real number, got {x!r}")
        return float(x)

    if h is not None and not (math.isfinite(real("h", h)) and h > 0):
        raise ValueError(f"step size h must be positive and finite, got {h!r}")
    if beta is not None and not 0 <= real("beta", beta) < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
    if rho is not None and not 0 < real("rho", rho) < 1:
        raise ValueError(f"rho must lie in (0, 1), got {rho!r}")
    if eps is not None and not (math.isfinite(real("eps", eps)) and eps > 0):
        raise ValueError(f"eps must be positive and finite, got {eps!r}")


class ScaleByAdamState(NamedTuple):
    count: Int[Array, ""]  # n, the number of steps taken so far
    m: PyTree  # first moment m^(n)
    nu: PyTree  # second moment nu^(n)


def adam(
    h: float | Array,
    beta: float | Array,
    rho: float | Array,
    eps: float | Array,
    *,
    bias_correction: bool = True,
    eps_inside: bool = True,
) -> optax.GradientTransformation:
    """Adam of Definition 3.1 (eps inside the root, bias corrected) and its variants.

    ``eps_inside=False`` gives the usual ("original") Adam, ``/(sqrt(nu_hat) + eps)``
    (Remark 3.2); ``bias_correction=False`` drops both 1/(1 - a^(n+1)) factors.
    With ``bias_correction=True, eps_inside=True`` this equals
    ``optax.adam(h, b1=beta, b2=rho, eps=0.0, eps_root=eps)``.
    """

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return ScaleByAdamState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        n1 = state.count + 1  # n + 1
        m = jax.tree_util.tree_map(lambda m, g: beta * m + (1 - beta) * g, state.m, grads)
        nu = jax.tree_util.tree_map(lambda v, g: rho * v + (1 - rho) * g * g, state.nu, grads)
        if bias_correction:
            cm = 1 - jnp.asarray(beta) ** n1
            cv = 1 - jnp.asarray(rho) ** n1
        else:
            cm = cv = 1.0

        def step(m, v):
            m_hat, v_hat = m / cm, v / cv
            denom = jnp.sqrt(v_hat + eps) if eps_inside else jnp.sqrt(v_hat) + eps
            return -h * m_hat / denom

        return jax.tree_util.tree_map(step, m, nu), ScaleByAdamState(n1, m, nu)

    return optax.GradientTransformation(init, update)


def adam_eps_outside(h, beta, rho, eps, *, bias_correction: bool = True):
    """The usual Adam (Kingma and Ba): theta -= h m_hat / (sqrt(nu_hat) + eps) (Remark 3.2)."""
    return adam(h, beta, rho, eps, bias_correction=bias_correction, eps_inside=False)


def rmsprop(
    h: float | Array, rho: float | Array, eps: float | Array, *, eps_inside: bool = True
) -> optax.GradientTransformation:
    """RMSProp of Definition 3.1: no momentum, no bias correction, eps inside the root.

    Equals ``optax.rmsprop(h, decay=rho, eps=eps, eps_in_sqrt=True)``;
    ``eps_inside=False`` is the original ``g / (sqrt(nu) + eps)`` (Remark 3.2).
    """
    return adam(h, 0.0, rho, eps, bias_correction=False, eps_inside=eps_inside)


def rmsprop_eps_outside(h, rho, eps):
    """The usual RMSProp (Hinton): theta -= h g / (sqrt(nu) + eps) (Remark 3.2)."""
    return rmsprop(h, rho, eps, eps_inside=False)


def gd(h: float | Array) -> optax.GradientTransformation:
    """Gradient descent theta <- theta - h g (Example 3.5's limit)."""

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None):
        return jax.tree_util.tree_map(lambda g: -h * g, grads), state

    return optax.GradientTransformation(init, update)


class HeavyBallState(NamedTuple):
    v: PyTree  # the trace v^(n); v^(0) = 0


def heavy_ball(h: float | Array, beta: float | Array) -> optax.GradientTransformation:
    """Heavy ball in trace form v <- g + beta v, theta <- theta - h v, v = 0 at the start
    (theta^(n+1) = theta^(n) - h g_n + beta (theta^(n) - theta^(n-1)), theta^(-1) = theta^(0));
    equals ``optax.sgd(h, momentum=beta)`` (Example 3.8, Ghosh et al.)."""

    def init(params):
        return HeavyBallState(jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        v = jax.tree_util.tree_map(lambda v, g: g + beta * v, state.v, grads)
        return jax.tree_util.tree_map(lambda v: -h * v, v), HeavyBallState(v)

    return optax.GradientTransformation(init, update)


def trajectory(
    optimizer: optax.GradientTransformation,
    loss: Callable[[Any, Any], Float[Array, ""]],
    theta0: PyTree,
    batches: PyTree | None,
    num_steps: int,
    data: PyTree | None = None,
    active_steps: Int[Array, ""] | None = None,
) -> PyTree:
    """theta^(0), ..., theta^(num_steps) as one ``lax.scan`` (leading axis num_steps + 1).

    Mini-batch: ``batches`` is a pytree whose leaves have a leading step axis of length
    at least ``num_steps``; step k uses batch k (docs/math.md, section 1). Full batch:
    ``batches=None`` and every step uses ``data``. Jit the caller (or this function with
    ``num_steps`` static) to compile once. ``active_steps`` (traced) takes only that many
    steps and holds theta after them: one program of length ``num_steps`` serves every
    shorter run of a sweep.
    """
    grad = jax.grad(loss)
    if batches is None:
        xs = None
    else:
        xs = jax.tree_util.tree_map(lambda b: b[:num_steps], batches)

    def step(carry, batch):
        theta, state = carry
        g = grad(theta, data if batches is None else batch)
        updates, state = optimizer.update(g, state, theta)
        return (optax.apply_updates(theta, updates), state)

    def masked_step(carry, inp):
        k, batch = inp
        if active_steps is None:
            carry = step(carry, batch)
        else:
            carry = jax.lax.cond(k < active_steps, step, lambda c, _: c, carry, batch)
        return carry, carry[0]

    _, thetas = jax.lax.scan(masked_step, (theta0, optimizer.init(theta0)),
                             (jnp.arange(num_steps), xs))
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), theta0, thetas)
