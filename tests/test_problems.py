"""bea.problems: any parameter pytree flattened into a problem, the built-in losses, and the
seeded batch sequence (prefixes of one infinite sequence)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea import problems as P


def test_as_problem_flattens_any_pytree():
    model = eqx.nn.MLP(3, 2, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    data = {"x": np.linspace(-1, 1, 15).reshape(5, 3), "y": np.arange(5.0)}

    def loss(p, b):
        out = jax.vmap(eqx.combine(p, static))(b["x"])
        return jnp.mean((out[:, 0] - b["y"]) ** 2)

    prob = P.as_problem(loss, params, data, name="eqx")
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert prob.theta0.shape == (n_params,) and prob.theta0.dtype == jnp.float64
    assert prob.num_examples == 5 and prob.name == "eqx"
    assert prob.data["x"].dtype == jnp.float64
    back = prob.unravel(prob.theta0)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    direct = loss(jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params),
                  prob.data)
    assert float(prob.loss(prob.theta0, prob.data)) == pytest.approx(float(direct), rel=1e-15)
    # the same loss and structure give the same flat function (one compilation)
    assert P.as_problem(loss, params, data).loss is prob.loss


def test_as_problem_keeps_a_flat_vector_and_its_data():
    b = P.bilinear()
    again = P.as_problem(b.loss, b.theta0, b.data)
    assert again.loss is b.loss and again.data is b.data and again.theta0 is b.theta0


@pytest.mark.parametrize("params, data, needle", [
    ({}, None, "no arrays"),
    ({"w": jnp.arange(3)}, None, "float arrays"),
    (jnp.ones(2), {"x": np.ones((4, 2)), "y": np.ones(3)}, "disagree"),
    (jnp.ones(2), {"x": np.float64(1.0)}, "scalar"),
])
def test_as_problem_refuses(params, data, needle):
    with pytest.raises(ValueError, match=needle):
        P.as_problem(lambda p, b: 0.0, params, data)


def test_builtins_are_smooth_scalars():
    for name in P.PROBLEMS:
        prob = P.make_problem(name, seed=0)
        val, g = jax.value_and_grad(prob.loss)(prob.theta0, prob.data)
        assert val.shape == () and np.isfinite(val) and np.all(np.isfinite(g))
    with pytest.raises(ValueError, match="unknown problem 'cifar'"):
        P.make_problem("cifar")


def test_mlp_gradient_matches_finite_differences():
    prob = P.mlp(hidden=4, num_examples=32)
    theta = prob.theta0
    g = jax.grad(prob.loss)(theta, prob.data)
    v = jax.random.normal(jax.random.PRNGKey(3), theta.shape)
    d = 1e-6
    fd = (prob.loss(theta + d * v, prob.data) - prob.loss(theta - d * v, prob.data)) / (2 * d)
    assert float(g @ v) == pytest.approx(float(fd), rel=1e-7)


def test_batch_sequence_is_prefix_stable_and_seeded():
    prob = P.quadratic(num_examples=40)
    short = P.batch_sequence(prob, 8, 5, seed=1)
    long = P.batch_sequence(prob, 8, 12, seed=1)
    np.testing.assert_array_equal(short["x"], long["x"][:5])
    other = P.batch_sequence(prob, 8, 5, seed=2)
    assert not np.array_equal(short["x"], other["x"])
    idx = P.batch_indices(40, 8, 12, 1)
    assert all(len(set(np.asarray(r).tolist())) == 8 for r in idx)  # without replacement
    with pytest.raises(ValueError, match="batch size 41"):
        P.batch_sequence(prob, 41, 3, 0)
