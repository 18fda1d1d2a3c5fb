"""bea._norms: the perturbed one-norm, its gradient H g/R, and the coefficient of (8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea import _norms as norms
from bea.problems import logistic


def test_norms_over_a_pytree():
    v = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[0.0]])}
    assert float(norms.one_norm(v)) == 7.0
    assert float(norms.two_norm(v)) == 5.0
    eps = 1e-2
    expected = np.sqrt(9 + eps) + np.sqrt(16 + eps) + np.sqrt(eps)
    assert float(norms.perturbed_one_norm(v, eps)) == pytest.approx(expected, rel=1e-15)
    # eps -> 0 gives the one-norm; eps large gives about P sqrt(eps)
    assert float(norms.perturbed_one_norm(v, 0.0)) == 7.0


def test_grad_of_perturbed_one_norm_is_H_g_over_R():
    """grad ||grad E||_{1,eps} by autodiff of the norm equals H (g / sqrt(g^2 + eps)), the
    single Hessian-vector product of Remarks 3.4/3.7."""
    p = logistic(num_examples=32, dim=5)
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    eps = 1e-3
    direct = jax.grad(lambda t: norms.perturbed_one_norm(jax.grad(E)(t), eps))(p.theta0)
    np.testing.assert_allclose(norms.grad_perturbed_one_norm(E, p.theta0, eps), direct,
                               rtol=1e-12)


def test_correction_coefficient_sign():
    """h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho)): positive (penalising) iff beta > rho."""
    assert norms.correction_coefficient(0.1, 0.9, 0.999) < 0
    assert norms.correction_coefficient(0.1, 0.99, 0.9) > 0
    assert norms.correction_coefficient(0.1, 0.9, 0.9) == 0
    assert norms.correction_coefficient(0.2, 0.5, 0.0) == pytest.approx(0.1 * 2)
