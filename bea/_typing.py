"""The types the modules share: a loss and a modified vector field.

A field is the right-hand side on one interval [nh, (n+1)h] of a piecewise ODE: ``f(n, theta)``
with n the (integer) step and theta the current parameters (docs/math.md, section 3). Every
field of :mod:`bea.fields` has this type and :func:`bea._integrate.solve` integrates any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxtyping import Array, Float, Int, PyTree

__all__ = ["Loss", "Field"]

Loss = Callable[[PyTree, Any], Float[Array, ""]]
"""E(theta, batch): a scalar loss of parameters (any pytree of float arrays) and a batch."""

Field = Callable[[Int[Array, ""], PyTree], PyTree]
"""f(n, theta) -> d theta/dt on [nh, (n+1)h], same structure as theta."""
