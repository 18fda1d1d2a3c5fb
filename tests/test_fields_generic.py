"""The generic first-order modified equation (docs/math.md, section 5, bea.fields.generic).

1. It equals every closed form to round-off (float64): Theorem 3.6 (mini-batch Adam),
   Theorem 3.3 (RMSProp), Remarks 3.7/3.4 (full batch), Barrett-Dherin (GD), Ghosh et
   al. (heavy ball, including the gamma_n coefficients quoted in docs/math.md, section 5).
   The h-correction (f~ - f)/h is compared on its own, so the check is not hidden
   behind the O(1) zeroth-order term.
2. Its measured order on the mini-batch tanh MLP is 2 (order 0: 1) for optimizers with
   no closed form: adam_eps_outside, adamw, nesterov, rmsprop_centered.
3. The sweep's two engines agree, and the CLI refuses what the registry refuses.
4. The second-order field (order=2, docs/math.md, section 8), below "second order":

   1. GD: e_n = -(1/3) H^2 g - (1/12) E'''(g, g), the known second-order modified equation,
      with H and E''' computed here independently (dense Hessian, jvp of a Hessian-vector
      product), mini-batch and full batch, on logistic regression (not quadratic: E''' != 0).
   2. An independent reference: docs/math.md, section 8's formula written out literally over the
      full, unrolled history (no chunks, dense masks, Dc_n f_n as the jvp of the whole
      first-order construction, the second derivative along the curve theta + s D + s^2 Q),
      equal to the engine's f_n, c_n, e_n at n = 0, 1, 2, mid values and K - 1 for Adam (bias-
      correction transient) and adamw (F_n reads theta_n), and at every n = 0..20 (no jump
      across the transient).
   3. Heavy ball and Adam (mini-batch and full batch): (f_order2 - f_order1)/h^2 does not
      depend on h and is not 0.
   4. Chunk sizes 1, 3 and K give the same field; a pytree theta gives the flat theta's field.
   5. In a solve: GD's order-2 field tracks the iterates with error O(h^3); full-batch Adam on
      the bilinear model reproduces the errors docs/math.md, section 8 quotes from a prototype.

   Tolerances: the engine and the reference evaluate the same derivatives in different orders
   (chunked prefix sums against dense masks, a factored quadratic form against four separate
   jvps), so they agree to float64 round-off amplified by sums over at most K = 21 slots:
   measured relative differences are <= 7e-15 on each term;
   1e-12 leaves a margin of 100x and is far below the size of a missing or misplaced term (a
   slot off by one changes e_n by O(1) relative in the transient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_closed_equals_generic, run_sweep

from bea import optimizer_registry as reg
from bea._integrate import TABLEAUS, solve_fixed
from bea.fields import adam_fields as adam
from bea.fields.generic import modified_field, second_order_terms
from bea.optimizers import trajectory
from bea.problems import batch_sequence, make_problem, mlp

K = 8
H = 0.05
BETA, RHO, EPS = 0.6, 0.8, 1e-3
NS = (0, 1, 2, 5, 7)


@pytest.fixture(scope="module")
def setup():
    P = make_problem("logistic", seed=0)
    B = batch_sequence(P, 16, K, 0)
    theta = P.theta0 + 0.3 * jax.random.normal(jax.random.PRNGKey(1), P.theta0.shape)
    return P, B, theta


def _gen(name, beta=BETA):
    return reg.transformation(name, 1.0, beta, RHO, EPS)


@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("name", reg.CLOSED_FORM)
def test_generic_equals_closed_form(setup, name, mini):
    """Every registry entry with closed forms (no hand-written list)."""
    P, B, theta = setup
    beta = 0.7 if name == "heavy_ball" else BETA  # Ghosh et al.'s beta (docs/math.md, sec. 5)
    assert_closed_equals_generic(name, P, B if mini else None, theta, beta=beta, rho=RHO,
                                 eps=EPS, h=H, num_steps=K, ns=NS)


def test_ghosh_gamma_coefficients():
    """Full-batch heavy ball on a quadratic: the correction is -c_n h H g with the numbers
    of docs/math.md, section 5 (gamma_n (1+beta)/(2(1-beta)^3), beta = 0.7)."""
    A = jnp.array([[2.0, 0.3], [0.3, 0.5]])
    loss = lambda t, _: 0.5 * t @ A @ t  # noqa: E731
    theta = jnp.array([0.7, -1.2])
    Hg = A @ (A @ theta)
    opt = reg.transformation("heavy_ball", 1.0, 0.7, 0.0, 0.0)
    f0 = modified_field(opt, loss, None, H, order=0, data=None, num_steps=6)
    f1 = modified_field(opt, loss, None, H, order=1, data=None, num_steps=6)
    corr = jax.jit(jax.vmap(lambda n: (f1(n, theta) - f0(n, theta)) / H))(jnp.array([0, 1, 2, 5]))
    c = jnp.array([0.5, 2.145, 4.91105, 15.3592])
    np.testing.assert_allclose(corr, -c[:, None] * Hg, rtol=1e-5)


def test_parameter_dependent_update(setup):
    """adamw's F_n reads theta_n directly (decoupled weight decay). Check the generic field
    against docs/math.md, section 5 written out by hand for a hand-coded F_n(theta_0..theta_n) =
    -(m_hat/(sqrt(nu_hat)+eps) + wd theta_n), m and nu built from g_k(theta_k)."""
    P, B, theta = setup
    wd = reg.WEIGHT_DECAY
    grad = jax.grad(P.loss)

    def F(n, thetas):  # thetas: (K, p); the update of step n at learning rate 1
        G = jax.vmap(grad)(thetas, B)
        w = lambda a: jnp.where(jnp.arange(K) <= n, a ** jnp.maximum(n - jnp.arange(K), 0)  # noqa: E731
                                * (1 - a), 0.0) / (1 - a ** (n + 1))
        m, nu = w(BETA) @ G, w(RHO) @ (G * G)
        return -(m / (jnp.sqrt(nu) + EPS) + wd * thetas[n])

    def by_hand(n, theta):
        diag = jnp.broadcast_to(theta, (K, theta.size))
        f = jnp.stack([F(l, diag) for l in range(K)])
        d = jnp.stack([-f[k:n].sum(0) for k in range(K)])
        return f[n] + H * jax.jvp(lambda ts: F(n, ts), (diag,), (d - f[n] / 2,))[1]

    gen = jax.jit(modified_field(optax.adamw(1.0, BETA, RHO, EPS, weight_decay=wd), P.loss,
                                 B, H))
    for n in (0, 5):
        expect = jax.jit(by_hand, static_argnums=0)(n, theta)
        np.testing.assert_allclose(gen(n, theta), expect, rtol=1e-12, atol=1e-15)


def test_optax_adam_matches_bea_adam(setup):
    """optax's own Adam code (eps_root) through the generic engine equals Theorem 3.6."""
    P, B, theta = setup
    g = modified_field(reg.transformation("adam_optax_eps_root", 1.0, BETA, RHO, EPS),
                       P.loss, B, H)
    c = adam.field(P.loss, B, H, BETA, RHO, EPS)
    both = jax.jit(jax.vmap(lambda n: (g(n, theta), c(n, theta))))
    np.testing.assert_allclose(*both(jnp.array([0, 4])), rtol=1e-12)


def test_sweep_engines_agree_and_cli_refuses(capsys):
    from experiments.convergence import main

    P = make_problem("bilinear")
    kw = dict(optimizer="adam", h=[0.1, 0.05], T=0.5, beta=0.5, rho=0.7, eps=1e-3,
              rtol=1e-10, atol=1e-12)
    r = {e: run_sweep(P, engine=e, **kw) for e in ("closed", "generic")}
    for k in ("order0", "order1"):
        np.testing.assert_allclose(r["generic"].errors[k], r["closed"].errors[k], rtol=1e-6)
    for argv in (["--optimizer", "lion"], ["--optimizer", "amsgrad"],
                 ["--optimizer", "adamw", "--engine", "closed"],
                 ["--optimizer", "adamw", "--fields", "order1_typo"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and argv[1] in err


# --- measured order on the mini-batch tanh MLP ------------------------------------------

ORDER_HS = (0.025, 0.0125, 0.00625, 0.003125)
ORDER_T = 0.25


def dense_mlp():
    """problem 'mlp' (hidden 4, 64 digits, p = 310) with pixels in [-1, 1] (centered=True):
    in the raw digits 21% of the gradient components are identically 0 (always-blank
    pixels), sqrt(nu) is not differentiable at 0 (its jvp is 0 * inf = NaN), and
    eps-outside optimizers are outside the construction's hypotheses there."""
    return mlp(seed=0, hidden=4, num_examples=64, centered=True)


def measured_orders(name, eps, *, beta=0.5, rho=0.7, batch_size=8, hs=ORDER_HS, T=ORDER_T):
    """Fitted and local slopes of the generic order-0/1 fields against the optax run
    (learning rate h), through bea.sweep (padded, solver error measured)."""
    r = run_sweep(dense_mlp(), optimizer=name, h=list(hs), T=T, fields=["order0", "order1"],
                  beta=beta, rho=rho, eps=eps, batch_size=batch_size, seed=0, engine="generic")
    return {o: (r.slopes[k], r.local_slopes[k], r.errors[k])
            for o, k in ((0, "order0"), (1, "order1"))}


# short memory (beta = 0.5, rho = 0.7: N >> 1/(1 - rho) already at h = 0.025) and
# eps = 0.1: the denominators sqrt(nu_hat) + eps (or sqrt(nu - mu^2 + eps)) stay >= 0.1
# although some of the 310 gradient components cross 0 on [0, T]; with eps = 1e-2 or
# 1e-3 the updates are sign-like, the field's Jacobian reaches ~40 and these h are
# pre-asymptotic (docs/generic.md).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["adam_eps_outside", "adamw", "nesterov",
                                  "rmsprop_centered"])
def test_generic_order_mlp(name):
    res = measured_orders(name, 0.1)
    slope0, _, _ = res[0]
    slope1, local1, e1 = res[1]
    assert slope1 >= 1.75, (name, slope1, local1, e1)
    assert 1.8 <= local1[-1] <= 2.6, (name, local1)  # the finest pair: approaching 2
    assert 0.85 <= slope0 <= 1.3, (name, slope0)


@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("name", ["adam", "heavy_ball", "adamw", "rmsprop_centered"])
def test_chunked_history_changes_nothing(setup, name, mini):
    """The field walks the history in chunks up to n (O(n) per evaluation): chunks of 1 and
    3 slots (3: the last chunk padded) give the field of one chunk holding all K slots."""
    P, B, theta = setup
    B = B if mini else None
    fields = [modified_field(_gen(name), P.loss, B, H, data=P.data, num_steps=K, chunk=c)
              for c in (K, 3, 1)]

    @jax.jit
    @jax.vmap
    def all_fields(n):
        return [f(n, theta) for f in fields]

    whole, *chunked = all_fields(jnp.asarray(NS))
    for got in chunked:
        np.testing.assert_allclose(got, whole, rtol=1e-13, atol=1e-16)


# --- second order (docs/math.md, section 8) ---------------------------------------------

K2 = 12
RTOL = 1e-12  # see "second order" in the module docstring


@pytest.fixture(scope="module")
def setup2():
    P = make_problem("logistic", seed=0)
    B = batch_sequence(P, 16, 21, 0)
    theta = P.theta0 + 0.3 * jax.random.normal(jax.random.PRNGKey(1), P.theta0.shape)
    return P, B, theta


def _tr(name, beta=BETA):
    return reg.transformation(name, 1.0, beta, RHO, EPS)


def _first(B, k):
    return jax.tree_util.tree_map(lambda b: b[:k], B)


def _rel(a, b):
    return float(jnp.max(jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1)))


def brute_force_terms(transformation, loss, batches, data, K2):
    """(f_n, c_n, e_n) of docs/math.md, section 8 written out literally: F_l as a function of all
    K2 slot parameters (one scan of ``update`` over the unrolled history), D_k, Q_k by dense
    (K2, K2) masks, and e_n term by term, with Dc_n f_n, Df_n c_n and
    D^2 f_n(f_n, f_n) + Df_n Df_n f_n as jvps of the functions theta -> c_n(theta),
    f_n(theta) and theta -> Df_n(theta) f_n(theta)."""
    grad = jax.grad(loss)

    def run_all(thetas):  # (K2, p) slot parameters -> (K2, p): F_l(theta_0, ..., theta_l)
        if batches is None:
            G = jax.vmap(lambda t: grad(t, data))(thetas)
        else:
            G = jax.vmap(grad)(thetas, batches)

        def step(state, gp):
            u, state = transformation.update(gp[0], state, gp[1])
            return state, u

        return jax.lax.scan(step, transformation.init(thetas[0]), (G, thetas))[1]

    def terms(n, theta):
        k = jnp.arange(K2)
        M = ((k[None, :] >= k[:, None]) & (k[None, :] < n)).astype(float)  # l in [k, n-1]

        def diag(t):
            return jnp.broadcast_to(t, (K2, t.size))

        def f_n(t):
            return run_all(diag(t))[n]

        def D_of(t):
            return -M @ run_all(diag(t))

        def c_n(t):
            return jax.jvp(run_all, (diag(t),), (D_of(t) - f_n(t) / 2,))[1][n]

        f, D, c = f_n(theta), D_of(theta), c_n(theta)
        Q = -M @ jax.jvp(run_all, (diag(theta),), (D,))[1]

        def phi(s):
            return run_all(diag(theta) + s * D + s * s * Q)[n]

        d2phi = jax.jvp(lambda s: jax.jvp(phi, (s,), (1.0,))[1], (0.0,), (1.0,))[1]
        Dc_f = jax.jvp(c_n, (theta,), (f,))[1]
        Df_c = jax.jvp(f_n, (theta,), (c,))[1]
        flow3 = jax.jvp(lambda t: jax.jvp(f_n, (t,), (f_n(t),))[1], (theta,), (f,))[1]
        return f, c, d2phi / 2 - (Dc_f + Df_c) / 2 - flow3 / 6

    return terms


# --- 1. GD: the known second-order modified equation ------------------------------------

@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
def test_gd_second_order_modified_equation(setup2, mini):
    P, B, theta = setup2
    B = _first(B, K2) if mini else None
    h = 0.1
    terms = second_order_terms(_tr("gd"), P.loss, B, data=P.data, num_steps=K2)
    field = modified_field(_tr("gd"), P.loss, B, h, order=2, data=P.data, num_steps=K2)

    def expected(n):  # -g - (h/2) H g - h^2 ((1/3) H^2 g + (1/12) E'''(g, g)) of batch n
        batch = P.data if B is None else jax.tree_util.tree_map(lambda b: b[n], B)
        E = lambda t: P.loss(t, batch)  # noqa: E731
        g, Hm = jax.grad(E)(theta), jax.hessian(E)(theta)
        E3 = jax.jvp(lambda t: jax.hessian(E)(t) @ g, (theta,), (g,))[1]
        return -g, -Hm @ g / 2, -(Hm @ (Hm @ g)) / 3 - E3 / 12

    @jax.jit
    @jax.vmap
    def everything(n):  # one program
        return terms(n, theta), field(n, theta), expected(n)

    (f, c, e), F, (ef, ec, ee) = everything(jnp.array([0, 3, K2 - 1]))
    assert _rel(f, ef) <= 1e-13 and _rel(c, ec) <= 1e-13
    assert _rel(e, ee) <= 1e-12, _rel(e, ee)  # the h^2 term on its own
    assert _rel(F, ef + h * ec + h * h * ee) <= 1e-12
    assert float(jnp.min(jnp.linalg.norm(e, axis=-1))) > 1e-6  # not trivially 0


# --- 2. the engine against the literal formula ------------------------------------------

@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_engine_equals_brute_force(setup2, name, mini):
    """n = 0, 1, 2 (the bias-correction transient, where an off-by-one slot index shows),
    5, 8 and K2 - 1; adamw's F_n also reads theta_n directly."""
    P, B, theta = setup2
    B = _first(B, K2) if mini else None
    tr = _tr(name)
    ref = brute_force_terms(tr, P.loss, B, P.data, K2)
    eng = second_order_terms(tr, P.loss, B, data=P.data, num_steps=K2)

    @jax.jit
    @jax.vmap
    def both(n):
        return eng(n, theta), ref(n, theta)

    (f, c, e), (rf, rc, re) = both(jnp.array([0, 1, 2, 5, 8, K2 - 1]))
    for got, want in ((f, rf), (c, rc), (e, re)):
        assert _rel(got, want) <= RTOL, (name, _rel(got, want))
    assert float(jnp.min(jnp.linalg.norm(re, axis=-1))) > 1e-3


@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
def test_continuous_across_bias_correction_transient(setup2, mini):
    """e_n for every n = 0..20 equals the reference: no jump where 1 - beta^(n+1) and
    1 - rho^(n+1) move (n < ~20 at rho = 0.8). Full batch, e_n also moves smoothly: its
    change per step ||e_{n+1} - e_n|| decreases monotonically from n = 2 on (measured
    0.13 |e_20| there, 0.03 |e_20| at n = 19); a jump would show as a spike."""
    P, B, theta = setup2
    Kc = 21
    B = B if mini else None
    tr = _tr("adam")
    ref = brute_force_terms(tr, P.loss, B, P.data, Kc)
    eng = second_order_terms(tr, P.loss, B, data=P.data, num_steps=Kc, chunk=4)
    e, re = jax.jit(jax.vmap(lambda n: (eng(n, theta)[2], ref(n, theta)[2])))(jnp.arange(Kc))
    assert _rel(e, re) <= RTOL, _rel(e, re)
    if not mini:
        step = np.linalg.norm(np.diff(np.asarray(e), axis=0), axis=-1)
        assert np.all(np.diff(step[2:]) <= 0), step


# --- 3. the h^2 term -------------------------------------------------------------------

@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("name", ["heavy_ball", "adam"])
def test_order2_minus_order1_is_h_squared(setup2, name, mini):
    """(f_order2 - f_order1)/h^2 is the same at h = 0.1, 0.05, 0.025 and not 0 (n = 2, 5, 7:
    at n = 0 heavy ball is a GD step, whose e is 1e-4 here). Tolerance: the difference of
    two fields of size |f| < 1 loses about 1e-16 |f| / (h^2 |e|) <= 2e-10 relative at the
    smallest h and |e| >= 1e-3."""
    P, B, theta = setup2
    B = _first(B, K2) if mini else None
    tr = _tr(name, 0.7 if name == "heavy_ball" else BETA)
    ns = jnp.array([2, 5, 7])
    @jax.jit
    def quotient(h):  # h traced: one program for every h
        f1, f2 = (modified_field(tr, P.loss, B, h, order=o, data=P.data, num_steps=K2)
                  for o in (1, 2))
        return jax.vmap(lambda n: f2(n, theta) - f1(n, theta))(ns) / h**2

    quots = [quotient(h) for h in (0.1, 0.05, 0.025)]
    assert float(jnp.min(jnp.linalg.norm(quots[0], axis=-1))) > 1e-3
    for q in quots[1:]:
        assert _rel(q, quots[0]) <= 1e-9, (name, _rel(q, quots[0]))


# --- 4. chunks and pytrees --------------------------------------------------------------

@pytest.mark.parametrize("mini", [True, False], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("name", ["adam", "heavy_ball", "adamw", "rmsprop_centered"])
def test_chunk_sizes_change_nothing(setup2, name, mini):
    """Chunks of 1, 3 (the last one padded) and K2 slots give the same order-2 field."""
    P, B, theta = setup2
    B = _first(B, K2) if mini else None
    fields = [modified_field(_tr(name), P.loss, B, 0.05, order=2, data=P.data, num_steps=K2,
                             chunk=c) for c in (K2, 3, 1)]
    whole, *chunked = jax.jit(jax.vmap(lambda n: [f(n, theta) for f in fields]))(
        jnp.array([0, 1, 2, 5, K2 - 1]))
    for got in chunked:
        np.testing.assert_allclose(got, whole, rtol=1e-13, atol=1e-15)


def test_pytree_theta(setup2):
    """theta as {"w": (p-1,), "b": ()} gives the flat field, leaf by leaf (adamw: the
    parameters enter F_n too)."""
    P, B, theta = setup2
    B = _first(B, K2)

    def tree_loss(t, batch):
        return P.loss(jnp.concatenate([t["w"], t["b"][None]]), batch)

    tr = _tr("adamw")
    flat = modified_field(tr, P.loss, B, 0.05, order=2, chunk=5)
    tree = modified_field(tr, tree_loss, B, 0.05, order=2, chunk=5)
    t = {"w": theta[:-1], "b": theta[-1]}
    a, b = jax.jit(jax.vmap(lambda n: (flat(n, theta), tree(n, t))))(jnp.array([0, 6]))
    np.testing.assert_allclose(jnp.concatenate([b["w"], b["b"][:, None]], axis=1), a,
                               rtol=1e-13, atol=1e-15)


def test_order_refused():
    with pytest.raises(ValueError, match="order must be 0, 1 or 2, got 3"):
        modified_field(optax.sgd(1.0), lambda t, b: t @ t, None, 0.1, order=3, num_steps=2)


# --- 5. in a solve: error O(h^3) --------------------------------------------------------

def test_gd_order2_error_is_cubic():
    """GD on full-batch logistic regression, T = 1: the order-2 field solved by one Dopri8
    step per interval (its error ~h^9, far below) against the iterates; halving h divides
    the error by 2^3 (measured local slope 2.99 between h = 0.1 and 0.05; order 1 gives
    2.00 there, tests/test_orders.py)."""
    P = make_problem("logistic", seed=0)
    errs = []
    for h in (0.1, 0.05):
        N = round(1.0 / h)
        f = modified_field(_tr("gd"), P.loss, None, h, order=2, data=P.data, num_steps=N)
        ys = jax.jit(lambda t0, f=f, h=h, N=N: solve_fixed(f, t0, h, N,  # noqa: E731
                                                           solver=TABLEAUS["dopri8"]()))(
            P.theta0)
        disc = trajectory(optax.sgd(h), P.loss, P.theta0, None, N, data=P.data)
        errs.append(float(jnp.max(jnp.linalg.norm(ys - disc, axis=-1))))
    slope = np.log(errs[0] / errs[1]) / np.log(2)
    assert 2.8 <= slope <= 3.2, (errs, slope)


def test_adam_bilinear_order2_errors():
    """Full-batch Adam on the bilinear model (beta 0.5, rho 0.7, eps 1e-3, T = 1): the order-2
    errors at h = 0.04 .. 0.005 are those of docs/math.md, section 8's independent prototype
    (full history, adaptive Dopri8): 1.53e-3, 2.45e-4, 3.37e-5, 4.39e-6 (to the printed 3
    digits: rtol 5e-3), local slopes 2.64, 2.87, 2.94. Solver: one Dopri8 step per interval;
    its error, measured by halving in the sweep, is ~1e-13, 10^7 below these errors."""
    from bea.optimizers import adam
    from bea.problems import bilinear

    P = bilinear()
    tr = reg.transformation("adam", 1.0, 0.5, 0.7, 1e-3)
    loss = lambda t, _: P.loss(t, P.data)  # noqa: E731
    errs = []
    for h in (0.04, 0.02, 0.01, 0.005):
        N = round(1.0 / h)
        f = modified_field(tr, loss, None, h, order=2, num_steps=N)
        ys = jax.jit(lambda t0, f=f, h=h, N=N: solve_fixed(f, t0, h, N,  # noqa: E731
                                                           solver=TABLEAUS["dopri8"]()))(
            P.theta0)
        disc = trajectory(adam(h, 0.5, 0.7, 1e-3), loss, P.theta0, None, N)
        errs.append(float(jnp.max(jnp.linalg.norm(ys - disc, axis=-1))))
    np.testing.assert_allclose(errs, [1.53e-3, 2.45e-4, 3.37e-5, 4.39e-6], rtol=5e-3)
    local = np.log(np.array(errs[:-1]) / errs[1:]) / np.log(2)
    assert local[-1] >= 2.85, local
