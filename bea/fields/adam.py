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

import jax
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
from bea.fields._window import history_slice, window_length

__all__ = ["R_all", "M_all", "R", "M", "L", "L_bar", "P", "P_bar", "field"]

Field = Callable[[Int[Array, ""], Float[Array, " p"]], Float[Array, " p"]]


def R_all(G: Float[Array, "K p"], rho, eps, bias_correction: bool = True,
          offset=0) -> Float[Array, "K p"]:
    """R^(l) = sqrt( sum_{k<=l} rho^(l-k)(1-rho) g_k^2 / (1-rho^(l+1)) + eps ) for every l
    (``offset``: the step of row 0, when G is a window of the history)."""
    nu = ema_all(G * G, rho)
    if bias_correction:
        nu = nu / one_minus_pow(rho, offset + jnp.arange(G.shape[0]) + 1)[:, None]
    return jnp.sqrt(nu + eps)


def M_all(G: Float[Array, "K p"], beta, bias_correction: bool = True,
          offset=0) -> Float[Array, "K p"]:
    """M^(l) = sum_{k<=l} beta^(l-k)(1-beta) g_k / (1-beta^(l+1)) for every l."""
    m = ema_all(G, beta)
    if bias_correction:
        m = m / one_minus_pow(beta, offset + jnp.arange(G.shape[0]) + 1)[:, None]
    return m


def _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction, offset=0):
    G = grad_history(loss, theta, batches)
    Rs = R_all(G, rho, eps, bias_correction, offset)
    Ms = M_all(G, beta, bias_correction, offset)
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
    window: bool = True,
) -> Field:
    """The modified vector field of Theorem 3.6, ``f(n, theta)``, for mini-batch Adam.

    ``batches`` holds batch k at index k of every leaf's leading axis (at least n+1 of
    them; entries beyond n are masked out). ``order=0`` gives -M/R; ``variant="typo"`` puts
    R^3 under the L term as in the typeset (6). ``bias_correction=False`` drops the
    1/(1-a^(n+1)) divisors (with beta = 0 this is Theorem 3.3's RMSProp).
    Cost per evaluation: K gradients and K Hessian-vector products, vmapped; or 2W of
    them when the weights max(beta, rho)^W fall below 1e-18 within the history
    (:mod:`bea.fields._window`, automatic for concrete beta and rho; ``window=False``
    turns it off).
    """
    if variant not in ("paper", "typo"):
        raise ValueError(f"unknown variant {variant!r}; use 'paper' or 'typo'")

    K_all = jax.tree_util.tree_leaves(batches)[0].shape[0]
    L_win = window_length(beta, rho, K_all) if window else None

    def f(n, theta):
        hist, off = (batches, 0) if L_win is None else history_slice(batches, n, L_win, K_all)
        m = n - off  # n's row in the (windowed) history
        G, Rs, Ms, u, S = _pieces(loss, theta, hist, m, beta, rho, eps, bias_correction, off)
        Rn, Mn, un = Rs[m], Ms[m], u[m]
        if order == 0:
            return -Mn / Rn
        K = G.shape[0]
        HV = hvp_history(loss, theta, hist, 2 * S + un)  # H_k (2 S_k + u^(n))
        wb, wr = ema_weights(beta, m, K, False), ema_weights(rho, m, K, False)
        if bias_correction:
            wb, wr = wb / one_minus_pow(beta, n + 1), wr / one_minus_pow(rho, n + 1)
        two_L_plus_L_bar = wb @ HV
        two_P_plus_P_bar = wr @ (G * HV)
        L_den = 2 * Rn**3 if variant == "typo" else 2 * Rn
        return -Mn / Rn + h * (Mn * two_P_plus_P_bar / (2 * Rn**3) - two_L_plus_L_bar / L_den)

    return f
