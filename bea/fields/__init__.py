"""The modified vector fields of the paper, one module per family.

- :mod:`bea.fields.adam_fields`: Theorem 3.6 (mini-batch Adam), building blocks R, M, L,
  L_bar, P, P_bar
- :mod:`bea.fields.rmsprop_fields`: Theorem 3.3 (mini-batch RMSProp)
- :mod:`bea.fields.full_batch`: Remarks 3.4 and 3.7, the large-n limit (8)
- :mod:`bea.fields.special_cases`: GD (Barrett-Dherin), heavy ball (Ghosh et al.), Examples 3.5, 3.8
- :mod:`bea.fields.generic`: any smooth optax optimizer (docs/math.md, section 5;
  :func:`modified_field`, no per-optimizer algebra)
- :class:`bea.problems.Grouped`: a history grouped by distinct batch (docs/math.md, section
  7); the Adam and RMSProp fields take it in place of the per-step history and cost B
  gradients and 2B Hessian-vector products per evaluation (:mod:`bea.fields.grouped`)

A field is a pure function ``f(n, theta) -> dtheta`` (:data:`bea.Field`; n the step
whose interval [nh, (n+1)h] is being integrated). Every field walks its batch history
through one protocol, :class:`History` (gradients, Hessian-vector products, chunks; full
batch, direct, grouped by distinct batch), and takes its Hessian-vector products from one
helper, :func:`hvp`. :func:`make_field` builds a closed form by name: a lookup in the
registry entry's ``closed`` builders (:mod:`bea.optimizer_registry`), which refuses, by
name, any kind the entry lacks. docs/fields.md says how to add a closed-form optimizer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from jaxtyping import Array, Float, PyTree

from bea import optimizer_registry as registry
from bea._hvp import hvp
from bea._typing import Field
from bea.fields import adam_fields, full_batch, generic, grouped, rmsprop_fields, special_cases
from bea.fields._history import Direct, FullBatch, GroupedHistory, History
from bea.fields._window import window_length
from bea.fields.generic import modified_field
from bea.problems import Grouped

__all__ = ["adam_fields", "rmsprop_fields", "full_batch", "special_cases", "generic", "grouped",
           "modified_field", "make_field", "closed_builder", "hvp", "History", "FullBatch",
           "Direct", "GroupedHistory", "window_length"]


def closed_builder(optimizer: str, kind: str) -> registry.Builder:
    """The closed-form builder of field ``kind`` of registry entry ``optimizer``
    (``Spec.closed[kind]``, a ``"module:function"`` reference imported here). Raises
    ValueError naming the optimizer and the kind when the entry has no such builder."""
    registry.check(optimizer)
    spec = registry.REGISTRY[optimizer]
    if kind not in spec.closed:
        have = ", ".join(spec.closed) or "none"
        raise ValueError(f"optimizer {optimizer!r} has no closed-form field {kind!r} "
                         f"(its closed forms: {have})")
    ref = spec.closed[kind]
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"optimizer {optimizer!r}: the builder {ref!r} of field {kind!r} "
                         f"cannot be imported ({type(e).__name__}: {e})") from None


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
    """The closed-form field ``kind`` ('order0', 'order1', 'order1_typo' or 'limit', as the
    registry entry has them) of ``optimizer`` (a registry name with closed forms: 'adam',
    'rmsprop', 'gd', 'heavy_ball').

    Full batch when ``batches`` is None: ``loss`` is then E(theta); otherwise ``loss`` is
    E(theta, batch) and ``batches`` holds batch k at index k, or (entries with
    ``grouped``: adam, rmsprop) is a :class:`bea.problems.Grouped` history (docs/math.md,
    section 7). ``num_steps`` bounds n (needed by full-batch RMSProp's history sum). Raises
    ValueError naming what does not exist."""
    if kind == "order2":
        raise ValueError("field 'order2' has no closed form: build it with modified_field("
                         "..., order=2) (the generic engine, docs/math.md, section 8)")
    registry.engine_for(optimizer, "closed")
    registry.check_fields(optimizer, (kind,), "closed", batches is not None)
    if isinstance(batches, Grouped) and not registry.REGISTRY[optimizer].grouped:
        takers = " and ".join(k for k, s in registry.REGISTRY.items() if s.grouped)
        raise ValueError(f"a grouped history (docs/math.md, section 7) is taken by the "
                         f"{takers} fields only, not {optimizer!r}; pass .materialize()")
    return closed_builder(optimizer, kind)(loss, h, beta=beta, rho=rho, eps=eps,
                                           batches=batches, num_steps=num_steps)
