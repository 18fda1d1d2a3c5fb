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

from bea import io as _io

__all__ = [
    "COLUMNS",
    "EARLIER_COLUMNS",
    "ADDED_COLUMNS",
    "write_history",
    "HistoryError",
    "read_history",
    "write_json",
    "read_json",
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
    "perturbed_one_norm_excess",
    "two_norm_penalty",
    "share_above_sqrt_eps",
    "correction_coefficient_n",
    "modified_loss_n",
)
"""A history's columns (``bea.nn._metrics`` defines the gradient ones and the first-order
predictions: eq. (8)'s large-n c and Remark 3.7's finite-n c(n), each with its modified
loss)."""

EARLIER_COLUMNS = (COLUMNS[:12], COLUMNS[:15])
"""The headers older histories were written with: the first twelve columns (before the
norm's excess over P sqrt(eps), the two-norm penalty and the share above sqrt(eps) were
logged), then fifteen (before the finite-n c(n) and its modified loss). They still read:
the columns they lack are NaN ("not logged")."""

ADDED_COLUMNS = COLUMNS[12:]
"""The columns an earlier history lacks (NaN when read)."""


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


class HistoryError(ValueError):
    """A history or run file that cannot be read back; the message names the file (and
    the line) and what is wrong with it."""


def read_history(path) -> list[dict]:
    """Rows of a history CSV: ``step`` as int, every other column as float, every row
    keyed by all of ``COLUMNS`` (a history with an earlier header, ``EARLIER_COLUMNS``,
    has NaN in the columns it lacks). Raises HistoryError naming the file and line for
    anything but a header of ``COLUMNS`` (or an earlier one) and complete numeric rows
    numbered 0, 1, 2, ... (a damaged or hand-edited file)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        lines = list(csv.reader(io.StringIO(text)))
    except OSError as e:
        raise HistoryError(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError:
        raise HistoryError(f"{path} is not a history file (not text)") from None
    except csv.Error as e:
        raise HistoryError(f"{path} is not a history file ({e})") from None
    if not lines:
        raise HistoryError(f"{path} is empty (not even its header line)")
    header = tuple(lines[0])
    if header != COLUMNS and header not in EARLIER_COLUMNS:
        raise HistoryError(f"{path} is not a history file: its header is "
                           f"{','.join(lines[0])[:80]!r}, not {','.join(COLUMNS)[:40]!r}...")
    if not text.endswith("\n"):  # every write ends its last row with a newline
        raise HistoryError(f"{path}, line {len(lines)} is incomplete (the file is truncated)")
    rows = []
    for i, fields in enumerate(lines[1:]):
        where = f"{path}, line {i + 2}"
        if len(fields) != len(header):
            raise HistoryError(f"{where} has {len(fields)} fields, not {len(header)} "
                               "(a truncated or damaged row)")
        try:
            row = {c: (int(v) if c == "step" else float(v))
                   for c, v in zip(header, fields, strict=True)}
        except ValueError:
            bad = next(v for c, v in zip(header, fields, strict=True) if not _number(v, c))
            raise HistoryError(f"{where}: {bad[:40]!r} is not a number") from None
        if row["step"] != i:
            raise HistoryError(f"{where} is step {row['step']}, expected {i} (rows must be "
                               "steps 0, 1, 2, ... in order)")
        rows.append({c: row.get(c, math.nan) for c in COLUMNS})
    return rows


def _number(text: str, column: str) -> bool:
    try:
        int(text) if column == "step" else float(text)
    except ValueError:
        return False
    return True


def write_json(path: str, obj: dict) -> None:
    _io.write_json(path, obj, sort_keys=True)


def read_json(path) -> dict:
    """The JSON object in ``path``; HistoryError naming the file if it is missing,
    unreadable or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise HistoryError(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        what = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "not text"
        raise HistoryError(f"{path} is not valid JSON ({what})") from None
    if not isinstance(obj, dict):
        raise HistoryError(f"{path} holds a JSON {type(obj).__name__}, not an object")
    return obj

