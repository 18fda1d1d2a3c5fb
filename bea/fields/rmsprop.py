"""Theorem 3.3: the first-order modified equation of mini-batch RMSProp (Definition 3.1).

On [nh, (n+1)h], with u^(l) = g_l / R^(l) and every quantity at the current theta:

    dtheta_j/dt = -g_nj/R_j + h ( g_nj (2 P_j + Pbar_j) / (2 R_j^3) - (H_n u^(n))_j / (2 R_j) )

    R_j^(l)  = sqrt( sum_{k<=l} rho^(l-k) (1-rho) g_kj^2 + eps )          (no bias correction)
    P_j      = sum_{k<=n} rho^(n-k) (1-rho) g_kj (H_k sum_{l=k}^{n-1} u^(l))_j
    Pbar_j   = sum_{k<=n} rho^(n-k) (1-rho) g_kj (H_k u^(n))_j

As in Theorem 3.6, the typeset (4) shows R_j^3 under the Hessian term; 2 R_j is right
(MATH.md section 3); ``variant="typo"`` keeps the typeset form as an ablation.
Written separately from :mod:`bea.fields.adam` so that the test "Adam with beta = 0 and no
rho bias correction equals RMSProp" compares two derivations.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

from bea.fields._history import ema_all, grad_history, hvp_history, suffix_sum

__all__ = ["R", "P", "P_bar", "field"]


def _R_all(G, rho, eps):
    return jnp.sqrt(ema_all(G * G, rho) + eps)


def _rho_weights(rho, n, K):
    k = jnp.arange(K)
    return jnp.where(k <= n, jnp.asarray(rho, dtype=float) ** jnp.maximum(n - k, 0) * (1 - rho),
                     0.0)


def R(loss, theta, batches, n, rho, eps) -> Float[Array, " p"]:
    """R^(n)(theta) = sqrt(sum_{k<=n} rho^(n-k)(1-rho) g_k^2 + eps) of Theorem 3.3."""
    return _R_all(grad_history(loss, theta, batches), rho, eps)[n]


def P(loss, theta, batches, n, rho, eps) -> Float[Array, " p"]:
    """P^(n) of Theorem 3.3."""
    G = grad_history(loss, theta, batches)
    S = suffix_sum(G / _R_all(G, rho, eps), n)
    return _rho_weights(rho, n, G.shape[0]) @ (G * hvp_history(loss, theta, batches, S))


def P_bar(loss, theta, batches, n, rho, eps) -> Float[Array, " p"]:
    """Pbar^(n) of Theorem 3.3."""
    G = grad_history(loss, theta, batches)
    un = (G / _R_all(G, rho, eps))[n]
    HU = hvp_history(loss, theta, batches, jnp.broadcast_to(un, G.shape))
    return _rho_weights(rho, n, G.shape[0]) @ (G * HU)


def field(loss: Callable, batches, h, rho, eps, *, order: int = 1, variant: str = "paper"):
    """The modified vector field (4) of Theorem 3.3, ``f(n, theta)``, for mini-batch RMSProp."""
    if variant not in ("paper", "typo"):
        raise ValueError(f"unknown variant {variant!r}; use 'paper' or 'typo'")

    def f(n, theta):
        G = grad_history(loss, theta, batches)
        Rs = _R_all(G, rho, eps)
        u = G / Rs
        gn, Rn, un = G[n], Rs[n], u[n]
        if order == 0:
            return -gn / Rn
        S = suffix_sum(u, n)
        HV = hvp_history(loss, theta, batches, 2 * S + un)  # H_k (2 S_k + u^(n))
        two_P_plus_P_bar = _rho_weights(rho, n, G.shape[0]) @ (G * HV)
        Hn_un = HV[n]  # S_n = 0, so H_n (2 S_n + u^(n)) = H_n u^(n): the Lbar term
        L_den = 2 * Rn**3 if variant == "typo" else 2 * Rn
        return -gn / Rn + h * (gn * two_P_plus_P_bar / (2 * Rn**3) - Hn_un / L_den)

    return f
