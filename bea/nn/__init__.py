"""Full-batch training experiments of Section 6 (Figures 3 to 8), in JAX.

The networks and the data are shared with the sweeps' problems: ``bea.models`` (equinox
ResNets, CNN, ViT, CPU-sized versions, per-example normalisation; the smooth MLP and CNN of
``bea.problems``) and ``bea.data`` (digits, CIFAR-10/100 pickles). Public modules:
``train`` (the loop, sweeps, seeds, resume), ``readout`` (a history read at equal
training loss), ``stats`` (bootstrap intervals, trend verdicts), ``flows`` (the modified
flows of Remarks 3.4 / 3.7 integrated beside full-batch Adam from the same theta(0));
:func:`read_history` and
:func:`read_json` read a run's files. Implementation: ``_exact`` (exact accumulated
full-batch gradient, data-parallel), ``_metrics`` (gradient norms and the first-order
prediction), ``_run_files`` (atomic run files), ``_checkpoint`` (orbax), ``_rundir``
(resume checks). Uses
``bea.optimizers`` and ``bea._norms``; only ``flows`` uses the ODE machinery (``bea.fields``,
diffrax).
"""

from bea.nn import flows, readout, stats, train
from bea.nn._run_files import HistoryError, read_history, read_json
from bea.nn.train import ConfigError, TrainConfig, run

__all__ = ["flows", "readout", "stats", "train", "ConfigError", "TrainConfig", "run",
           "read_history", "read_json", "HistoryError"]
