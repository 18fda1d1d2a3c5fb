"""The accumulated full-batch gradient and the logged norms (bea.nn._exact, metrics)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bea  # noqa: F401
from bea.data import load_digits
from bea.models import make_model
from bea.nn import _exact as F
from bea.nn import _run_files as H
from bea.nn.train import TrainConfig, run


@pytest.fixture(scope="module")
def digits64():
    d = load_digits(np.float64)
    return d.x_train[:50], d.y_train[:50]


def _run_and_replay_start(cfg, tmp_path):
    """Run ``cfg`` (cnn_small on the first 40 digits, float64, 4 steps) into ``tmp_path``
    and return its history rows with what a replay starts from: the data and the same
    initial parameters, partitioned as the training does."""
    run(cfg, str(tmp_path), progress=False, log=lambda s: None)
    rows = H.read_history(str(tmp_path / "history.csv"))
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    d = load_digits(np.float64)
    x, y = jnp.asarray(d.x_train[:40]), jnp.asarray(d.y_train[:40])
    model = make_model("cnn_small", 1, 8, 10, jax.random.PRNGKey(0), jnp.float64)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return rows, x, y, params, static


def _one_shot(params, static, x, y):
    def loss(p):
        logits = jax.vmap(eqx.combine(p, static))(x)
        return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

    return jax.value_and_grad(loss)(params)


# 5 physical batches: one lax.scan; 3 batches: written out straight (fullbatch._accumulate)
@pytest.mark.parametrize("name,batch", [("cnn_small", 10), ("resnet_small", 20)])
def test_accumulated_gradient_is_the_full_batch_gradient(digits64, name, batch):
    x, y = digits64
    model = make_model(name, 1, 8, 10, jax.random.PRNGKey(1), jnp.float64)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    b = F.make_batches(x, y, batch, dtype=np.float64)
    data = F.Batches(*(jnp.asarray(a) for a in b[:3]), b.n)
    loss, acc, g = jax.jit(lambda p: F.loss_and_grad(p, static, data))(params)
    loss1, g1 = _one_shot(params, static, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(loss, loss1, rtol=1e-13)
    for a, a1 in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g1), strict=True):
        np.testing.assert_allclose(a, a1, rtol=1e-10, atol=1e-15)
    assert 0 <= float(acc) <= 1


def test_logged_norms_equal_direct_computation(tmp_path):
    """Rows 0..3 of a float64 run: the norms equal numpy on the one-shot full gradient
    at the parameters re-created by replaying the (deterministic) Adam steps."""
    cfg = TrainConfig(model="cnn_small", train_size=40, test_size=40, dtype="float64",
                      max_steps=4,
                      physical_batch=16, h=1e-2, beta=0.9, rho=0.99, eps=1e-6)
    rows, x, y, params, static = _run_and_replay_start(cfg, tmp_path)
    opt = bea.adam(1e-2, 0.9, 0.99, 1e-6)
    state = opt.init(params)
    one_shot = jax.jit(lambda p: _one_shot(p, static, x, y))
    update = jax.jit(opt.update)
    for r in rows:
        loss, g = one_shot(params)
        v = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)])
        np.testing.assert_allclose(r["train_loss"], loss, rtol=1e-12)
        np.testing.assert_allclose(r["perturbed_one_norm"], np.sum(np.sqrt(v**2 + 1e-6)),
                                   rtol=1e-10)
        np.testing.assert_allclose(r["two_norm"], np.linalg.norm(v), rtol=1e-10)
        np.testing.assert_allclose(r["one_norm"], np.sum(np.abs(v)), rtol=1e-10)
        np.testing.assert_allclose(r["mean_abs_grad"], np.mean(np.abs(v)), rtol=1e-10)
        np.testing.assert_allclose(r["std_abs_grad"], np.std(np.abs(v)), rtol=1e-8)
        np.testing.assert_allclose(r["perturbed_one_norm_excess"],
                                   np.sum(np.sqrt(v**2 + 1e-6) - 1e-3), rtol=1e-8)
        np.testing.assert_allclose(r["two_norm_penalty"], np.sum(v**2) / 2e-3, rtol=1e-10)
        assert round(r["share_above_sqrt_eps"] * v.size) == np.sum(np.abs(v) > 1e-3)
        c = 0.5 * 1e-2 * (1.9 / 0.1 - 1.99 / 0.01)
        np.testing.assert_allclose(r["correction_coefficient"], c, rtol=1e-12)
        np.testing.assert_allclose(r["modified_loss"], loss + c * np.sum(np.sqrt(v**2 + 1e-6)),
                                   rtol=1e-10)
        upd, state = update(g, state, params)
        params = jax.tree_util.tree_map(jnp.add, params, upd)


def test_batch_split_does_not_change_groupnorm_model(digits64):
    """GroupNorm normalises per example: the loss of example i is independent of the
    physical batch it sits in (the reason BatchNorm is not used; bea.models)."""
    x, y = digits64
    model = make_model("resnet_small", 1, 8, 10, jax.random.PRNGKey(2), jnp.float64)
    f = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    one = f(model, jnp.asarray(x[:10]))
    split = jnp.concatenate([f(model, jnp.asarray(x[:3])), f(model, jnp.asarray(x[3:10]))])
    np.testing.assert_allclose(one, split, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,millions", [("cnn", 1.39), ("vit", 12.7), ("resnet50", 23.7),
                                           ("resnet101", 42.7)])
def test_paper_models_shapes(name, millions):
    """The paper-sized models on CIFAR-100 inputs, traced abstractly (no compute)."""
    key = jax.random.PRNGKey(0)
    model = eqx.filter_eval_shape(make_model, name, 3, 32, 100, key, jnp.float32)
    n = sum(a.size for a in jax.tree_util.tree_leaves(model) if hasattr(a, "shape"))
    assert abs(n / 1e6 - millions) < 0.1 * millions, n
    out = eqx.filter_eval_shape(lambda m, x: m(x), model,
                                jax.ShapeDtypeStruct((3, 32, 32), jnp.float32))
    assert out.shape == (100,) and out.dtype == jnp.float32


@pytest.mark.parametrize("name,batch", [("cnn_small", 10), ("resnet_small", 20)])
def test_accumulated_hvp_is_the_full_batch_hvp(digits64, name, batch):
    """fullbatch.hvp (forward-over-reverse, accumulated over 5 scanned / 3 straight
    batches) equals reverse-over-reverse grad(<grad E, v>) on the whole batch at once."""
    x, y = digits64
    model = make_model(name, 1, 8, 10, jax.random.PRNGKey(3), jnp.float64)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    b = F.make_batches(x, y, batch, dtype=np.float64)
    data = F.Batches(*(jnp.asarray(a) for a in b[:3]), b.n)
    leaves, tdef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    v = jax.tree_util.tree_unflatten(
        tdef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)])
    hv = jax.jit(lambda p, v: F.hvp(p, static, data, v))(params, v)

    def gdotv(p):
        g = _one_shot(p, static, jnp.asarray(x), jnp.asarray(y))[1]
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                  jax.tree_util.tree_leaves(v), strict=True))

    hv1 = jax.jit(jax.grad(gdotv))(params)
    for a, a1 in zip(jax.tree_util.tree_leaves(hv), jax.tree_util.tree_leaves(hv1), strict=True):
        scale = float(jnp.max(jnp.abs(a1)))
        np.testing.assert_allclose(a, a1, rtol=1e-9, atol=1e-12 * scale)


def test_modified_gd_is_gradient_descent_on_the_modified_loss(tmp_path):
    """Rows 0..3 of a float64 ``modified_gd`` run equal a replay of
    theta <- theta - gd_lr grad(E + c(n) ||grad E||_{1,eps}) at step n, c(n) = h (c_beta(n)
    - c_rho(n)) (Remark 3.7's finite-n coefficient), with the gradient of the modified loss
    taken by reverse-over-reverse autodiff (not the run's jvp); a replay with eq. (8)'s
    large-n c (the coefficient before issue 22) departs from the run. The logged
    ``modified_loss`` column stays the large-n one."""
    h, beta, rho, eps, lr = 1e-2, 0.9, 0.99, 1e-6, 0.1
    cfg = TrainConfig(model="cnn_small", train_size=40, test_size=40, dtype="float64",
                      max_steps=4, physical_batch=16, h=h, beta=beta, rho=rho, eps=eps,
                      optimizer="modified_gd", gd_lr=lr)
    rows, x, y, params, static = _run_and_replay_start(cfg, tmp_path)
    assert H.read_json(str(tmp_path / "config.json"))["modified_loss_coefficient"] == "finite_n"
    c_inf = bea._norms.correction_coefficient(h, beta, rho)
    c_n = [float(bea._finite_n.correction_coefficient_n(h, beta, rho, n)) for n in range(4)]
    assert c_n[0] == 0 and c_inf < c_n[3] < c_n[1] < 0  # rho > beta: anti-penalised

    def modified(p, c):
        g = _one_shot(p, static, x, y)[1]
        return _one_shot(p, static, x, y)[0] + c * bea._norms.perturbed_one_norm(g, eps)

    step = jax.jit(lambda p, c: jax.tree_util.tree_map(lambda a, b: a - lr * b, p,
                                                       jax.grad(modified)(p, c)))
    large_n = params
    for n, r in enumerate(rows):
        loss, g = _one_shot(params, static, x, y)
        v = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)])
        np.testing.assert_allclose(r["train_loss"], loss, rtol=1e-11)
        np.testing.assert_allclose(r["perturbed_one_norm"], np.sum(np.sqrt(v**2 + eps)),
                                   rtol=1e-10)
        np.testing.assert_allclose(r["modified_loss"], modified(params, c_inf), rtol=1e-10)
        if n >= 2:
            assert abs(_one_shot(large_n, static, x, y)[0] / loss - 1) > 1e-6
        params = step(params, c_n[n])
        large_n = step(large_n, c_inf)
