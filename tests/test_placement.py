"""bea._placement: where a sweep runs, decided on the CPU with stand-in device lists."""

from types import SimpleNamespace

import pytest

from bea import _placement as pl

CPU = SimpleNamespace(platform="cpu", id=0)
GPU = SimpleNamespace(platform="gpu", id=0)


def test_auto_keeps_small_sequential_work_on_the_host():
    """The practical bilinear sweep (2 parameters, one example, full batch) is launch-bound
    on an accelerator: auto runs it on the host CPU even when a GPU is present, and says
    why; a mini-batch network sweep goes to the GPU."""
    small = pl.work_per_evaluation(p=2, examples=1, slots=1)
    assert small < pl.ACCELERATOR_MIN_FLOPS
    where = pl.choose("auto", small, devices=[GPU], cpu=CPU)
    assert where.device is CPU and "launch-bound" in where.reason
    big = pl.work_per_evaluation(p=1210, examples=16, slots=3200)
    assert pl.choose("auto", big, devices=[GPU], cpu=CPU).device is GPU
    wide = pl.work_per_evaluation(p=2, examples=1, slots=1, combinations=10**6)
    assert pl.choose("auto", wide, devices=[GPU], cpu=CPU).device is GPU


def test_requests_and_refusals():
    assert pl.choose("cpu", 1e12, devices=[GPU], cpu=CPU).device is CPU
    assert pl.choose("gpu", 1.0, devices=[GPU], cpu=CPU).device is GPU
    assert pl.choose("auto", 1e12, devices=[CPU], cpu=CPU).reason == "no accelerator"
    with pytest.raises(ValueError, match="'gpu' requested, but JAX sees no accelerator"):
        pl.choose("gpu", 1.0, devices=[CPU], cpu=CPU)
    with pytest.raises(ValueError, match="unknown device 'tpu0'"):
        pl.choose("tpu0", 1.0)


def test_a_sweep_records_where_it_ran():
    import bea
    from bea.problems import bilinear

    p = bilinear()
    r = bea.sweep(p.loss, p.theta0, p.data, optimizer="gd", h=[0.01], T=0.02, device="cpu")
    assert r.platform == "cpu" and r.placement == "requested"
    with pytest.raises(ValueError, match="no accelerator"):
        bea.sweep(p.loss, p.theta0, p.data, optimizer="gd", h=[0.01], T=0.02, device="gpu")
