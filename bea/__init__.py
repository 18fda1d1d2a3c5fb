"""bea: backward error analysis of adaptive gradient algorithms, in JAX.

The paper's discrete iterations (:mod:`bea.optimizers`), its modified vector fields
(:mod:`bea.fields`: closed forms, and the generic engine for any smooth optax optimizer),
their piecewise integration (:func:`solve`) and the measured convergence order
(:func:`sweep`, :func:`grid`). Importing ``bea`` changes no JAX setting: the sweeps run in
float64 by themselves, and code that builds fields and solves by hand calls
:func:`enable_x64` first.

The public API is what this module exports, plus the documented submodules
:mod:`bea.fields` (the paper's fields, one module per theorem family), :mod:`bea.problems`,
:mod:`bea.optimizers`, :mod:`bea.optimizer_registry`, :mod:`bea.io` (result files),
:mod:`bea.programs` (the compiled programs a sweep runs), :mod:`bea.bilinear` (Section 5),
:mod:`bea.models` and :mod:`bea.data` (networks and data sets), :mod:`bea.distributed`
(several processes), :mod:`bea.nn` (Section 6's training) and :mod:`bea.mechanism` (the
modified flows integrated beside a training run: Section 6's mechanism). :func:`preflight` (with
:class:`Preflight` and :class:`BudgetError`) is the check a sweep runs before solving:
stiffness, h*, predicted seconds. Modules named ``_name`` are
implementation: ``experiments/``, ``benchmarks/`` and ``notebooks/`` never import them
(``tests/test_public_api.py``).
"""

from bea import fields, io, optimizer_registry, optimizers, problems, programs
from bea._convergence import SweepConfig, grid, sweep
from bea._integrate import solve
from bea._measure import MIN_STEPS, fit_slope, global_error, local_slopes
from bea._norms import (
    correction_coefficient,
    grad_perturbed_one_norm,
    one_norm,
    perturbed_one_norm,
    perturbed_one_norm_excess,
    two_norm,
)
from bea._precision import enable_x64
from bea._preflight import KAPPA, BudgetError, Preflight, preflight
from bea._result import FieldResult, GridResult, Schedule, SweepResult
from bea._typing import Field
from bea.fields import make_field, modified_field
from bea.optimizers import (
    adam,
    adam_eps_outside,
    gd,
    heavy_ball,
    rmsprop,
    rmsprop_eps_outside,
    trajectory,
)
from bea.problems import Problem, as_problem, make_problem

__all__ = [
    "sweep", "grid", "SweepConfig", "SweepResult", "GridResult", "FieldResult", "Schedule",
    "preflight", "Preflight", "BudgetError", "KAPPA",
    "global_error", "fit_slope", "local_slopes", "MIN_STEPS",
    "make_field", "modified_field", "Field", "solve", "enable_x64",
    "adam", "adam_eps_outside", "rmsprop", "rmsprop_eps_outside", "gd", "heavy_ball",
    "trajectory",
    "perturbed_one_norm", "perturbed_one_norm_excess", "one_norm", "two_norm",
    "grad_perturbed_one_norm",
    "correction_coefficient",
    "Problem", "as_problem", "make_problem",
    "fields", "io", "optimizers", "optimizer_registry", "problems", "programs",
]
