"""bea.fields.special_cases: Barrett-Dherin (GD), Ghosh et al. (heavy ball, full and
mini-batch), and the large-eps Examples 3.5 and 3.8."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import identical

from bea.fields import full_batch, special_cases
from bea.problems import bilinear, logistic


@pytest.fixture(scope="module")
def logi():
    p = logistic(num_examples=64, dim=4)
    return (lambda t: p.loss(t, p.data)), p.theta0


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
    """docs/math.md, section 5: gamma_n (1+beta)/(2(1-beta)^3) = 0.5, 2.145, 4.91105, 15.3592 at
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
    same = identical(p, K)
    for n in (0, 3, 6):
        a = special_cases.heavy_ball_minibatch_field(p.loss, same, 0.02, 0.7)(n, theta)
        b = special_cases.heavy_ball_field(E, 0.02, 0.7)(n, theta)
        np.testing.assert_allclose(a, b, rtol=1e-12)
