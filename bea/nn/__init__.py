"""Full-batch training experiments of Section 6 (Figures 3 to 8), in JAX.

The networks and the data are shared with the sweeps' problems: ``bea.models`` (equinox
ResNets, CNN, ViT, CPU-sized versions, per-example normalisation; the smooth MLP and CNN of
``bea.problems``) and ``bea.data`` (digits, CIFAR-10/100 pickles). Modules: ``fullbatch`` (exact
accumulated full-batch gradient, data-parallel), ``metrics`` (gradient norms and the
first-order prediction), ``history`` (atomic run files), ``checkpoint`` (orbax),
``train`` (the loop, sweeps, seeds, resume), ``readout`` (a history read at equal
training loss), ``stats`` (bootstrap intervals, trend verdicts). Uses
``bea.optimizers`` and ``bea.norms``; never the ODE machinery (``bea.fields``,
``bea.integrate``).
"""

from bea.nn import checkpoint, fullbatch, history, metrics, readout, stats, train
from bea.nn.train import ConfigError, TrainConfig, run

__all__ = ["checkpoint", "fullbatch", "history", "metrics", "readout", "stats", "train",
           "ConfigError", "TrainConfig", "run"]
