"""Gradient norms that the paper's first-order term acts on.

The perturbed one-norm (paper, Section 1 and Remark 3.4),

    ||v||_{1,eps} = sum_i sqrt(v_i^2 + eps),

is the quantity that full-batch Adam and RMSProp implicitly penalise (beta > rho)
or anti-penalise (rho > beta) at first order in h; see equation (8).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from bea._hvp import hvp

__all__ = [
    "perturbed_one_norm",
    "perturbed_one_norm_excess",
    "two_norm_penalty",
    "share_above_sqrt_eps",
    "one_norm",
    "two_norm",
    "grad_perturbed_one_norm",
    "correction_coefficient",
]


def _leaves(v: PyTree) -> list[Array]:
    return jax.tree_util.tree_leaves(v)


def perturbed_one_norm(v: PyTree[Float[Array, "..."]], eps: float | Array) -> Float[Array, ""]:
    """||v||_{1,eps} = sum_i sqrt(v_i^2 + eps) over every entry of the pytree v."""
    return sum(jnp.sum(jnp.sqrt(jnp.square(x) + eps)) for x in _leaves(v))


def perturbed_one_norm_excess(
    g: PyTree[Float[Array, "..."]], eps: float | Array
) -> Float[Array, ""]:
    """||g||_{1,eps} - P sqrt(eps) = sum_j g_j^2 / (sqrt(g_j^2 + eps) + sqrt(eps)), P the
    number of entries: the part of the perturbed one-norm (Section 1, eq. (8)) above its
    floor, in the cancellation-free form (exact to round-off in float32 even where
    |g_j| << sqrt(eps) and the direct subtraction keeps no digit)."""
    r = jnp.sqrt(eps)
    return sum(jnp.sum(jnp.square(x) / (jnp.sqrt(jnp.square(x) + eps) + r)) for x in _leaves(g))


def two_norm_penalty(g: PyTree[Float[Array, "..."]], eps: float | Array) -> Float[Array, ""]:
    """||g||_2^2 / (2 sqrt(eps)): the excess ||g||_{1,eps} - P sqrt(eps) to leading order
    where every |g_j| << sqrt(eps) (it is an upper bound of the excess everywhere)."""
    return sum(jnp.sum(jnp.square(x)) for x in _leaves(g)) / (2 * jnp.sqrt(eps))


def share_above_sqrt_eps(
    g: PyTree[Float[Array, "..."]], eps: float | Array
) -> Float[Array, ""]:
    """The share of entries with |g_j| > sqrt(eps): those for which ||g||_{1,eps} acts as
    a one-norm rather than as a two-norm penalty."""
    leaves = _leaves(g)
    count = sum(jnp.sum(jnp.abs(x) > jnp.sqrt(eps)) for x in leaves)
    return count / sum(x.size for x in leaves)


def one_norm(v: PyTree[Float[Array, "..."]]) -> Float[Array, ""]:
    """||v||_1 = sum_i |v_i| over every entry of the pytree v."""
    return sum(jnp.sum(jnp.abs(x)) for x in _leaves(v))


def two_norm(v: PyTree[Float[Array, "..."]]) -> Float[Array, ""]:
    """||v||_2 over every entry of the pytree v."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in _leaves(v)))


def grad_perturbed_one_norm(
    loss: Callable[[Float[Array, " p"]], Float[Array, ""]],
    theta: Float[Array, " p"],
    eps: float | Array,
) -> Float[Array, " p"]:
    """nabla_theta ||nabla E(theta)||_{1,eps} = H(theta) (g / sqrt(g^2 + eps)).

    One gradient and one Hessian-vector product (forward-over-reverse, :func:`bea._hvp.hvp`),
    the quantity written nabla_j ||nabla E||_{1,eps} in Remarks 3.4 and 3.7.
    """
    g = jax.grad(loss)(theta)
    u = g / jnp.sqrt(jnp.square(g) + eps)
    return hvp(loss, theta, u)[1]


def correction_coefficient(h, beta, rho):
    """h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho)): the coefficient of ||grad E||_{1,eps}
    in the modified loss E + coefficient * ||grad E||_{1,eps} (Section 4, after (8)),
    valid where |grad_j E| >> sqrt(eps). Positive: the norm is penalised (beta > rho)."""
    return 0.5 * h * ((1 + beta) / (1 - beta) - (1 + rho) / (1 - rho))
