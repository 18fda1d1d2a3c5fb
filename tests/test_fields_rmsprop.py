"""bea.fields.rmsprop_fields (Theorem 3.3): the fused field against the theorem written out, the
full-batch reduction (Remark 3.4), and the window it shares with Theorem 3.6."""

import jax
import numpy as np
import pytest
from _helpers import identical, rel, small_net

from bea.fields import _window, full_batch
from bea.fields import adam_fields as adam
from bea.fields import rmsprop_fields as rmsprop
from bea.problems import batch_sequence, make_problem, quadratic

K = 6


@pytest.fixture(scope="module")
def net():
    return small_net(K)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("n,chunk", [(0, 8), (K - 1, 8), (K - 1, 4), (3, 1)])
def test_rmsprop_field_is_theorem_3_3(net, n, order, chunk):
    """The fused RMSProp field (Theorem 3.6's at beta = 0, no bias corrections) equals
    Theorem 3.3 written out with rmsprop.R, P, P_bar (their own code), and the rho bias
    correction is live: with it the fields differ."""
    p, theta, b = net
    h, rho, eps = 0.05, 0.7, 1e-3

    @jax.jit
    def theorem(theta):
        args = (p.loss, theta, b, n)
        R = rmsprop.R(*args, rho, eps)
        g = jax.grad(p.loss)(theta, jax.tree_util.tree_map(lambda x: x[n], b))
        if order == 0:
            return -g / R
        P, Pb = rmsprop.P(*args, rho, eps), rmsprop.P_bar(*args, rho, eps)
        bn = jax.tree_util.tree_map(lambda x: x[n], b)
        Hu = jax.jvp(lambda t: jax.grad(p.loss)(t, bn), (theta,), (g / R,))[1]
        return -g / R + h * (g * (2 * P + Pb) / (2 * R**3) - Hu / (2 * R))

    r = jax.jit(rmsprop.field(p.loss, b, h, rho, eps, order=order, chunk=chunk))(n, theta)
    assert rel(r, theorem(theta)) <= 1e-12
    c = jax.jit(adam.field(p.loss, b, h, 0.0, rho, eps, order=order))(n, theta)
    if n > 0 or order == 1:
        assert rel(c, r) > 1e-6


@pytest.mark.parametrize("variant", ["paper", "typo"])
@pytest.mark.parametrize("n", [0, K - 1])
def test_minibatch_with_identical_batches_is_full_batch(n, variant):
    """Theorem 3.3 fed E_k = E equals Remark 3.4 (the factors (1 - rho^(l+1)) included)."""
    p = quadratic(num_examples=32, dim=5)
    theta = p.theta0
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    h, rho, eps = 0.02, 0.9, 1e-2
    mini = jax.jit(rmsprop.field(p.loss, identical(p, K), h, rho, eps, variant=variant))(
        n, theta)
    full = jax.jit(full_batch.rmsprop_field(E, h, rho, eps, K, variant=variant))(n, theta)
    assert rel(mini, full) <= 1e-10


def test_window_changes_no_digit():
    """Theorem 3.3 shares Theorem 3.6's field, and so its round-off window."""
    prob = make_problem("quadratic", seed=0)
    K_, rho, eps = 150, 0.5, 1e-3
    L = _window.window_length(0.0, rho, K_)
    assert L is not None and L < K_
    batches = batch_sequence(prob, 8, K_, 0)
    rw = jax.jit(rmsprop.field(prob.loss, batches, 0.01, rho, eps))
    rf = jax.jit(rmsprop.field(prob.loss, batches, 0.01, rho, eps, window=False))
    for n in (5, L + 4, K_ - 1):
        np.testing.assert_allclose(rw(n, prob.theta0), rf(n, prob.theta0), rtol=1e-14, atol=0)
