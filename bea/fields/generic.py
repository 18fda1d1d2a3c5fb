"""First-order modified equations for any smooth optax optimizer (docs/math.md, section 5).

No per-optimizer algebra: the optimizer's own ``update`` is run over the history of
gradients, and one ``jax.jvp`` through that run gives the first-order correction.
The derivation, step by step (a reader can check it without the paper; docs/generic.md
has the long form):

1. **The step as a function of the past.** Build the optax transformation with
   learning rate 1, so that running it on the gradients g_k(theta^(k)) = grad E_k(theta^(k))
   (and the parameters theta^(k), for updates such as decoupled weight decay) returns
   F_n(theta^(0), ..., theta^(n)) at step n, and the optimizer at learning rate h is
   theta^(n+1) = theta^(n) + h F_n(theta^(0..n)). This needs the update to be linear in
   the learning rate with F_n independent of h (true of every optax optimizer whose
   last link is ``scale_by_learning_rate`` with a constant rate).
2. **Zeroth order.** With every argument at the current theta, f_l(theta) =
   F_l(theta, ..., theta): one scan of ``update`` over g_0(theta), ..., g_K(theta) yields
   f_l for every l at once. The flow of f_n matches one step to O(h^2): order 1.
3. **Where the past iterates were.** Along the modified flow, theta~((k-n)h + nh) is
   theta~(nh) moved back by the steps k..n-1, so theta^(k) = theta + h d_k + O(h^2) with
   d_k = -sum_{l=k}^{n-1} f_l(theta) (d_n = 0). Zeroth order is enough for d_k: its error
   enters the field multiplied by h.
4. **Matching one step to second order.** Taylor-expanding, one step of the flow of
   f~_n = f_n + h c_n gives theta + h f_n + h^2 (c_n + (1/2) Df_n f_n) + O(h^3), and the
   optimizer's step gives theta + h F_n(theta + h d_0, ..., theta + h d_n) + O(h^3) =
   theta + h f_n + h^2 sum_k (dF_n/dtheta_k) d_k + O(h^3). Since
   Df_n = sum_k dF_n/dtheta_k (the chain rule on the diagonal),

       f~_n(theta) = f_n(theta) + h sum_{k<=n} (dF_n/dtheta_k)(theta, ..., theta) (d_k - f_n/2),

   which is one Jacobian-vector product of the map (theta_0, ..., theta_n) -> F_n at the
   diagonal, with tangent v_k = d_k - f_n(theta)/2 in slot k.
5. **Computing the JVP.** theta_k enters F_n through g_k(theta_k) and, where the update
   reads the parameters, directly. By the chain rule the tangent of the gradient in
   slot k is H_k(theta) v_k, one Hessian-vector product per past step, computed for all
   k at once (vmapped over the batch axis); then ``jax.jvp`` of the scan of ``update``
   in (gradients, parameters) with tangents (H_k v_k, v_k) gives the sum in step 4.
   Cost per evaluation: n + 1 gradients, n + 1 Hessian-vector products (batched, in
   chunks of ``chunk`` slots up to slot n) and two scans of elementwise updates; no
   O(K^2) term and no work on the slots after n.

**Requirements** (docs/math.md, section 5; not checked, the caller's responsibility): F_n
must not depend on h; F_n must be C^2 in the gradients and parameters in the region
the trajectory visits (no sign, max, clipping, or eps outside a square root whose
argument can reach 0); and sum_k ||dF_n/dtheta_k|| (n-k)^2 must stay bounded in n
(geometric memory does; AdaGrad-style sums that never decay do not). For Adam and
RMSProp (Theorems 3.6 and 3.3, Remarks 3.7 and 3.4), GD (Barrett and Dherin) and heavy
ball (Ghosh et al.) the result equals the closed forms to round-off (tests/test_generic.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from bea.fields._history import chunk_history
from bea.typing import Field

__all__ = ["modified_field", "zeroth_order_history"]

_tm = jax.tree_util.tree_map


def _scan_updates(transformation: optax.GradientTransformation, grads: PyTree,
                  params: PyTree) -> PyTree:
    """The updates u_0..u_{K-1} of ``transformation`` fed (grads[k], params[k]) at step k,
    starting from ``init(params[0])`` (leading axis K on every leaf)."""
    state0 = transformation.init(_tm(lambda p: p[0], params))
    return _scan_state(transformation, state0, grads, params)[1]


def _scan_state(transformation: optax.GradientTransformation, state, grads: PyTree,
                params: PyTree):
    """(final state, updates) of ``transformation`` run from ``state`` over the slots of
    (grads, params) (leading axis on every leaf): one chunk of the history."""

    def step(st, gp):
        g, p = gp
        u, st = transformation.update(g, st, p)
        return st, u

    return jax.lax.scan(step, state, (grads, params))


def _broadcast(theta: PyTree, K: int) -> PyTree:
    return _tm(lambda t: jnp.broadcast_to(t, (K, *jnp.shape(t))), theta)


def zeroth_order_history(
    transformation: optax.GradientTransformation,
    grads: PyTree,
    theta: PyTree,
) -> PyTree:
    """f_l(theta) = F_l(theta, ..., theta) for every l (leading axis K): one scan of the
    optimizer's ``update`` over the gradients g_l(theta), parameters theta in every slot
    (step 2 of the construction, docs/math.md, section 5)."""
    K = jax.tree_util.tree_leaves(grads)[0].shape[0]
    return _scan_updates(transformation, grads, _broadcast(theta, K))


def modified_field(
    transformation: optax.GradientTransformation,
    loss: Callable[[Any, Any], Float[Array, ""]],
    batches: PyTree | None,
    h: float | Float[Array, ""],
    *,
    order: int = 1,
    data: PyTree | None = None,
    num_steps: int | None = None,
    chunk: int = 8,
) -> Field:
    """The zeroth- (``order=0``) or first-order (``order=1``) modified field
    ``f(n, theta)`` of any smooth optax optimizer, by docs/math.md, section 5.

    ``transformation`` must be built with learning rate 1, so that its update at step n is
    F_n (the optimizer run by :func:`bea.optimizers.trajectory` is the same transformation
    with learning rate h). ``loss(theta, batch)`` is the mini-batch loss; ``batches`` holds
    batch k at index k of every leaf's leading axis (K >= n + 1 slots; slots after n do not
    influence step n). Full batch: ``batches=None``, every step uses ``data``, and
    ``num_steps`` gives the number of history slots K (at least n + 1).

    The returned field plugs into :func:`bea.integrate.solve` like the closed forms. theta may
    be any pytree of float arrays. ``chunk``: the history is walked up to slot n in chunks
    of this many slots (the cost of step n is O(n), in one compiled program).
    Requirements (smooth F_n independent of h, decaying memory) are listed in the module
    docstring.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    grad = jax.grad(loss)
    if batches is None:
        if num_steps is None:
            raise ValueError("full batch (batches=None) needs num_steps, the history length")
        K = int(num_steps)
    else:
        K = jax.tree_util.tree_leaves(batches)[0].shape[0]
    C = min(chunk, K)
    nc = -(-K // C)
    chunks = None if batches is None else chunk_history(batches, C)[0]
    rows = jnp.arange(C)

    def grads_at(theta, c):  # g_k(theta) for the C slots of chunk c
        if chunks is None:
            return _broadcast(grad(theta, data), C)
        batch = _tm(lambda b: b[c], chunks)
        return jax.vmap(grad, in_axes=(None, 0))(theta, batch)

    def hvps_at(theta, c, V):  # (g_k(theta), H_k(theta) v_k) for the slots of chunk c
        if chunks is None:
            g, lin = jax.linearize(lambda t: grad(t, data), theta)
            return _broadcast(g, C), jax.vmap(lin)(V)
        batch = _tm(lambda b: b[c], chunks)

        def one(b, v):
            return jax.jvp(lambda t: grad(t, b), (theta,), (v,))

        return jax.vmap(one)(batch, V)

    def f(n, theta):
        c1 = n // C + 1
        P = _broadcast(theta, C)
        state0 = transformation.init(theta)

        def forward(c, carry):  # f_l(theta) for the slots of chunk c; the sum of those < n
            state, U_all, T = carry
            state, U = _scan_state(transformation, state, grads_at(theta, c), P)
            before_n = c * C + rows < n
            T = _tm(lambda t, u: t + jnp.tensordot(before_n.astype(u.dtype), u, 1), T, U)
            U_all = _tm(lambda b, u: jax.lax.dynamic_update_index_in_dim(b, u, c, 0), U_all, U)
            return state, U_all, T

        zeros = _tm(jnp.zeros_like, theta)
        U0 = _tm(lambda t: jnp.zeros((nc, C, *jnp.shape(t)), t.dtype), theta)
        _, U_all, T = jax.lax.fori_loop(0, c1, forward, (state0, U0, zeros))
        fn = _tm(lambda b: b[n // C, n % C], U_all)
        if order == 0:
            return fn
        # v_k = d_k - f_n/2 with d_k = -sum_{l=k}^{n-1} f_l = -(T - sum_{l<k} f_l); the
        # tangent enters F_n through the parameters in slot k (and the state init, slot 0)
        # and through the gradient there, as H_k v_k.
        float_state, other_state = eqx.partition(state0, eqx.is_inexact_array)
        v0 = _tm(lambda t, f_: -t - f_ / 2, T, fn)
        t_state0 = eqx.filter(jax.jvp(transformation.init, (theta,), (v0,))[1],
                              eqx.is_inexact_array)

        def second(c, carry):  # the jvp of the update scan, chunk by chunk, up to slot n
            fs, ts, os_, prefix, dF = carry
            U = _tm(lambda b: b[c], U_all)
            excl = _tm(lambda u: jnp.cumsum(u, 0) - u, U)  # sum_{l<k} f_l within the chunk
            V = _tm(lambda t, p_, e, f_: -(t - p_ - e) - f_ / 2, T, prefix, excl, fn)
            G, HV = hvps_at(theta, c, V)

            def run(fs_, g, p_):
                st, u = _scan_state(transformation, eqx.combine(fs_, os_), g, p_)
                fs_out, os_out = eqx.partition(st, eqx.is_inexact_array)
                return (fs_out, u), os_out

            (fs, _), (ts, dU), os_ = jax.jvp(run, (fs, G, P), (ts, HV, V), has_aux=True)
            here = c == n // C
            dF = _tm(lambda d, du: jnp.where(here, du[n % C], d), dF, dU)
            prefix = _tm(lambda p_, u: p_ + u.sum(0), prefix, U)
            return fs, ts, os_, prefix, dF

        *_, dF = jax.lax.fori_loop(0, c1, second, (float_state, t_state0, other_state, zeros,
                                                   zeros))
        return _tm(lambda a, b: a + h * b, fn, dF)

    return f
