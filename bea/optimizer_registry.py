"""The one registry of optimizers by name: how to build each, its capabilities, its
closed-form fields, and the ones refused. The command line's help, the checks, the field
dispatch (:func:`bea.fields.make_field`) and the tests all read it.

Each entry maps a name to ``make(lr, beta, rho, eps)``, an optax ``GradientTransformation``
whose update is linear in ``lr``: the discrete iteration is ``make(h, ...)`` run by
:func:`bea.optimizers.trajectory`, and the generic field
(:func:`bea.fields.generic.modified_field`) takes ``make(1.0, ...)``, whose update is F_n
(docs/math.md, section 5). Hyperparameters map as: beta = first-moment / momentum decay,
rho = second-moment decay, eps = the numerical-stability constant. Four entries have the
paper's closed-form fields: ``Spec.closed`` maps each field kind to its builder (a
:data:`Builder`, named as ``"module:function"`` so that this module imports nothing of
:mod:`bea.fields`: the import direction is fields -> registry, never the reverse), and
``Spec.grouped`` says whether those builders take a history grouped by distinct batch
(docs/math.md, section 7). :func:`bea.fields.make_field` is a lookup in ``Spec.closed`` and
refuses, by name, any kind an entry lacks. Every entry, and any user factory
``lr -> GradientTransformation`` that passes :func:`check_factory`, has the generic engine's
:data:`GENERIC_FIELDS`. Adding a closed-form optimizer is one module of builders and one
entry here (docs/fields.md, "Adding a closed-form optimizer").

The construction needs a smooth update (F_n of class C^2 in the gradients and
parameters). Sign-based (lion, signum, sign_sgd, yogi), max-based (amsgrad, adamax,
sm3, polyak_sgd), clipped (adafactor) and random (noisy_sgd) updates are not, and
AdaGrad's undecayed sum breaks the bounded-memory condition: :data:`REFUSED` names
them with the reason, and :func:`check` raises. The eps-outside variants
(adam_eps_outside, rmsprop_eps_outside, nadam, adabelief with eps_root = 0) are smooth
only where no second-moment component comes near 0 (the paper's Remark 3.2 and its
appendix); they are accepted, and the caller chooses such a regime.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PyTree

from bea import optimizers as _opt

__all__ = ["Spec", "Builder", "REGISTRY", "REFUSED", "FIELDS", "CLOSED_FIELDS",
           "GENERIC_FIELDS", "WEIGHT_DECAY", "NAMES", "CLOSED_FORM", "GROUPED", "check",
           "check_spec", "check_fields", "engine_for", "field_engine", "groups",
           "transformation", "check_factory", "check_smooth",
           "SmoothnessWarning"]

WEIGHT_DECAY = 0.1
"""The decoupled weight decay of ``adamw`` (optax's default 1e-4 would hardly show the
parameter dependence of F_n that the construction must handle)."""

FIELDS = ("order0", "order1", "order2", "order1_typo", "limit")
"""Every field kind: the zeroth-, first- and second-order modified fields, the first-order
field with the typeset R^3 of Theorems 3.3/3.6 (an ablation that must fail the order test),
and the large-n limit (8) (full batch)."""

GENERIC_FIELDS = ("order0", "order1", "order2")
"""The kinds the generic engine derives for any optimizer (docs/math.md, sections 5 and 8).
``order2`` has no closed form: for the four closed-form optimizers it, too, comes from the
generic engine."""

CLOSED_FIELDS = ("order0", "order1", "order1_typo", "limit")
"""The kinds a closed form may have (``order2`` always comes from the generic engine)."""

Scalar = float | Float[Array, ""]

Builder = Callable[..., Callable]
"""A closed-form field builder, one signature for every optimizer and kind:
``builder(loss, h, *, beta, rho, eps, batches=None, num_steps=None) -> Field``. Full batch
when ``batches`` is None (``loss`` is then E(theta)); otherwise ``loss`` is E(theta, batch)
and ``batches`` the direct history (batch k at index k), or a
:class:`bea.problems.Grouped` history where the spec says ``grouped``. ``num_steps`` bounds
n. Hyperparameters an optimizer does not use are passed and ignored."""


class Spec(NamedTuple):
    """An optimizer by name: ``make(lr, beta, rho, eps)`` (an optax transformation whose
    update is linear in ``lr``), what it is, and its capabilities: ``closed`` maps each field
    kind with a closed form (of :data:`CLOSED_FIELDS`) to its :data:`Builder`, as
    ``"module:function"`` (resolved by :mod:`bea.fields` on use) or the function itself;
    ``grouped``: whether those builders take a history grouped by distinct batch
    (docs/math.md, section 7). Every optimizer also has :data:`GENERIC_FIELDS` from the
    generic engine."""

    make: Callable[[Scalar, Scalar, Scalar, Scalar], optax.GradientTransformation]
    description: str
    closed: Mapping[str, str | Builder] = MappingProxyType({})
    grouped: bool = False

    @property
    def closed_form(self) -> bool:
        """Whether the entry has any closed-form field."""
        return bool(self.closed)


def _builders(module: str, **kinds: str) -> Mapping[str, str]:
    """``{kind: "module:function"}`` for the builders of one module."""
    return MappingProxyType({k: f"{module}:{fn}" for k, fn in kinds.items()})


REGISTRY: dict[str, Spec] = {
    # closed forms (the paper's theorems and the special cases), bea's own iterations
    "adam": Spec(lambda lr, b, r, e: _opt.adam(lr, b, r, e),
                 "Adam, eps inside the root, bias corrected (Definition 3.1; Theorem 3.6)",
                 _builders("bea.fields.adam_fields", order0="order0", order1="order1",
                           order1_typo="order1_typo", limit="limit"), grouped=True),
    "rmsprop": Spec(lambda lr, b, r, e: _opt.rmsprop(lr, r, e),
                    "RMSProp, eps inside the root (Definition 3.1; Theorem 3.3)",
                    _builders("bea.fields.rmsprop_fields", order0="order0", order1="order1",
                              order1_typo="order1_typo", limit="limit"), grouped=True),
    "gd": Spec(lambda lr, b, r, e: _opt.gd(lr), "gradient descent (Barrett and Dherin)",
               _builders("bea.fields.special_cases", order0="gd_order0", order1="gd_order1")),
    "heavy_ball": Spec(lambda lr, b, r, e: _opt.heavy_ball(lr, b),
                       "heavy ball v <- g + beta v, optax.sgd with momentum (Ghosh et al.)",
                       _builders("bea.fields.special_cases", order0="heavy_ball_order0",
                                 order1="heavy_ball_order1", limit="heavy_ball_limit")),
    # generic engine only
    "adam_eps_outside": Spec(lambda lr, b, r, e: _opt.adam_eps_outside(lr, b, r, e),
                             "Kingma-Ba Adam, m_hat/(sqrt(nu_hat)+eps) (Remark 3.2)"),
    "rmsprop_eps_outside": Spec(lambda lr, b, r, e: _opt.rmsprop_eps_outside(lr, r, e),
                                "Hinton's RMSProp, g/(sqrt(nu)+eps) (Remark 3.2)"),
    "adamw": Spec(lambda lr, b, r, e: optax.adamw(lr, b1=b, b2=r, eps=e,
                                                  weight_decay=WEIGHT_DECAY),
                  f"optax.adamw, decoupled weight decay {WEIGHT_DECAY} (F_n reads theta_n)"),
    "nesterov": Spec(lambda lr, b, r, e: optax.sgd(lr, momentum=b, nesterov=True),
                     "optax.sgd(momentum=beta, nesterov=True): -(g + beta v)"),
    "rmsprop_centered": Spec(lambda lr, b, r, e: optax.rmsprop(lr, decay=r, eps=e,
                                                               centered=True),
                             "optax.rmsprop(centered=True): g/sqrt(nu - mu^2 + eps)"),
    "rmsprop_momentum": Spec(lambda lr, b, r, e: optax.rmsprop(lr, decay=r, eps=e,
                                                               momentum=b),
                             "optax.rmsprop(momentum=beta), eps inside the root"),
    "adabelief": Spec(lambda lr, b, r, e: optax.adabelief(lr, b1=b, b2=r, eps=e, eps_root=e),
                      "optax.adabelief with eps_root = eps (smooth: s_hat >= eps_root)"),
    "nadam": Spec(lambda lr, b, r, e: optax.nadam(lr, b1=b, b2=r, eps=e),
                  "optax.nadam (Nesterov Adam, eps outside the root)"),
    "adam_optax_eps_root": Spec(lambda lr, b, r, e: optax.adam(lr, b1=b, b2=r, eps=0.0,
                                                               eps_root=e),
                                "optax.adam(eps=0, eps_root=eps): Definition 3.1's Adam "
                                "through optax's own code"),
}

NAMES = tuple(REGISTRY)
CLOSED_FORM = tuple(k for k, s in REGISTRY.items() if s.closed_form)
GROUPED = tuple(k for k, s in REGISTRY.items() if s.grouped)

_SIGN = ("its update takes the sign of a momentum, which is discontinuous at 0; the "
         "construction needs a C^2 update")
REFUSED: dict[str, str] = {
    "lion": _SIGN,
    "signum": _SIGN,
    "sign_sgd": "its update is sign(g), discontinuous at g = 0; the construction needs a "
                "C^2 update",
    "yogi": "its second moment moves by sign(nu - g^2) g^2, discontinuous where nu = g^2; "
            "the construction needs a C^2 update",
    "amsgrad": "its denominator is a running max of nu, not differentiable where the max "
               "switches; the construction needs a C^2 update",
    "adamax": "its denominator is max(beta2 u, |g|), not differentiable where the max "
              "switches or g = 0; the construction needs a C^2 update",
    "sm3": "its accumulators are maxima over covers, not differentiable where the max "
           "switches; the construction needs a C^2 update",
    "polyak_sgd": "its step size max(E - E*, 0)/||g||^2 is not smooth; the construction "
                  "needs a C^2 update",
    "adafactor": "its update is clipped (a max) and its step size depends on RMS(theta) "
                 "with a max; the construction needs a C^2 update",
    "noisy_sgd": "its update adds fresh noise, not a function of the iterates; the "
                 "construction needs a deterministic C^2 update",
    "adagrad": "it sums g^2 without decay, so F_n ~ 1/sqrt(n) has no h-independent limit "
               "and sum_k ||dF_n/dtheta_k|| (n-k)^2 is unbounded (docs/math.md, section 5)",
}


def check(name: str) -> None:
    """Raise ValueError (one line naming ``name``) unless ``name`` is a registered optimizer."""
    if name in REFUSED:
        raise ValueError(f"optimizer {name!r} is refused: {REFUSED[name]}")
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(NAMES)}")


def check_spec(name: str, spec: Spec) -> None:
    """Raise ValueError (one line naming the entry) unless ``spec`` is a well-formed entry:
    closed kinds among :data:`CLOSED_FIELDS`, each builder a callable or a
    ``"module:function"`` string, and ``grouped`` only with closed forms."""
    if not isinstance(spec, Spec):
        raise ValueError(f"registry entry {name!r} must be a Spec, got {type(spec).__name__}")
    for kind, ref in spec.closed.items():
        if kind not in CLOSED_FIELDS:
            raise ValueError(f"registry entry {name!r}: closed kind {kind!r} is not one of "
                             f"{', '.join(CLOSED_FIELDS)}")
        if not (callable(ref) or (isinstance(ref, str) and ref.count(":") == 1)):
            raise ValueError(f"registry entry {name!r}: the {kind!r} builder must be a "
                             f"callable or 'module:function', got {ref!r}")
    if spec.grouped and not spec.closed:
        raise ValueError(f"registry entry {name!r} says grouped but has no closed forms")


for _name, _spec in REGISTRY.items():
    check_spec(_name, _spec)


def engine_for(name: str | Callable, engine: str | None = None) -> str:
    """The engine that derives the fields of ``name``: ``engine`` if given and possible,
    else 'closed' where the paper gives closed forms and 'generic' otherwise (always
    'generic' for an optimizer factory). Raises ValueError (one line) naming what fails."""
    if engine not in (None, "closed", "generic"):
        raise ValueError(f"unknown engine {engine!r}; choose from closed, generic")
    if callable(name):
        if engine == "closed":
            raise ValueError("an optimizer factory has no closed-form fields; use the generic "
                             "engine (engine='generic' or None)")
        return "generic"
    check(name)
    closed = REGISTRY[name].closed_form
    if engine == "closed" and not closed:
        have = (k for k, s in REGISTRY.items() if s.closed_form)
        raise ValueError(f"no closed-form field for optimizer {name!r}; use the generic "
                         f"engine (closed forms exist for {', '.join(have)})")
    return engine or ("closed" if closed else "generic")


def field_engine(field: str, engine: str) -> str:
    """The engine that derives ``field`` in a sweep whose engine is ``engine``: the second
    order always comes from the generic construction (docs/math.md, section 8)."""
    return "generic" if field == "order2" else engine


def groups(name: str | Callable, field: str, engine: str) -> bool:
    """Whether ``field`` of ``name`` under ``engine`` can walk a history grouped by distinct
    batch (docs/math.md, section 7): a closed form of an entry whose spec says ``grouped``."""
    return (isinstance(name, str) and name in REGISTRY and REGISTRY[name].grouped
            and field_engine(field, engine) == "closed" and field in REGISTRY[name].closed)


def check_fields(name: str | Callable, fields: Sequence[str], engine: str,
                 mini_batch: bool, requested: str | None = None) -> None:
    """Raise ValueError (one line naming the field) unless every field of ``fields`` exists
    for ``name`` under ``engine`` (mini-batch or full batch). ``requested``: the engine the
    user asked for, if any ('order2' cannot be had from an explicit 'closed')."""
    label = name if isinstance(name, str) else "the optimizer factory"
    if not fields:
        raise ValueError("empty list of fields")
    for f in fields:
        if f not in FIELDS:
            raise ValueError(f"unknown field {f!r}; choose from {', '.join(FIELDS)}")
        if f == "order2" and requested == "closed":
            raise ValueError("field 'order2' has no closed form: it comes from the generic "
                             "engine (drop engine 'closed')")
        closed = field_engine(f, engine) == "closed"
        available = tuple(REGISTRY[name].closed) if closed else GENERIC_FIELDS
        if f not in available:
            how = "in closed form" if closed else "from the generic engine"
            raise ValueError(f"field {f!r} does not exist {how} for {label!r}; it has "
                             f"{', '.join(available)}")
        if f == "limit" and mini_batch:
            raise ValueError("field 'limit' is the full-batch large-n limit (8); it has no "
                             "mini-batch form (drop the batch size)")
    if len(set(fields)) != len(fields):
        raise ValueError(f"a field is given twice in {list(fields)}")


def transformation(name: str | Callable, lr: Scalar, beta: Scalar = 0.9, rho: Scalar = 0.999,
                   eps: Scalar = 1e-8) -> optax.GradientTransformation:
    """The optimizer ``name`` at learning rate ``lr`` (1.0 for the field, h for the run); an
    optimizer factory ``lr -> GradientTransformation`` is called with ``lr`` alone."""
    if callable(name):
        return name(lr)
    check(name)
    return REGISTRY[name].make(lr, beta, rho, eps)


def check_factory(factory: Callable, params: PyTree, steps: int = 3,
                  rtol: float = 1e-9, grad: PyTree | None = None) -> None:
    """Raise ValueError (one line) unless ``factory(lr)`` is an optax transformation whose
    updates are linear in ``lr`` with nothing else depending on it: the generic engine
    needs h F_n with F_n independent of h (docs/math.md, section 5). Checked numerically on
    ``steps`` updates of seeded pseudo-gradients at ``params``. The factory must also accept
    a traced ``lr`` (one compiled program serves every h), and its update must pass
    :func:`check_smooth` at ``grad`` (the gradient at ``params``; default a seeded
    pseudo-gradient)."""
    try:
        opts = [factory(lr) for lr in (1.0, 0.5)]
    except Exception as e:  # noqa: BLE001 - the user's code: report, do not crash
        raise ValueError(f"the optimizer factory failed at lr=1.0: {type(e).__name__}: "
                         f"{_first_line(e)}") from None
    for opt in opts:
        if not isinstance(opt, optax.GradientTransformation):
            raise ValueError("the optimizer factory must return an optax "
                             f"GradientTransformation, it returns {type(opt).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(0), steps * len(leaves)).reshape(
        steps, len(leaves), -1)
    runs = []
    for opt in opts:
        state, updates = opt.init(params), []
        for k in range(steps):
            g = treedef.unflatten([jax.random.normal(keys[k, i], jnp.shape(x), jnp.result_type(x))
                                   for i, x in enumerate(leaves)])
            u, state = opt.update(g, state, params)
            updates.append(jax.flatten_util.ravel_pytree(u)[0])
        runs.append(jnp.stack(updates))
    scale = float(jnp.max(jnp.abs(runs[0])))
    gap = float(jnp.max(jnp.abs(runs[1] - 0.5 * runs[0])))
    if not (scale > 0 and gap <= rtol * scale):
        raise ValueError(f"the optimizer factory is not linear in the learning rate: the "
                         f"update at lr=0.5 differs from half the update at lr=1 by "
                         f"{gap:.3g} (relative {gap / scale if scale else float('inf'):.3g}); "
                         "the generic engine needs update = lr * F_n with F_n independent of "
                         "lr (a schedule in the step count is fine, one in lr is not)")
    _check_traced_lr(factory, params)
    check_smooth(factory, params, grad)


_SCHEDULES = ("build a schedule as lr times a schedule of the step count n, e.g. "
              "lambda lr: optax.adam(lambda n: lr * optax.warmup_cosine_decay_schedule(0.0, "
              "1.0, 5, 100)(n)): optax schedules with peak 1, scaled by lr")


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]


def _check_traced_lr(factory: Callable, params: PyTree) -> None:
    """Raise ValueError unless the factory builds and updates with ``lr`` a JAX tracer, as
    the sweep calls it (h is traced: one compiled program serves every h)."""
    def update(lr):
        opt = factory(lr)
        g = jax.tree_util.tree_map(jnp.ones_like, params)
        return opt.update(g, opt.init(params), params)[0]

    try:
        jax.eval_shape(update, 1.0)
    except Exception as e:  # noqa: BLE001 - the user's code: report, do not crash
        raise ValueError(f"the optimizer factory fails with a traced learning rate "
                         f"({type(e).__name__}: {_first_line(e)}): the sweep calls it with "
                         f"lr a JAX tracer (h is traced, one program serves every h), so "
                         f"Python control flow on lr cannot work; {_SCHEDULES}") from None


class SmoothnessWarning(UserWarning):
    """An optimizer factory whose update is smooth only in part of the space (a clip, max,
    min or where that may switch, or a first step of the form g/|g|): the modified
    equation holds only where the update is smooth."""


_JUMPS = {"sign", "floor", "ceil", "round"}
_KINKS = {"max", "min", "abs", "clamp", "reduce_max", "reduce_min", "argmax", "argmin",
          "sort", "cummax", "cummin"}


def _subjaxprs(params: dict) -> list:
    """The programs a primitive calls, as (jaxpr, consts)."""
    out = []
    for v in params.values():
        for x in (v if isinstance(v, list | tuple) else (v,)):
            if hasattr(x, "eqns"):
                out.append((x, ()))
            elif hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                out.append((x.jaxpr, x.consts))
    return out


_TIES = {"max", "min", "lt", "le", "gt", "ge", "clamp"}


def _nonsmooth(jaxpr, consts, args, tainted: Sequence[bool], found: dict[str, str],
               ties: list | None = None):
    """Evaluate ``jaxpr`` on ``args`` (None: scan only; tracers are fine) and return its
    outputs (or None) and which of them depend on the tainted inputs. Records in ``found``
    every primitive that is discontinuous ('jump') or not differentiable somewhere ('kink')
    applied to a tainted value (a select_n: with a tainted predicate), and appends to
    ``ties`` (name, whether its operands are equal to 1e-12 at ``args``: the update sits
    on its switch) for every tainted max, min or comparison. Calls into sub-programs are
    followed exactly; other control flow is scanned conservatively."""
    taint = dict(zip(jaxpr.invars, tainted, strict=True))
    env = {} if args is None else dict(zip(jaxpr.invars, args, strict=True))
    env.update(zip(jaxpr.constvars, consts, strict=True))

    def t(v):
        return taint.get(v, False) if not hasattr(v, "val") else False

    def read(v):
        return v.val if hasattr(v, "val") else env[v]

    for eqn in jaxpr.eqns:
        ins = [t(v) for v in eqn.invars]
        vals = None if args is None else [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        subs = _subjaxprs(eqn.params)
        if len(subs) == 1 and len(subs[0][0].invars) == len(ins):
            outvals, outs = _nonsmooth(*subs[0], vals, ins, found, ties)
        else:
            for sub, sub_consts in subs if any(ins) else ():
                _nonsmooth(sub, sub_consts, None, [True] * len(sub.invars), found)
            outs = [any(ins)] * len(eqn.outvars)
            outvals = None
            if vals is not None:
                params = eqn.primitive.get_bind_params(eqn.params)
                fun, params = params if isinstance(params, tuple) else ((), params)  # jax < 0.7
                outvals = eqn.primitive.bind(*fun, *vals, **params)
                outvals = outvals if eqn.primitive.multiple_results else [outvals]
            if name == "select_n" and ins[0]:
                found.setdefault("where", "kink")
            elif name in _JUMPS and any(ins):
                found[name] = "jump"
            elif (name == "convert_element_type" and ins[0]
                  and not jnp.issubdtype(eqn.params["new_dtype"], jnp.inexact)):
                found["a cast to integers"] = "jump"
            elif name in _KINKS and any(ins):
                found.setdefault(name, "kink")
            if (name in _TIES and any(ins) and vals is not None and len(vals) >= 2
                    and ties is not None):
                a, b = (jnp.asarray(x, float) for x in vals[-2:])
                gap = jnp.abs(a - b) <= 1e-12 * jnp.maximum(jnp.abs(a), jnp.abs(b))
                ties.append((name if name in ("max", "min") else "where", jnp.any(gap)))
        for i, v in enumerate(eqn.outvars):
            taint[v] = outs[i]
            if outvals is not None:
                env[v] = outvals[i]
    if args is None:
        return None, [t(v) for v in jaxpr.outvars]
    return [read(v) for v in jaxpr.outvars], [t(v) for v in jaxpr.outvars]


def check_smooth(factory: Callable, params: PyTree, grad: PyTree | None = None,
                 steps: int = 4, seed: int = 0) -> None:
    """Check, before anything is solved, that the update of ``factory(1.0)`` is smooth where
    the run starts: the construction needs F_n of class C^2 (docs/math.md, section 5).

    Probes: the update at ``grad`` (the gradient at ``params``) from the initial state, then
    at ``steps - 1`` more gradients nearby (grad plus seeded noise of half its RMS), each
    with its derivative along a random direction and along the gradient itself (one JVP
    each), and its program scanned for discontinuous (sign, floor, round) and kinked (max,
    min, abs, clip, where) operations on gradient-, parameter- or state-dependent values.
    Raises ValueError (one line) where non-smoothness is certain: a discontinuous operation
    (lion, sign-SGD), an update with zero derivative at every later probe while nonzero
    (piecewise constant), or a kinked operation with the update's norm pinned at a probe
    (clipping active: the clip switches off where the gradient shrinks, a kink the
    construction cannot cross; adafactor). Warns (:class:`SmoothnessWarning`) where it is
    only probable: kinked operations that are not active at the probes, or a first update
    that is piecewise constant in the gradient (g/|g|, e.g. ``optax.adam(lr, eps=0)``)."""
    opt = factory(1.0)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 2 * steps + len(leaves)))
    if grad is None:
        grad = treedef.unflatten([jax.random.normal(next(keys), jnp.shape(x),
                                                    jnp.result_type(x)) for x in leaves])
    g0, unravel = jax.flatten_util.ravel_pytree(grad)
    sizes = [int(np.size(x)) for x in jax.tree_util.tree_leaves(grad)]
    scale = float(jnp.sqrt(jnp.mean(g0 ** 2))) or 1.0
    state = opt.init(params)
    found: dict[str, str] = {}
    labels: list[str] = []

    @jax.jit
    def probe(g, d, state):  # one compiled program for every probe
        ties: list = []
        x = unravel(g)
        closed = jax.make_jaxpr(lambda x, s: opt.update(x, s, params)[0])(x, state)
        _nonsmooth(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves((x, state)),
                   [jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in closed.jaxpr.invars],
                   found, ties)
        labels[:] = [name for name, _ in ties]

        def f(x):
            return jax.flatten_util.ravel_pytree(opt.update(unravel(x), state, params)[0])[0]

        u, Jd = jax.jvp(f, (g,), (d,))
        Jg = jax.jvp(f, (g,), (g,))[1]
        tied = jnp.stack([t for _, t in ties]) if ties else jnp.zeros(0, bool)
        return u, Jd, Jg, tied, opt.update(x, state, params)[1]

    flat, pinned = [], None
    for k in range(steps):
        g = g0 if k == 0 else g0 + 0.5 * scale * jax.random.normal(next(keys), g0.shape,
                                                                   g0.dtype)
        d = jax.random.normal(next(keys), g0.shape, g0.dtype)
        d = d * (jnp.linalg.norm(g) / jnp.linalg.norm(d))
        u, Jd, Jg, tied, new_state = probe(g, d, state)
        for name, t in zip(labels, np.asarray(tied), strict=True):
            if t:
                found[f"tie:{name}"] = "tie"
        size = float(jnp.linalg.norm(u))
        if not (size > 0 and np.isfinite(size)):
            flat.append(False)
            continue
        rd, rg = float(jnp.linalg.norm(Jd)) / size, float(jnp.linalg.norm(Jg)) / size
        flat.append(rd < 1e-12 and rg < 1e-12)
        if rd > 1e-6 and pinned is None:
            parts = [(u, Jd)] + list(zip(jnp.split(u, np.cumsum(sizes)[:-1]),
                                         jnp.split(Jd, np.cumsum(sizes)[:-1]), strict=True))
            norm_fixed = any(
                float(jnp.linalg.norm(a)) > 0 and float(jnp.linalg.norm(b)) > 1e-6 * size
                and abs(float(a @ b)) < 1e-10 * float(jnp.linalg.norm(a) * jnp.linalg.norm(b))
                for a, b in parts)
            if rg < 1e-10 or norm_fixed:
                pinned = k
        state = new_state
    jumps = sorted(p for p, kind in found.items() if kind == "jump")
    kinks = sorted(p for p, kind in found.items() if kind == "kink")
    ties = sorted(p[4:] for p, kind in found.items() if kind == "tie")
    if jumps:
        raise ValueError(f"the optimizer factory's update takes {', '.join(jumps)} of a "
                         "gradient-dependent value, which is discontinuous (like lion or "
                         "sign-SGD); the construction needs a C^2 update")
    if len(flat) > 1 and all(flat[1:]):
        raise ValueError("the optimizer factory's update is piecewise constant in the "
                         "gradient (nonzero, with zero derivative at every probe: a sign-like "
                         "update, discontinuous where it switches); the construction needs a "
                         "C^2 update")
    if ties:
        raise ValueError(f"the optimizer factory's update sits on the switch of a "
                         f"{', '.join(ties)} at the probes (its two sides equal to 1e-12, e.g. "
                         "adafactor's first update at its clipping threshold): not "
                         "differentiable where the run starts; the construction needs a C^2 "
                         "update")
    if kinks and pinned is not None:
        raise ValueError(f"clipping is active where the run starts: the update's norm does "
                         f"not change with the gradient (probe {pinned}) and the update takes "
                         f"{', '.join(kinks)} of gradient-dependent values; it switches off "
                         "where the gradient shrinks, a kink the construction cannot cross "
                         "(it needs a C^2 update): raise the threshold above the run's "
                         "gradients or drop the clipping")
    if kinks:
        warnings.warn(f"the optimizer factory's update takes {', '.join(kinks)} of "
                      "gradient-dependent values (a clip, max or where), inactive at the "
                      "start: the modified equation holds only where the update is smooth, "
                      "i.e. while none of them switches", SmoothnessWarning, stacklevel=3)
    if flat and flat[0]:
        warnings.warn("the optimizer factory's first update is piecewise constant in the "
                      "gradient (g/|g|, e.g. eps = 0 outside a square root): the fields are "
                      "singular where a gradient or second-moment component is 0; the "
                      "modified equation holds only away from there", SmoothnessWarning,
                      stacklevel=3)
