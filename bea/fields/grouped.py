"""Theorem 3.6's field with the history grouped by distinct batch (docs/math.md, section 7).

When step k uses one of B batches, b(k) = ``ids[k]``, then at the current theta
g_k = ghat_b(k) and H_k = Hhat_b(k), and the history sums of Theorem 3.6 regroup:

    2L + Lbar = sum_b Hhat_b Tbeta_b,          Tbeta_b = sum_{k<=n, b(k)=b} wbeta_k (2 S_k + u^(n))
    2P + Pbar = sum_b ghat_b * Hhat_b Trho_b,   Trho_b  = sum_{k<=n, b(k)=b} wrho_k  (2 S_k + u^(n))

with w_k = a^(n-k) (1-a) (the 1/(1-a^(n+1)) bias corrections are applied to the sums) and
M^(l), R^(l), u^(l) = M^(l)/R^(l) from their recursions over l with g_l = ghat_b(l). One
evaluation costs B gradients and 2B Hessian-vector products (forward-over-reverse, the two
tangents Tbeta_b, Trho_b of batch b sharing one primal) plus O(n p) elementwise work, exact: the
same field as the direct sum to round-off. M^(n) and R^(n) (all of order 0) need no
recursion: m^(n) = sum_b cbeta_b(n) ghat_b and nu^(n) = sum_b crho_b(n) ghat_b^2 with the
per-batch weight sums c_b(n) = sum_{k<=n, b(k)=b} a^(n-k) (1-a), tabulated once per field
for every n (a K x B table, by their recursion c(n) = a c(n-1) + (1-a) e_b(n)), so order 0
costs B gradients and O(B p), whatever n is.

The elementwise part of order 1 is linear in its recursions, so it comes two ways
(``scan``):

- ``"sequential"``: one forward loop over the slots start..n-1, one slot per trip (a
  ``fori_loop`` whose trip count follows n: O(n p) work), carrying m, nu, the prefix sum
  P_{k-1} = sum_{l=start}^{k-1} u^(l) and the per-batch sums Q_b = sum_{k: b(k)=b} w_k
  P_{k-1}; then S_k = S - P_{k-1} with S = P_{n-1} gives T_b = c_b (2 S + u^(n)) - 2 Q_b:
  no reverse pass and no O(n p) buffer. The subtraction costs a relative round-off of about
  n (1-a) machine epsilons in T_b (measured 3e-13 of the field at n = 32000 against the
  direct sum).
- ``"associative"``: the recursions m_l = a m_{l-1} + (1-a) x_l and the suffix sums S_k as
  parallel prefix scans (:func:`jax.lax.associative_scan`, depth O(log n)) over a static
  length, the smallest of a ladder of powers of two that holds slots start..n (chosen by
  ``lax.switch``), so the work stays O(n p) within a factor 2; the segment sums over
  b(k) = b by ``segment_sum``.

On the CPU the sequential loop is much faster (benchmark 6, docs/benchmarks.md: about 1.7 ns
per slot and coordinate against ~60 for the prefix scans at n = 1000 B); on an accelerator
the prefix scans are the intended default (:func:`default_scan`).

The round-off window of :mod:`bea.fields._window` applies as in the direct field: with
2W < K only the slots n-2W+1..n enter the loop (the first W as warm-up of the averages;
the tabulated c_b(n) keep their terms below a^(2W) < 1e-36, which change no digit).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from bea._hvp import hvp
from bea.fields._history import GroupedHistory, one_minus_pow
from bea.fields._window import window_length

__all__ = ["grouped_field", "SCANS", "default_scan", "affine_scan"]

SCANS = ("sequential", "associative")
_MIN_BUCKET = 64  # the associative scan's shortest static length


def default_scan(backend: str | None = None) -> str:
    """The elementwise scan used when none is given: ``"sequential"`` on CPU (measured
    faster there: benchmark 6, docs/benchmarks.md), ``"associative"`` on accelerators
    (docs/math.md, section 7: depth O(log n) instead of n)."""
    backend = jax.default_backend() if backend is None else backend
    return "sequential" if backend == "cpu" else "associative"


def affine_scan(a, X: Float[Array, "L p"], reverse: bool = False) -> Float[Array, "L p"]:
    """A_i = a A_{i-1} + X_i from A_{-1} = 0 for every i, as a parallel prefix scan: the
    elements (a, X_i) compose as (a1, x1) then (a2, x2) = (a1 a2, a2 x1 + x2)."""
    A = jnp.full((X.shape[0],) + (1,) * (X.ndim - 1), a, X.dtype)

    def compose(e1, e2):
        a1, x1 = e1
        a2, x2 = e2
        return a1 * a2, a2 * x1 + x2

    return jax.lax.associative_scan(compose, (A, X), reverse=reverse)[1]


class _Tables(NamedTuple):
    """Per-history scalars, computed once per field (not per evaluation): EMA weights by
    lag, bias-correction reciprocals by slot, and the per-batch weight sums by step."""

    wb: Float[Array, " K"]  # beta^e (1-beta) at lag e = n - k
    wr: Float[Array, " K"]  # rho^e (1-rho)
    ib: Float[Array, " K"]  # 1/(1-beta^(l+1)) (1 without bias correction)
    ir: Float[Array, " K"]  # 1/(1-rho^(l+1))
    cb: Float[Array, "K B"]  # cbeta_b(n) = sum_{k<=n, b(k)=b} beta^(n-k) (1-beta)
    cr: Float[Array, "K B"]  # crho_b(n)


@partial(jax.jit, static_argnums=(1, 4))  # one program, not one dispatch per scan level
def tables(ids, B, beta, rho, bias_correction) -> _Tables:
    e = jnp.arange(ids.shape[0])
    one = jnp.ones(e.shape)

    def lag(a):
        return jnp.asarray(a, dtype=float) ** e * (1 - a)

    def sums(a):  # c(n) = a c(n-1) + (1-a) onehot(b(n)): one scan over the history
        return affine_scan(a, (1 - a) * jax.nn.one_hot(ids, B, dtype=float))

    ib = 1 / one_minus_pow(beta, e + 1) if bias_correction else one
    ir = 1 / one_minus_pow(rho, e + 1) if bias_correction else one
    return _Tables(lag(beta), lag(rho), ib, ir, sums(beta), sums(rho))


def sequential(G, ids, n, start, beta, rho, eps, t: _Tables):
    """(S, Qbeta, Qrho) by one forward loop over the slots start..n-1, one slot per trip:
    S = sum_{l=start}^{n-1} u^(l) and Q_b = sum_{start<=k<=n, b(k)=b} w_k P_{k-1}.

    The pairs (m, nu), (ghat_b, ghat_b^2), (Qbeta_b, Qrho_b) and (wbeta, wrho) are stacked
    on an axis of 2 so that each trip is one recursion and one scatter-add of a (2, p) row:
    measured 1.7 ns per slot and coordinate on the CPU instead of 2.2 ns with them apart."""
    a = jnp.array([[beta], [rho]], dtype=G.dtype)
    G2 = jnp.stack([G, G * G], 1)  # (B, 2, p)
    w2 = jnp.stack([t.wb, t.wr], 1)  # (K, 2)

    def body(l, carry):  # slot l < n: its averages, Q_b(l) += w_l P_{l-1}, then P += u^(l)
        mnu, P, Q = carry
        b = ids[l]
        mnu = a * mnu + (1 - a) * G2[b]
        u = mnu[0] * t.ib[l] / jnp.sqrt(mnu[1] * t.ir[l] + eps)
        Q = Q.at[b].add(w2[n - l][:, None] * P)
        return mnu, P + u, Q

    init = (jnp.zeros_like(G2[0]), jnp.zeros_like(G[0]), jnp.zeros_like(G2))
    _, S, Q = jax.lax.fori_loop(start, n, body, init)
    Q = Q.at[ids[n]].add(w2[0][:, None] * S)  # slot n itself: lag 0, P_{n-1} = S
    return S, Q[:, 0], Q[:, 1]


def associative(G, ids, n, start, beta, rho, eps, t: _Tables, sizes):
    """(Tbeta, Trho) by parallel prefix scans over the smallest static length in ``sizes``
    that holds the slots start..n."""
    K, B = ids.shape[0], G.shape[0]

    def branch(s):
        def run(G, n, start):
            rows = n + 1 - s + jnp.arange(s)  # the last row is slot n
            live = rows >= start
            r = jnp.clip(rows, 0, K - 1)
            b = ids[r]
            g = jnp.where(live[:, None], G[b], 0.0)
            m = affine_scan(beta, (1 - beta) * g)
            nu = affine_scan(rho, (1 - rho) * g * g)
            U = m * t.ib[r][:, None] / jnp.sqrt(nu * t.ir[r][:, None] + eps)
            un = U[-1]
            Um = jnp.where((live & (rows < n))[:, None], U, 0.0)
            S = jax.lax.associative_scan(jnp.add, Um, reverse=True)  # S_k = sum_{l=k}^{n-1}
            V = 2 * S + un
            lag = jnp.clip(n - rows, 0, K - 1)
            wb, wr = jnp.where(live, t.wb[lag], 0.0), jnp.where(live, t.wr[lag], 0.0)
            return (jax.ops.segment_sum(wb[:, None] * V, b, num_segments=B),
                    jax.ops.segment_sum(wr[:, None] * V, b, num_segments=B))

        return run

    if len(sizes) == 1:
        return branch(sizes[0])(G, n, start)
    j = jnp.searchsorted(jnp.asarray(sizes), n + 1 - start)  # first size >= live length
    return jax.lax.switch(j, [branch(s) for s in sizes], G, n, start)


def bucket_sizes(L: int) -> tuple[int, ...]:
    """Powers of two from _MIN_BUCKET up, capped at L (the longest live length)."""
    sizes, s = [], _MIN_BUCKET
    while s < L:
        sizes.append(s)
        s *= 2
    return tuple(sizes) + (L,)


def grouped_field(hist: GroupedHistory, h, beta, rho, eps, *, order: int = 1,
                  variant: str = "paper", bias_correction: bool = True, window: bool = True,
                  scan: str | None = None):
    """Theorem 3.6's field ``f(n, theta)`` on a grouped history (docs/math.md, section 7,
    :class:`~bea.fields._history.GroupedHistory`: the loss, the B distinct batches, b(k));
    the arguments as in :func:`bea.fields.adam_fields.field`, plus ``scan`` (one of :data:`SCANS`,
    default :func:`default_scan`) for the elementwise recursions of order 1."""
    scan = default_scan() if scan is None else scan
    if scan not in SCANS:
        raise ValueError(f"unknown scan {scan!r}; use 'sequential' or 'associative'")
    ids = hist.ids
    K, B = ids.shape[0], hist.num_batches
    L_win = window_length(beta, rho, K) if window else None
    sizes = bucket_sizes(K if L_win is None else L_win)
    t = tables(ids, B, beta, rho, bias_correction)

    def hvps(theta, Tb, Tr):  # Hhat_b Tbeta_b and Hhat_b Trho_b: 2B products, one primal per b
        HV = hist.each(lambda E, V: jax.vmap(lambda v: hvp(E, theta, v)[1])(V), 0,
                       jnp.stack([Tb, Tr], 1))  # (B, 2, p)
        return HV[:, 0], HV[:, 1]

    def f(n, theta):
        n = jnp.asarray(n)
        start = 0 if L_win is None else jnp.maximum(n - L_win + 1, 0)
        G = hist.grads(theta)  # ghat_b: B gradients
        cb, cr = t.cb[n], t.cr[n]
        Mn = (cb @ G) * t.ib[n]  # M^(n) = sum_b cbeta_b ghat_b / (1-beta^(n+1))
        Rn = jnp.sqrt((cr @ (G * G)) * t.ir[n] + eps)
        if order == 0:
            return -Mn / Rn
        if scan == "sequential":
            S, Qb, Qr = sequential(G, ids, n, start, beta, rho, eps, t)
            V = 2 * S + Mn / Rn  # S_k = S - P_{k-1}, so T_b = c_b (2 S + u^(n)) - 2 Q_b
            Tb, Tr = cb[:, None] * V - 2 * Qb, cr[:, None] * V - 2 * Qr
        else:
            Tb, Tr = associative(G, ids, n, start, beta, rho, eps, t, sizes)
        HTb, HTr = hvps(theta, Tb, Tr)
        two_L_plus_L_bar = HTb.sum(0) * t.ib[n]
        two_P_plus_P_bar = (G * HTr).sum(0) * t.ir[n]
        L_den = 2 * Rn**3 if variant == "typo" else 2 * Rn
        return -Mn / Rn + h * (Mn * two_P_plus_P_bar / (2 * Rn**3) - two_L_plus_L_bar / L_den)

    return f
