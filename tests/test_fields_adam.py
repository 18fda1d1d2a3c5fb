"""bea.fields.adam_fields (Theorem 3.6): identities to round-off, the round-off window, and the
history grouped by distinct batch (docs/math.md, section 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import identical, rel, small_net

from bea.fields import _window, full_batch
from bea.fields import adam_fields as adam
from bea.fields import rmsprop_fields as rmsprop
from bea.problems import Grouped, batch_sequence, epoch_batches, make_problem, mlp, quadratic

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


# --- The history grouped by distinct batch (docs/math.md, section 7) -----------------------


B_G = 8  # mlp(num_examples=64) cut into batches of 8
K_G = 150
N_G = (0, 5, B_G - 1, B_G, B_G + 1, 2 * B_G, 121, 122, 130, K_G - 1)  # n < B, epoch edges,
# the window's edge (2W = 122 at beta = rho = 0.5) and the last slot
CONFIGS = {  # name: (field builder kwargs, beta, rho); (0.5, 0.5): 2W = 122 < K (window on);
    # (0.6, 0.8): 2W = 374 > K (the whole history)
    "adam_window": (dict(), 0.5, 0.5),
    "adam_full_history": (dict(), 0.6, 0.8),
    "adam_typo": (dict(variant="typo"), 0.6, 0.8),
    "adam_no_bias_correction": (dict(bias_correction=False), 0.5, 0.5),
    "rmsprop_window": ("rmsprop", 0.0, 0.5),
    "rmsprop_full_history": ("rmsprop", 0.0, 0.8),
}


@pytest.fixture(scope="module")
def epochs():
    p = mlp(hidden=4, num_examples=64)
    theta = p.theta0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.theta0.shape)
    g = epoch_batches(p, 8, K_G, seed=2)
    assert g.num_batches == B_G
    return p, theta, g


def _parts(p, history, config, **kw):
    """(-M/R, correction) of the field at every n of N_G: the order-0 field, and the
    order-1 field at h = 1 minus it, so that the O(h) term is compared on its own scale,
    not drowned by -M/R. One compiled program (vmapped over n)."""
    extra, beta, rho = CONFIGS[config]
    eps = 1e-3

    def build(order, h=1.0):
        if extra == "rmsprop":
            return rmsprop.field(p.loss, history, h, rho, eps, order=order, **kw)
        return adam.field(p.loss, history, h, beta, rho, eps, order=order, **extra, **kw)

    f0, f1 = build(0), build(1)

    @jax.jit
    def both(theta):
        ns = jnp.asarray(N_G)
        a = jax.vmap(f0, in_axes=(0, None))(ns, theta)
        return a, jax.vmap(f1, in_axes=(0, None))(ns, theta) - a

    return both


def _rel_rows(a, b):
    """max over n of max_j |a - b| / max_j |b| (relative per evaluation)."""
    return float(jnp.max(jnp.max(jnp.abs(a - b), 1) / jnp.max(jnp.abs(b), 1)))


@pytest.fixture(scope="module")
def direct_parts(epochs):
    p, theta, g = epochs
    return {c: _parts(p, g.materialize(), c)(theta) for c in CONFIGS}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_grouped_history_equals_direct(epochs, direct_parts, config):
    """Theorem 3.6 (and 3.3) on the history grouped by distinct batch == the direct sum over
    the materialised per-step history, at every n of N_G (n = 0, n < B, across epoch
    boundaries and the window's edge, n = K-1): -M/R (order 0, from the per-batch weight
    sums) and the O(h) correction each to 1e-12 relative. Round-off of the regrouped sums
    is ~1e-14 here (measured); a wrong index (a slot, a batch, a weight, a bias correction)
    changes the field at O(1)."""
    p, theta, g = epochs
    mr, corr = _parts(p, g, config, scan="sequential")(theta)
    assert _rel_rows(mr, direct_parts[config][0]) <= 1e-12
    assert _rel_rows(corr, direct_parts[config][1]) <= 1e-12
    assert float(jnp.min(jnp.max(jnp.abs(corr), 1))) > 1e-3  # the correction is live


@pytest.mark.parametrize("config", ["adam_window", "rmsprop_full_history"])
def test_associative_scan_equals_sequential(epochs, direct_parts, config):
    """The parallel prefix scans (bucketed static lengths, lax.switch) give the field of
    the sequential loop and of the direct sum to 1e-12 relative (window on and off,
    beta > 0 and beta = 0)."""
    p, theta, g = epochs
    seq = _parts(p, g, config, scan="sequential")(theta)
    ass = _parts(p, g, config, scan="associative")(theta)
    assert _rel_rows(ass[1], seq[1]) <= 1e-12
    assert _rel_rows(ass[1], direct_parts[config][1]) <= 1e-12


def test_grouped_history_with_arbitrary_ids(net):
    """Any b(k) works, not only epochs: batches repeated back to back, one never used."""
    p, theta, b = net
    distinct = jax.tree_util.tree_map(lambda x: x[:4], b)
    ids = jnp.array([2, 2, 0, 3, 3, 3, 0, 2, 0, 0, 3])
    g = Grouped(distinct, ids)
    fd = jax.jit(adam.field(p.loss, g.materialize(), 0.5, 0.6, 0.8, 1e-3))
    for scan in ("sequential", "associative"):
        fg = jax.jit(adam.field(p.loss, g, 0.5, 0.6, 0.8, 1e-3, scan=scan))
        for n in (0, 1, 5, 10):
            assert rel(fg(n, theta), fd(n, theta)) <= 1e-12


def test_grouped_bad_input(epochs):
    p, theta, g = epochs
    with pytest.raises(ValueError, match="unknown scan 'parallel'"):
        adam.field(p.loss, g, 0.1, 0.5, 0.5, 1e-3, scan="parallel")
    with pytest.raises(ValueError, match="scan='sequential' applies to a Grouped history"):
        adam.field(p.loss, g.materialize(), 0.1, 0.5, 0.5, 1e-3, scan="sequential")
    with pytest.raises(ValueError, match="1-D integer array"):
        adam.field(p.loss, Grouped(g.distinct, jnp.zeros(5)), 0.1, 0.5, 0.5, 1e-3)
    from bea.fields import make_field

    with pytest.raises(ValueError, match="adam and rmsprop fields only, not 'heavy_ball'"):
        make_field("heavy_ball", "order1", p.loss, 0.1, beta=0.5, batches=g)


def _loss_dots(f, *args):
    """(loop depth, leading axes, MACs) of every matrix product the loss makes inside the
    traced field (the loss runs under ``jax.named_scope("loss_eval")``)."""
    out = []

    def walk(jaxpr, depth):
        for e in jaxpr.eqns:
            if e.primitive.name == "dot_general" and "loss_eval" in str(
                    e.source_info.name_stack):
                (lc, _), _ = e.params["dimension_numbers"]
                contracted = int(np.prod([e.invars[0].aval.shape[i] for i in lc]))
                out_shape = e.outvars[0].aval.shape
                out.append((depth, out_shape, int(np.prod(out_shape)) * contracted))
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                walk(sub, depth + (e.primitive.name in ("while", "scan", "cond")))

    walk(jax.make_jaxpr(f)(*args).jaxpr, 0)
    return out


def test_grouped_cost_is_B_gradients_and_2B_hvps():
    """The cost claim of docs/math.md, section 7, read off the traced program: every product the
    loss makes is outside any loop (so their number cannot grow with n), vmapped over the B
    distinct batches, and identical for a history of 40 and of 4000 steps. They add up to
    exactly 8B passes over a batch (one pass = batch_size x dim multiply-adds of the least
    squares loss): B gradients (forward + backward), the B primal linearisations of the
    Hessian-vector products (forward + backward, shared by both tangents) and the 2B
    tangent products Hhat_b Tbeta_b, Hhat_b Trho_b (forward + backward). Order 0: the B
    gradients only. The direct field, for contrast, makes its products inside the loop over
    the history."""
    p = quadratic(num_examples=35, dim=5)
    bs, d = 7, 5
    B = p.num_examples // bs

    def loss(theta, batch):
        with jax.named_scope("loss_eval"):
            return p.loss(theta, batch)

    seen = []
    for K in (40, 4000):
        g = epoch_batches(p, bs, K, seed=0)
        for order in (0, 1):
            dots = _loss_dots(adam.field(loss, g, 0.01, 0.9, 0.999, 1e-3, order=order), 3,
                              p.theta0)
            assert dots and all(depth == 0 for depth, _, _ in dots)
            assert all(shape[0] == B for _, shape, _ in dots)
            passes = sum(m for _, _, m in dots) / (bs * d)
            assert passes == (8 * B if order else 2 * B)
            seen.append((order, sorted((s, m) for _, s, m in dots)))
    assert seen[:2] == seen[2:]  # K = 40 and K = 4000 trace the same products
    g = epoch_batches(p, bs, 40, seed=0)
    direct = _loss_dots(adam.field(loss, g.materialize(), 0.01, 0.9, 0.999, 1e-3), 3, p.theta0)
    assert direct and all(depth >= 1 for depth, _, _ in direct)
