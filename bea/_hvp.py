"""The one Hessian-vector product of the package (docs/math.md, section 3: every field term
is a gradient or a product H_k v taken at the current theta).

Forward-over-reverse: one ``jax.jvp`` of ``jax.grad``, so H v costs a small constant times a
gradient and never forms H; the gradient comes out as the product's primal, at no extra
cost. Several tangents against one theta: ``jax.vmap`` over ``v`` alone (the primal is not
batched, so it is computed once). Every field of :mod:`bea.fields` and
:func:`bea._norms.grad_perturbed_one_norm` call this function; derivatives of it (the third
derivatives of the second-order field, docs/math.md, section 8) are ``jax.jvp`` of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jaxtyping import PyTree

__all__ = ["hvp"]


def hvp(loss: Callable[..., Any], theta: PyTree, v: PyTree, *args: Any) -> tuple[PyTree, PyTree]:
    """(grad E(theta), H(theta) v) for E = ``loss(., *args)``: one forward-over-reverse
    product (``jax.jvp`` of ``jax.grad``); theta and v are pytrees of the same structure."""
    return jax.jvp(lambda t: jax.grad(loss)(t, *args), (theta,), (v,))
