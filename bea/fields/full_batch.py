"""Full-batch closed forms: Remark 3.7 (Adam), Remark 3.4 (RMSProp), the large-n limit (8)
and the zeroth-order flows. One gradient and one Hessian-vector product per evaluation.

With N1(theta) = ||grad E||_{1,eps} and dN1 = H (g / R), Remark 3.7 gives

    R = sqrt(g^2 + eps), M = g, L = c_beta(n) dN1, Lbar = dN1, P = c_rho(n) g dN1, Pbar = g dN1,
    c_a(n) = a/(1-a) - (n+1) a^(n+1) / (1 - a^(n+1)),

so the field is  -g/R + h dN1 ( (2 c_rho + 1) g^2 / (2 R^3) - (2 c_beta + 1) / (2 R) ),
and as n grows (2 c_a + 1) -> (1+a)/(1-a): equation (8).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bea._finite_n import c
from bea._hvp import hvp
from bea.fields._history import one_minus_pow
from bea.fields._window import round_off_lags

__all__ = ["c", "adam_field", "rmsprop_field", "adam_limit_field", "rmsprop_limit_field"]


def _grad_and_dN1(loss, theta, eps):
    """g, R = sqrt(g^2 + eps) and dN1 = H (g / R): one gradient and one Hessian-vector
    product (:func:`bea._hvp.hvp`)."""
    g = jax.grad(loss)(theta)
    R = jnp.sqrt(g * g + eps)
    return g, R, hvp(loss, theta, g / R)[1]


def adam_field(loss: Callable, h, beta, rho, eps, *, order: int = 1, variant: str = "paper"):
    """Remark 3.7: full-batch Adam's modified field at step n, ``f(n, theta)``.

    ``order=0`` is the exact zeroth-order field -g/sqrt(g^2+eps); ``variant="typo"`` puts
    R^3 under the L term."""

    def f(n, theta):
        if order == 0:
            g = jax.grad(loss)(theta)
            return -g / jnp.sqrt(g * g + eps)
        g, R, dN1 = _grad_and_dN1(loss, theta, eps)
        kb = 2 * c(beta, n) + 1
        kr = 2 * c(rho, n) + 1
        L_den = 2 * R**3 if variant == "typo" else 2 * R
        return -g / R + h * dN1 * (kr * g * g / (2 * R**3) - kb / L_den)

    return f


def adam_limit_field(loss: Callable, h, beta, rho, eps):
    """Equation (8): the large-n limit of Remark 3.7 (c_a -> a/(1-a))."""

    def f(n, theta):
        del n
        g, R, dN1 = _grad_and_dN1(loss, theta, eps)
        kb, kr = (1 + beta) / (1 - beta), (1 + rho) / (1 - rho)
        return -g / R + h * dN1 * (kr * g * g - kb * R * R) / (2 * R**3)

    return f


def rmsprop_limit_field(loss: Callable, h, rho, eps):
    """Remark 3.4's large-n form, i.e. (8) with beta = 0."""
    return adam_limit_field(loss, h, 0.0, rho, eps)


def rmsprop_field(loss: Callable, h, rho, eps, num_steps: int, *, order: int = 1,
                  variant: str = "paper"):
    """Remark 3.4: full-batch RMSProp keeps the factors (1-rho^(l+1)) inside R^(l).

    R^(l) = sqrt((1-rho^(l+1)) g^2 + eps), u^(l) = g / R^(l), and with
    V = sum_{l<n} rho^(n-l) (1-rho^(l+1)) u^(l):  2P + Pbar = g H(2V + (1-rho^(n+1)) u^(n)),
    so one Hessian-vector product serves P and Pbar; Lbar = H u^(n). ``num_steps`` bounds n;
    the sum over l runs over the last W steps, W the window where rho^(n-l) >= 1e-18.
    """
    W = round_off_lags(rho)
    W = num_steps if W is None else min(num_steps, W)

    def f(n, theta):
        g = jax.grad(loss)(theta)
        bn = one_minus_pow(rho, n + 1)
        Rn = jnp.sqrt(bn * g * g + eps)
        un = g / Rn
        if order == 0:
            return -un
        l = n - 1 - jnp.arange(W)  # l = n-1, n-2, ..., n-W
        valid = (l >= 0)[:, None]
        bl = one_minus_pow(rho, jnp.maximum(l, 0) + 1)[:, None]
        wl = jnp.asarray(rho, dtype=float) ** (n - l)[:, None] * bl
        V = jnp.sum(jnp.where(valid, wl * g / jnp.sqrt(bl * g * g + eps), 0.0), axis=0)
        HV, Hu = jax.vmap(lambda v: hvp(loss, theta, v)[1])(jnp.stack([2 * V + bn * un, un]))
        L_den = 2 * Rn**3 if variant == "typo" else 2 * Rn
        return -un + h * (g * (g * HV) / (2 * Rn**3) - Hu / L_den)

    return f

