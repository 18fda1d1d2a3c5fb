"""What is logged per step: gradient norms and the paper's first-order prediction.

For full-batch Adam the modified loss at first order in h is (Section 4, eq. (8))

    E_tilde = E + c * ||grad E||_{1,eps},   c = h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho)),

so beta > rho penalises the perturbed one-norm ||v||_{1,eps} = sum_i sqrt(v_i^2 + eps)
and rho > beta anti-penalises it. Section 6 tracks this norm of the full-batch gradient
during training; we also log the two-norm, the one-norm and the mean and standard
deviation of |g_i| (as the authors' code does), c and E_tilde.

c is eq. (8)'s large-n limit. A run that stops after a few hundred steps is still inside
Adam's memory (n (1 - rho) = 0.09 at n = 87, rho = 0.999), where Remark 3.7's finite-n
coefficient applies:

    c(n) = h/2 ((2 c_beta(n) + 1) - (2 c_rho(n) + 1)) = h (c_beta(n) - c_rho(n))

(``bea._finite_n.correction_coefficient_n``; 0 at n = 0, up to 57x smaller than c at
n = 87 for Figure 3's rho sweep, tending to c as n grows). ``finite_n_prediction`` gives
c(n) and E + c(n) ||grad E||_{1,eps} at the step's n, logged in the last two columns
(``correction_coefficient_n``, ``modified_loss_n``) beside the large-n pair.

The norm's floor and its excess. Every entry contributes at least sqrt(eps), so
||g||_{1,eps} >= P sqrt(eps) (P parameters), and what can move is the excess

    ||g||_{1,eps} - P sqrt(eps) = sum_j (sqrt(g_j^2 + eps) - sqrt(eps))
                                = sum_j g_j^2 / (sqrt(g_j^2 + eps) + sqrt(eps)),

logged in the second, cancellation-free form: every term is a ratio of positive numbers,
so the sum is accurate to round-off in float32 too, where the first form subtracts two
numbers that agree in most or all of their digits once |g_j| << sqrt(eps) (ResNet-50 at
the paper's eps = 1e-3: P sqrt(eps) = 2.4e7 x 0.032 ~ 7e5, while entries of 1e-4 add
about 4 to it, below the float32 round-off of a sum of 2.4e7 terms). Where every
|g_j| << sqrt(eps) the excess is the two-norm penalty

    ||g||_2^2 / (2 sqrt(eps))     (sqrt(g^2 + eps) = sqrt(eps) + g^2 / (2 sqrt(eps)) + ...),

logged beside it (``two_norm_penalty``; the excess never exceeds it, and their ratio
tends to 1 as max |g_j| / sqrt(eps) -> 0), so a history shows directly whether the
"one-norm" of eq. (8) acts as a one-norm (|g_j| >> sqrt(eps): excess ~ ||g||_1) or as a
two-norm penalty (excess ~ ||g||_2^2 / (2 sqrt eps)); ``share_above_sqrt_eps``, the
share of entries with |g_j| > sqrt(eps), says which entries are in which regime.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from bea._finite_n import correction_coefficient_n
from bea._norms import (
    correction_coefficient,
    one_norm,
    perturbed_one_norm,
    perturbed_one_norm_excess,
    share_above_sqrt_eps,
    two_norm,
    two_norm_penalty,
)

__all__ = [
    "GRADIENT_METRICS",
    "gradient_metrics",
    "perturbed_one_norm_excess",
    "two_norm_penalty",
    "share_above_sqrt_eps",
    "first_order_prediction",
    "FINITE_N_COLUMNS",
    "finite_n_prediction",
]

FINITE_N_COLUMNS = ("correction_coefficient_n", "modified_loss_n")

GRADIENT_METRICS = (
    "perturbed_one_norm",
    "two_norm",
    "one_norm",
    "mean_abs_grad",
    "std_abs_grad",
    "perturbed_one_norm_excess",
    "two_norm_penalty",
    "share_above_sqrt_eps",
)


def gradient_metrics(g: PyTree[Float[Array, "..."]], eps: float | Array) -> dict[str, Array]:
    """The norms of the full-batch gradient ``g`` named in ``GRADIENT_METRICS`` (module
    docstring), in ``g``'s dtype."""
    flat = jnp.concatenate([jnp.abs(x).ravel() for x in jax.tree_util.tree_leaves(g)])
    dtype = flat.dtype
    return {
        "perturbed_one_norm": perturbed_one_norm(g, eps),
        "two_norm": two_norm(g),
        "one_norm": one_norm(g),
        "mean_abs_grad": jnp.mean(flat),
        "std_abs_grad": jnp.std(flat),
        "perturbed_one_norm_excess": perturbed_one_norm_excess(g, eps),
        "two_norm_penalty": two_norm_penalty(g, eps),
        "share_above_sqrt_eps": share_above_sqrt_eps(g, eps).astype(dtype),
    }


def first_order_prediction(
    loss: Float[Array, ""],
    pnorm: Float[Array, ""],
    h: float | Array,
    beta: float | Array,
    rho: float | Array,
) -> dict[str, Array]:
    """The correction coefficient c and the modified loss E + c ||grad E||_{1,eps} (eq. (8))."""
    c = correction_coefficient(h, beta, rho)
    return {"correction_coefficient": c, "modified_loss": loss + c * pnorm}


def finite_n_prediction(
    loss: Float[Array, ""] | float,
    pnorm: Float[Array, ""] | float,
    h: float | Array,
    beta: float | Array,
    rho: float | Array,
    n: int | Array,
) -> dict[str, Array]:
    """Remark 3.7's finite-n coefficient c(n) = h (c_beta(n) - c_rho(n)) at step ``n`` and
    the modified loss E + c(n) ||grad E||_{1,eps} with it (module docstring): the
    history's ``correction_coefficient_n`` and ``modified_loss_n``."""
    c = correction_coefficient_n(h, beta, rho, n)
    return {"correction_coefficient_n": c, "modified_loss_n": loss + c * pnorm}
