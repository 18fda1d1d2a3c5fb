"""bea.optimizer_registry: one registry of names with their capabilities, the refusals, and
the check that a user's optimizer factory is linear in the learning rate."""

import warnings

import jax
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
    with warnings.catch_warnings():
        warnings.simplefilter("error", reg.SmoothnessWarning)  # every entry is smooth
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


# the probes of check_smooth: the bilinear model's start, whose gradient (norm ~ 30) is what
# a clip at 1 meets
P = {"w": jnp.array([2.8, 3.5])}
G = {"w": jnp.array([-23.8, -19.0])}


@pytest.mark.parametrize("factory, needle", [
    (lambda lr: optax.lion(lr), "takes sign"),
    (lambda lr: optax.chain(optax.scale_by_sign(), optax.scale(-lr)), "takes sign"),
    (lambda lr: optax.adafactor(lr), "switch of a max"),
    (lambda lr: optax.chain(optax.clip(1.0), optax.sgd(lr)), "piecewise constant"),
    (lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr)),
     "clipping is active"),
    (lambda lr: optax.chain(optax.scale_by_adam(), optax.clip_by_global_norm(0.5),
                            optax.scale(-lr)), "clipping is active"),
])
def test_non_smooth_factories_are_refused(factory, needle):
    """Issue 23: lion, a sign-SGD chain, adafactor and clip_by_global_norm(1.0) with the
    clip active were accepted as factories (lion ran 124 s to NaN); refused before solving,
    in one line naming the cause. An elementwise clip at 1 of gradients near 20 is
    -sign(g): piecewise constant."""
    with pytest.raises(ValueError, match=needle) as e:
        reg.check_factory(factory, P, grad=G)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("factory, needle", [
    (lambda lr: optax.adam(lr, eps=0.0), "first update is piecewise constant"),
    (lambda lr: optax.chain(optax.clip_by_global_norm(1e3), optax.adam(lr)),
     "inactive at the start"),
    (lambda lr: optax.chain(optax.clip(100.0), optax.sgd(lr)), "max, min"),
])
def test_probably_non_smooth_factories_warn(factory, needle):
    """Where non-smoothness is only probable (a clip not active at the start, an
    elementwise clip, Adam with eps = 0 whose first step is g/|g|): a warning, no
    refusal."""
    with pytest.warns(reg.SmoothnessWarning, match=needle):
        reg.check_factory(factory, P, grad=G)


def test_smooth_factories_pass_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error", reg.SmoothnessWarning)
        for f in (lambda lr: optax.adam(lr), lambda lr: optax.sgd(lr, momentum=0.9),
                  lambda lr: optax.nadam(lr), lambda lr: optax.rmsprop(lr)):
            reg.check_factory(f, P, grad=G)


def test_a_schedule_of_lr_is_named_with_the_form_that_works():
    """optax.adam(warmup_cosine_decay_schedule(0, lr, 5, 100)) raised a raw
    TracerBoolConversionError inside the sweep (lr is traced); now a ValueError saying so
    and what to write instead, which passes."""
    with pytest.raises(ValueError, match="traced learning rate") as e:
        reg.check_factory(lambda lr: optax.adam(
            optax.warmup_cosine_decay_schedule(0.0, lr, 5, 100)), P)
    assert "lambda n: lr * optax.warmup_cosine_decay_schedule(0.0, 1.0, 5, 100)(n)" in str(
        e.value)
    reg.check_factory(lambda lr: optax.adam(
        lambda n: lr * optax.warmup_cosine_decay_schedule(0.0, 1.0, 5, 100)(n)), P)


# The registry drives the fields: each closed form is a builder named by its entry, looked up
# by make_field, refused by name where the entry lacks it.


def test_every_closed_builder_resolves():
    """Every kind of every entry with closed forms names an importable builder; entries
    without closed forms (and unknown or refused names) have none."""
    from bea.fields import closed_builder

    for name in reg.CLOSED_FORM:
        spec = reg.REGISTRY[name]
        assert set(spec.closed) <= set(reg.CLOSED_FIELDS) and "order0" in spec.closed
        for kind in spec.closed:
            assert callable(closed_builder(name, kind)), (name, kind)
    assert reg.GROUPED == ("adam", "rmsprop")
    with pytest.raises(ValueError, match="'adamw' has no closed-form field 'order1'"):
        closed_builder("adamw", "order1")
    with pytest.raises(ValueError, match="'lion' is refused"):
        closed_builder("lion", "order1")


def test_check_spec_refuses_malformed_entries():
    make = reg.REGISTRY["gd"].make
    for spec, needle in ((reg.Spec(make, "x", {"order2": "m:f"}), "closed kind 'order2'"),
                         (reg.Spec(make, "x", {"order1": "no_colon"}), "'module:function'"),
                         (reg.Spec(make, "x", grouped=True), "grouped but has no closed"),
                         ("not a spec", "must be a Spec")):
        with pytest.raises(ValueError, match=needle):
            reg.check_spec("toy", spec)


def test_make_field_refuses_what_a_spec_lacks(monkeypatch):
    """make_field is a lookup: a kind the entry lacks, or a builder that cannot be imported,
    is refused in one line naming the optimizer and the kind, never defaulted to another
    optimizer's field."""
    from bea.fields import make_field
    from bea.problems import bilinear

    E = lambda t: bilinear().loss(t, bilinear().data)  # noqa: E731
    make = reg.REGISTRY["gd"].make
    monkeypatch.setitem(reg.REGISTRY, "half", reg.Spec(make, "toy", {
        "order0": "bea.fields.special_cases:gd_order0", "order1": "bea.fields.nowhere:f"}))
    assert callable(make_field("half", "order0", E, 0.1))
    with pytest.raises(ValueError, match="'order1_typo' does not exist in closed form for "
                                         "'half'; it has order0, order1"):
        make_field("half", "order1_typo", E, 0.1)
    with pytest.raises(ValueError, match="'half': the builder 'bea.fields.nowhere:f' of field "
                                         "'order1' cannot be imported"):
        make_field("half", "order1", E, 0.1)
    assert not reg.groups("half", "order0", "closed")
    assert reg.groups("adam", "order1", "closed") and not reg.groups("adam", "order2", "closed")
    assert not reg.groups(lambda lr: optax.sgd(lr), "order1", "generic")


# Adding a closed-form optimizer, step by step as docs/fields.md says, with a toy whose field
# is known: GD with step S h, F_n = -S g_n, whose modified field is Barrett and Dherin's at
# step S h, rescaled to time h: -S g - (h S^2 / 2) H g.

S = 2.0


def scaled_gd_order0(loss, h, *, beta, rho, eps, batches=None, num_steps=None):
    """Step 1: the module of builders (here this test module): the zeroth-order field -S g_n."""
    from bea.fields import Direct

    hist = None if batches is None else Direct(loss, batches)

    def f(n, theta):
        E = loss if hist is None else hist.loss_at(n)
        return -S * jax.grad(E)(theta)

    return f


def scaled_gd_order1(loss, h, *, beta, rho, eps, batches=None, num_steps=None):
    """The first-order field -S g_n - (h S^2/2) H_n g_n, H g from the package's one helper."""
    from bea.fields import Direct, hvp

    hist = None if batches is None else Direct(loss, batches)

    def f(n, theta):
        E = loss if hist is None else hist.loss_at(n)
        g = jax.grad(E)(theta)
        return -S * g - 0.5 * h * S**2 * hvp(E, theta, g)[1]

    return f


SCALED_GD = reg.Spec(  # step 2: the registry entry
    lambda lr, b, r, e: optax.sgd(S * lr), f"GD with step {S} h (a toy)",
    {"order0": "test_optimizer_registry:scaled_gd_order0",
     "order1": "test_optimizer_registry:scaled_gd_order1"})


def test_adding_a_closed_form_optimizer(monkeypatch):
    """One module of builders and one registry entry: make_field builds the toy's fields,
    they equal the generic engine's (the registry-driven check of
    tests/test_fields_generic.py) and Barrett-Dherin's at step S h, and a sweep (closed
    engine, chosen by default from the entry) measures orders 2 and 1."""
    from _helpers import assert_closed_equals_generic, run_sweep

    from bea.fields import make_field, special_cases
    from bea.problems import batch_sequence, logistic

    reg.check_spec("scaled_gd", SCALED_GD)
    monkeypatch.setitem(reg.REGISTRY, "scaled_gd", SCALED_GD)
    P = logistic()
    theta = P.theta0 + 0.3 * jax.random.normal(jax.random.PRNGKey(1), P.theta0.shape)
    B = batch_sequence(P, 16, 8, 0)
    for batches in (B, None):
        assert_closed_equals_generic("scaled_gd", P, batches, theta, beta=0.9, rho=0.999,
                                     eps=1e-8, h=0.05, num_steps=8, ns=(0, 3, 7))
    E = lambda t: P.loss(t, P.data)  # noqa: E731
    toy = make_field("scaled_gd", "order1", E, 0.05)(3, theta)
    np.testing.assert_allclose(toy, S * special_cases.gd_field(E, S * 0.05)(3, theta),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="'limit' does not exist in closed form for "
                                         "'scaled_gd'"):
        make_field("scaled_gd", "limit", E, 0.05)
    r = run_sweep(P, optimizer="scaled_gd", h=[0.1, 0.05, 0.025], T=1.0,
                  fields=["order0", "order1"])
    assert r.config["engine"] == "closed" and 0.9 <= r.slopes["order0"] <= 1.1
    assert r.slopes["order1"] >= 1.9, r.local_slopes
