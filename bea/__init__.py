"""bea: backward error analysis of adaptive gradient algorithms, in JAX.

Importing ``bea`` turns on float64 (``jax_enable_x64``): numerical verification of
O(h^2) errors needs it, and it must happen before any array exists. Code that wants
float32 (the training experiments) asks for it explicitly with dtypes.
"""

import jax

jax.config.update("jax_enable_x64", True)

from bea import norms, optimizers, problems  # noqa: E402
from bea.fields.generic import modified_field  # noqa: E402
from bea.norms import (  # noqa: E402
    correction_coefficient,
    grad_perturbed_one_norm,
    one_norm,
    perturbed_one_norm,
    two_norm,
)
from bea.optimizers import (  # noqa: E402
    adam,
    adam_eps_outside,
    gd,
    heavy_ball,
    rmsprop,
    rmsprop_eps_outside,
    trajectory,
)
from bea.problems import Problem, batch_sequence, make_problem  # noqa: E402

__all__ = [
    "norms", "optimizers", "problems",
    "perturbed_one_norm", "one_norm", "two_norm", "grad_perturbed_one_norm",
    "correction_coefficient",
    "adam", "adam_eps_outside", "rmsprop", "rmsprop_eps_outside", "gd", "heavy_ball",
    "trajectory", "Problem", "batch_sequence", "make_problem",
    "modified_field",
]
