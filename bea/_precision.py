"""Float64 for numerical verification, without touching the process's JAX settings.

The errors measured here go down to 1e-9 and below; float32 round-off alone is ~3e-5
(docs/math.md, section 6). ``import bea`` changes no global setting: the sweep entry points
(:func:`bea.sweep`, :func:`bea.grid`) run inside :func:`float64`, and a notebook that builds
fields and solves by hand calls :func:`enable_x64` once, before creating any array.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

__all__ = ["enable_x64", "float64", "to_float64", "check_float64_loss"]


def enable_x64() -> None:
    """Turn on float64 for the whole process (``jax_enable_x64``). Call it first, before any
    array exists: arrays created before keep their float32 values."""
    jax.config.update("jax_enable_x64", True)


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """A context in which JAX computes in float64; the previous setting is restored after."""
    with jax.enable_x64(True):
        yield


def to_float64(tree: PyTree, what: str) -> PyTree:
    """``tree`` with its floating leaves as float64 arrays (exact: float32 -> float64 loses
    nothing) and other leaves as arrays. Call inside :func:`float64`. Complex leaves are
    refused (the analysis is real), naming ``what``."""

    def one(path, x):
        a = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise ValueError(f"{what}{jax.tree_util.keystr(path)} is complex ({a.dtype}); "
                             "bea's analysis is for real parameters and data")
        if jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.asarray(a, jnp.float64)
        return jnp.asarray(a)

    return jax.tree_util.tree_map_with_path(one, tree)


def check_float64_loss(loss: Callable[..., Any], *args: Any) -> None:
    """Raise ValueError if ``loss(*args)`` (float64 arguments) is not a float64 scalar or
    closes over float32 arrays: the measured errors would sit on float32 round-off. The
    usual cause is a model or data set created before float64 was turned on."""
    closed = jax.make_jaxpr(loss)(*args)
    out = closed.out_avals
    if len(out) != 1 or out[0].shape != ():
        shapes = ", ".join(str(a.shape) for a in out)
        raise ValueError(f"the loss must return a scalar, it returns shape(s) {shapes}")
    low = sorted({str(np.asarray(c).dtype) for c in closed.consts
                  if hasattr(c, "dtype") and jnp.issubdtype(c.dtype, jnp.floating)
                  and jnp.finfo(c.dtype).bits < 64})
    if out[0].dtype != jnp.float64 or low:
        what = f"returns {out[0].dtype}" if out[0].dtype != jnp.float64 else (
            f"closes over {'/'.join(low)} arrays")
        raise ValueError(f"the loss {what} at float64 parameters: it was built from arrays "
                         "created before float64 was turned on; call bea.enable_x64() before "
                         "creating the model and data (or pass them as arguments)")
