"""Full-batch training experiments of Section 6 (Figures 3 to 8), in JAX.

The networks and the data are shared with the sweeps' problems: ``bea.models`` (equinox
ResNets, CNN, ViT, CPU-sized versions, per-example normalisation; the smooth MLP and CNN of
``bea.problems``) and ``bea.data`` (digits, CIFAR-10/100 pickles). Public modules:
``train`` (the loop, sweeps, seeds, resume), ``readout`` (a history read at equal
training loss), ``stats`` (t and bootstrap intervals, Holm, trend verdicts);
:func:`read_history` and
:func:`read_json` read a run's files. Implementation: ``_exact`` (exact accumulated
full-batch gradient, data-parallel), ``_metrics`` (gradient norms and the first-order
prediction), ``_run_files`` (atomic run files), ``_checkpoint`` (orbax), ``_rundir``
(resume checks). Uses
``bea.optimizers`` and ``bea._norms``, never the ODE machinery (``bea.fields``, diffrax):
the modified flows beside a training run compose both, one level up, in
:mod:`bea.mechanism`.
"""

from bea.nn import readout, stats, train
from bea.nn._run_files import HistoryError, read_history, read_json
from bea.nn.train import ConfigError, TrainConfig, run

__all__ = ["readout", "stats", "train", "ConfigError", "TrainConfig", "run",
           "read_history", "read_json", "HistoryError"]
