"""The modified vector fields of the paper, one module per family.

- :mod:`bea.fields.adam`: Theorem 3.6 (mini-batch Adam), building blocks R, M, L, L_bar, P, P_bar
- :mod:`bea.fields.rmsprop`: Theorem 3.3 (mini-batch RMSProp)
- :mod:`bea.fields.full_batch`: Remarks 3.4 and 3.7, the large-n limit (8), the sign flow
- :mod:`bea.fields.special_cases`: GD (Barrett-Dherin), heavy ball (Ghosh et al.), Examples 3.5, 3.8
- :mod:`bea.fields.generic`: any smooth optax optimizer (docs/math.md, section 5;
  :func:`modified_field`, no per-optimizer algebra)
- :class:`bea.problems.Grouped`: a history grouped by distinct batch (docs/math.md, section
  7); the Adam and RMSProp fields take it in place of the per-step history and cost B
  gradients and 2B Hessian-vector products per evaluation (:mod:`bea.fields._grouped`)

A field is a pure function ``f(n, theta) -> dtheta`` (:data:`bea.typing.Field`; n the step
whose interval [nh, (n+1)h] is being integrated). :func:`make_field` builds a closed form by
name; which names and kinds exist is :mod:`bea.optimizer_registry`'s to say.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxtyping import Array, Float, PyTree

from bea import optimizer_registry as registry
from bea.fields import adam, full_batch, generic, rmsprop, special_cases
from bea.fields.generic import modified_field
from bea.problems import Grouped
from bea.typing import Field

__all__ = ["adam", "rmsprop", "full_batch", "special_cases", "generic", "modified_field",
           "make_field"]


def make_field(
    optimizer: str,
    kind: str,
    loss: Callable,
    h: float | Float[Array, ""],
    *,
    beta: float | Float[Array, ""] = 0.9,
    rho: float | Float[Array, ""] = 0.999,
    eps: float | Float[Array, ""] = 1e-8,
    batches: PyTree | None = None,
    num_steps: int | None = None,
) -> Field:
    """The closed-form field ``kind`` ('order0', 'order1', 'order1_typo' or 'limit') of
    ``optimizer`` ('adam', 'rmsprop', 'gd' or 'heavy_ball').

    Full batch when ``batches`` is None: ``loss`` is then E(theta); otherwise ``loss`` is
    E(theta, batch) and ``batches`` holds batch k at index k, or (adam, rmsprop) is a
    :class:`bea.problems.Grouped` history (docs/math.md, section 7). ``num_steps`` bounds n
    (needed by full-batch RMSProp's history sum). Raises ValueError naming what does not
    exist."""
    mini = batches is not None
    if kind == "order2":
        raise ValueError("field 'order2' has no closed form: build it with modified_field("
                         "..., order=2) (the generic engine, docs/math.md, section 8)")
    registry.engine_for(optimizer, "closed")
    registry.check_fields(optimizer, (kind,), "closed", mini)
    if isinstance(batches, Grouped) and optimizer not in ("adam", "rmsprop"):
        raise ValueError(f"a grouped history (docs/math.md, section 7) is taken by the adam "
                         f"and rmsprop fields only, not {optimizer!r}; pass .materialize()")
    order = 0 if kind == "order0" else 1
    variant = "typo" if kind == "order1_typo" else "paper"
    if optimizer == "adam":
        if mini:
            return adam.field(loss, batches, h, beta, rho, eps, order=order, variant=variant)
        if kind == "limit":
            return full_batch.adam_limit_field(loss, h, beta, rho, eps)
        return full_batch.adam_field(loss, h, beta, rho, eps, order=order, variant=variant)
    if optimizer == "rmsprop":
        if mini:
            return rmsprop.field(loss, batches, h, rho, eps, order=order, variant=variant)
        if kind == "limit":
            return full_batch.rmsprop_limit_field(loss, h, rho, eps)
        if num_steps is None:
            raise ValueError("full-batch RMSProp's field needs num_steps")
        return full_batch.rmsprop_field(loss, h, rho, eps, num_steps, order=order,
                                        variant=variant)
    if optimizer == "gd":
        return special_cases.gd_field(loss, h, order=order, batches=batches)
    if mini:
        return special_cases.heavy_ball_minibatch_field(loss, batches, h, beta, order=order)
    return special_cases.heavy_ball_field(loss, h, beta, order=order, limit=kind == "limit")
