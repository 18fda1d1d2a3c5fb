"""experiments.figures on hand-written run directories (seeds, read-outs, verdicts,
errors), and bea.nn's import rule."""

import json
import math
import pathlib

import numpy as np
import pytest
from _helpers import markdown_rows

from bea.nn import _run_files as H
from experiments import figures

ROOT = pathlib.Path(__file__).resolve().parents[1]
RATE = 0.3  # loss = 2 exp(-RATE n): crosses 0.1, 0.03, 0.01 at rows 10, 14, 18


def _write_run(d, rows, key, v, seed, optimizer="adam", status="stop_loss",
               coefficient="finite_n", **fixed):
    d.mkdir(parents=True)
    H.write_history(str(d / "history.csv"), rows)
    cfg = {"h": 1e-2, "beta": 0.9, "rho": 0.99, "eps": 1e-8, **fixed, key: v, "seed": seed,
           "status": status,
           "config": {"model": "cnn_small", "dataset": "digits", "optimizer": optimizer}}
    if optimizer == "modified_gd" and coefficient is not None:
        cfg["modified_loss_coefficient"] = coefficient
    (d / "config.json").write_text(json.dumps(cfg))


def _fake_sweep(root, key, values, seeds=(0, 1, 2, 3, 4, 5), slope=0.0, n=30, noise=0.3,
                optimizer="adam", spike=(), coefficient="finite_n", **fixed):
    """Runs whose norm and accuracy are 10 + slope x + seed noise (+ an oscillation of
    +-3 from step to step) at every row; the loss falls like 2 exp(-0.3 n)."""
    rng = np.random.default_rng(7)
    for v in values:
        for s in seeds:
            base = 10 + slope * v + noise * rng.standard_normal()
            rows = []
            for k in range(n):
                osc = 3.0 * (-1) ** k
                # (v, s) in spike: the loss jumps 20-fold at rows 5-6, after its crossing
                # of 0.5 (the thresholds are crossed later, at rows 10, 14, 18)
                jump = 20.0 if (v, s) in spike and k in (5, 6) else 1.0
                rows.append({c: 1.0 for c in H.COLUMNS} | {
                    "step": k, "train_loss": 2 * math.exp(-RATE * k) * jump,
                    "perturbed_one_norm": base + osc, "test_accuracy": base / 20 + osc / 20})
            name = f"{key}={v:g}" + (f"/seed={s}" if len(seeds) > 1 else "")
            _write_run(root / name, rows, key, v, s, optimizer, coefficient=coefficient,
                       **fixed)


def _run(args, tmp_path):
    return figures.main(args + ["--out", str(tmp_path / "out"), "--n-boot", "2000"])


@pytest.mark.parametrize("figure", [3, 4, 5, 6, 7, 8])
def test_every_figure_draws_png_numbers_and_a_verdict(tmp_path, figure):
    key = figures.X_OF[figure]
    _fake_sweep(tmp_path / "runs", key, [0.9, 0.95, 0.99])
    numbers = _run(["--figure", str(figure), "--runs", str(tmp_path / "runs")], tmp_path)
    assert (tmp_path / "out" / f"figure{figure}.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / f"figure{figure}.json").read_text())
    panel = saved["panels"][0]
    assert panel["x_values"] == [0.9, 0.95, 0.99] and panel["seeds"] == [0, 1, 2, 3, 4, 5]
    assert panel["verdict"].startswith(f"Figure {figure} (cnn_small on digits")
    assert saved["verdict"] == numbers["verdict"] == panel["verdict"]
    thr = 0.1 if figure == 7 else 0.01
    crossing = math.ceil(math.log(2 / thr) / RATE)
    assert all(r["crossing_step"] == crossing for r in panel["runs"])
    # version 2: the declared headline, its p-value, the t interval, every run's regime
    assert saved["version"] == 2 and saved["interval"] == "t"
    head = [a for a in panel["analyses"] if a["headline"]]
    assert len(head) == 1
    q, ro, thr_h = figures.HEADLINE[figure]
    assert (head[0]["quantity"], head[0]["readout"], head[0]["threshold"]) == (q, ro, thr_h)
    assert 0 <= head[0]["p_value"] <= 1
    assert {r["regime"] for r in panel["runs"]} == {"oscillation"}
    assert panel["spike_runs"] == [] and panel["headline_oscillation_only"] is None


@pytest.mark.parametrize("slope,figure,word", [
    (40.0, 3, "holds"), (-40.0, 3, "reversed"), (0.0, 3, "absent"),
    (40.0, 5, "reversed"), (-40.0, 5, "holds"),
])
def test_the_verdict_reads_a_synthetic_trend(tmp_path, slope, figure, word):
    """Norms 10 + slope x + seed noise (sd 0.3) under a +-3 step-to-step oscillation:
    over x in [0.9, 0.99] a slope of 40 moves the norm by 3.6, and the window read-out
    (which averages the oscillation out) finds it; the paper expects + for rho
    (Figure 3) and - for beta (Figure 5)."""
    key = figures.X_OF[figure]
    _fake_sweep(tmp_path / "runs", key, [0.9, 0.93, 0.95, 0.97, 0.99], slope=slope)
    numbers = _run(["--figure", str(figure), "--runs", str(tmp_path / "runs")], tmp_path)
    panel = numbers["panels"][0]
    assert panel["verdict_word"] == word
    assert f"the paper's trend ({'perturbed_one_norm'}" in panel["verdict"]
    head = next(a for a in panel["analyses"] if a["headline"])
    assert head["readout"] == "window" and head["threshold"] == 0.01
    if slope:
        assert head["slope"]["lo"] < slope < head["slope"]["hi"]
    # the crossing row 18 is even (+3); the window over rows 13..23 has six odd rows
    # (-3) and five even (+3): it keeps -3/11 of the oscillation, the first-crossing
    # read-out all of it, +3. The same for every seed: the means shift, the slope stays
    first = next(a for a in panel["analyses"]
                 if a["readout"] == "first" and a["threshold"] == 0.01)
    assert first["slope"]["estimate"] == pytest.approx(head["slope"]["estimate"], rel=1e-9)
    for p, q in zip(first["per_config"], head["per_config"], strict=True):
        assert p["mean"] - q["mean"] == pytest.approx(3.0 + 3.0 / 11, abs=1e-9)


def test_one_seed_old_style_sweep_with_window_zero(tmp_path):
    """One seed, runs stopped at the crossing (no room for a window): --window 0 reads
    the crossing row itself, the paper's stopping point, and gives no verdict."""
    _fake_sweep(tmp_path / "runs", "rho", [0.9, 0.99], seeds=(0,), n=19)
    numbers = _run(["--figure", "3", "--runs", str(tmp_path / "runs"), "--window", "0"],
                   tmp_path)
    panel = numbers["panels"][0]
    assert "no verdict" in panel["verdict"] and panel["verdict_word"] == "undetermined"
    head = next(a for a in panel["analyses"] if a["headline"])
    assert [p["values"] for p in head["per_config"]] == [
        [q["values"][0]] for q in next(a for a in panel["analyses"] if a["readout"] == "first"
                                       and a["threshold"] == 0.01)["per_config"]]


def _err(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _run(args, tmp_path)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_unreached_threshold_names_the_runs(tmp_path, capsys):
    _fake_sweep(tmp_path / "runs", "rho", [0.9, 0.99], seeds=(0, 1))
    err = _err(["--figure", "3", "--runs", str(tmp_path / "runs"), "--threshold", "1e-6"],
               tmp_path, capsys)
    assert "threshold 1e-06 never reached by 4 run(s)" in err
    assert "rho=0.99/seed=1 (stop_loss, last train loss" in err


def test_window_leaving_the_history_is_named(tmp_path, capsys):
    _fake_sweep(tmp_path / "runs", "rho", [0.9, 0.99], seeds=(0, 1), n=21)  # 18 + 2 rows
    err = _err(["--figure", "3", "--runs", str(tmp_path / "runs")], tmp_path, capsys)
    assert "window of +-5 steps around loss 0.01 leaves the history of 4 run(s)" in err
    assert "--steps-after-stop 5" in err


def test_mixed_seeds_or_configurations_are_refused(tmp_path, capsys):
    _fake_sweep(tmp_path / "a", "rho", [0.9, 0.99], seeds=(0, 1))
    _fake_sweep(tmp_path / "a", "rho", [0.95], seeds=(0, 1, 2))
    err = _err(["--figure", "3", "--runs", str(tmp_path / "a")], tmp_path, capsys)
    assert "different seeds per configuration: rho=0.9 has seeds [0, 1], rho=0.95 has " \
           "[0, 1, 2]" in err
    _fake_sweep(tmp_path / "b", "rho", [0.9, 0.99], seeds=(0, 1))
    _fake_sweep(tmp_path / "b" / "other", "rho", [0.95], seeds=(0, 1), beta=0.97)
    err = _err(["--figure", "3", "--runs", str(tmp_path / "b")], tmp_path, capsys)
    assert "mix configurations: beta=0.9" in err and "beta=0.97 in other/rho=0.95" in err
    _fake_sweep(tmp_path / "c", "rho", [0.9, 0.99], seeds=(0, 1))
    _fake_sweep(tmp_path / "c" / "again", "rho", [0.9], seeds=(0, 1))
    err = _err(["--figure", "3", "--runs", str(tmp_path / "c")], tmp_path, capsys)
    assert "repeat rho=0.9 seed=0" in err


def test_mechanism_compares_adam_with_modified_gd_and_names_divergence(tmp_path):
    _fake_sweep(tmp_path / "adam", "rho", [0.9, 0.95, 0.99], seeds=(0, 1, 2))
    _fake_sweep(tmp_path / "mgd", "rho", [0.9, 0.95], seeds=(0, 1, 2), slope=40.0,
                optimizer="modified_gd")
    rows = [{c: 1.0 for c in H.COLUMNS} | {"step": k, "train_loss": 2.0 * 10 ** k}
            for k in range(3)] + [{c: math.nan for c in H.COLUMNS} | {"step": 3}]
    for s in (0, 1, 2):
        _write_run(tmp_path / "mgd" / f"rho=0.99/seed={s}", rows, "rho", 0.99, s,
                   "modified_gd", status="diverged")
    numbers = _run(["--figure", "mechanism", "--runs", str(tmp_path / "adam"),
                    "--runs", str(tmp_path / "mgd")], tmp_path)
    assert (tmp_path / "out" / "mechanism.png").stat().st_size > 1000
    adam, mgd = numbers["sides"]
    assert mgd["diverged"] == [f"rho=0.99/seed={s} (step 3)" for s in (0, 1, 2)]
    assert mgd["diverged_per_rho"] == {"0.99": "3/3 by step 3-3"}
    assert mgd["trends"] == [] and "no loss reached by every run" in numbers["verdict"]
    assert adam["trends"][-1]["verdict"] == "absent"
    assert mgd["paths"]["0.99"]["reached"] == 0 and mgd["paths"]["0.95"]["reached"] == 3
    assert numbers["stand_in"] == figures.STAND_IN
    assert "finite-n c(n)" in figures.STAND_IN and "not the preconditioned flow (8)" in \
        figures.table(numbers)


def test_mechanism_refuses_modified_gd_runs_with_the_large_n_c(tmp_path, capsys):
    """modified_gd runs written before c(n) (no modified_loss_coefficient in their
    config.json) descended the large-n c: refused in one line, nothing drawn."""
    _fake_sweep(tmp_path / "adam", "rho", [0.9, 0.95], seeds=(0, 1, 2))
    _fake_sweep(tmp_path / "mgd", "rho", [0.9, 0.95], seeds=(0, 1, 2),
                optimizer="modified_gd", coefficient=None)
    err = _err(["--figure", "mechanism", "--runs", str(tmp_path / "adam"),
                "--runs", str(tmp_path / "mgd")], tmp_path, capsys)
    assert "6 modified_gd run(s)" in err and "large-n c of eq. (8), not c(n)" in err
    assert not (tmp_path / "out").exists()


def _sweep_then(damage):
    def make(root):
        _fake_sweep(root, "rho", [0.9, 0.99], seeds=(0, 1))
        damage(root / "rho=0.99" / "seed=1")
    return make


def _cut_bytes(path, frac=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * frac)])


# (what --runs is made into, what the one line must say); every case exits 2 before drawing
DAMAGED = {
    "history garbage": (_sweep_then(lambda d: (d / "history.csv").write_bytes(b"\x00\xff" * 50)),
                        "seed=1/history.csv is not a history file"),
    "history truncated": (_sweep_then(lambda d: _cut_bytes(d / "history.csv", 0.7)),
                          "seed=1/history.csv, line"),
    "history header only": (_sweep_then(lambda d: (d / "history.csv").write_text(
        ",".join(H.COLUMNS) + "\n")), "seed=1/history.csv has no rows"),
    "history empty": (_sweep_then(lambda d: (d / "history.csv").write_text("")),
                      "seed=1/history.csv is empty"),
    "config garbage": (_sweep_then(lambda d: (d / "config.json").write_text("{not json")),
                       "seed=1/config.json is not valid JSON"),
    "config truncated": (_sweep_then(lambda d: _cut_bytes(d / "config.json")),
                         "seed=1/config.json is not valid JSON"),
    "config missing": (_sweep_then(lambda d: (d / "config.json").unlink()),
                       "seed=1/config.json cannot be read"),
    "config not a run's": (_sweep_then(lambda d: (d / "config.json").write_text('{"a": 1}')),
                           "seed=1/config.json is not a training run's summary (no 'h')"),
    "a file": (lambda root: root.write_text("x"), "is a file, not a run directory"),
    "empty directory": (lambda root: root.mkdir(), "no history.csv in"),
    "missing": (lambda root: None, "no run directory"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_run_directory_is_named_in_one_line(tmp_path, capsys, case):
    make, needle = DAMAGED[case]
    make(tmp_path / "runs")
    err = _err(["--figure", "3", "--runs", str(tmp_path / "runs")], tmp_path, capsys)
    assert err.startswith("experiments.figures: error: ") and needle in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--threshold", "nan"], "--threshold must be positive and finite, got nan"),
    (["--threshold", "inf"], "--threshold must be positive and finite, got inf"),
    (["--threshold", "1e400"], "'1e400' is beyond the float range"),
    (["--threshold", "-0.1"], "--threshold must be positive and finite, got -0.1"),
    (["--thresholds", "0.1,nan"], "--thresholds must be positive numbers"),
    (["--window", "2.5"], "'2.5' is not an integer"),
    (["--figure", "7", "--runs", "SECOND"], "figure 7 takes one --runs directory, got 2"),
])
def test_bad_figure_flags_are_refused_before_reading_runs(tmp_path, capsys, flags, needle):
    """Refused up front: --runs does not even exist (reading it would fail otherwise)."""
    flags = [str(tmp_path / "b") if f == "SECOND" else f for f in flags]
    figure = [] if "--figure" in flags else ["--figure", "3"]
    err = _err(figure + flags + ["--runs", str(tmp_path / "a")], tmp_path, capsys)
    assert needle in err, err


def test_three_seeds_t_interval_and_bootstrap_t_refused(tmp_path, capsys):
    """The issue's new user: 3 seeds. The default t interval gives finite intervals of
    the size of the noise (no [-1e16, 9.8e16]); --interval bootstrap-t is refused in one
    line naming K, and nothing is written."""
    _fake_sweep(tmp_path / "runs", "rho", [0.9, 0.999], seeds=(0, 1, 2), slope=40.0)
    numbers = _run(["--figure", "3", "--runs", str(tmp_path / "runs")], tmp_path)
    head = next(a for a in numbers["panels"][0]["analyses"] if a["headline"])
    assert head["interval"] == "t"
    assert 0 < head["slope"]["hi"] - head["slope"]["lo"] < 200  # noise 0.3 over dx 0.099
    for p in head["per_config"]:
        assert 0 < p["hi"] - p["lo"] < 10
    err = _err(["--figure", "3", "--runs", str(tmp_path / "runs"), "--interval",
                "bootstrap-t", "--out", str(tmp_path / "out2")], tmp_path, capsys)
    assert "has 3 seeds per configuration: the bootstrap-t interval needs at least 6" in err
    assert not (tmp_path / "out2").exists()


def test_spike_runs_are_reported_apart(tmp_path, capsys):
    """Two runs whose loss jumps 20-fold (seed 1 at rho = 0.95, seed 4 at 0.99) are in
    the spike regime; the headline is repeated over the four seeds none of whose runs
    spike, and the table names them. With --spike-factor 30 none is a spike."""
    _fake_sweep(tmp_path / "runs", "rho", [0.9, 0.95, 0.99], slope=40.0,
                spike=((0.95, 1), (0.99, 4)))
    numbers = _run(["--figure", "3", "--runs", str(tmp_path / "runs")], tmp_path)
    panel = numbers["panels"][0]
    assert panel["spike_runs"] == ["rho=0.95/seed=1", "rho=0.99/seed=4"]
    assert panel["oscillation_seeds"] == [0, 2, 3, 5]
    calm = panel["headline_oscillation_only"]
    head = next(a for a in panel["analyses"] if a["headline"])
    assert calm["seeds"] == 4 and calm["seed_list"] == [0, 2, 3, 5]
    assert [p["values"] for p in calm["per_config"]] == [
        [p["values"][i] for i in (0, 2, 3, 5)] for p in head["per_config"]]
    out = capsys.readouterr().out
    assert "spike regime: 2 of 18 run(s) (rho=0.95/seed=1, rho=0.99/seed=4)" in out
    assert "headline over the oscillation-regime seeds [0, 2, 3, 5]: slope" in out
    numbers = _run(["--figure", "3", "--runs", str(tmp_path / "runs"), "--spike-factor", "30"],
                   tmp_path)
    assert numbers["panels"][0]["spike_runs"] == []


def test_holm_adjusts_the_declared_headlines_of_all_figures(tmp_path, capsys):
    """--figure holm reads figure3.json ... figure8.json (here figure 3's numbers under
    every name, figure 4 with two panels): 7 headline tests, Holm-adjusted p-values
    (bea.nn.stats.holm of the raw ones) and verdicts read from them; a missing figure, a
    version-1 file, or --runs given are refused in one line."""
    from bea.nn import stats as S

    _fake_sweep(tmp_path / "runs", "rho", [0.9, 0.95, 0.99], slope=40.0)
    _run(["--figure", "3", "--runs", str(tmp_path / "runs")], tmp_path)
    out = tmp_path / "out"
    three = json.loads((out / "figure3.json").read_text())
    err = _err(["--figure", "holm"], tmp_path, capsys)
    assert "no figure4.json, figure5.json, figure6.json, figure7.json, figure8.json" in err
    for f in (4, 5, 6, 7, 8):
        doc = dict(three, figure=f)
        if f == 4:
            doc["panels"] = three["panels"] * 2
        (out / f"figure{f}.json").write_text(json.dumps(doc))
    numbers = _run(["--figure", "holm"], tmp_path)
    tests = numbers["tests"]
    assert [t["figure"] for t in tests] == [3, 4, 4, 5, 6, 7, 8]
    raw = np.array([t["p_value"] for t in tests])
    np.testing.assert_allclose([t["p_holm"] for t in tests], S.holm(raw))
    assert all(t["p_holm"] >= t["p_value"] for t in tests)
    assert tests[0]["verdict_holm"] == ("holds" if tests[0]["p_holm"] < 0.05 else "absent")
    assert json.loads((out / "headlines.json").read_text())["tests"] == tests
    assert "Holm p = " in capsys.readouterr().out
    old = dict(three)
    del old["version"]
    (out / "figure5.json").write_text(json.dumps(old))
    err = _err(["--figure", "holm"], tmp_path, capsys)
    assert "figure5.json was written before version 2 (no p-values); redraw it" in err
    err = _err(["--figure", "holm", "--runs", str(tmp_path / "runs")], tmp_path, capsys)
    assert "--figure holm reads OUT's figure JSONs and takes no --runs" in err


def test_the_docs_figure_table_is_recomputed_from_the_committed_figure_jsons():
    """docs/training.md's table of the CPU figures' declared headlines (K, slope with its
    interval, p, Holm-adjusted p over the seven headlines, verdict) equals what the
    committed figure JSONs' per-seed values give again (experiments.figures.analyse): no
    number there needs the runs or their checkpoints."""
    from bea.nn import stats

    assert figures.METHODS == stats.METHODS  # figures names them without importing stats
    rows = markdown_rows(ROOT / "docs/training.md", "`results/figures-cpu/")
    assert [(r[0], r[2]) for r in rows] == [("3", "0"), ("4", "0"), ("4", "1"), ("5", "0"),
                                            ("6", "0"), ("7", "0"), ("8", "0")]
    heads = []
    for cells in rows:
        d = json.loads((ROOT / cells[1].strip("`")).read_text())
        assert d["figure"] == int(cells[0]) and d["version"] == 2
        panel = d["panels"][int(cells[2])]
        (a,) = [a for a in panel["analyses"] if a["headline"]]
        xs = [c["x"] for c in a["per_config"]]
        y = np.array([c["values"] for c in a["per_config"]])
        assert y.shape == (len(xs), a["seeds"]) == (len(panel["x_values"]), len(panel["seeds"]))
        again = figures.analyse(xs, y, a["expected_sign"], method=a["interval"],
                                n_boot=d["n_boot"], seed=d["bootstrap_seed"])
        for k in ("estimate", "lo", "hi"):
            assert again["slope"][k] == pytest.approx(a["slope"][k], rel=1e-9, abs=1e-12)
        assert again["p_value"] == pytest.approx(a["p_value"], rel=1e-9)
        assert again["verdict"] == a["verdict"]
        assert cells[3].startswith(panel["model"])
        s = a["slope"]
        heads.append((cells, a, f"{s['estimate']:.3g} [{s['lo']:.3g}, {s['hi']:.3g}]"))
    adjusted = stats.holm([a["p_value"] for _, a, _ in heads])
    for (cells, a, slope), q in zip(heads, adjusted, strict=True):
        after = a["verdict"] if q < 0.05 else "absent"
        assert cells[5:] == [str(a["seeds"]), slope, f"{a['p_value']:.2g}", f"{q:.2g}",
                             a["verdict"], after], cells
