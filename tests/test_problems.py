"""bea.problems: any parameter pytree flattened into a problem, the built-in losses, and the
seeded batch sequences (prefixes of one infinite sequence: i.i.d. and epochs, docs/math.md,
section 7), and the cnn problem."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea import problems as P
from bea.fields import adam_fields as adam
from bea.problems import (
    PROBLEMS,
    cnn,
    epoch_batches,
    epoch_schedule,
    epoch_sequence,
    make_problem,
    quadratic,
)


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




def test_epoch_schedule_partition_and_epochs():
    """A fixed partition of whole batches (the remainder left out and counted), every batch
    once per epoch, the order reshuffled from epoch to epoch, seeded."""
    s = epoch_schedule(70, 8, 45, seed=3)
    B = 70 // 8
    assert s.partition.shape == (B, 8) and s.left_out == 70 - B * 8 == 6
    flat = np.asarray(s.partition).ravel()
    assert len(np.unique(flat)) == flat.size and flat.min() >= 0 and flat.max() < 70
    ids = np.asarray(s.batch_ids)
    assert ids.shape == (45,)
    epochs = [ids[e * B:(e + 1) * B] for e in range(45 // B)]
    for order in epochs:  # each whole epoch visits every batch exactly once
        assert sorted(order) == list(range(B))
    assert len({tuple(o) for o in epochs}) > 1  # reshuffled every epoch
    again = epoch_schedule(70, 8, 45, seed=3)
    np.testing.assert_array_equal(again.partition, s.partition)
    np.testing.assert_array_equal(again.batch_ids, s.batch_ids)
    other = epoch_schedule(70, 8, 45, seed=4)
    assert not np.array_equal(other.batch_ids, s.batch_ids)


def test_epoch_schedule_prefixes():
    """Batch k does not depend on the number of steps drawn (h-sweeps use prefixes)."""
    long = epoch_schedule(64, 8, 100, seed=0)
    for N in (1, 9, 63):
        short = epoch_schedule(64, 8, N, seed=0)
        np.testing.assert_array_equal(short.partition, long.partition)
        np.testing.assert_array_equal(short.batch_ids, long.batch_ids[:N])


def test_epoch_batches_grouped_and_direct():
    """epoch_batches' distinct batches and ids rebuild the direct history: batch k is
    data[partition[batch_ids[k]]]."""
    p = quadratic(num_examples=30, dim=3)
    g = epoch_batches(p, 4, 20, seed=1)
    s = epoch_schedule(30, 4, 20, seed=1)
    assert g.num_batches == 7 and g.ids.shape == (20,)
    direct = epoch_sequence(p, 4, 20, seed=1)
    assert direct["x"].shape == (20, 4, 3)
    for k in (0, 6, 7, 19):
        rows = s.partition[s.batch_ids[k]]
        np.testing.assert_array_equal(direct["x"][k], p.data["x"][rows])
        np.testing.assert_array_equal(g.materialize()["y"][k], p.data["y"][rows])


@pytest.mark.parametrize("bad", [0, 31])
def test_epoch_schedule_bad_batch_size(bad):
    with pytest.raises(ValueError, match=f"batch size {bad} must lie in"):
        epoch_schedule(30, bad, 5, seed=0)


def test_cnn_problem():
    """The smooth CNN: registered, float64, a few thousand parameters, finite loss near
    log(10) at the start, a gradient that matches a central difference, and a finite
    Theorem 3.6 field on its epoch history."""
    assert "cnn" in PROBLEMS
    p = make_problem("cnn", seed=0)
    assert p.theta0.dtype == jnp.float64 and 1000 <= p.theta0.size <= 10000
    batch = jax.tree_util.tree_map(lambda x: x[:16], p.data)
    loss = jax.jit(p.loss)
    E = float(loss(p.theta0, batch))
    assert np.isfinite(E) and abs(E - np.log(10)) < 0.5  # small logits at initialisation
    g = jax.jit(jax.grad(p.loss))(p.theta0, batch)
    v = jax.random.normal(jax.random.PRNGKey(0), p.theta0.shape)
    v = v / jnp.linalg.norm(v)
    d = 1e-4  # truncation ~ d^2 |E'''| ~ 1e-8, round-off ~ 1e-16 E / d ~ 1e-12
    fd = (loss(p.theta0 + d * v, batch) - loss(p.theta0 - d * v, batch)) / (2 * d)
    assert abs(float(fd - g @ v)) <= 1e-6 * float(jnp.linalg.norm(g))
    assert not np.array_equal(cnn(seed=1).theta0, p.theta0)  # seeded
    hist = epoch_batches(cnn(num_examples=64), 16, 12, seed=0)
    f = jax.jit(adam.field(p.loss, hist, 0.01, 0.9, 0.95, 1e-3))(11, p.theta0)
    assert f.shape == p.theta0.shape and bool(jnp.all(jnp.isfinite(f)))


def test_the_problems_networks_and_data_are_the_shared_ones():
    """One definition per network and one data module: problems.mlp and problems.cnn are
    bea.models' MLP and SmoothCNN (the training models ``mlp`` and ``cnn_smooth``) at
    PRNGKey(seed), on bea.data's digits scaled to [0, 1]."""
    from bea.data import digits
    from bea.models import MLP, SmoothCNN, make_model

    images, labels = digits()
    for build, name, cls in ((P.mlp, "mlp", MLP), (P.cnn, "cnn_smooth", SmoothCNN)):
        p = build(seed=3, num_examples=40)
        net = p.unravel(p.theta0)
        model = make_model(name, 1, 8, 10, jax.random.PRNGKey(3), jnp.float64)
        assert isinstance(model, cls)
        want = model.params if cls is MLP else model
        assert jax.tree_util.tree_structure(net) == jax.tree_util.tree_structure(want)
        for a, b in zip(jax.tree_util.tree_leaves(net), jax.tree_util.tree_leaves(want),
                        strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(p.data["x"], images[:40].reshape(40, 64) / 16.0)
        np.testing.assert_array_equal(p.data["y"], labels[:40])
        # the model's forward pass on one example is the problem's on a batch of one
        one = jax.tree_util.tree_map(lambda x: x[:1], p.data)
        logits = model(jnp.asarray(one["x"][0]))
        want_loss = -jax.nn.log_softmax(logits)[one["y"][0]]
        np.testing.assert_allclose(p.loss(p.theta0, one), want_loss, rtol=1e-14)
