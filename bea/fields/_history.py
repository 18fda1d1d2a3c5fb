"""The batch history every field walks, behind one protocol (docs/math.md, sections 3, 5, 7).

A field at step n needs, at the current theta, the gradients g_k = grad E_k(theta) of the
slots k <= n and Hessian-vector products H_k v_k (docs/math.md, section 3: never at past
iterates). A :class:`History` is the sequence of losses E_0, E_1, ..., E_{K-1} cut into
``num_chunks`` chunks of ``chunk_size`` slots, and offers exactly that:

- :meth:`History.each`: ``fn(E_k, *per_slot_k)`` for the slots k of one chunk (vmapped);
- :meth:`History.grads`: g_k(theta) for the slots of a chunk;
- :meth:`History.grads_and_hvps`: (g_k, H_k v_k), the gradient as the product's primal
  (free), through the package's one product :func:`bea._hvp.hvp`.

Three implementations:

- :class:`FullBatch`: every slot is the same loss E (docs/math.md, section 4); a chunk's
  gradient is computed once and shared, and its products share one primal;
- :class:`Direct`: slot k is batch k (the i.i.d. schedule; the last chunk padded with copies
  of the last batch, finite values that every weight masks out);
- :class:`GroupedHistory`: slot k is batch b(k) of B distinct batches (docs/math.md,
  section 7); its one chunk is the B distinct batches, so gradients and products cost B
  each whatever K is, and ``ids`` maps slots to them.

Also here: the exponential-average weights with their bias corrections and the suffix sums
S_k that the closed forms share.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from bea._hvp import hvp

__all__ = ["History", "FullBatch", "Direct", "GroupedHistory", "one_minus_pow", "ema_weights",
           "ema_all", "suffix_sum", "broadcast"]

_tm = jax.tree_util.tree_map


def broadcast(x: PyTree, C: int) -> PyTree:
    """``x`` repeated on a new leading axis of length C (every leaf)."""
    return _tm(lambda t: jnp.broadcast_to(t, (C, *jnp.shape(t))), x)


class History:
    """The losses E_0..E_{K-1} of a field's history in ``num_chunks`` chunks of
    ``chunk_size`` slots (the protocol; see the module docstring)."""

    num_slots: int
    chunk_size: int
    num_chunks: int

    def each(self, fn: Callable, c: Int[Array, ""] | int, *per_slot: PyTree) -> PyTree:
        """``fn(E_k, *[x[i] for x in per_slot])`` for the slots k = c C + i of chunk c, stacked
        on a leading axis of ``chunk_size`` (E_k: theta -> the loss of slot k)."""
        raise NotImplementedError

    def grads(self, theta: PyTree, c: Int[Array, ""] | int = 0) -> PyTree:
        """g_k(theta) = grad E_k(theta) for the slots of chunk c."""
        return self.each(lambda E: jax.grad(E)(theta), c)

    def grads_and_hvps(self, theta: PyTree, c: Int[Array, ""] | int, V: PyTree):
        """(g_k(theta), H_k(theta) v_k) for the slots of chunk c, v_k = V[i]: one
        forward-over-reverse product per slot (:func:`bea._hvp.hvp`)."""
        return self.each(lambda E, v: hvp(E, theta, v), c, V)


class FullBatch(History):
    """K slots that are all the loss E(theta) = ``loss(theta, *data)`` (full batch)."""

    def __init__(self, loss: Callable, num_slots: int, chunk: int | None = None,
                 data: tuple = ()):
        self.E = lambda t: loss(t, *data)
        self.num_slots = int(num_slots)
        self.chunk_size = self.num_slots if chunk is None else min(chunk, self.num_slots)
        self.num_chunks = -(-self.num_slots // self.chunk_size)

    def each(self, fn, c, *per_slot):
        del c
        if not per_slot:  # the same value in every slot: computed once
            return broadcast(fn(self.E), self.chunk_size)
        return jax.vmap(lambda *a: fn(self.E, *a))(*per_slot)  # one primal, C tangents


class Direct(History):
    """Slot k is ``loss(theta, batch k)``, batch k at index k of every leaf of ``batches``
    (the direct per-step history); chunks of ``chunk`` slots (default: one chunk of all K),
    the last padded with copies of the last batch."""

    def __init__(self, loss: Callable, batches: PyTree, chunk: int | None = None):
        self.loss = loss
        self.num_slots = K = jax.tree_util.tree_leaves(batches)[0].shape[0]
        self.chunk_size = C = K if chunk is None else min(chunk, K)
        self.num_chunks = nc = -(-K // C)

        def cut(b):
            if nc * C > K:
                b = jnp.concatenate([b, jnp.repeat(b[-1:], nc * C - K, axis=0)])
            return b.reshape((nc, C) + b.shape[1:])

        self.chunks = _tm(cut, batches)

    def loss_at(self, k: Int[Array, ""] | int) -> Callable:
        """E_k: theta -> ``loss(theta, batch k)``."""
        batch = _tm(lambda b: b[k // self.chunk_size, k % self.chunk_size], self.chunks)
        return lambda t: self.loss(t, batch)

    def each(self, fn, c, *per_slot):
        batch = _tm(lambda b: b[c], self.chunks)
        return jax.vmap(lambda b, *a: fn(lambda t: self.loss(t, b), *a))(batch, *per_slot)


class GroupedHistory(History):
    """K slots over B distinct batches (docs/math.md, section 7): slot k is
    ``loss(theta, distinct[ids[k]])``. Its one chunk is the B distinct batches, so
    :meth:`each`, :meth:`grads` and :meth:`grads_and_hvps` run over b = 0..B-1 (per-batch
    tangents V[b]); ``ids`` gives b(k)."""

    def __init__(self, loss: Callable, distinct: PyTree, ids: Int[Array, " K"]):
        ids = jnp.asarray(ids)
        if ids.ndim != 1 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"Grouped ids must be a 1-D integer array, got shape {ids.shape} "
                             f"and dtype {ids.dtype}")
        self.ids = ids
        self.num_slots = ids.shape[0]
        self.distinct = Direct(loss, distinct)
        self.num_batches = self.chunk_size = self.distinct.num_slots
        self.num_chunks = 1

    def each(self, fn, c, *per_slot):
        del c
        return self.distinct.each(fn, 0, *per_slot)


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

