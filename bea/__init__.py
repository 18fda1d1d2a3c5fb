"""bea: backward error analysis of adaptive gradient algorithms, in JAX.

The paper's discrete iterations (:mod:`bea.optimizers`), its modified vector fields
(:mod:`bea.fields`: closed forms, and the generic engine for any smooth optax optimizer),
their piecewise integration (:func:`solve`) and the measured convergence order
(:func:`sweep`, :func:`grid`). Importing ``bea`` changes no JAX setting: the sweeps run in
float64 by themselves, and code that builds fields and solves by hand calls
:func:`enable_x64` first.
"""

from bea import fields, norms, optimizer_registry, optimizers, problems
from bea.convergence import SweepConfig, grid, sweep
from bea.fields import make_field, modified_field
from bea.integrate import solve
from bea.norms import (
    correction_coefficient,
    grad_perturbed_one_norm,
    one_norm,
    perturbed_one_norm,
    two_norm,
)
from bea.optimizers import (
    adam,
    adam_eps_outside,
    gd,
    heavy_ball,
    rmsprop,
    rmsprop_eps_outside,
    trajectory,
)
from bea.precision import enable_x64
from bea.problems import Problem, as_problem, make_problem
from bea.result import GridResult, SweepResult

__all__ = [
    "sweep", "grid", "SweepConfig", "SweepResult", "GridResult",
    "make_field", "modified_field", "solve", "enable_x64",
    "adam", "adam_eps_outside", "rmsprop", "rmsprop_eps_outside", "gd", "heavy_ball",
    "trajectory",
    "perturbed_one_norm", "one_norm", "two_norm", "grad_perturbed_one_norm",
    "correction_coefficient",
    "Problem", "as_problem", "make_problem",
    "fields", "norms", "optimizers", "optimizer_registry", "problems",
]
