"""bea.fields.full_batch: Remark 3.7's coefficients c_a(n), the large-n limit (8), the window."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import rel

from bea.fields import full_batch
from bea.fields._history import one_minus_pow
from bea.problems import bilinear, logistic


def c_exact(a: Fraction, n: int) -> float:
    """c_a(n) = sum_j j a^j (1-a) / (1 - a^(n+1)) in exact rational arithmetic."""
    if a == 0:
        return 0.0
    num = sum(j * a**j for j in range(n + 1)) * (1 - a)
    return float(num / (1 - a ** (n + 1)))


@pytest.mark.parametrize("a", ["0", "0.5", "0.9", "0.99", "0.999", "0.9999"])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 50, 1000])
def test_c_matches_exact_sum(a, n):
    exact = c_exact(Fraction(a), n)
    got = float(full_batch.c(float(a), n))
    assert abs(got - exact) <= 1e-13 * max(1.0, abs(exact)), (got, exact)


def test_c_stable_near_one_and_limit():
    """c_0.999(0) is exactly 0 (the naive closed form gives ~1e-12) and c_a(n) -> a/(1-a)."""
    assert float(full_batch.c(0.999, 0)) == 0.0
    assert float(full_batch.c(0.999, 1)) == pytest.approx(c_exact(Fraction("0.999"), 1), rel=1e-14)
    for a in (0.5, 0.9, 0.99):
        assert float(full_batch.c(a, 100000)) == pytest.approx(a / (1 - a), rel=1e-12)
    # traced n works under jit and vmap
    cs = jax.jit(jax.vmap(lambda n: full_batch.c(0.9, n)))(jnp.arange(5))
    np.testing.assert_allclose(cs, [c_exact(Fraction("0.9"), n) for n in range(5)], rtol=1e-13)


def test_one_minus_pow_is_accurate():
    assert float(one_minus_pow(0.999, 1)) == pytest.approx(1e-3, rel=1e-14)
    assert float(one_minus_pow(0.0, 5)) == 1.0


@pytest.fixture(scope="module")
def logi():
    p = logistic(num_examples=64, dim=4)
    return (lambda t: p.loss(t, p.data)), p.theta0


@pytest.mark.parametrize("opt", ["adam", "rmsprop"])
def test_finite_n_field_tends_to_limit_8(logi, opt):
    E, theta = logi
    h, beta, rho, eps = 0.01, 0.6, 0.8, 1e-3
    lim = (full_batch.adam_limit_field(E, h, beta, rho, eps) if opt == "adam"
           else full_batch.rmsprop_limit_field(E, h, rho, eps))(0, theta)
    f = (full_batch.adam_field(E, h, beta, rho, eps) if opt == "adam"
         else full_batch.rmsprop_field(E, h, rho, eps, 400))
    f = jax.jit(f)
    gaps = [float(jnp.max(jnp.abs(f(n, theta) - lim))) for n in (0, 5, 20, 80, 399)]
    assert gaps[0] > 1e-4  # finite n differs...
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False))  # ...less and less...
    assert gaps[-1] <= 1e-12 * float(jnp.max(jnp.abs(lim)))  # ...and reaches (8)


def test_adam_limit_is_equation_8_as_printed(logi):
    """(8): -g/R + h ((1+rho)/(1-rho) g^2 - (1+beta)/(1-beta) R^2) / (2 R^3) grad ||g||_{1,eps}."""
    E, theta = logi
    h, beta, rho, eps = 0.01, 0.6, 0.8, 1e-3
    g = jax.grad(E)(theta)
    R = jnp.sqrt(g * g + eps)
    dN1 = jax.grad(lambda t: jnp.sum(jnp.sqrt(jax.grad(E)(t) ** 2 + eps)))(theta)
    kr, kb = (1 + rho) / (1 - rho), (1 + beta) / (1 - beta)
    expected = -g / R + h * (kr * g * g - kb * R * R) / (2 * R**3) * dN1
    np.testing.assert_allclose(full_batch.adam_limit_field(E, h, beta, rho, eps)(0, theta),
                               expected, rtol=1e-12)


def test_rmsprop_window_changes_no_digit(monkeypatch):
    """The window of full-batch RMSProp's history sum (weights rho^(n-l) < 1e-18 dropped)
    gives the same field as the full sum, to 1e-15."""
    p = bilinear()
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    theta = jnp.array([2.1, 1.3])
    n_max = 400
    assert full_batch.round_off_lags(0.5) < n_max  # the one window rule, bea.fields._window
    fw = jax.jit(full_batch.rmsprop_field(E, 0.01, 0.5, 1e-3, n_max))
    monkeypatch.setattr(full_batch, "round_off_lags", lambda rho: None)  # the whole history
    ff = jax.jit(full_batch.rmsprop_field(E, 0.01, 0.5, 1e-3, n_max))
    for n in (0, 3, 70, 399):
        assert rel(fw(n, theta), ff(n, theta)) < 1e-15
