"""bea.fields.full_batch and bea.fields.special_cases: coefficients, limits, special cases."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea.fields import full_batch, special_cases
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


def test_example_3_5_rmsprop_large_eps_is_gd(logi):
    """RMSProp's field approaches -(g + h/(2 sqrt eps) H g)/sqrt(eps) as eps -> inf; the
    gap is O(rho/(1-rho) g^2/eps) relative, so it shrinks like 1/eps."""
    E, theta = logi
    h, rho = 0.01, 0.7
    g2 = float(jnp.max(jax.grad(E)(theta) ** 2))
    rels = []
    for eps in (1e2, 1e4, 1e6):
        f = full_batch.rmsprop_field(E, h, rho, eps, 100)(60, theta)
        ex = special_cases.example_3_5_field(E, h, eps)(60, theta)
        r = float(jnp.max(jnp.abs(f - ex)) / jnp.max(jnp.abs(ex)))
        assert r <= 10 * rho / (1 - rho) * g2 / eps
        rels.append(r)
    assert rels[1] < rels[0] / 50 and rels[2] < rels[1] / 50


def test_example_3_8_adam_large_eps_is_heavy_ball_at_large_n(logi):
    E, theta = logi
    h, beta, rho, eps = 0.01, 0.6, 0.8, 1e6

    def first_order_part(make, n):  # the h term alone: field(h) - field(h = 0)
        return make(h)(n, theta) - make(0.0)(n, theta)

    adam = lambda hh: full_batch.adam_field(E, hh, beta, rho, eps)  # noqa: E731
    f = first_order_part(adam, 500)
    ex = first_order_part(lambda hh: special_cases.example_3_8_field(E, hh, beta, eps), 500)
    assert float(jnp.max(jnp.abs(f - ex)) / jnp.max(jnp.abs(ex))) <= 1e-5
    # at finite n the coefficient is 2 c_beta(n) + 1, not (1+beta)/(1-beta): they differ
    f1 = first_order_part(adam, 1)
    assert float(jnp.max(jnp.abs(f1 - ex)) / jnp.max(jnp.abs(ex))) > 0.1


def test_barrett_dherin_gd_field():
    """-g - (h/2) H g = -grad(E + h/4 ||grad E||^2)."""
    p = bilinear()
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    h, theta = 0.01, p.theta0
    mod = lambda t: E(t) + h / 4 * jnp.sum(jax.grad(E)(t) ** 2)  # noqa: E731
    np.testing.assert_allclose(special_cases.gd_field(E, h)(0, theta), -jax.grad(mod)(theta),
                               rtol=1e-13)


def test_ghosh_gamma_values():
    """MATH.md section 5: gamma_n (1+beta)/(2(1-beta)^3) = 0.5, 2.145, 4.91105, 15.3592 at
    n = 0, 1, 2, 5 for beta = 0.7."""
    beta = 0.7
    vals = [float(special_cases.gamma(beta, n)) * (1 + beta) / (2 * (1 - beta) ** 3)
            for n in (0, 1, 2, 5)]
    np.testing.assert_allclose(vals, [0.5, 2.145, 4.91105, 15.3592], rtol=2e-6)
    assert float(special_cases.gamma(beta, 10**6)) == pytest.approx(1.0, rel=1e-14)


def test_heavy_ball_minibatch_with_identical_batches_is_ghosh(logi):
    p = logistic(num_examples=64, dim=4)
    E, theta = logi
    K = 7
    same = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (K,) + x.shape), p.data)
    for n in (0, 3, 6):
        a = special_cases.heavy_ball_minibatch_field(p.loss, same, 0.02, 0.7)(n, theta)
        b = special_cases.heavy_ball_field(E, 0.02, 0.7)(n, theta)
        np.testing.assert_allclose(a, b, rtol=1e-12)
