"""Shared command-line plumbing: one-line errors with exit status 2, float64 and the
compilation cache. Files are written by bea's one atomic writer (bea._io)."""

from __future__ import annotations

import argparse
import os
import sys


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the offending value, exit 2."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def fail(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def cache_dir() -> str:
    """Where JAX's persistent compilation cache lives: $BEA_JAX_CACHE, else
    $XDG_CACHE_HOME/bea/jax (~/.cache/bea/jax), never the working directory."""
    if os.environ.get("BEA_JAX_CACHE"):
        return os.environ["BEA_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bea", "jax")


def enable_compile_cache(max_bytes: int = 2 << 30) -> None:
    """JAX's persistent compilation cache in :func:`cache_dir`, bounded to ``max_bytes``
    (least recently used entries go first): a repeated command loads its programs instead
    of compiling them."""
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", max_bytes)
