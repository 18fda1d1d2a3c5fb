"""The modified vector fields of the paper, one module per family.

- :mod:`bea.fields.adam`: Theorem 3.6 (mini-batch Adam), building blocks R, M, L, L_bar, P, P_bar
- :mod:`bea.fields.rmsprop`: Theorem 3.3 (mini-batch RMSProp)
- :mod:`bea.fields.full_batch`: Remarks 3.4 and 3.7, the large-n limit (8), the sign flow
- :mod:`bea.fields.special_cases`: GD (Barrett-Dherin), heavy ball (Ghosh et al.), Examples 3.5, 3.8
- :mod:`bea.fields.generic`: any smooth optax optimizer, by MATH.md section 5
  (:func:`modified_field`; no per-optimizer algebra)
- :class:`Grouped`: a history grouped by distinct batch (MATH.md section 7); the Adam and
  RMSProp fields take it in place of the per-step history and cost B gradients and 2B
  Hessian-vector products per evaluation (:mod:`bea.fields._grouped`)

A field is a pure function ``f(n, theta) -> dtheta`` (n the step whose interval
[nh, (n+1)h] is being integrated). :func:`make_field` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable

from bea.fields import adam, full_batch, generic, rmsprop, special_cases
from bea.fields._history import Grouped
from bea.fields.generic import modified_field

__all__ = ["adam", "rmsprop", "full_batch", "special_cases", "generic", "modified_field",
           "Grouped",
           "make_field", "check_field", "FIELD_KINDS",
           "CLOSED_FORM_OPTIMIZERS"]

FIELD_KINDS = ("order0", "order1", "order1_typo", "limit")
CLOSED_FORM_OPTIMIZERS = ("adam", "rmsprop", "gd", "heavy_ball")


def check_field(optimizer: str, kind: str, mini_batch: bool) -> None:
    """Raise ValueError (one line, naming the value) unless ``make_field`` can build it."""
    if kind not in FIELD_KINDS:
        raise ValueError(f"unknown field {kind!r}; choose from {', '.join(FIELD_KINDS)}")
    if optimizer not in CLOSED_FORM_OPTIMIZERS:
        raise ValueError(f"no closed-form field for optimizer {optimizer!r}; "
                         f"closed forms exist for {', '.join(CLOSED_FORM_OPTIMIZERS)}")
    if optimizer in ("gd", "heavy_ball") and kind == "order1_typo":
        raise ValueError(f"field 'order1_typo' is the R^3 typo of Theorems 3.3/3.6 and has no "
                         f"meaning for {optimizer!r}")
    if kind == "limit" and mini_batch:
        raise ValueError("field 'limit' is the full-batch large-n limit (8); it has no "
                         "mini-batch form (drop --batch-size)")
    if kind == "limit" and optimizer == "gd":
        raise ValueError("field 'limit' does not apply to 'gd' (its field has no n)")


def make_field(
    optimizer: str,
    kind: str,
    loss: Callable,
    h,
    *,
    beta=0.9,
    rho=0.999,
    eps=1e-8,
    batches=None,
    num_steps: int | None = None,
) -> Callable:
    """The closed-form field ``kind`` (one of FIELD_KINDS) of ``optimizer``.

    Full batch when ``batches`` is None: ``loss`` is then E(theta); otherwise ``loss`` is
    E(theta, batch) and ``batches`` holds batch k at index k, or (adam, rmsprop) is a
    :class:`Grouped` history (MATH.md section 7). ``num_steps`` bounds n (needed
    by full-batch RMSProp's history sum). Raises ValueError naming what does not exist.
    """
    mini = batches is not None
    check_field(optimizer, kind, mini)
    if isinstance(batches, Grouped) and optimizer not in ("adam", "rmsprop"):
        raise ValueError(f"a Grouped history (MATH.md section 7) is taken by the adam and "
                         f"rmsprop fields only, not {optimizer!r}; pass .materialize()")
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
    # heavy ball
    if mini:
        return special_cases.heavy_ball_minibatch_field(loss, batches, h, beta, order=order)
    return special_cases.heavy_ball_field(loss, h, beta, order=order, limit=kind == "limit")
