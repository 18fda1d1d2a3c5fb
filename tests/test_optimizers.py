"""bea.optimizers: the paper's recursions against optax, to float64 round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import rel

import bea
from bea.optimizers import check_hyperparameters, trajectory
from bea.problems import batch_sequence, bilinear, mlp

N = 200


PAIRS = {
    "adam": (lambda h: bea.adam(h, 0.9, 0.999, 1e-3),
             lambda h: optax.adam(h, b1=0.9, b2=0.999, eps=0.0, eps_root=1e-3)),
    "adam_eps_outside": (lambda h: bea.adam_eps_outside(h, 0.9, 0.99, 1e-8),
                         lambda h: optax.adam(h, b1=0.9, b2=0.99, eps=1e-8)),
    "rmsprop": (lambda h: bea.rmsprop(h, 0.9, 1e-3),
                lambda h: optax.rmsprop(h, decay=0.9, eps=1e-3, eps_in_sqrt=True)),
    "rmsprop_eps_outside": (lambda h: bea.rmsprop_eps_outside(h, 0.9, 1e-8),
                            lambda h: optax.rmsprop(h, decay=0.9, eps=1e-8, eps_in_sqrt=False)),
    "gd": (lambda h: bea.gd(h), lambda h: optax.sgd(h)),
    "heavy_ball": (lambda h: bea.heavy_ball(h, 0.7), lambda h: optax.sgd(h, momentum=0.7)),
}


@pytest.fixture(scope="module")
def net():
    p = mlp(hidden=8, num_examples=128)
    return p, batch_sequence(p, 16, N, seed=3)


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("mini", [False, True])
def test_equals_optax(name, mini, net):
    p, batches = net
    mine, ref = PAIRS[name]
    h = 0.01
    b = batches if mini else None
    a = trajectory(mine(h), p.loss, p.theta0, b, N, data=p.data)
    r = trajectory(ref(h), p.loss, p.theta0, b, N, data=p.data)
    assert a.shape == (N + 1, p.theta0.size)
    assert float(jnp.max(jnp.abs(a[-1] - a[0]))) > 1e-3  # it moved
    assert rel(a, r) <= 1e-12


def test_adam_first_step_is_paper_formula():
    """theta^(1) = theta^(0) - h g / sqrt(g^2 + eps): m_hat = g and nu_hat = g^2 at n = 0."""
    p = bilinear()
    E = lambda t: p.loss(t, p.data)  # noqa: E731
    g = jax.grad(E)(p.theta0)
    h, eps = 0.1, 1e-3
    path = trajectory(bea.adam(h, 0.9, 0.999, eps), p.loss, p.theta0, None, 1, data=p.data)
    np.testing.assert_allclose(path[1], p.theta0 - h * g / jnp.sqrt(g * g + eps), rtol=1e-14)


def test_bias_correction_and_eps_placement_matter():
    """Dropping bias correction or moving eps changes the path: the flags are live."""
    p = bilinear()
    run = lambda o: trajectory(o, p.loss, p.theta0, None, 20, data=p.data)  # noqa: E731
    base = run(bea.adam(0.01, 0.9, 0.999, 1.0))
    assert rel(run(bea.adam(0.01, 0.9, 0.999, 1.0, bias_correction=False)), base) > 1e-3
    assert rel(run(bea.adam(0.01, 0.9, 0.999, 1.0, eps_inside=False)), base) > 1e-4


def test_active_steps_pads_without_changing_the_prefix(net):
    p, batches = net
    opt = bea.adam(0.01, 0.5, 0.7, 1e-3)
    plain = trajectory(opt, p.loss, p.theta0, batches, 50, data=p.data)
    padded = trajectory(opt, p.loss, p.theta0, batches, 120, data=p.data, active_steps=50)
    np.testing.assert_array_equal(padded[:51], plain)
    np.testing.assert_array_equal(padded[51:], jnp.broadcast_to(plain[-1], padded[51:].shape))


@pytest.mark.parametrize("kw, needle", [
    (dict(h=0.0), "h must be positive"), (dict(h=float("inf")), "inf"),
    (dict(beta=1.0), "beta must lie in [0, 1)"), (dict(beta=-0.1), "-0.1"),
    (dict(rho=0.0), "rho must lie in (0, 1)"), (dict(rho=float("nan")), "nan"),
    (dict(eps=0.0), "eps must be positive"), (dict(eps="1e-3"), "real number"),
])
def test_check_hyperparameters_names_the_value(kw, needle):
    with pytest.raises(ValueError) as e:
        check_hyperparameters(**kw)
    assert needle in str(e.value)
    check_hyperparameters(h=0.1, beta=0.0, rho=0.999, eps=1e-8)
