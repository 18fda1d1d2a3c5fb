"""experiments.figures on hand-written run directories, and bea.nn's import rule."""

import json
import pathlib
import re

import pytest

from bea.nn import history as H
from experiments import figures

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _fake_sweep(root, key, values, reach=True):
    for i, v in enumerate(values):
        d = root / f"{key}={v:g}"
        d.mkdir(parents=True)
        rows = []
        for n in range(6):
            loss = 1.0 / (n + 1) ** (3 + i) if reach else 1.0
            rows.append({c: float(n + i) for c in H.COLUMNS} | {"step": n, "train_loss": loss})
        H.write_history(str(d / "history.csv"), rows)
        cfg = {"h": 1e-2, "beta": 0.9, "rho": 0.99, "eps": 1e-8, key: v, "status": "stop_loss",
               "config": {"model": "cnn_small", "dataset": "digits"}}
        (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("figure", [3, 4, 5, 6, 7, 8])
def test_every_figure_draws_png_and_numbers(tmp_path, figure):
    key = figures.X_OF[figure]
    _fake_sweep(tmp_path / "runs", key, [0.9, 0.99])
    numbers = figures.main(["--figure", str(figure), "--runs", str(tmp_path / "runs"),
                            "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / f"figure{figure}.png").stat().st_size > 1000
    pts = numbers["panels"][0]["points"]
    assert [p[key] for p in pts] == [0.9, 0.99] and all(p["reached"] for p in pts)
    if figure in (3, 5):  # the stopping row: first train loss below 0.01
        thr = 0.1 if figure == 7 else 0.01
        for p, i in zip(pts, range(2), strict=True):
            first = next(n for n in range(6) if 1.0 / (n + 1) ** (3 + i) < thr)
            assert p["step"] == first and p["perturbed_one_norm"] == first + i


def test_unreached_stop_is_flagged(tmp_path):
    _fake_sweep(tmp_path / "runs", "rho", [0.99], reach=False)
    numbers = figures.main(["--figure", "3", "--runs", str(tmp_path / "runs"),
                            "--out", str(tmp_path / "out")])
    assert numbers["panels"][0]["points"][0]["reached"] is False


def test_bea_nn_never_imports_the_ode_machinery():
    banned = re.compile(r"^\s*(from\s+bea\.(fields|solve)|import\s+bea\.(fields|solve)"
                        r"|from\s+bea\s+import\s+.*\b(fields|solve)\b)", re.M)
    files = list((ROOT / "bea" / "nn").glob("*.py"))
    assert files
    for path in files:
        assert not banned.search(path.read_text()), path
