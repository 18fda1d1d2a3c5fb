"""Theorem 3.6: the first-order modified equation of mini-batch Adam (Definition 3.1).

On [nh, (n+1)h] (every quantity at the current theta, superscripts (n)):

    dtheta_j/dt = -M_j/R_j + h ( M_j (2 P_j + Pbar_j) / (2 R_j^3)  -  (2 L_j + Lbar_j) / (2 R_j) )

The paper's typeset (6) shows R_j^3 under the L term; that is a typo (Remark 3.7 and
dimensions give 2 R_j, and only 2 R_j converges at order 2, docs/math.md, section 3). The
typo is kept as ``variant="typo"`` so the order test can reject it.

The building blocks ``R, M, L, L_bar, P, P_bar`` below follow the theorem's definitions
one by one; :func:`field` computes the same quantities fused, with one Hessian-vector
product per past batch: H_k (2 S_k + u^(n)) serves both 2L + Lbar and 2P + Pbar.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from bea._typing import Field
from bea.fields import full_batch
from bea.fields._history import (
    Direct,
    GroupedHistory,
    ema_all,
    ema_weights,
    one_minus_pow,
    suffix_sum,
)
from bea.fields._window import window_length
from bea.fields.grouped import grouped_field
from bea.problems import Grouped

__all__ = ["R_all", "M_all", "R", "M", "L", "L_bar", "P", "P_bar", "field", "order0", "order1",
           "order1_typo", "limit"]



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


def _hvps(loss, theta, batches, V):
    """H_k v_k for every slot k of the direct history (v_k = V[k])."""
    return Direct(loss, batches).grads_and_hvps(theta, 0, V)[1]


def _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction):
    G = Direct(loss, batches).grads(theta)
    Rs = R_all(G, rho, eps, bias_correction)
    Ms = M_all(G, beta, bias_correction)
    u = Ms / Rs  # u^(l) = M^(l) / R^(l)
    return G, Rs, Ms, u, suffix_sum(u, n)


def R(loss, theta, batches, n, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """R^(n)(theta) of Theorem 3.6."""
    G = Direct(loss, batches).grads(theta)
    return R_all(G, rho, eps, bias_correction)[n]


def M(loss, theta, batches, n, beta, bias_correction=True) -> Float[Array, " p"]:
    """M^(n)(theta) of Theorem 3.6."""
    G = Direct(loss, batches).grads(theta)
    return M_all(G, beta, bias_correction)[n]


def L(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """L^(n) = 1/(1-beta^(n+1)) sum_{k<=n} beta^(n-k)(1-beta) H_k sum_{l=k}^{n-1} M^(l)/R^(l)."""
    _, _, _, _, S = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(beta, n, S.shape[0], bias_correction)
    return w @ _hvps(loss, theta, batches, S)


def L_bar(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """Lbar^(n) = 1/(1-beta^(n+1)) sum_{k<=n} beta^(n-k)(1-beta) H_k M^(n)/R^(n)."""
    _, _, _, u, _ = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(beta, n, u.shape[0], bias_correction)
    return w @ _hvps(loss, theta, batches, jnp.broadcast_to(u[n], u.shape))


def P(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """P^(n) = 1/(1-rho^(n+1)) sum_{k<=n} rho^(n-k)(1-rho) g_k * H_k sum_{l=k}^{n-1} M^(l)/R^(l)."""
    G, _, _, _, S = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(rho, n, S.shape[0], bias_correction)
    return w @ (G * _hvps(loss, theta, batches, S))


def P_bar(loss, theta, batches, n, beta, rho, eps, bias_correction=True) -> Float[Array, " p"]:
    """Pbar^(n) = 1/(1-rho^(n+1)) sum_{k<=n} rho^(n-k)(1-rho) g_k * H_k M^(n)/R^(n)."""
    G, _, _, u, _ = _pieces(loss, theta, batches, n, beta, rho, eps, bias_correction)
    w = ema_weights(rho, n, u.shape[0], bias_correction)
    return w @ (G * _hvps(loss, theta, batches, jnp.broadcast_to(u[n], u.shape)))


def _ema_rows(X: Float[Array, "C p"], a, carry: Float[Array, " p"]) -> Float[Array, "C p"]:
    """A_i = a A_{i-1} + (1-a) X_i from A_{-1} = carry, for the C rows of a chunk (unrolled:
    one fused elementwise kernel)."""
    out, acc = [], carry
    for i in range(X.shape[0]):
        acc = a * acc + (1 - a) * X[i]
        out.append(acc)
    return jnp.stack(out)


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
    chunk: int = 8,
    scan: str | None = None,
) -> Field:
    """The modified vector field of Theorem 3.6, ``f(n, theta)``, for mini-batch Adam.

    ``batches`` holds batch k at index k of every leaf's leading axis (at least n+1 of
    them; entries beyond n are never used). ``order=0`` gives -M/R; ``variant="typo"`` puts
    R^3 under the L term as in the typeset (6). ``bias_correction=False`` drops the
    1/(1-a^(n+1)) divisors (with beta = 0 this is Theorem 3.3's RMSProp).

    Cost per evaluation: n+1 gradients and n+1 Hessian-vector products (one per past batch;
    H_k (2 S_k + u^(n)) serves both 2L + Lbar and 2P + Pbar), rounded up to whole chunks of
    ``chunk`` batches: the history is walked in a loop whose trip count is n // chunk + 1, so
    step n costs O(n) (O(N^2/2) per trajectory, not O(N K)) in one compiled program, however
    long the padded history. Or O(2W) when the weights max(beta, rho)^W fall below 1e-18
    within the history (:mod:`bea.fields._window`, automatic for concrete beta and rho;
    ``window=False`` turns it off). Two passes: forward over the chunks for g_k and the
    averages M^(l), R^(l) (the recursion carried from chunk to chunk), then backward for the
    suffix sums S_k and the Hessian-vector products (g_k again, free, as their primal).

    Grouped history (docs/math.md, section 7): ``batches`` may be a :class:`Grouped`
    ``(distinct, ids)``, batch k being ``distinct[ids[k]]`` (a fixed partition of a finite
    data set, visited in any order). The same field is then evaluated with B gradients and
    2B Hessian-vector products (one per distinct batch and average, beta and rho) plus
    O(n p) elementwise work, whatever n is (:mod:`bea.fields.grouped`); ``scan``
    ('sequential' | 'associative', default by backend) chooses how its linear recursions
    run. ``scan`` applies to a grouped history only, ``chunk`` to a direct one.
    """
    if variant not in ("paper", "typo"):
        raise ValueError(f"unknown variant {variant!r}; use 'paper' or 'typo'")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if isinstance(batches, Grouped):
        return grouped_field(GroupedHistory(loss, batches.distinct, batches.ids), h, beta, rho,
                             eps, order=order, variant=variant,
                             bias_correction=bias_correction, window=window, scan=scan)
    if scan is not None:
        raise ValueError(f"scan={scan!r} applies to a Grouped history only (batches here is "
                         f"the direct per-step history)")

    hist = Direct(loss, batches, chunk)
    L_win = window_length(beta, rho, hist.num_slots) if window else None
    C, nc = hist.chunk_size, hist.num_chunks
    i = jnp.arange(C)

    def f(n, theta):
        start = 0 if L_win is None else jnp.maximum(n - L_win + 1, 0)
        c0, c1 = start // C, n // C + 1
        zero = jnp.zeros_like(theta)

        def forward(c, carry):  # g_k, then M^(l), R^(l), u^(l) for the rows of chunk c
            m, nu, Mn, Rn, Ub = carry
            rows = c * C + i
            G = jnp.where((rows >= start)[:, None], hist.grads(theta, c), 0.0)
            mc = _ema_rows(G, beta, m)  # unnormalised averages, carried over chunks
            nuc = _ema_rows(G * G, rho, nu)
            if bias_correction:
                Mc = mc / one_minus_pow(beta, rows + 1)[:, None]
                Rc = jnp.sqrt(nuc / one_minus_pow(rho, rows + 1)[:, None] + eps)
            else:
                Mc, Rc = mc, jnp.sqrt(nuc + eps)
            here = c == n // C
            j = n - c * C
            Mn = jnp.where(here, Mc[jnp.clip(j, 0, C - 1)], Mn)
            Rn = jnp.where(here, Rc[jnp.clip(j, 0, C - 1)], Rn)
            if order:  # kept for the backward pass (g_k comes again, free, with H_k v_k)
                Ub = jax.lax.dynamic_update_index_in_dim(Ub, Mc / Rc, c, 0)
            return mc[-1], nuc[-1], Mn, Rn, Ub

        buf = jnp.zeros((nc if order else 0, C) + theta.shape, theta.dtype)
        _, _, Mn, Rn, Ub = jax.lax.fori_loop(c0, c1, forward, (zero, zero, zero, zero, buf))
        if order == 0:
            return -Mn / Rn
        un = Mn / Rn

        def backward(t, carry):  # chunks c1-1 down to c0: S_k, then H_k (2 S_k + u^(n))
            after, two_L, two_P = carry
            c = c1 - 1 - t
            rows = c * C + i
            U = jnp.where((rows < n)[:, None], Ub[c], 0.0)
            S = jnp.flip(jnp.cumsum(jnp.flip(U, 0), 0), 0) + after  # S_k = sum_{l=k}^{n-1} u^(l)
            G, HV = hist.grads_and_hvps(theta, c, 2 * S + un)
            live = (rows >= start) & (rows <= n)
            e = jnp.maximum(n - rows, 0)
            wb = jnp.where(live, jnp.asarray(beta, dtype=float) ** e * (1 - beta), 0.0)
            wr = jnp.where(live, jnp.asarray(rho, dtype=float) ** e * (1 - rho), 0.0)
            return after + U.sum(0), two_L + wb @ HV, two_P + wr @ (G * HV)

        _, two_L_plus_L_bar, two_P_plus_P_bar = jax.lax.fori_loop(
            0, c1 - c0, backward, (zero, zero, zero))
        if bias_correction:
            two_L_plus_L_bar = two_L_plus_L_bar / one_minus_pow(beta, n + 1)
            two_P_plus_P_bar = two_P_plus_P_bar / one_minus_pow(rho, n + 1)
        L_den = 2 * Rn**3 if variant == "typo" else 2 * Rn
        return -Mn / Rn + h * (Mn * two_P_plus_P_bar / (2 * Rn**3) - two_L_plus_L_bar / L_den)

    return f


# The closed-form builders of the registry entry "adam" (bea.optimizer_registry.Builder: one
# signature for every kind, full batch when batches is None).


def _builder(order: int, variant: str = "paper", limit: bool = False) -> Callable[..., Field]:
    def build(loss: Callable, h, *, beta, rho, eps, batches: PyTree | None = None,
              num_steps: int | None = None) -> Field:
        del num_steps  # Adam's sums close in c_a(n) (full batch) or walk the history itself
        if batches is not None:
            if limit:
                raise ValueError("field 'limit' is the full-batch large-n limit (8); it has "
                                 "no mini-batch form")
            return field(loss, batches, h, beta, rho, eps, order=order, variant=variant)
        if limit:
            return full_batch.adam_limit_field(loss, h, beta, rho, eps)
        return full_batch.adam_field(loss, h, beta, rho, eps, order=order, variant=variant)

    return build


order0 = _builder(0)
order0.__doc__ = "Adam's zeroth-order field -M/R (Theorem 3.6, h -> 0; full batch: Remark 3.7)."
order1 = _builder(1)
order1.__doc__ = "Adam's first-order field: Theorem 3.6 (mini-batch), Remark 3.7 (full batch)."
order1_typo = _builder(1, "typo")
order1_typo.__doc__ = "Theorem 3.6 / Remark 3.7 with the typeset R^3 under the L term (ablation)."
limit = _builder(1, limit=True)
limit.__doc__ = "Equation (8): the large-n limit of Remark 3.7 (full batch only)."
