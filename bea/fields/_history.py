"""Shared pieces of the mini-batch fields: gradients and Hessian-vector products over the
history of batches, all taken at the current theta (MATH.md section 3), and the
exponential-average weights with their bias corrections; and :class:`Grouped`, a history
stored as its distinct batches and the batch index of every step (MATH.md section 7)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree


def grad_history(loss, theta: Float[Array, " p"], batches: PyTree) -> Float[Array, "K p"]:
    """g_k(theta) = grad E_k(theta) for every batch k on the leading axis (one vmap)."""
    return jax.vmap(jax.grad(loss), in_axes=(None, 0))(theta, batches)


def hvp_history(
    loss, theta: Float[Array, " p"], batches: PyTree, tangents: Float[Array, "K p"],
    with_grads: bool = False,
):
    """H_k(theta) v_k for every k: one forward-over-reverse product per batch, vmapped
    (``with_grads``: also g_k(theta), the product's primal, at no extra cost)."""
    grad = jax.grad(loss)

    def one(batch, v):
        return jax.jvp(lambda t: grad(t, batch), (theta,), (v,))

    G, HV = jax.vmap(one)(batches, tangents)
    return (G, HV) if with_grads else HV


def one_minus_pow(a, m):
    """1 - a^m computed as -expm1(m log a): exact for a near 1 (and 1 for a = 0)."""
    a = jnp.asarray(a, dtype=float)
    return -jnp.expm1(m * jnp.log(a))


def ema_weights(a, n: Int[Array, ""], K: int, bias_correction: bool = True) -> Float[Array, " K"]:
    """w_k = a^(n-k) (1-a) / (1-a^(n+1)) for k <= n, 0 for k > n (the weights of the
    bias-corrected exponential average at step n; without the divisor if not corrected)."""
    k = jnp.arange(K)
    e = jnp.maximum(n - k, 0)
    w = jnp.where(k <= n, jnp.asarray(a, dtype=float) ** e * (1 - a), 0.0)
    return w / one_minus_pow(a, n + 1) if bias_correction else w


def ema_all(X: Float[Array, "K p"], a) -> Float[Array, "K p"]:
    """Unnormalised averages A_l = sum_{k<=l} a^(l-k) (1-a) X_k for every l (one scan)."""

    def step(acc, x):
        acc = a * acc + (1 - a) * x
        return acc, acc

    return jax.lax.scan(step, jnp.zeros_like(X[0]), X)[1]


def suffix_sum(U: Float[Array, "K p"], n: Int[Array, ""]) -> Float[Array, "K p"]:
    """S_k = sum_{l=k}^{n-1} U_l (zero for k >= n): the history shifts of Theorems 3.3/3.6."""
    l = jnp.arange(U.shape[0])
    Um = jnp.where((l < n)[:, None], U, 0.0)
    return jnp.flip(jnp.cumsum(jnp.flip(Um, 0), 0), 0)


def chunk_history(batches: PyTree, C: int) -> tuple[PyTree, int]:
    """The history as (chunks, C, ...) leaves, the last chunk padded with copies of the last
    batch (finite values that every weight masks out, or slots after n that do not enter
    step n), and the number of chunks."""
    K = jax.tree_util.tree_leaves(batches)[0].shape[0]
    nc = -(-K // C)

    def one(b):
        if nc * C > K:
            b = jnp.concatenate([b, jnp.repeat(b[-1:], nc * C - K, axis=0)])
        return b.reshape((nc, C) + b.shape[1:])

    return jax.tree_util.tree_map(one, batches), nc


class Grouped(NamedTuple):
    """A batch history grouped by distinct batch (MATH.md section 7): step k uses batch
    ``b(k) = ids[k]`` of the ``B`` batches in ``distinct`` (every leaf has leading axis B), so
    batch k is ``distinct[ids[k]]``. A finite data set cut into a fixed partition (visited in
    any order, e.g. :func:`bea.problems.epoch_batches`) gives one; passed as ``batches`` to
    :func:`bea.fields.adam.field` or :func:`bea.fields.rmsprop.field` it selects the grouped
    evaluation of Theorems 3.6 / 3.3 (B gradients and 2B Hessian-vector products per
    evaluation, whatever n is)."""

    distinct: PyTree  # leaves with leading axis B
    ids: Int[Array, " K"]  # b(k) in [0, B)

    @property
    def num_batches(self) -> int:
        """B, the number of distinct batches."""
        return jax.tree_util.tree_leaves(self.distinct)[0].shape[0]

    def materialize(self) -> PyTree:
        """The direct history: batch k at index k of every leaf's leading axis (length K)."""
        return jax.tree_util.tree_map(lambda d: d[self.ids], self.distinct)
