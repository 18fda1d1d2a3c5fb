"""What is logged per step: gradient norms and the paper's first-order prediction.

For full-batch Adam the modified loss at first order in h is (Section 4, eq. (8))

    E_tilde = E + c * ||grad E||_{1,eps},   c = h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho)),

so beta > rho penalises the perturbed one-norm ||v||_{1,eps} = sum_i sqrt(v_i^2 + eps)
and rho > beta anti-penalises it. Section 6 tracks this norm of the full-batch gradient
during training; we also log the two-norm, the one-norm and the mean and standard
deviation of |g_i| (as the authors' code does), c and E_tilde.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from bea._norms import correction_coefficient, one_norm, perturbed_one_norm, two_norm

__all__ = ["GRADIENT_METRICS", "gradient_metrics", "first_order_prediction"]

GRADIENT_METRICS = (
    "perturbed_one_norm",
    "two_norm",
    "one_norm",
    "mean_abs_grad",
    "std_abs_grad",
)


def gradient_metrics(g: PyTree[Float[Array, "..."]], eps: float | Array) -> dict[str, Array]:
    """The norms of the full-batch gradient ``g`` named in ``GRADIENT_METRICS``."""
    flat = jnp.concatenate([jnp.abs(x).ravel() for x in jax.tree_util.tree_leaves(g)])
    return {
        "perturbed_one_norm": perturbed_one_norm(g, eps),
        "two_norm": two_norm(g),
        "one_norm": one_norm(g),
        "mean_abs_grad": jnp.mean(flat),
        "std_abs_grad": jnp.std(flat),
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
