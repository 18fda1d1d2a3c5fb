"""bea.fields.adam (Theorem 3.6) and bea.fields.rmsprop (Theorem 3.3): identities to round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea.fields import adam, full_batch, rmsprop
from bea.problems import batch_sequence, mlp, quadratic

K = 6


@pytest.fixture(scope="module")
def net():
    p = mlp(hidden=4, num_examples=64)
    theta = p.theta0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.theta0.shape)
    return p, theta, batch_sequence(p, 8, K, seed=2)


def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def identical(p, K):
    """K copies of the full data set: the mini-batch theorems must reduce to the remarks."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (K,) + x.shape), p.data)


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
    """Theorem 3.6 fed E_k = E equals Remark 3.7; Theorem 3.3 equals Remark 3.4."""
    p = quadratic(num_examples=32, dim=5)
    theta = p.theta0
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    same = identical(p, K)
    h, beta, rho, eps = 0.02, 0.7, 0.9, 1e-2
    mini = jax.jit(adam.field(p.loss, same, h, beta, rho, eps, variant=variant))(n, theta)
    full = jax.jit(full_batch.adam_field(E, h, beta, rho, eps, variant=variant))(n, theta)
    assert rel(mini, full) <= 1e-10
    mini = jax.jit(rmsprop.field(p.loss, same, h, rho, eps, variant=variant))(n, theta)
    full = jax.jit(full_batch.rmsprop_field(E, h, rho, eps, K, variant=variant))(n, theta)
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
