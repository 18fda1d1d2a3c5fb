"""Read-outs of a training history at equal training loss (Section 6, Figures 3 to 8).

The paper reads ||grad E||_{1,eps} and the test accuracy "at the first point the
training loss drops below 0.01": one row of the history. The gradient of a network in
the oscillation regime changes by factors of 2-3 from one full-batch step to the next,
so that single row is mostly the phase of the oscillation. Three read-outs of a column
``v`` of a history at a loss threshold ``L*``, with ``k`` the first row whose training
loss is below ``L*``:

* ``first``: ``v[k]`` (the paper's read-out, kept for comparison);
* ``interp``: ``v`` at equal training loss, linear in log loss between rows k-1 and k:
  ``t = (log L* - log L[k-1]) / (log L[k] - log L[k-1])``, ``v[k-1] + t (v[k] - v[k-1])``
  (exact when ``v`` is affine in log loss between the two steps);
* ``window``: the mean of ``v`` over rows ``k - w .. k + w`` (2w + 1 steps around the
  crossing), which averages the oscillation out; it needs w rows on each side.

The hill of a norm curve (Figures 7, 8) and the training regime of a run:

* ``hill_height``: the largest factor by which the *smoothed* norm climbs above an
  earlier value of itself, max_{m < n} s_n / s_m (1.0 if it never climbs). The smoothed
  curve s is the moving median over 2w + 1 steps (default w = 5) of the two-step means
  (v_j + v_{j+1}) / 2: the two-step mean removes the period-2 step-to-step oscillation,
  the median removes any excursion shorter than w steps, so neither a minimum at step 1
  nor one spike can set the hill (``hill_first_minimum``, the older measure, the maximum
  after the curve's first local minimum over that minimum, ranged 1.2 to 101 between
  seeds of one configuration for exactly that reason).
* ``regime``: "spike" if the training loss rises by more than a factor ``factor``
  (default 10) within ``within`` steps (default 10) anywhere in the run, that is
  L[n + j] > factor L[n] for some n and 1 <= j <= within; else "oscillation" (the
  paper's stable regime, Section 6, after Ma, Wu and E 2022).

Pure numpy functions of the history rows (not a hot path: a few thousand rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

__all__ = [
    "READOUTS",
    "first_crossing",
    "at_equal_loss",
    "window_mean",
    "hill_height",
    "hill_first_minimum",
    "smoothed",
    "regime",
    "REGIMES",
    "read_out",
]

READOUTS = ("first", "interp", "window")
REGIMES = ("oscillation", "spike")
HILL_HALF_WIDTH = 5
SPIKE_FACTOR = 10.0
SPIKE_WITHIN = 10


def first_crossing(loss: Float[np.ndarray, " n"], threshold: float) -> int | None:
    """Index of the first entry of ``loss`` below ``threshold`` (non-finite entries are
    never below), or None if there is none: the paper's stopping row."""
    loss = np.asarray(loss, dtype=float)
    below = np.isfinite(loss) & (loss < threshold)
    return int(np.argmax(below)) if below.any() else None


def at_equal_loss(
    loss: Float[np.ndarray, " n"], values: Float[np.ndarray, " n"], threshold: float
) -> tuple[float, float] | None:
    """``(v, t)``: ``values`` interpolated linearly in log loss to training loss
    ``threshold`` between the first row below it (k) and the row before (module
    docstring), and the fractional row index ``k - 1 + t``. If row 0 is already below
    the threshold there is nothing to interpolate from: ``(values[0], 0.0)``. None if
    the loss never gets below ``threshold``."""
    k = first_crossing(loss, threshold)
    if k is None:
        return None
    values = np.asarray(values, dtype=float)
    if k == 0:
        return float(values[0]), 0.0
    hi, lo = math.log(loss[k - 1]), math.log(max(float(loss[k]), np.finfo(float).tiny))
    t = (math.log(threshold) - hi) / (lo - hi) if lo < hi else 1.0
    return float(values[k - 1] + t * (values[k] - values[k - 1])), k - 1 + t


def window_mean(values: Float[np.ndarray, " n"], k: int, half_width: int) -> float | None:
    """Mean of ``values[k - w : k + w + 1]``, or None if the window leaves the history."""
    values = np.asarray(values, dtype=float)
    if half_width < 0:
        raise ValueError(f"window half-width must be >= 0, got {half_width}")
    if k - half_width < 0 or k + half_width >= len(values):
        return None
    return float(np.mean(values[k - half_width: k + half_width + 1]))


def smoothed(values: Float[np.ndarray, " n"], half_width: int = HILL_HALF_WIDTH) -> np.ndarray:
    """The moving median over 2w + 1 steps of the two-step means (v_j + v_{j+1}) / 2
    (module docstring): length n - 2w - 1, entry i centred near step i + w + 1/2.
    ValueError if the curve has fewer than 2w + 2 steps or w < 0."""
    v = np.asarray(values, dtype=float)
    if half_width < 0:
        raise ValueError(f"hill half-width must be >= 0, got {half_width}")
    if v.ndim != 1 or len(v) < 2 * half_width + 2:
        raise ValueError(f"a smoothed curve over 2w + 1 = {2 * half_width + 1} steps needs "
                         f"at least {2 * half_width + 2} steps, got {len(v)}")
    pairs = (v[:-1] + v[1:]) / 2
    windows = np.lib.stride_tricks.sliding_window_view(pairs, 2 * half_width + 1)
    return np.median(windows, axis=1)


def hill_height(norms: Float[np.ndarray, " n"], half_width: int = HILL_HALF_WIDTH) -> float:
    """Height of the "hill" of a norm curve (Figures 7, 8): max_{m < n} s_n / s_m over
    the smoothed curve s = :func:`smoothed` (module docstring); 1.0 if s never rises.
    Non-finite values (a diverged run's last row) are dropped first."""
    v = np.asarray(norms, dtype=float)
    s = smoothed(v[np.isfinite(v)], half_width)
    return float(max(1.0, np.max(s / np.minimum.accumulate(s))))


def hill_first_minimum(norms: Float[np.ndarray, " n"]) -> float:
    """The older hill: the maximum of the curve after its first local minimum over that
    minimum (1.0 if the curve only falls). Set by a minimum at step 1 or one spike;
    kept for comparison."""
    v = np.asarray(norms, dtype=float)
    i = next((k for k in range(1, len(v) - 1) if v[k] <= v[k - 1] and v[k] < v[k + 1]), None)
    return 1.0 if i is None else float(np.max(v[i:]) / v[i])


def regime(loss: Float[np.ndarray, " n"], factor: float = SPIKE_FACTOR,
           within: int = SPIKE_WITHIN) -> str:
    """"spike" if L[n + j] > ``factor`` L[n] for some n and 1 <= j <= ``within`` (a
    non-finite loss after a finite one counts as a spike), else "oscillation"."""
    if not factor > 1:
        raise ValueError(f"spike factor must be > 1, got {factor}")
    if within < 1:
        raise ValueError(f"spike window must be >= 1 step, got {within}")
    v = np.asarray(loss, dtype=float)
    v = np.where(np.isnan(v), np.inf, v)
    for j in range(1, min(within, len(v) - 1) + 1):
        if np.any(v[j:] > factor * v[:-j]):
            return "spike"
    return "oscillation"


def read_out(
    rows: Sequence[dict], threshold: float, columns: Sequence[str], half_width: int
) -> dict | None:
    """The three read-outs (``READOUTS``) of each of ``columns`` of a history at training
    loss ``threshold``, with the crossing row's step, the interpolated step, and
    ``window_complete``; None if the loss never gets below ``threshold``."""
    loss = np.array([r["train_loss"] for r in rows], dtype=float)
    k = first_crossing(loss, threshold)
    if k is None:
        return None
    steps = np.array([r["step"] for r in rows], dtype=float)
    _, t = at_equal_loss(loss, steps, threshold)
    out = {"step": int(rows[k]["step"]), "step_interp": float(np.interp(t, np.arange(len(steps)),
                                                                       steps)),
           "window_complete": window_mean(loss, k, half_width) is not None}
    for name in READOUTS:
        out[name] = {}
    for c in columns:
        v = np.array([r[c] for r in rows], dtype=float)
        out["first"][c] = float(v[k])
        out["interp"][c] = at_equal_loss(loss, v, threshold)[0]
        out["window"][c] = window_mean(v, k, half_width)
    return out
