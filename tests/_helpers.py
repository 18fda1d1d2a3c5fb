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


def assert_closed_equals_generic(name, problem, batches, theta, *, beta, rho, eps, h,
                                 num_steps, ns):
    """Registry entry ``name``'s closed-form order0 and order1 fields (looked up through
    make_field) equal the generic engine's (docs/math.md, section 5) to 1e-12 relative at the
    steps ``ns``, and so does the h-correction (f~ - f)/h on its own (not hidden behind the
    O(1) zeroth-order term). Full batch when ``batches`` is None."""
    from bea import optimizer_registry as reg
    from bea.fields import make_field, modified_field

    E = problem.loss if batches is not None else (lambda t: problem.loss(t, problem.data))
    F = reg.transformation(name, 1.0, beta, rho, eps)
    g0, g1 = (modified_field(F, problem.loss, batches, h, order=o, data=problem.data,
                             num_steps=num_steps) for o in (0, 1))
    c0, c1 = (make_field(name, kind, E, h, beta=beta, rho=rho, eps=eps, batches=batches,
                         num_steps=num_steps) for kind in ("order0", "order1"))

    @jax.jit
    @jax.vmap
    def all_fields(n):  # one compilation for every n and both derivations
        return g0(n, theta), g1(n, theta), c0(n, theta), c1(n, theta)

    G0, G1, C0, C1 = all_fields(jnp.array(ns))
    rel_ = lambda a, b: jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1)  # noqa: E731
    assert jnp.all(rel_(G0, C0) <= 1e-12) and jnp.all(rel_(G1, C1) <= 1e-12), name
    corr = rel_((G1 - G0) / h, (C1 - C0) / h)  # the h-term alone, not hidden behind f_n
    assert jnp.all(corr <= 1e-12), (name, corr)


def markdown_rows(path, prefix: str) -> list[list[str]]:
    """The rows of the markdown tables in ``path`` whose second cell starts with
    ``prefix`` (a committed file named in backticks): their cells, with the bold and the
    typographic minus taken off."""
    rows = []
    with open(path) as f:
        for line in f:
            cells = [c.strip().strip("*").replace("\u2212", "-")
                     for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) > 3 and cells[1].startswith(prefix):
                rows.append(cells)
    return rows
