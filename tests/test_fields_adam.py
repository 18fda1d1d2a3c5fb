"""bea.fields.adam (Theorem 3.6): identities to round-off, and the round-off window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import identical, rel, small_net

from bea.fields import _window, adam, full_batch
from bea.problems import batch_sequence, make_problem, quadratic

K = 6


@pytest.fixture(scope="module")
def net():
    return small_net(K)


@pytest.mark.parametrize("n,chunk", [(0, 8), (3, 8), (0, 1), (3, 4), (5, 4), (4, 1)])
def test_fused_field_equals_building_blocks(net, n, chunk):
    """field() (one HVP per k, the history walked in chunks of ``chunk`` batches, the last
    one padded) == the theorem written with R, M, L, L_bar, P, P_bar on the whole history."""
    p, theta, b = net
    h, beta, rho, eps = 0.03, 0.6, 0.8, 1e-3

    @jax.jit
    def both(theta, n):
        args = (p.loss, theta, b, n)
        R = adam.R(*args, rho, eps)
        M = adam.M(*args, beta)
        L = adam.L(*args, beta, rho, eps)
        Lb = adam.L_bar(*args, beta, rho, eps)
        P = adam.P(*args, beta, rho, eps)
        Pb = adam.P_bar(*args, beta, rho, eps)
        expected = -M / R + h * (M * (2 * P + Pb) / (2 * R**3) - (2 * L + Lb) / (2 * R))
        return adam.field(p.loss, b, h, beta, rho, eps, chunk=chunk)(n, theta), expected, L, P

    got, expected, L, P = both(theta, n)
    assert rel(got, expected) <= 1e-12
    if n == 0:  # S_0 = 0 at n = 0: L and P vanish
        assert float(jnp.max(jnp.abs(L))) == 0.0 and float(jnp.max(jnp.abs(P))) == 0.0


def test_blocks_by_brute_force(net):
    """R, M, L, P at n = 2 against the theorem's sums written out with dense Hessians."""
    p, theta, b = net
    n, beta, rho, eps = 2, 0.6, 0.8, 1e-3
    Ek = [lambda t, k=k: p.loss(t, jax.tree_util.tree_map(lambda x: x[k], b)) for k in range(n + 1)]
    g = [jax.jit(jax.grad(E))(theta) for E in Ek]
    H = [jax.jit(jax.hessian(E))(theta) for E in Ek]
    R = [jnp.sqrt(sum(rho ** (l - k) * (1 - rho) * g[k] ** 2 for k in range(l + 1))
                  / (1 - rho ** (l + 1)) + eps) for l in range(n + 1)]
    M = [sum(beta ** (l - k) * (1 - beta) * g[k] for k in range(l + 1)) / (1 - beta ** (l + 1))
         for l in range(n + 1)]
    S = [sum((M[l] / R[l] for l in range(k, n)), jnp.zeros_like(theta)) for k in range(n + 1)]
    L = sum(beta ** (n - k) * (1 - beta) * H[k] @ S[k] for k in range(n + 1)) / (
        1 - beta ** (n + 1))
    P = sum(rho ** (n - k) * (1 - rho) * g[k] * (H[k] @ S[k]) for k in range(n + 1)) / (
        1 - rho ** (n + 1))
    a = (p.loss, theta, b, n)
    assert rel(jax.jit(lambda: adam.R(*a, rho, eps))(), R[n]) <= 1e-13
    assert rel(jax.jit(lambda: adam.M(*a, beta))(), M[n]) <= 1e-13
    assert rel(jax.jit(lambda: adam.L(*a, beta, rho, eps))(), L) <= 1e-11
    assert rel(jax.jit(lambda: adam.P(*a, beta, rho, eps))(), P) <= 1e-11


@pytest.mark.parametrize("variant", ["paper", "typo"])
@pytest.mark.parametrize("n", [0, K - 1])
def test_minibatch_with_identical_batches_is_full_batch(n, variant):
    """Theorem 3.6 fed E_k = E equals Remark 3.7."""
    p = quadratic(num_examples=32, dim=5)
    theta = p.theta0
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    same = identical(p, K)
    h, beta, rho, eps = 0.02, 0.7, 0.9, 1e-2
    mini = jax.jit(adam.field(p.loss, same, h, beta, rho, eps, variant=variant))(n, theta)
    full = jax.jit(full_batch.adam_field(E, h, beta, rho, eps, variant=variant))(n, theta)
    assert rel(mini, full) <= 1e-10


def test_typo_variant_differs(net):
    p, theta, b = net
    f = jax.jit(adam.field(p.loss, b, 0.05, 0.5, 0.7, 1e-3))(3, theta)
    t = jax.jit(adam.field(p.loss, b, 0.05, 0.5, 0.7, 1e-3, variant="typo"))(3, theta)
    assert rel(f, t) > 1e-4
    with pytest.raises(ValueError, match="unknown variant 'R3'"):
        adam.field(p.loss, b, 0.05, 0.5, 0.7, 1e-3, variant="R3")


def test_history_beyond_n_is_ignored(net):
    """Batches after n must not enter the field at step n."""
    p, theta, b = net
    shuffled = jax.tree_util.tree_map(lambda x: x.at[3:].set(x[3:][::-1]), b)
    f = jax.jit(lambda n, t, b: adam.field(p.loss, b, 0.05, 0.5, 0.7, 1e-3)(n, t))
    g = lambda n, t: f(n, t, shuffled)  # noqa: E731
    f_ = lambda n, t: f(n, t, b)  # noqa: E731
    np.testing.assert_array_equal(f_(2, theta), g(2, theta))
    assert rel(f_(4, theta), g(4, theta)) > 1e-8


def test_window_changes_no_digit():
    """Theorem 3.6's field on a 2W-batch window (weights max(beta, rho)^W < 1e-18 dropped,
    bea.fields._window) equals the full-history field to 1e-14, also for a window that does
    not start on a chunk boundary."""
    prob = make_problem("quadratic", seed=0)
    K, kw = 150, dict(beta=0.5, rho=0.5, eps=1e-3)
    L = _window.window_length(kw["beta"], kw["rho"], K)
    assert L is not None and L < K
    batches = batch_sequence(prob, 8, K, 0)
    fw = jax.jit(adam.field(prob.loss, batches, 0.01, **kw))
    ff = jax.jit(adam.field(prob.loss, batches, 0.01, **kw, window=False))
    theta = prob.theta0
    for n in (0, 5, L - 1, L + 4, L + 7, K - 1):  # L + 4: a window not on a chunk boundary
        np.testing.assert_allclose(fw(n, theta), ff(n, theta), rtol=1e-14, atol=0)
