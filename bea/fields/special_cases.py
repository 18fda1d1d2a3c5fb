"""Special cases: GD (Barrett and Dherin 2021), heavy ball (Ghosh et al. 2023), and the
large-eps limits of RMSProp (Example 3.5) and Adam (Example 3.8)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from bea._hvp import hvp
from bea._typing import Field
from bea.fields._history import Direct, ema_all, one_minus_pow, suffix_sum

__all__ = ["gd_field", "gamma", "heavy_ball_field", "heavy_ball_minibatch_field",
           "example_3_5_field", "example_3_8_field", "gd_order0", "gd_order1",
           "heavy_ball_order0", "heavy_ball_order1", "heavy_ball_limit"]


def _g_Hg(loss, theta):
    """g and H g: one gradient and one Hessian-vector product (:func:`bea._hvp.hvp`)."""
    g = jax.grad(loss)(theta)
    return g, hvp(loss, theta, g)[1]


def gd_field(loss: Callable, h, *, order: int = 1, batches: PyTree | None = None):
    """Barrett and Dherin: GD follows -g - (h/2) H g = -grad(E + h/4 ||g||^2) to O(h^2).

    With ``batches``, step n uses batch n (memoryless, so the field is the same per step)."""

    hist = None if batches is None else Direct(loss, batches)

    def f(n, theta):
        E = loss if hist is None else hist.loss_at(n)
        if order == 0:
            return -jax.grad(E)(theta)
        g, Hg = _g_Hg(E, theta)
        return -g - 0.5 * h * Hg

    return f


def gamma(beta, n: Int[Array, ""] | int) -> Float[Array, ""]:
    """Ghosh et al.'s gamma_n = (1 - beta^(2n+2)) - 4 (n+1) beta^(n+1) (1-beta)/(1+beta)."""
    beta = jnp.asarray(beta, dtype=float)
    return one_minus_pow(beta, 2 * n + 2) - 4 * (n + 1) * beta ** (n + 1) * (1 - beta) / (1 + beta)


def heavy_ball_field(loss: Callable, h, beta, *, order: int = 1, limit: bool = False):
    """Ghosh et al. (full batch, trace form v = g + beta v, theta -= h v):

        -(1-beta^(n+1))/(1-beta) g - h gamma_n (1+beta) / (2 (1-beta)^3) H g;

    ``limit=True`` takes n -> infinity (beta^(n+1) -> 0, gamma_n -> 1), Section 4's
    -g/(1-beta) - h (1+beta)/(2(1-beta)^3) H g.
    """

    def f(n, theta):
        a = 1 / (1 - beta) if limit else one_minus_pow(beta, n + 1) / (1 - beta)
        if order == 0:
            return -a * jax.grad(loss)(theta)
        g, Hg = _g_Hg(loss, theta)
        gam = 1.0 if limit else gamma(beta, n)
        return -a * g - h * gam * (1 + beta) / (2 * (1 - beta) ** 3) * Hg

    return f


def heavy_ball_minibatch_field(loss: Callable, batches: PyTree, h, beta, *, order: int = 1):
    """Mini-batch heavy ball. With m_l = sum_{k<=l} beta^(l-k) g_k (so f_l = -m_l) and
    d_k = sum_{l=k}^{n-1} m_l, the first-order field (docs/math.md, section 5) is

        -m_n - h sum_{k<=n} beta^(n-k) H_k (d_k + m_n / 2);

    with identical batches it reduces to Ghosh et al.'s gamma_n form."""

    hist = Direct(loss, batches)

    def f(n, theta):
        G = hist.grads(theta)
        K = G.shape[0]
        m = ema_all(G, beta) / (1 - beta)  # sum_{k<=l} beta^(l-k) g_k
        mn = m[n]
        if order == 0:
            return -mn
        D = suffix_sum(m, n)
        HV = hist.grads_and_hvps(theta, 0, D + 0.5 * mn)[1]
        k = jnp.arange(K)
        w = jnp.where(k <= n, jnp.asarray(beta, dtype=float) ** jnp.maximum(n - k, 0), 0.0)
        return -mn - h * (w @ HV)

    return f


def example_3_5_field(loss: Callable, h, eps):
    """Example 3.5: RMSProp with eps >> g^2 follows GD's flow at rate 1/sqrt(eps),
    -(1/sqrt eps) grad(E + h/(4 sqrt eps) ||g||^2) = -(g + h/(2 sqrt eps) H g)/sqrt eps."""

    def f(n, theta):
        del n
        g, Hg = _g_Hg(loss, theta)
        s = jnp.sqrt(eps)
        return -(g + h / (2 * s) * Hg) / s

    return f


def example_3_8_field(loss: Callable, h, beta, eps):
    """Example 3.8: Adam with eps >> g^2 at large n follows heavy ball's flow,
    -(1/sqrt eps) grad(E + h/(4 sqrt eps) (1+beta)/(1-beta) ||g||^2)."""

    def f(n, theta):
        del n
        g, Hg = _g_Hg(loss, theta)
        s = jnp.sqrt(eps)
        return -(g + h / (2 * s) * (1 + beta) / (1 - beta) * Hg) / s

    return f


# The closed-form builders of the registry entries "gd" and "heavy_ball"
# (bea.optimizer_registry.Builder: one signature for every kind, full batch when batches is
# None).


def gd_order0(loss: Callable, h, *, beta, rho, eps, batches: PyTree | None = None,
              num_steps: int | None = None) -> Field:
    """GD's zeroth-order field -g_n."""
    return gd_field(loss, h, order=0, batches=batches)


def gd_order1(loss: Callable, h, *, beta, rho, eps, batches: PyTree | None = None,
              num_steps: int | None = None) -> Field:
    """Barrett and Dherin's -g_n - (h/2) H_n g_n."""
    return gd_field(loss, h, order=1, batches=batches)


def _heavy_ball(order: int, limit: bool = False):
    def build(loss: Callable, h, *, beta, rho, eps, batches: PyTree | None = None,
              num_steps: int | None = None) -> Field:
        if batches is None:
            return heavy_ball_field(loss, h, beta, order=order, limit=limit)
        if limit:
            raise ValueError("field 'limit' is the full-batch large-n limit; it has no "
                             "mini-batch form")
        return heavy_ball_minibatch_field(loss, batches, h, beta, order=order)

    return build


heavy_ball_order0 = _heavy_ball(0)
heavy_ball_order0.__doc__ = "Heavy ball's zeroth-order field -m_n (full batch: Ghosh et al.)."
heavy_ball_order1 = _heavy_ball(1)
heavy_ball_order1.__doc__ = "Ghosh et al.'s first-order field (mini-batch: docs/math.md, sec. 5)."
heavy_ball_limit = _heavy_ball(1, limit=True)
heavy_ball_limit.__doc__ = "Ghosh et al.'s n -> infinity form (full batch only)."
