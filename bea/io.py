"""Atomic result files: the one writer every run file and result goes through.

A file is written to a temporary sibling with a unique name and ``os.replace``d over the
target, so a reader (or a run killed mid-write, or a second writer) never sees half a file.
Files get the permissions of the umask, like ``open``; JSON writes NaN and inf as null
(strict JSON).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["write_atomic", "write_json", "read_json", "jsonable"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a uniquely named temporary file and
    ``os.replace`` (the directory is created if missing; the temporary file is removed
    if anything fails)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces the old file (crash safety)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars and arrays as Python values, tuples as lists and non-finite
    floats as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, obj: Any, sort_keys: bool = False) -> None:
    """``obj`` as indented, strict JSON (NaN/inf as null), atomically."""
    write_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False,
                                  sort_keys=sort_keys) + "\n")


def read_json(path: str) -> Any:
    """The JSON document at ``path``; ValueError naming the file if it is not valid JSON."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
