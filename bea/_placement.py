"""Where a sweep runs: one decision, recorded in the result.

A convergence sweep is a long sequential chain of small steps: intervals of a piecewise
solve, each a few field evaluations. On an accelerator every step pays kernel launches and
a host synchronisation, so a small problem runs far slower there than on the host CPU
(measured on an H200: the practical bilinear sweep, 2 s on two CPU cores, did not finish
its first h in 80 s). Wide or heavy work (grids of combinations, networks, long batch
histories) is where an accelerator pays. :func:`choose` takes the request ('auto', 'cpu'
or 'gpu') and an estimate of the work per field evaluation and returns the device, with
the reason, which the sweep records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax

__all__ = ["Placement", "DEVICES", "work_per_evaluation", "choose"]

DEVICES = ("auto", "cpu", "gpu")

ACCELERATOR_MIN_FLOPS = 2e7
"""Below this many floating-point operations per field evaluation a step is launch-bound
on an accelerator (some 100 kernels of ~10 us each per step, against a host CPU doing
1e10 flop/s): run it on the host."""


class Placement(NamedTuple):
    device: jax.Device
    platform: str
    reason: str


def work_per_evaluation(p: int, examples: int, slots: int, combinations: int = 1) -> float:
    """Rough flops of one evaluation of a first-order field for every combination: a
    gradient and a Hessian-vector product (~6 p flops per example each, together ~4x a
    forward pass) for each of ``slots`` batches of ``examples`` examples."""
    return 24.0 * p * max(examples, 1) * max(slots, 1) * max(combinations, 1)


def choose(request: str, work: float, devices: Sequence[jax.Device] | None = None,
           cpu: jax.Device | None = None) -> Placement:
    """The device a sweep runs on. ``request``: 'cpu', 'gpu' (any accelerator; ValueError
    if there is none) or 'auto' (the accelerator when there is one and ``work`` per field
    evaluation is at least :data:`ACCELERATOR_MIN_FLOPS`, else the host CPU).
    ``devices`` defaults to this process's ``jax.local_devices()``, ``cpu`` to its first
    host CPU device."""
    if request not in DEVICES:
        raise ValueError(f"unknown device {request!r}; choose from {', '.join(DEVICES)}")
    devices = list(jax.local_devices() if devices is None else devices)
    accel = [d for d in devices if d.platform != "cpu"]
    if cpu is None:
        cpu = next((d for d in devices if d.platform == "cpu"), None) or jax.local_devices(
            backend="cpu")[0]
    if request == "cpu":
        return Placement(cpu, "cpu", "requested")
    if request == "gpu":
        if not accel:
            raise ValueError("device 'gpu' requested, but JAX sees no accelerator (only "
                             f"{', '.join(sorted({d.platform for d in devices}))})")
        return Placement(accel[0], accel[0].platform, "requested")
    if not accel:
        return Placement(cpu, "cpu", "no accelerator")
    if work < ACCELERATOR_MIN_FLOPS:
        return Placement(cpu, "cpu", f"auto: {work:.2g} flops per field evaluation is "
                         f"launch-bound on {accel[0].platform}; the host CPU is faster")
    return Placement(accel[0], accel[0].platform,
                     f"auto: {work:.2g} flops per field evaluation")
