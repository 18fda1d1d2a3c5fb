"""Helpers shared by the test modules."""

import jax
import jax.numpy as jnp
import numpy as np


def rel(a, b) -> float:
    """max |a - b| / max |b|: a relative difference that is not fooled by one tiny entry."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def identical(problem, K: int):
    """K copies of the full data set, as a batch history: the mini-batch theorems must then
    reduce to the full-batch remarks."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (K,) + x.shape), problem.data)


def run_sweep(problem, **config):
    """bea.sweep on a built-in problem."""
    import bea

    return bea.sweep(problem.loss, problem.theta0, problem.data, name=problem.name, **config)


def small_net(K: int):
    """(problem, theta, batches): the tanh MLP with 4 hidden units on 64 digits, a point
    near its start, and a history of K batches of 8: what the field identities are checked
    on."""
    from bea.problems import batch_sequence, mlp

    p = mlp(hidden=4, num_examples=64)
    theta = p.theta0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.theta0.shape)
    return p, theta, batch_sequence(p, 8, K, seed=2)
