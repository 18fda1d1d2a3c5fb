"""bea.models: the smooth variants of the CPU models and the smoothness registry."""

import collections

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from bea.models import MODEL_NAMES, SMOOTH_MODELS, make_model

# primitives of a piecewise-smooth program: relu is max(x, 0), max-pool a reduce_window max
KINKS = ("max", "reduce_max", "reduce_window_max", "sign", "abs", "argmax")


def _count(jaxpr, out: collections.Counter) -> collections.Counter:
    for eqn in jaxpr.eqns:
        out[eqn.primitive.name] += 1
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None:
                _count(getattr(inner, "jaxpr", inner), out)
    return out


def _kinks(name: str) -> int:
    """Kink primitives in the model's forward program, less one max per GroupNorm: equinox
    clamps its variance, max(0, var), which is the identity (var >= 0) and smooth."""
    model = make_model(name, 1, 8, 10, jax.random.PRNGKey(0), jnp.float64)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    jaxpr = jax.make_jaxpr(lambda p: eqx.combine(p, static)(jnp.ones((1, 8, 8))))(params)
    counts = _count(jaxpr.jaxpr, collections.Counter())
    norms = sum(isinstance(x, eqx.nn.GroupNorm) for x in jax.tree_util.tree_leaves(
        model, is_leaf=lambda x: isinstance(x, eqx.nn.GroupNorm)))
    return sum(counts[k] for k in KINKS) - norms


@pytest.mark.parametrize("smooth, relu", [("cnn_small_smooth", "cnn_small"),
                                          ("resnet_small_smooth", "resnet_small")])
def test_smooth_variants_have_no_kinks_and_the_same_parameters(smooth, relu):
    assert smooth in MODEL_NAMES and smooth in SMOOTH_MODELS and relu not in SMOOTH_MODELS
    assert _kinks(smooth) == 0
    assert _kinks(relu) > 0  # the check can fail: the ReLU model has max (and max-pool)
    a, b = (eqx.filter(make_model(n, 1, 8, 10, jax.random.PRNGKey(0)), eqx.is_array)
            for n in (smooth, relu))
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert [x.shape for x in la] == [x.shape for x in lb]
    assert all(bool(jnp.all(x == y)) for x, y in zip(la, lb, strict=True))  # same init


def test_every_smooth_model_is_a_model():
    assert set(SMOOTH_MODELS) <= set(MODEL_NAMES)
