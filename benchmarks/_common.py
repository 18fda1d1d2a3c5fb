"""Shared pieces of the benchmarks: the settings, timing, and the machine description."""

from __future__ import annotations

import json
import os
import platform
import time

# Benchmark 1 and 3: the bilinear model at the paper's practical hyperparameters.
B1 = dict(beta=0.9, rho=0.999, eps=1e-3, T=1.0, hs=[1e-4, 5e-5, 2.5e-5, 1.25e-5])
# Benchmark 2: mini-batch tanh MLP on digits, Adam, order1, a 5-point ladder: the one that
# shows order 2 (fitted slope 1.87; N = 8 ... 128), so the cost is that of a real check.
B2 = dict(beta=0.5, rho=0.7, eps=1e-3, T=0.08, hs=[0.01, 0.005, 0.0025, 0.00125, 0.000625],
          batch_size=16, hidden=16, num_examples=512, seed=0)
# Benchmark 3: a 16-point (beta, rho) grid on the bilinear model.
B3 = dict(betas=[0.5, 0.7, 0.8, 0.9], rhos=[0.7, 0.9, 0.99, 0.999], eps=1e-3, T=1.0,
          hs=[0.01, 0.005, 0.0025, 0.00125])


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible; jax {jax.__version__} on "
            f"{', '.join(str(d) for d in jax.devices())}")


def emit(obj: dict) -> None:
    """One JSON line on stdout, read by benchmarks/run.py."""
    from bea.io import jsonable

    print("BENCH " + json.dumps(jsonable(obj)), flush=True)


def sweep(problem, **config):
    """bea.sweep on a built-in problem."""
    import bea

    return bea.sweep(problem.loss, problem.theta0, problem.data, name=problem.name, **config)
