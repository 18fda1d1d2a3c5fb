"""experiments.calibrate: the --small calibration on a CPU (one in-process run), the
projection's arithmetic, the flop count it scales by, bad input and signals."""

import json
import math
import os
import signal
import statistics

import pytest

from experiments import calibrate as C


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One --small calibration (cnn_small: the cheapest to compile), its result, printout
    and JSON."""
    out = tmp_path_factory.mktemp("calibrate")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = C.main(["--small", "--model", "cnn_small", "--steps", "2", "--seeds", "3",
                         "--run-steps", "200", "--out", str(out)])
    return result, buf.getvalue(), json.loads((out / "calibrate.json").read_text())


def test_small_calibration_measures_steps_memory_and_shares(small):
    result, printed, written = small
    m = written["measurement"]
    assert written["measurement"]["seconds_per_step"] == result["measurement"]["seconds_per_step"]
    assert m["platform"] == "cpu" and "CPU times, not a GPU calibration" in printed
    assert m["data"].startswith("synthetic, CIFAR's shape (128 training and 32 test images")
    # every eps trained 1 + 2 steps from the same theta0; the timed ones are the gaps
    assert [e["eps"] for e in m["eps"]] == [1e-3, 1e-8]
    assert all(e["steps"] == 3 and e["status"] == "max_steps" for e in m["eps"])
    assert len(m["step_seconds"]) == 4 and all(t > 0 for t in m["step_seconds"])
    assert m["seconds_per_step"] == statistics.median(m["step_seconds"])
    assert m["setup_compile_first_step_seconds"] > m["seconds_per_step"]
    assert m["memory"]["device_peak_bytes"] is None  # a CPU reports none: said
    assert m["memory"]["host_peak_rss_bytes"] > 2**20 and "host peak" in printed
    lo, hi = m["eps"]
    # the same theta0 and gradient: a smaller sqrt(eps) has at least the share above it
    assert 0 <= lo["share_above_sqrt_eps_theta0"] <= hi["share_above_sqrt_eps_theta0"] <= 1
    for e in m["eps"]:
        # the logged norm, its excess and the floor: ||g||_{1,eps} - excess = P sqrt(eps)
        floor = e["perturbed_one_norm_theta0"] - e["excess_over_floor_theta0"]
        assert floor / math.sqrt(e["eps"]) == pytest.approx(m["parameters"], rel=1e-5)
        assert 0 < e["excess_over_floor_theta0"] <= e["two_norm_penalty_theta0"] * (1 + 1e-6)
        assert e["after_step"] == 2 and len(e["train_loss"]) == 3
    # at eps = 1e-3 the excess is nearly the two-norm penalty; at 1e-8 it is not
    assert lo["excess_over_floor_theta0"] / lo["two_norm_penalty_theta0"] > 0.5
    assert hi["excess_over_floor_theta0"] / hi["two_norm_penalty_theta0"] < 0.5


def test_small_projection_is_seconds_times_steps_times_runs(small):
    result, printed, _ = small
    m, p = result["measurement"], result["projection"]
    s = m["seconds_per_step"] * m["devices"]  # device-seconds (1 device here)
    assert p["seeds"] == 3 and p["run_steps"] == 200 and p["cap_steps"] == C.CAP_STEPS
    by = {f["figure"]: f for f in p["figures"]}
    assert sorted(by) == [3, 4, 5, 6, 7, 8]
    for f in by.values():
        assert f["seconds_per_step"] == s and "--small" in f["how"]
    assert by[3]["gpu_hours"] == pytest.approx(s * 200 * 5 * 3 / 3600)
    assert by[3]["gpu_hours_at_cap"] == pytest.approx(s * C.CAP_STEPS * 5 * 3 / 3600)
    assert by[4]["runs"] == 30 and by[4]["new_runs"] == 15 and by[4]["reads_runs_of"] == ["fig3"]
    assert by[6]["new_runs"] == 0 and by[6]["gpu_hours"] == 0
    # five run sets: four of 5 values, Figure 8's of 8 (rho from 0.9, below beta = 0.97)
    assert by[8]["runs"] == 8 * 3 and min(C.RUN_SETS["fig8"][4]) < 0.97
    assert p["total_gpu_hours"] == pytest.approx(s * 200 * 28 * 3 / 3600)
    assert "not a forecast" in printed and "wrote " in printed


def test_projection_scales_other_networks_by_their_flops():
    """The measured network's time; every other one scaled by its flop ratio."""

    class A:
        model, dataset = "resnet50", "cifar10"

    ratios = {("resnet50", "cifar10"): 1.0, ("resnet101", "cifar10"): 1.9,
              ("resnet101", "cifar100"): 1.91}
    table = C.step_seconds_table(A, 4.0, ratios, 50_000)
    assert table[("resnet50", "cifar10")] == (4.0, "measured")
    assert table[("resnet101", "cifar100")][0] == pytest.approx(4.0 * 1.91)
    p = C.project(table, 1000, 8)
    by = {f["figure"]: f for f in p["figures"]}
    assert by[7]["gpu_hours"] == pytest.approx(4.0 * 1.9 * 1000 * 40 / 3600)
    assert by[8]["how"] == "resnet50 x 1.91 (flops)"
    # measured on a quarter of CIFAR's training set: four times the time per full step
    quarter = C.step_seconds_table(A, 4.0, ratios, 12_500)
    assert quarter[("resnet50", "cifar10")] == (16.0, "measured x 4 (examples)")
    assert quarter[("resnet101", "cifar10")][0] == pytest.approx(4.0 * 1.9 * 4)


def test_flops_per_example_of_a_dense_network():
    """The smooth MLP (3072 -> 16 tanh -> 10): forward 2*3072*16 + 2*16*10 multiply-adds,
    backward the weight gradients (as many) and the hidden layer's input gradient (2*16*10)
    (no gradient of the input image): 4*3072*16 + 6*16*10 + elementwise terms."""
    f = C.flops_per_example("mlp", 10)
    dense = 4 * 3072 * 16 + 6 * 16 * 10
    assert dense <= f <= 1.05 * dense


@pytest.mark.parametrize("flags,needle", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--run-steps", "0"], "--run-steps must be >= 1, got 0"),
    (["--physical-batch", "0"], "--physical-batch must be >= 1, got 0"),
    (["--small", "--physical-batch", "1000"], "--physical-batch 1000 exceeds the 128"),
    (["--time-limit", "0"], "--time-limit must be > 0 seconds, got 0.0"),
    (["--time-limit", "nan"], "--time-limit must be > 0 seconds, got nan"),
    (["--eps", "1e-3,1e-3"], "--eps values repeat: 0.001,0.001"),
    (["--eps", "-1e-3"], "eps must be positive and finite, got -0.001"),
    (["--h", "0"], "h must be positive and finite, got 0.0"),
    (["--rho", "1"], "rho must lie in (0, 1), got 1.0"),
    (["--steps", "5000"], "--steps = 5000 exceeds the limit of 1000"),
    (["--model", "resnet9"], "invalid choice: 'resnet9'"),
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--small", "--data-dir", "somewhere"], "--data-dir somewhere applies without --small"),
    (["--data-dir", "/nonexistent"], "missing data file /nonexistent/cifar-10-batches-py/"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, flags, needle):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        C.main([*flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("experiments.calibrate: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        C.main(["--small", "--out", str(f)])
    assert e.value.code == 2 and "exists and is not a directory" in capsys.readouterr().err


def test_sigterm_while_setting_up_is_one_line_exit_143(tmp_path, capsys, monkeypatch):
    """A real SIGTERM while the synthetic data are written: one line, nothing written."""
    import bea.data

    def signalled(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(bea.data, "write_cifar_pickles", signalled)
    with pytest.raises(SystemExit) as e:
        C.main(["--small", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 143
    assert err == "experiments.calibrate: interrupted (SIGTERM); nothing written\n"
    assert not (tmp_path / "out").exists()


def test_a_signal_during_the_steps_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
    """The training loop stops on SIGINT at a step (bea.nn.train's Interrupted, tested with
    real signals in tests/test_nn_train.py): one line naming it, exit 130, nothing written."""
    import bea.nn.train as T

    def interrupted(cfg, out, **kw):
        raise T.Interrupted(signal.SIGINT, 2, out)

    monkeypatch.setattr(T, "run", interrupted)
    with pytest.raises(SystemExit) as e:
        C.main(["--small", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 130
    assert err == "experiments.calibrate: interrupted (SIGINT) at step 2; nothing written\n"
    assert not (tmp_path / "out").exists()
