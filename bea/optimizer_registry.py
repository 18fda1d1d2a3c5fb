"""Optimizers by name for the generic engine (MATH.md section 5), and the ones refused.

Each entry maps a command-line name to a factory ``make(lr, beta, rho, eps)`` returning
an optax ``GradientTransformation`` whose update is linear in ``lr``. The discrete
iteration is ``make(h, ...)`` run by :func:`bea.optimizers.trajectory`; the generic
field (:func:`bea.fields.generic.modified_field`) takes ``make(1.0, ...)``, whose update
is F_n. Hyperparameters map as: beta = first-moment / momentum decay, rho = second-moment
decay, eps = the numerical-stability constant.

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

from collections.abc import Callable
from typing import NamedTuple

import optax
from jaxtyping import Array, Float

from bea import optimizers as _opt

__all__ = ["Spec", "GENERIC", "CLOSED_FORM", "REFUSED", "WEIGHT_DECAY", "NAMES", "check",
           "transformation"]

WEIGHT_DECAY = 0.1
"""The decoupled weight decay of ``adamw`` (optax's default 1e-4 would hardly show the
parameter dependence of F_n that the construction must handle)."""

Scalar = float | Float[Array, ""]


class Spec(NamedTuple):
    make: Callable[[Scalar, Scalar, Scalar, Scalar], optax.GradientTransformation]
    description: str


GENERIC: dict[str, Spec] = {
    # the four with closed forms: bea's own iterations (Definition 3.1), for --engine generic
    "adam": Spec(lambda lr, b, r, e: _opt.adam(lr, b, r, e),
                 "Adam, eps inside the root, bias corrected (Definition 3.1)"),
    "rmsprop": Spec(lambda lr, b, r, e: _opt.rmsprop(lr, r, e),
                    "RMSProp, eps inside the root (Definition 3.1)"),
    "gd": Spec(lambda lr, b, r, e: _opt.gd(lr), "gradient descent"),
    "heavy_ball": Spec(lambda lr, b, r, e: _opt.heavy_ball(lr, b),
                       "heavy ball v <- g + beta v (optax.sgd with momentum)"),
    # generic only
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

CLOSED_FORM = ("adam", "rmsprop", "gd", "heavy_ball")
NAMES = tuple(GENERIC)

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
               "and sum_k ||dF_n/dtheta_k|| (n-k)^2 is unbounded (MATH.md section 5)",
}


def check(name: str) -> None:
    """Raise ValueError (one line naming ``name``) unless the generic engine takes it."""
    if name in REFUSED:
        raise ValueError(f"optimizer {name!r} is refused: {REFUSED[name]}")
    if name not in GENERIC:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(NAMES)}")


def transformation(name: str, lr: Scalar, beta: Scalar, rho: Scalar,
                   eps: Scalar) -> optax.GradientTransformation:
    """The optimizer ``name`` at learning rate ``lr`` (1.0 for the field, h for the run)."""
    check(name)
    return GENERIC[name].make(lr, beta, rho, eps)
