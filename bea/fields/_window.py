"""History windows for the mini-batch fields: drop the batches whose weights are below
round-off, exactly.

At step n the Theorem 3.6 field weights batch k by beta^(n-k) and rho^(n-k) (directly, and
through M^(l), R^(l), S_k for l >= k). Terms with a^(n-k) < 1e-18 change no float64 digit
of the field, so with W the first length where max(beta, rho)^W < 1e-18 the field only
needs the batches n-W+1..n and, for the averages M^(l), R^(l) of those l, W more before
them: the 2W batches ending at n, where the field's chunk loop starts
(:func:`bea.fields.adam.field`). This makes a field evaluation O(W) instead of O(n)
(O(N W) per trajectory instead of O(N^2)); tests/test_sweep.py shows it reports the same
errors. Used automatically when beta and rho are concrete and 2W < K.
"""

from __future__ import annotations

import math

import jax

__all__ = ["window_length"]


def window_length(beta, rho, K: int, tiny: float = 1e-18) -> int | None:
    """2W (the slice length), or None when no window applies (traced beta/rho, 2W >= K)."""
    try:
        a = max(float(beta), float(rho))
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
    if a <= 0:
        return None if K <= 2 else 2
    W = math.ceil(math.log(tiny) / math.log(a)) + 1
    return 2 * W if 2 * W < K else None
