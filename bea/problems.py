"""Loss families and their data (docs/math.md, section 1).

A problem is data, not behaviour: a loss ``E(theta, batch)`` of flat parameters
``theta`` of shape (p,), a starting point ``theta0``, and the full data set
``data`` (a pytree whose leaves have a leading example axis). :func:`as_problem` makes one
from any loss of any parameter pytree (an equinox model's, say), flattening the parameters
with ``jax.flatten_util.ravel_pytree``; ``unravel`` maps a flat theta back.

Mini-batch runs use a fixed, seeded, infinite sequence in which step k always uses batch k,
so an h-sweep uses prefixes of one sequence (docs/math.md, section 1). Two schedules: i.i.d.
(:func:`batch_sequence`, a fresh random batch at every step) and epochs
(:func:`epoch_schedule`, a fixed partition visited in an order reshuffled every epoch),
whose history is stored grouped by distinct batch (:class:`Grouped`,
:func:`epoch_batches`, docs/math.md, section 7).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

from bea.data import NUM_DIGITS, digits
from bea.models import MLP, SmoothCNN, mlp_logits

__all__ = [
    "Problem",
    "bilinear",
    "quadratic",
    "logistic",
    "mlp",
    "cnn",
    "make_problem",
    "PROBLEMS",
    "batch_indices",
    "batch_sequence",
    "full_batch_loss",
    "as_problem",
    "Grouped",
    "EpochSchedule",
    "epoch_schedule",
    "epoch_batches",
    "epoch_sequence",
]


def _identity(theta):
    return theta


class Problem(NamedTuple):
    name: str
    loss: Callable[[Float[Array, " p"], Any], Float[Array, ""]]  # E(theta, batch)
    theta0: Float[Array, " p"]
    data: PyTree  # leaves with a leading example axis
    num_examples: int | None  # None: no example axis (full batch only)
    unravel: Callable[[Float[Array, " p"]], PyTree] = _identity  # flat theta -> parameters


# One flat loss per (loss, parameter structure): every sweep of the same loss then hands
# jit the same function and reuses its compiled programs. Bounded; holds the loss alive
# so that its id is not reused while cached.
_FLAT: dict = {}


def _flat_loss(loss, unravel, key):
    if key not in _FLAT:
        if len(_FLAT) >= 64:
            _FLAT.pop(next(iter(_FLAT)))
        _FLAT[key] = (loss, lambda theta, batch: loss(unravel(theta), batch))
    return _FLAT[key][1]


def _num_examples(data: PyTree) -> int | None:
    sizes = {}
    for path, x in jax.tree_util.tree_leaves_with_path(data):
        shape = np.shape(x)
        if not shape:
            raise ValueError(f"data{jax.tree_util.keystr(path)} is a scalar; every data leaf "
                             "needs a leading example axis")
        sizes[jax.tree_util.keystr(path)] = shape[0]
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"data{k}: {v}" for k, v in sizes.items())
        raise ValueError(f"the data leaves disagree on the number of examples ({listed})")
    return next(iter(sizes.values()), None)


def _default_float(tree: PyTree) -> PyTree:
    """``tree`` with float leaves as jax arrays of the default float dtype (float64 when
    float64 is on); the same object when nothing needs converting, so that compiled
    programs that close over it are reused."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)

    def ok(x):
        return isinstance(x, jax.Array) and (x.dtype == dtype or not jnp.issubdtype(
            x.dtype, jnp.floating))

    if all(ok(x) for x in jax.tree_util.tree_leaves(tree)):
        return tree
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
        else jnp.asarray(x), tree)


def as_problem(loss: Callable[[PyTree, Any], Float[Array, ""]], params0: PyTree,
               data: PyTree, *, name: str = "custom") -> Problem:
    """The problem of minimising ``loss(params, batch)`` from ``params0`` (any pytree of
    float arrays, e.g. ``eqx.filter(model, eqx.is_array)``) on ``data`` (a pytree whose
    leaves share a leading example axis; None if the loss needs no data).

    The parameters are flattened with ``ravel_pytree``: the problem's loss takes a flat theta
    of shape (p,) and ``problem.unravel`` gives the parameters back. Float leaves of
    ``params0`` and ``data`` are converted to the current default float dtype (float64
    inside :func:`bea._precision.float64`). Raises ValueError (one line) for data without a
    common example axis or parameters that are not float arrays."""
    leaves = jax.tree_util.tree_leaves_with_path(params0)
    if not leaves:
        raise ValueError("params0 has no arrays: nothing to optimise")
    for path, x in leaves:
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"params0{jax.tree_util.keystr(path)} has dtype "
                             f"{jnp.result_type(x)}; parameters must be float arrays")
    params0, data = _default_float(params0), _default_float(data)
    if isinstance(params0, jax.Array) and params0.ndim == 1:
        flat, theta0, unravel = loss, params0, _identity  # already one flat vector
    else:
        theta0, unravel = ravel_pytree(params0)
        shapes = tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(params0))
        key = (id(loss), jax.tree_util.tree_structure(params0), shapes)
        flat = _flat_loss(loss, unravel, key)
    return Problem(name, flat, theta0, data, _num_examples(data) if data is not None else None,
                   unravel)


def full_batch_loss(problem: Problem) -> Callable[[Float[Array, " p"]], Float[Array, ""]]:
    """E(theta) = E(theta, data): the full-batch loss."""
    return lambda theta: problem.loss(theta, problem.data)


def bilinear(x: float = 2.0, y: float = 1.5, theta0=(2.8, 3.5)) -> Problem:
    """Section 5: E(theta) = 1/2 (y - theta_1 theta_2 x)^2 with x = 2, y = 3/2,
    started at (2.8, 3.5); the minima lie on the hyperbola theta_1 theta_2 = y/x."""

    def loss(theta, batch):
        r = batch["y"] - theta[0] * theta[1] * batch["x"]
        return 0.5 * jnp.mean(r * r)

    data = {"x": jnp.array([x]), "y": jnp.array([y])}
    return Problem("bilinear", loss, jnp.asarray(theta0, dtype=float), data, 1)


def _regression_data(seed: int, n: int, p: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) / np.sqrt(p)
    w = rng.normal(size=p)
    return X, w, rng


def quadratic(seed: int = 0, num_examples: int = 256, dim: int = 10) -> Problem:
    """Least squares E(theta, batch) = 1/2 mean_i (x_i . theta - y_i)^2 on seeded Gaussian
    data: a quadratic loss with a constant Hessian per batch."""
    X, w, rng = _regression_data(seed, num_examples, dim)
    y = X @ w + 0.1 * rng.normal(size=num_examples)

    def loss(theta, batch):
        r = batch["x"] @ theta - batch["y"]
        return 0.5 * jnp.mean(r * r)

    theta0 = jnp.asarray(rng.normal(size=dim) + 2.0)
    return Problem("quadratic", loss, theta0, {"x": jnp.asarray(X), "y": jnp.asarray(y)},
                   num_examples)


def logistic(seed: int = 0, num_examples: int = 256, dim: int = 10, l2: float = 1e-2) -> Problem:
    """Logistic regression with labels in {-1, 1} and a ridge term:
    E(theta, batch) = mean_i log(1 + exp(-y_i x_i . theta)) + l2/2 ||theta||^2."""
    X, w, rng = _regression_data(seed, num_examples, dim)
    y = np.where(X @ w + 0.3 * rng.normal(size=num_examples) > 0, 1.0, -1.0)

    def loss(theta, batch):
        margins = batch["y"] * (batch["x"] @ theta)
        return jnp.mean(jax.nn.softplus(-margins)) + 0.5 * l2 * jnp.sum(theta * theta)

    theta0 = jnp.asarray(rng.normal(size=dim))
    return Problem("logistic", loss, theta0, {"x": jnp.asarray(X), "y": jnp.asarray(y)},
                   num_examples)


def _digits(num_examples: int | None):
    """The first ``num_examples`` digits (:func:`bea.data.digits`), flattened to 64 pixels
    in [0, 1], and their labels."""
    images, y = digits()
    X = images.reshape(len(images), -1) / 16.0
    if num_examples is not None:
        X, y = X[:num_examples], y[:num_examples]
    return X, y


def _cross_entropy(logits, y):
    """The mean softmax cross-entropy of ``logits`` (n, k) for integer labels ``y`` (n,)."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def mlp(seed: int = 0, hidden: int = 16, num_examples: int | None = 512,
        centered: bool = False) -> Problem:
    """A smooth (tanh) one-hidden-layer MLP (:class:`bea.models.MLP`, seeded
    ``PRNGKey(seed)``) on scikit-learn's digits (8x8 images, 10 classes; shipped inside
    scikit-learn, no download), softmax cross-entropy.

    tanh keeps every mini-batch loss C^infinity, as assumption (3) needs; the
    parameters (the model's dict W1, b1, W2, b2) are flattened to one vector theta of shape
    (p,). Pixels lie in [0, 1]; ``centered=True`` maps them to [-1, 1]. In [0, 1] the
    weights of always-blank pixels have gradients identically 0, where eps-outside updates
    g/(sqrt(nu) + eps) are not differentiable (docs/math.md, section 5), so the generic
    engine needs the centred data."""
    X, y = _digits(num_examples)
    if centered:
        X = 2 * X - 1
    model = MLP(X.shape[1], hidden, 10, key=jax.random.PRNGKey(seed))
    data = {"x": jnp.asarray(X), "y": jnp.asarray(y, dtype=jnp.int32)}
    return as_problem(_mlp_loss, model.params, data, name="mlp")


def _mlp_loss(p, batch):
    return _cross_entropy(mlp_logits(p, batch["x"]), batch["y"])


def cnn(seed: int = 0, num_examples: int | None = 512, channels: tuple[int, int] = (8, 16),
        hidden: int = 32) -> Problem:
    """A small smooth convolutional network (:class:`bea.models.SmoothCNN`, float64, seeded
    ``PRNGKey(seed)``) on scikit-learn's digits (8x8 images, 10 classes), softmax
    cross-entropy:

        conv 3x3 stride 2 (1 -> c1) -> tanh -> conv 3x3 stride 2 (c1 -> c2) -> tanh
        -> flatten (c2 x 2 x 2) -> linear (-> hidden) -> tanh -> linear (-> 10)

    Strided convolutions instead of pooling and tanh throughout keep every mini-batch loss
    C^infinity (assumption (3) needs C^4: no ReLU, no max-pool; docs/math.md, section 6). With the
    defaults p = 3658. The model's arrays are flattened to one vector theta with
    ``ravel_pytree``, like the other problems; ``unravel`` gives the model back."""
    X, y = _digits(num_examples)
    model = SmoothCNN(1, 8, 10, channels, hidden, key=jax.random.PRNGKey(seed),
                      dtype=jnp.float64)
    data = {"x": jnp.asarray(X), "y": jnp.asarray(y, dtype=jnp.int32)}
    return as_problem(_classifier_loss, model, data, name="cnn")


def _classifier_loss(model, batch):
    """The mean cross-entropy of a :mod:`bea.models` network (one example -> logits)."""
    return _cross_entropy(jax.vmap(model)(batch["x"]), batch["y"])


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "bilinear": bilinear,
    "quadratic": quadratic,
    "logistic": logistic,
    "mlp": mlp,
    "cnn": cnn,
    "mlp_centered": lambda seed=0, **kw: mlp(seed=seed, centered=True, **kw),
}
_DIGITS = NUM_DIGITS  # the most examples mlp, mlp_centered and cnn can take


def make_problem(name: str, seed: int = 0, num_examples: int | None = None) -> Problem:
    """The problem called ``name`` (one of PROBLEMS) with its default data-set size, or the
    first ``num_examples`` examples; bilinear ignores the seed and has no examples."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose one of {sorted(PROBLEMS)}")
    if name == "bilinear":
        if num_examples is not None:
            raise ValueError(f"the bilinear problem has one example: drop num_examples "
                             f"{num_examples}")
        return bilinear()
    if num_examples is None:
        return PROBLEMS[name](seed=seed)
    most = _DIGITS if name in ("mlp", "mlp_centered", "cnn") else None
    if num_examples < 1 or (most is not None and num_examples > most):
        raise ValueError(f"num_examples {num_examples} must lie in [1, {most or 'inf'}] for "
                         f"{name}")
    return PROBLEMS[name](seed=seed, num_examples=num_examples)


def batch_indices(
    num_examples: int, batch_size: int, num_steps: int, seed: int
) -> Int[Array, "num_steps batch_size"]:
    """Row k holds the example indices of batch k: ``fold_in(key, k)`` draws it, so
    batch k does not depend on ``num_steps`` (prefixes of one infinite sequence)."""
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch size {batch_size} must lie in [1, {num_examples}]")
    return _batch_indices(jnp.asarray(seed), num_examples, batch_size, num_steps)


@partial(jax.jit, static_argnums=(1, 2, 3))  # one compilation, not one per primitive
def _batch_indices(seed, num_examples, batch_size, num_steps):
    key = jax.random.PRNGKey(seed)

    def one(k):
        return jax.random.choice(jax.random.fold_in(key, k), num_examples, (batch_size,),
                                 replace=False)

    return jax.vmap(one)(jnp.arange(num_steps))


def batch_sequence(problem: Problem, batch_size: int, num_steps: int, seed: int) -> PyTree:
    """Batches 0..num_steps-1 of the problem's seeded sequence, stacked on a leading axis."""
    if not 1 <= batch_size <= problem.num_examples:
        raise ValueError(f"batch size {batch_size} must lie in [1, {problem.num_examples}]")
    return _batch_sequence(problem.data, jnp.asarray(seed), problem.num_examples, batch_size,
                           num_steps)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _batch_sequence(data, seed, num_examples, batch_size, num_steps):
    idx = _batch_indices(seed, num_examples, batch_size, num_steps)
    return jax.tree_util.tree_map(lambda x: x[idx], data)


class Grouped(NamedTuple):
    """A batch history grouped by distinct batch (docs/math.md, section 7): step k uses batch
    ``b(k) = ids[k]`` of the ``B`` batches in ``distinct`` (every leaf has leading axis B), so
    batch k is ``distinct[ids[k]]``. A finite data set cut into a fixed partition (visited in
    any order, e.g. :func:`bea.problems.epoch_batches`) gives one; passed as ``batches`` to
    :func:`bea.fields.adam_fields.field` or :func:`bea.fields.rmsprop_fields.field` it
    selects the grouped evaluation of Theorems 3.6 / 3.3 (B gradients and 2B Hessian-vector
    products per evaluation, whatever n is)."""

    distinct: PyTree  # leaves with leading axis B
    ids: Int[Array, " K"]  # b(k) in [0, B)

    @property
    def num_batches(self) -> int:
        """B, the number of distinct batches."""
        return jax.tree_util.tree_leaves(self.distinct)[0].shape[0]

    def materialize(self) -> PyTree:
        """The direct history: batch k at index k of every leaf's leading axis (length K)."""
        return jax.tree_util.tree_map(lambda d: d[self.ids], self.distinct)


class EpochSchedule(NamedTuple):
    """An epoch schedule (docs/math.md, section 7): batch k is ``data[partition[batch_ids[k]]]``."""

    partition: Int[Array, "B batch_size"]  # the fixed partition: example indices per batch
    batch_ids: Int[Array, " num_steps"]  # b(k) in [0, B)
    left_out: int  # num_examples - B * batch_size examples in no batch


def epoch_schedule(num_examples: int, batch_size: int, num_steps: int,
                   seed: int) -> EpochSchedule:
    """The data set cut once into a seeded fixed partition of B = num_examples // batch_size
    whole batches (the ``left_out`` = num_examples mod batch_size remaining examples are in
    none), visited epoch after epoch in an order reshuffled every epoch: step k uses batch
    ``batch_ids[k] = perm_e[k mod B]`` with e = k // B and perm_e a permutation of range(B)
    drawn from ``fold_in(key, e)``. Batch k does not depend on ``num_steps`` (prefixes of one
    infinite sequence, docs/math.md, section 1). Each distinct batch recurs once per epoch, so the
    history groups by distinct batch (:class:`Grouped`, :func:`epoch_batches`)."""
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch size {batch_size} must lie in [1, {num_examples}]")
    if num_steps < 0:
        raise ValueError(f"num_steps must be non-negative, got {num_steps}")
    B = num_examples // batch_size
    partition, ids = _epoch_schedule(jnp.asarray(seed), num_examples, batch_size, num_steps)
    return EpochSchedule(partition, ids, num_examples - B * batch_size)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _epoch_schedule(seed, num_examples, batch_size, num_steps):
    B = num_examples // batch_size
    key = jax.random.PRNGKey(seed)
    k_part, k_order = jax.random.split(key)
    perm = jax.random.permutation(k_part, num_examples)[: B * batch_size]
    partition = perm.reshape(B, batch_size)
    epochs = -(-num_steps // B)
    orders = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(k_order, e), B))(
        jnp.arange(epochs))
    return partition, orders.reshape(-1)[:num_steps]


def epoch_batches(problem: Problem, batch_size: int, num_steps: int, seed: int) -> Grouped:
    """Steps 0..num_steps-1 of the problem's epoch schedule (:func:`epoch_schedule`) as a
    grouped history :class:`Grouped`: the B distinct batches (leading axis B) and
    b(k) for every step. ``.materialize()`` gives the direct per-step history, identical to
    :func:`epoch_sequence`."""
    s = epoch_schedule(problem.num_examples, batch_size, num_steps, seed)
    distinct = jax.tree_util.tree_map(lambda x: x[s.partition], problem.data)
    return Grouped(distinct, s.batch_ids)


def epoch_sequence(problem: Problem, batch_size: int, num_steps: int, seed: int) -> PyTree:
    """The epoch schedule's batches 0..num_steps-1 stacked on a leading step axis (the
    direct history, like :func:`batch_sequence` for i.i.d. batches)."""
    return epoch_batches(problem, batch_size, num_steps, seed).materialize()
