"""Theorem 3.6: the first-order modified equation of mini-batch Adam (Definition 3.1).

On [nh, (n+1)h] (every quantity at the current theta, superscripts (n)):

    dtheta_j/dt = -M_j/R_j + h ( M_j (2 P_j + Pbar_j) / (2 R_j^3)  -  (2 L_j + Lbar_j) / (2 R_j) )

The paper's typeset (6) shows R_j^3 under the L term; that is a typo (Remark 3.7 and
dimensions give 2 R_j, and only 2 R_j converges at order 2, MATH.md section 3). The
typo is kept as ``variant="typo"`` so the order test can reject it.

The building blocks ``R, M, L, L_bar, P, P_bar`` below follow the theorem's definitions
one by one; :func:`field` computes the same quantities fused, with one Hessian-vector
product per past batch: H_k (2 S_k + u^(n)) serves both 2L + Lbar and 2P + Pbar.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from bea.fields._history import (
    ema_all,
    ema_weights,
    grad_history,
    hvp_history,
    one_minus_pow,
    suffix_sum,
)

__all__ = ["R_all", "M_all", "R", "M", "L", "L_bar", "P", "P_bar", "field"]

Field = Callable[[Int[Array, ""], Float[Array, " p"]], Float[Array, " p"]]


def R_all(G: Float[Array, "K p"], rho, eps, bias_correction: bool = True) -> Float[Array, "K p"]:
    """R^(l) = sqrt( sum_{k<=l} rho^(l-k)(1-rho) g_k^2 / (1-rho^(l+1)) + eps ) for every l."""
    nu = ema_all(G * G, rho)
    if bias_correction:
        nu = nu / one_minus_pow(rho, jnp.arange(G.shape[0]) + 1)[:, None]
    return jnp.sqrt(nu + eps)


def M_all(G: Float[Array, "K p"], beta, bias_correction: bool = True) -> Float[Array, "K p"]:
    """M^(l) = sum_{k<=l} beta^(l-k)(1-beta) g_k / (1-beta^(l+1)) for every l."""
    m = ema_all(G, beta)
    if bias_correction:
        m = m / one_minus_pow(beta, jnp.arange(G.shape[0]) + 1)[:, None]
    return m


def _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction):
    G = grad_history(loss, theta, batches)
    Rs = R_all(G, rho, eps, bias_correction)
    Ms = M_all(G, beta, bias_correction)
    u = Ms / Rs  # u^(l) = M^(l) / R^(l)
    return G, Rs, Ms, u, suffix_sum(u, n)


def R(loss, theta, batches, n, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """R^(n)(theta) of Theorem 3.6."""
    G = grad_history(loss, theta, batches)
    return R_all(G, rho, eps, bias_correction)[n]


def M(loss, theta, batches, n, beta, bias_correction=True) -> Float[Array, " p"]:
    """M^(n)(theta) of Theorem 3.6."""
    G = grad_history(loss, theta, batches)
    return M_all(G, beta, bias_correction)[n]


def L(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """L^(n) = 1/(1-beta^(n+1)) sum_{k<=n} beta^(n-k)(1-beta) H_k sum_{l=k}^{n-1} M^(l)/R^(l)."""
    _, _, _, _, S = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(beta, n, S.shape[0], bias_correction)
    return w @ hvp_history(loss, theta, batches, S)


def L_bar(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """Lbar^(n) = 1/(1-beta^(n+1)) sum_{k<=n} beta^(n-k)(1-beta) H_k M^(n)/R^(n)."""
    _, _, _, u, _ = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(beta, n, u.shape[0], bias_correction)
    return w @ hvp_history(loss, theta, batches, jnp.broadcast_to(u[n], u.shape))


def P(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """P^(n) = 1/(1-rho^(n+1)) sum_{k<=n} rho^(n-k)(1-rho) g_k * H_k sum_{l=k}^{n-1} M^(l)/R^(l)."""
    G, _, _, _, S = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(rho, n, S.shape[0], bias_correction)
    return w @ (G * hvp_history(loss, theta, batches, S))


def P_bar(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """Pbar^(n) = 1/(1-rho^(n+1)) sum_{k<=n} rho^(n-k)(1-rho) g_k * H_k M^(n)/R^(n)."""
    G, _, _, u, _ = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(rho, n, u.shape[0], bias_correction)
    return w @ (G * hvp_history(loss, theta, batches, jnp.broadcast_to(u[n], u.shape)))


def field(
    loss: Callable,
    batches: PyTree,
    h,
    beta,
    rho,
    eps,
    *,
    order: int = 1,
    variant: str = "paper",
    bias_correction: bool = True,
) -> Field:
    """The modified vector field of Theorem 3.6, ``f(n, theta)``, for mini-batch Adam.

    ``batches`` holds batch k at index k of every leaf's leading axis (at least n+1 of
    them; entries beyond n are masked out). ``order=0`` gives -M/R; ``variant="typo"`` puts
    R^3 under the L term as in the typeset (6). ``bias_correction=False`` drops the
    1/(1-a^(n+1)) divisors (with beta = 0 this is Theorem 3.3's RMSProp).
    Cost per evaluation: K gradients and K Hessian-vector products, vmapped.
    """
    if variant not in ("paper", "typo"):
        raise ValueError(f"unknown variant {variant!r}; use 'paper' or 'typo'")

    def f(n, theta):
        G, Rs, Ms, u, S = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
        Rn, Mn, un = Rs[n], Ms[n], u[n]
        if order == 0:
            return -Mn / Rn
        K = G.shape[0]
        HV = hvp_history(loss, theta, batches, 2 * S + un)  # H_k (2 S_k + u^(n))
        two_L_plus_L_bar = ema_weights(beta, n, K, bias_correction) @ HV
        two_P_plus_P_bar = ema_weights(rho, n, K, bias_correction) @ (G * HV)
        L_den = 2 * Rn**3 if variant == "typo" else 2 * Rn
        return -Mn / Rn + h * (Mn * two_P_plus_P_bar / (2 * Rn**3) - two_L_plus_L_bar / L_den)

    return f
