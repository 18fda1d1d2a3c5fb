"""Remark 3.7's finite-n coefficient c_a(n) and the finite-n coefficient of the modified
loss, in a module of their own so that training (``bea.nn``, which never imports the ODE
machinery of ``bea.fields``) and the fields (``bea.fields.full_batch`` re-exports ``c``)
share one implementation.

Remark 3.7's full-batch field is (docs/math.md, section 4; ``bea.fields.full_batch``)

    f(n, theta) = -g/R + h dN1 ((2 c_rho(n) + 1) g^2 / (2 R^3) - (2 c_beta(n) + 1) / (2 R)),

R = sqrt(g^2 + eps), dN1 = grad ||grad E||_{1,eps} = H (g / R). Where every |g_j| >>
sqrt(eps), g^2 / R^3 = 1 / R to first order, and

    f = -(1/R) (g + (h/2) ((2 c_beta(n) + 1) - (2 c_rho(n) + 1)) dN1)
      = -(1/R) grad (E + c(n) ||grad E||_{1,eps}),   c(n) = h (c_beta(n) - c_rho(n)),

a preconditioned gradient flow of the modified loss with the finite-n coefficient c(n);
as n grows, 2 c_a(n) + 1 -> (1+a)/(1-a) and c(n) -> eq. (8)'s
h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho)) (``bea.correction_coefficient``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

__all__ = ["c", "correction_coefficient_n"]

_SERIES = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600)


def _g(x):
    """1/expm1(x) - 1/x, smooth at 0 (-1/2 + x/12 - x^3/720 + ...); series below 0.1."""
    xs = jnp.where(x < 0.1, x, 0.05)
    series = -0.5 + xs * (_SERIES[0] + xs**2 * (_SERIES[1] + xs**2 * (_SERIES[2] + xs**2
                                                                       * _SERIES[3])))
    xd = jnp.where(x < 0.1, 1.0, x)
    direct = 1 / jnp.expm1(xd) - 1 / xd
    return jnp.where(x < 0.1, series, direct)


def c(a, n: Int[Array, ""] | int) -> Float[Array, ""]:
    """c_a(n) = a/(1-a) - (n+1) a^(n+1)/(1-a^(n+1)) (Remark 3.7's bracket), computed stably.

    With d = -log a, c_a(n) = 1/expm1(d) - (n+1)/expm1((n+1) d); writing 1/expm1(x) = 1/x + g(x)
    the 1/d terms cancel exactly and c_a(n) = g(d) - (n+1) g((n+1) d), with g smooth. This
    keeps full relative accuracy for a near 1 (c_0.999(0) = 0 exactly) and c_0(n) = 0.
    It is also the mean of j under weights a^j (1-a)/(1-a^(n+1)), j = 0..n.
    """
    a = jnp.asarray(a, dtype=float)
    d = -jnp.log(a)
    n1 = jnp.asarray(n, dtype=float) + 1
    val = _g(d) - n1 * _g(n1 * d)
    return jnp.where(a == 0, 0.0, val)


def correction_coefficient_n(h, beta, rho, n: Int[Array, ""] | int) -> Float[Array, ""]:
    """c(n) = h/2 ((2 c_beta(n) + 1) - (2 c_rho(n) + 1)) = h (c_beta(n) - c_rho(n)): the
    coefficient of ||grad E||_{1,eps} in the modified loss at step n, read off Remark
    3.7's full-batch field where |g_j| >> sqrt(eps) (module docstring). 0 at n = 0; tends
    to ``bea.correction_coefficient(h, beta, rho)`` (eq. (8)) as n grows."""
    return h * (c(beta, n) - c(rho, n))
