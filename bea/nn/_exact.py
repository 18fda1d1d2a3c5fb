"""Exact full-batch loss and gradient, accumulated over physical batches, data-parallel.

Section 6 trains with full-batch Adam: every step uses the gradient of the mean loss
over the whole training set, E(theta) = (1/N) sum_i l_i(theta). When the set does not
fit in memory at once it is cut into ``nb`` physical batches of ``B`` examples (the
last padded with zero-weight copies), and

    grad E = (1/N) sum_b grad (sum_{i in b} w_i l_i),

accumulated inside one ``lax.scan`` (compiled once, no Python loop per batch). Because
every model normalises per example (``bea.models``), this is the full-batch gradient
to round-off, whatever ``B``. The example axis of each physical batch is sharded over
a 1-D device mesh (``data_mesh``): XLA inserts the cross-device sum, so the same code
runs on one CPU, several GPUs or several hosts.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int, PyTree

__all__ = [
    "Batches",
    "make_batches",
    "batch_sums",
    "loss_and_grad",
    "hvp",
    "evaluate",
    "data_mesh",
    "shard_batches",
    "replicate",
]


class Batches(NamedTuple):
    """A data set cut into physical batches: leading axes (nb, B); ``w`` is 1 for real
    examples and 0 for padding; ``n`` (a Python int) is the number of real examples."""

    x: Float[Array, "nb b c h w"]
    y: Int[Array, "nb b"]
    w: Float[Array, "nb b"]
    n: int


def make_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, multiple_of: int = 1, dtype=np.float32
) -> Batches:
    """Cut (x, y) into physical batches of ``batch_size`` (rounded up to a multiple of
    ``multiple_of``, the device count, and capped at the padded data size)."""
    n = len(y)
    b = min(batch_size, n)
    b = -(-b // multiple_of) * multiple_of
    nb = -(-n // b)
    pad = nb * b - n
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]).astype(dtype)
    yp = np.concatenate([y, np.zeros(pad, y.dtype)]).astype(np.int32)
    w = np.concatenate([np.ones(n), np.zeros(pad)]).astype(dtype)
    return Batches(xp.reshape((nb, b) + x.shape[1:]), yp.reshape(nb, b), w.reshape(nb, b), n)


def batch_sums(
    params: PyTree, static: PyTree, x: Float[Array, "b ..."], y: Int[Array, " b"],
    w: Float[Array, " b"],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(sum_i w_i l_i, sum_i w_i [argmax = y_i]) over one physical batch, l = cross-entropy."""
    model = eqx.combine(params, static)
    logits = jax.vmap(model)(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = (jnp.argmax(logits, axis=-1) == y).astype(w.dtype)
    return jnp.sum(w * ce.astype(w.dtype)), jnp.sum(w * correct)


def _accumulate(body, init, data: Batches):
    """``lax.scan(body, init, (x, y, w))[0]``, written out straight when there are at
    most 4 physical batches: XLA:CPU runs convolutions inside a while loop (even a
    one-trip loop) 5-10x slower than straight-line code, and a few batches compile fine
    unrolled. Long accumulations (CIFAR: 100 batches of 500) stay one loop."""
    xs = (data.x, data.y, data.w)
    if data.x.shape[0] > 4:
        return jax.lax.scan(body, init, xs)[0]
    carry = init
    for i in range(data.x.shape[0]):
        carry, _ = body(carry, tuple(a[i] for a in xs))
    return carry


def loss_and_grad(
    params: PyTree, static: PyTree, data: Batches
) -> tuple[Float[Array, ""], Float[Array, ""], PyTree]:
    """(E, accuracy, grad E) on the whole data set, accumulated with ``lax.scan``."""
    vg = jax.value_and_grad(batch_sums, has_aux=True)

    def body(carry, batch):
        loss, correct, g = carry
        (l, c), gb = vg(params, static, *batch)
        return (loss + l, correct + c, jax.tree_util.tree_map(jnp.add, g, gb)), None

    zero = jnp.zeros((), data.w.dtype)
    init = (zero, zero, jax.tree_util.tree_map(jnp.zeros_like, params))
    loss, correct, g = _accumulate(body, init, data)
    return loss / data.n, correct / data.n, jax.tree_util.tree_map(lambda a: a / data.n, g)


def hvp(params: PyTree, static: PyTree, data: Batches, v: PyTree) -> PyTree:
    """The full-batch Hessian-vector product H v = d/dt grad E(params + t v) at t = 0,
    forward-over-reverse (``jax.jvp`` of ``jax.grad``) per physical batch, accumulated
    like ``loss_and_grad``: the gradient of ||grad E||_{1,eps} is H (g / sqrt(g^2 + eps))
    (docs/math.md, section 4), one such product."""

    def grad_sum(p, x, y, w):
        return jax.grad(lambda q: batch_sums(q, static, x, y, w)[0])(p)

    def body(acc, batch):
        hv = jax.jvp(lambda p: grad_sum(p, *batch), (params,), (v,))[1]
        return jax.tree_util.tree_map(jnp.add, acc, hv), None

    acc = _accumulate(body, jax.tree_util.tree_map(jnp.zeros_like, params), data)
    return jax.tree_util.tree_map(lambda a: a / data.n, acc)


def evaluate(
    params: PyTree, static: PyTree, data: Batches
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(mean loss, accuracy) on the whole data set, forward passes only."""

    def body(carry, batch):
        l, c = batch_sums(params, static, *batch)
        return (carry[0] + l, carry[1] + c), None

    zero = jnp.zeros((), data.w.dtype)
    loss, correct = _accumulate(body, (zero, zero), data)
    return loss / data.n, correct / data.n


def data_mesh() -> Mesh:
    """A 1-D mesh named ``data`` over every visible device (all hosts)."""
    return Mesh(np.array(jax.devices()), ("data",))


def _put(a: np.ndarray, sharding: NamedSharding) -> Array:
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


def shard_batches(data: Batches, mesh: Mesh) -> Batches:
    """Place the batches with their example axis (axis 1) split over ``mesh``."""
    s = NamedSharding(mesh, PartitionSpec(None, "data"))
    return Batches(_put(data.x, s), _put(data.y, s), _put(data.w, s), data.n)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every array leaf of ``tree`` on every device of ``mesh``."""
    s = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda a: _put(np.asarray(a), s), tree)
