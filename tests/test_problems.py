"""bea.problems: the epoch schedule (MATH.md section 7) and the cnn problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bea  # noqa: F401
from bea.fields import adam
from bea.problems import (
    PROBLEMS,
    cnn,
    epoch_batches,
    epoch_schedule,
    epoch_sequence,
    make_problem,
    quadratic,
)


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
