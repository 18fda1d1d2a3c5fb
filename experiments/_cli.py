"""Shared command-line plumbing: one-line errors with exit status 2, atomic file writes."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the offending value, exit 2."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def fail(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and os.replace: a reader never
    sees a half-written file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """JSON with NaN/inf written as null (strict JSON), atomically."""
    write_atomic(path, json.dumps(_clean(obj), indent=2) + "\n")
