"""bea.optimizer_registry: one registry of names with their capabilities, the refusals, and
the check that a user's optimizer factory is linear in the learning rate."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bea import optimizer_registry as reg


def test_refuses_non_smooth_and_unknown():
    for name in ("lion", "signum", "amsgrad", "adamax", "yogi", "adagrad"):
        with pytest.raises(ValueError, match=f"'{name}' is refused"):
            reg.check(name)
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        reg.check("nope")


@pytest.mark.parametrize("name", reg.NAMES)
def test_every_entry_builds_and_is_linear_in_lr(name):
    g = {"w": jnp.array([0.3, -0.2])}
    u = [reg.transformation(name, lr, 0.5, 0.7, 1e-3).update(
        g, reg.transformation(name, lr, 0.5, 0.7, 1e-3).init(g), g)[0]["w"]
        for lr in (1.0, 0.1)]
    np.testing.assert_allclose(u[1], 0.1 * u[0], rtol=1e-12)
    reg.check_factory(lambda lr: reg.transformation(name, lr, 0.5, 0.7, 1e-3), g)


def test_capabilities():
    assert reg.CLOSED_FORM == ("adam", "rmsprop", "gd", "heavy_ball")
    assert reg.engine_for("adam") == "closed" and reg.engine_for("adamw") == "generic"
    assert reg.engine_for("adam", "generic") == "generic"
    assert reg.engine_for(lambda lr: optax.sgd(lr)) == "generic"
    for name, engine in (("adamw", "closed"), ("adam", "compiled")):
        with pytest.raises(ValueError, match=repr(engine) if engine != "closed" else "adamw"):
            reg.engine_for(name, engine)
    reg.check_fields("adam", reg.FIELDS, "closed", mini_batch=False)
    reg.check_fields("adamw", reg.GENERIC_FIELDS, "generic", mini_batch=True)
    for args, needle in ((("gd", ["order1_typo"], "closed", False), "'order1_typo'"),
                         (("adamw", ["limit"], "generic", False), "generic engine"),
                         (("adam", ["limit"], "closed", True), "mini-batch"),
                         (("adam", ["order1", "order1"], "closed", False), "twice"),
                         (("adam", [], "closed", False), "empty")):
        with pytest.raises(ValueError, match=needle):
            reg.check_fields(*args)


def test_check_factory():
    p = {"w": jnp.ones(3), "b": jnp.zeros(())}
    reg.check_factory(lambda lr: optax.chain(optax.scale_by_adam(), optax.scale(-lr)), p)
    reg.check_factory(lambda lr: optax.adamw(lr, weight_decay=0.1), p)
    bad = [(lambda lr: optax.adam(lr**2), "not linear"),
           (lambda lr: optax.adam(lr, eps=lr), "not linear"),
           (lambda lr: "adam", "GradientTransformation"),
           (lambda lr: 1 / 0, "ZeroDivisionError"),
           (lambda lr: optax.sgd(0.0 * lr), "not linear")]
    for factory, needle in bad:
        with pytest.raises(ValueError, match=needle):
            reg.check_factory(factory, p)
