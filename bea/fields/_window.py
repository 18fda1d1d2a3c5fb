"""History windows: drop the terms whose weights are below round-off, exactly (the one place
that decides how much history a field needs).

At step n the Theorem 3.6 field weights batch k by beta^(n-k) and rho^(n-k) (directly, and
through M^(l), R^(l), S_k for l >= k). Terms with a^(n-k) < 1e-18 change no float64 digit
of the field: :func:`round_off_lags` is the first length W where a^W < 1e-18. The full-batch
RMSProp field of Remark 3.4 (:func:`bea.fields.full_batch.rmsprop_field`) sums its last W
steps; the mini-batch fields need the batches n-W+1..n and, for the averages M^(l), R^(l) of
those l, W more before them: the 2W batches ending at n, where the field's chunk loop starts
(:func:`window_length`, used by :func:`bea.fields.adam_fields.field` and the grouped field). This
makes a field evaluation O(W) instead of O(n) (O(N W) per trajectory instead of O(N^2));
tests/test_convergence.py shows a sweep reports the same errors. Used automatically when
beta and rho are concrete.
"""

from __future__ import annotations

import math

import jax

__all__ = ["round_off_lags", "window_length"]

TINY = 1e-18
"""Weights below this change no float64 digit of a field."""


def round_off_lags(a, tiny: float = TINY) -> int | None:
    """W = the first lag with a^W < ``tiny``, plus one (1 for a <= 0: only lag 0 counts), or
    None when ``a`` is traced or a >= 1 (no lag is negligible)."""
    try:
        a = float(a)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
    if a <= 0:
        return 1
    if a >= 1:
        return None
    return math.ceil(math.log(tiny) / math.log(a)) + 1


def window_length(beta, rho, K: int, tiny: float = TINY) -> int | None:
    """2W (the slice length of the mini-batch fields) for W = :func:`round_off_lags` of
    max(beta, rho), or None when no window applies (traced beta/rho, 2W >= K)."""
    try:
        a = max(float(beta), float(rho))
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
    W = round_off_lags(a, tiny)
    return 2 * W if W is not None and 2 * W < K else None
