"""Run files: the per-step history CSV and the JSON beside it, always written atomically.

Every write goes through bea's one atomic writer (a uniquely named temporary file in the
same directory, flushed and fsynced, then ``os.replace``d over the target), so a reader (or
a run killed mid-write) never sees a half-written file; JSON writes NaN as null. Floats
are written with ``repr`` so that they read back to the same bits, which is what makes a
resumed history identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

from bea import _io

__all__ = [
    "COLUMNS",
    "write_history",
    "read_history",
    "write_json",
    "read_json",
    "first_below",
]

COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "perturbed_one_norm",
    "two_norm",
    "one_norm",
    "mean_abs_grad",
    "std_abs_grad",
    "correction_coefficient",
    "modified_loss",
)


def _fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def write_history(path: str, rows: Sequence[dict]) -> None:
    """Write the rows (dicts keyed by ``COLUMNS``) as CSV, atomically."""
    buf = io.StringIO()
    buf.write(",".join(COLUMNS) + "\n")
    for r in rows:
        buf.write(",".join(_fmt(r[c]) for c in COLUMNS) + "\n")
    _io.write_atomic(path, buf.getvalue())


def read_history(path: str) -> list[dict]:
    """Rows of a history CSV: ``step`` as int, every other column as float."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in rows]


def write_json(path: str, obj: dict) -> None:
    _io.write_json(path, obj, sort_keys=True)


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def first_below(rows: Sequence[dict], threshold: float, column: str = "train_loss") -> dict | None:
    """The first row whose ``column`` is below ``threshold`` (the paper's stopping point:
    "the first point the training loss drops below 0.01"), or None if it never is."""
    for r in rows:
        v = r[column]
        if not math.isnan(v) and v < threshold:
            return r
    return None
