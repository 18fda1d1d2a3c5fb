"""Theorem 3.3: the first-order modified equation of mini-batch RMSProp (Definition 3.1).

On [nh, (n+1)h], with u^(l) = g_l / R^(l) and every quantity at the current theta:

    dtheta_j/dt = -g_nj/R_j + h ( g_nj (2 P_j + Pbar_j) / (2 R_j^3) - (H_n u^(n))_j / (2 R_j) )

    R_j^(l)  = sqrt( sum_{k<=l} rho^(l-k) (1-rho) g_kj^2 + eps )          (no bias correction)
    P_j      = sum_{k<=n} rho^(n-k) (1-rho) g_kj (H_k sum_{l=k}^{n-1} u^(l))_j
    Pbar_j   = sum_{k<=n} rho^(n-k) (1-rho) g_kj (H_k u^(n))_j

As in Theorem 3.6, the typeset (4) shows R_j^3 under the Hessian term; 2 R_j is right
(docs/math.md, section 3); ``variant="typo"`` keeps the typeset form as an ablation.
The building blocks ``R``, ``P``, ``P_bar`` are written out from Theorem 3.3 on their own;
the fused :func:`field` is Theorem 3.6's at beta = 0 without bias corrections, and the
tests check one against the other.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

from bea._typing import Field
from bea.fields import full_batch
from bea.fields._history import Direct, ema_all, suffix_sum

__all__ = ["R", "P", "P_bar", "field", "order0", "order1", "order1_typo", "limit"]


def _R_all(G, rho, eps):
    return jnp.sqrt(ema_all(G * G, rho) + eps)


def _rho_weights(rho, n, K):
    k = jnp.arange(K)
    return jnp.where(k <= n, jnp.asarray(rho, dtype=float) ** jnp.maximum(n - k, 0) * (1 - rho),
                     0.0)


def R(loss, theta, batches, n, rho, eps) -> Float[Array, " p"]:
    """R^(n)(theta) = sqrt(sum_{k<=n} rho^(n-k)(1-rho) g_k^2 + eps) of Theorem 3.3."""
    return _R_all(Direct(loss, batches).grads(theta), rho, eps)[n]


def P(loss, theta, batches, n, rho, eps) -> Float[Array, " p"]:
    """P^(n) of Theorem 3.3."""
    hist = Direct(loss, batches)
    G = hist.grads(theta)
    S = suffix_sum(G / _R_all(G, rho, eps), n)
    return _rho_weights(rho, n, G.shape[0]) @ (G * hist.grads_and_hvps(theta, 0, S)[1])


def P_bar(loss, theta, batches, n, rho, eps) -> Float[Array, " p"]:
    """Pbar^(n) of Theorem 3.3."""
    hist = Direct(loss, batches)
    G = hist.grads(theta)
    un = (G / _R_all(G, rho, eps))[n]
    HU = hist.grads_and_hvps(theta, 0, jnp.broadcast_to(un, G.shape))[1]
    return _rho_weights(rho, n, G.shape[0]) @ (G * HU)


def field(loss: Callable, batches, h, rho, eps, *, order: int = 1, variant: str = "paper",
          window: bool = True, chunk: int = 8, scan: str | None = None):
    """The modified vector field (4) of Theorem 3.3, ``f(n, theta)``, for mini-batch RMSProp.

    Theorem 3.3 is Theorem 3.6 at beta = 0 without the bias corrections (M^(l) = g_l, the
    L term reduces to H_n u^(n)), so the fused field is :func:`bea.fields.adam_fields.field` there:
    the same chunked O(n) walk of the history and the same round-off window, and the same
    grouped evaluation when ``batches`` is a :class:`~bea.problems.Grouped` history
    (docs/math.md, section 7: B gradients, 2B Hessian-vector products; ``scan`` as there).
    ``tests/test_fields_adam.py`` checks it against the theorem written out with this
    module's own ``R``, ``P``, ``P_bar``, and against Remark 3.4."""
    from bea.fields import adam_fields as adam

    return adam.field(loss, batches, h, 0.0, rho, eps, order=order, variant=variant,
                      bias_correction=False, window=window, chunk=chunk, scan=scan)


# The closed-form builders of the registry entry "rmsprop" (bea.optimizer_registry.Builder:
# one signature for every kind, full batch when batches is None).


def _builder(order: int, variant: str = "paper", limit: bool = False) -> Callable[..., Field]:
    def build(loss: Callable, h, *, beta, rho, eps, batches=None,
              num_steps: int | None = None) -> Field:
        del beta  # RMSProp has no first moment
        if batches is not None:
            if limit:
                raise ValueError("field 'limit' is the full-batch large-n limit (8); it has "
                                 "no mini-batch form")
            return field(loss, batches, h, rho, eps, order=order, variant=variant)
        if limit:
            return full_batch.rmsprop_limit_field(loss, h, rho, eps)
        if num_steps is None:
            raise ValueError("full-batch RMSProp's field needs num_steps")
        return full_batch.rmsprop_field(loss, h, rho, eps, num_steps, order=order,
                                        variant=variant)

    return build


order0 = _builder(0)
order0.__doc__ = "RMSProp's zeroth-order field -g/R (Theorem 3.3, h -> 0; full batch: Remark 3.4)."
order1 = _builder(1)
order1.__doc__ = "RMSProp's first-order field: Theorem 3.3 (mini-batch), Remark 3.4 (full batch)."
order1_typo = _builder(1, "typo")
order1_typo.__doc__ = "Theorem 3.3 / Remark 3.4 with the typeset R^3 under the Hessian term."
limit = _builder(1, limit=True)
limit.__doc__ = "Remark 3.4's large-n form, (8) at beta = 0 (full batch only)."
