"""Full-batch training experiments of Section 6 (Figures 3 to 8), in JAX.

Modules: ``models`` (equinox ResNets, CNN, ViT, CPU-sized versions, per-example
normalisation), ``data`` (digits, CIFAR-10/100 pickles), ``fullbatch`` (exact
accumulated full-batch gradient, data-parallel), ``metrics`` (gradient norms and the
first-order prediction), ``history`` (atomic run files), ``checkpoint`` (orbax),
``train`` (the loop, sweeps, seeds, resume), ``readout`` (a history read at equal
training loss), ``stats`` (bootstrap intervals, trend verdicts). Uses
``bea.optimizers`` and ``bea.norms``; never the ODE machinery (``bea.fields``,
``bea.integrate``).
"""

from bea.nn import checkpoint, data, fullbatch, history, metrics, models, readout, stats, train
from bea.nn.train import ConfigError, TrainConfig, run

__all__ = ["checkpoint", "data", "fullbatch", "history", "metrics", "models", "readout",
           "stats", "train", "ConfigError", "TrainConfig", "run"]
