"""First-order modified equations for any smooth optax optimizer (MATH.md section 5).

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
   Cost per evaluation: K gradients, K Hessian-vector products (batched) and two scans
   of elementwise updates, where K is the number of history slots; no O(K^2) term.

**Requirements** (MATH.md section 5; not checked, the caller's responsibility): F_n
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

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree

__all__ = ["modified_field", "zeroth_order_history"]

Field = Callable[[Int[Array, ""], PyTree], PyTree]
_tm = jax.tree_util.tree_map


def _scan_updates(transformation: optax.GradientTransformation, grads: PyTree,
                  params: PyTree) -> PyTree:
    """The updates u_0..u_{K-1} of ``transformation`` fed (grads[k], params[k]) at step k,
    starting from ``init(params[0])`` (leading axis K on every leaf)."""
    state0 = transformation.init(_tm(lambda p: p[0], params))

    def step(state, gp):
        g, p = gp
        u, state = transformation.update(g, state, p)
        return state, u

    return jax.lax.scan(step, state0, (grads, params))[1]


def _broadcast(theta: PyTree, K: int) -> PyTree:
    return _tm(lambda t: jnp.broadcast_to(t, (K, *jnp.shape(t))), theta)


def zeroth_order_history(
    transformation: optax.GradientTransformation,
    grads: PyTree,
    theta: PyTree,
) -> PyTree:
    """f_l(theta) = F_l(theta, ..., theta) for every l (leading axis K): one scan of the
    optimizer's ``update`` over the gradients g_l(theta), parameters theta in every slot
    (step 2 of the construction, MATH.md section 5)."""
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
) -> Field:
    """The zeroth- (``order=0``) or first-order (``order=1``) modified field
    ``f(n, theta)`` of any smooth optax optimizer, by MATH.md section 5.

    ``transformation`` must be built with learning rate 1, so that its update at step n is
    F_n (the optimizer run by :func:`bea.optimizers.trajectory` is the same transformation
    with learning rate h). ``loss(theta, batch)`` is the mini-batch loss; ``batches`` holds
    batch k at index k of every leaf's leading axis (K >= n + 1 slots; slots after n do not
    influence step n). Full batch: ``batches=None``, every step uses ``data``, and
    ``num_steps`` gives the number of history slots K (at least n + 1).

    The returned field plugs into :func:`bea.solve.solve` like the closed forms. theta may
    be any pytree of float arrays. Requirements (smooth F_n independent of h, decaying
    memory) are listed in the module docstring.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order!r}")
    grad = jax.grad(loss)
    if batches is None:
        if num_steps is None:
            raise ValueError("full batch (batches=None) needs num_steps, the history length")
        K = int(num_steps)

        def grads_at(theta):
            return _broadcast(grad(theta, data), K)

        def hvps_at(theta, V):
            _, lin = jax.linearize(lambda t: grad(t, data), theta)
            return jax.vmap(lin)(V)
    else:
        K = jax.tree_util.tree_leaves(batches)[0].shape[0]

        def grads_at(theta):
            return jax.vmap(grad, in_axes=(None, 0))(theta, batches)

        def hvps_at(theta, V):
            def one(batch, v):
                return jax.jvp(lambda t: grad(t, batch), (theta,), (v,))[1]

            return jax.vmap(one)(batches, V)

    def f(n, theta):
        G = grads_at(theta)
        U = zeroth_order_history(transformation, G, theta)  # f_l(theta), every l
        fn = _tm(lambda u: u[n], U)
        if order == 0:
            return fn
        k = jnp.arange(K)

        def tangent(u, f_n):
            mask = (k < n).reshape((K,) + (1,) * (u.ndim - 1))
            um = jnp.where(mask, u, 0.0)
            d = -jnp.flip(jnp.cumsum(jnp.flip(um, 0), 0), 0)  # d_k = -sum_{l=k}^{n-1} f_l
            keep = (k <= n).reshape(mask.shape)
            return jnp.where(keep, d - 0.5 * f_n, 0.0)  # slots after n do not matter

        V = _tm(tangent, U, fn)
        HV = hvps_at(theta, V)  # H_k(theta) v_k for every k, batched
        P = _broadcast(theta, K)
        _, dF = jax.jvp(lambda g, p: _tm(lambda u: u[n], _scan_updates(transformation, g, p)),
                        (G, P), (HV, V))
        return _tm(lambda a, b: a + h * b, fn, dF)

    return f
