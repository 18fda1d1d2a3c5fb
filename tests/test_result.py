"""bea.result: the typed results, their files (JSON that reads back, CSV, PNG), tables and
grid member names that round-trip the values."""

import json

import numpy as np
import pytest
from _helpers import run_sweep

import bea
from bea.problems import bilinear
from bea.result import SweepResult, member_name

PROB = bilinear()


@pytest.fixture(scope="module")
def res():
    return run_sweep(PROB, optimizer="gd", h=[0.02, 0.01], T=0.2, fields=["order0", "order1"])


def test_save_and_load_round_trip(res, tmp_path):
    paths = res.save(str(tmp_path), plot=True)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "convergence.csv", "convergence.json", "convergence.png"]
    back = SweepResult.load(str(tmp_path))
    for k in res.fields:
        np.testing.assert_array_equal(back.errors[k], res.errors[k])
        np.testing.assert_array_equal(back.floor[k], res.floor[k])
        assert back.slopes[k] == res.slopes[k]
    assert back.config == json.loads(json.dumps(res.config)) and back.problem == "bilinear"
    rows = (tmp_path / "convergence.csv").read_text().splitlines()
    assert rows[0].startswith("h,N,error_order0") and len(rows) == 3
    assert float(rows[1].split(",")[2]) == res.errors["order0"][0]  # repr: bit for bit


def test_nan_is_written_as_null(tmp_path):
    """A diverged run (gd at h = 0.2 on the stiff bilinear model) is NaN in memory, null in
    the JSON, 'diverged' in the table, and reported with its step."""
    r = run_sweep(PROB, optimizer="gd", h=[0.2, 0.1], T=4.0, fields=["order1"])
    assert np.isnan(r.errors["order1"][0]) and 0.2 in r.diverged_at
    r.save(str(tmp_path))
    doc = json.loads((tmp_path / "convergence.json").read_text())
    assert doc["errors"]["order1"][0] is None and int(doc["diverged_at"]["0.2"]) > 0
    assert "diverged" in r.table() and f"at step {r.diverged_at[0.2]}" in r.table()


def test_table_marks_floor_points(res):
    t = res.table()
    assert "fitted slope order0" in t and "0.02" in t.splitlines()[1]


def test_grid_names_are_unique_and_round_trip(tmp_path):
    names = ("beta",)
    a, b = member_name({"beta": 0.5000001}, names), member_name({"beta": 0.5000002}, names)
    assert a != b and float(a.split("=")[1]) == 0.5000001
    g = bea.grid(PROB.loss, PROB.theta0, PROB.data, grid={"beta": [0.5000001, 0.5000002]},
                 optimizer="adam", h=[0.05, 0.025], T=0.5, fields=["order1"], rho=0.7,
                 eps=1e-3)
    g.save(str(tmp_path), plot=True)
    index = json.loads((tmp_path / "grid.json").read_text())
    assert [c["name"] for c in index["combinations"]] == [a, b]
    assert (tmp_path / a / "convergence.json").exists() and (tmp_path / "grid_slopes.png").exists()
    assert "0.5000001" in g.table().splitlines()[1]  # the table does not round them alike


def test_legend_lists_only_the_marks_shown(res):
    """A point both at the floor and outside shows '*' only: the '!' legend must not be
    printed for a mark no point carries; '<' (too few steps) gets its legend when shown."""
    import dataclasses

    both = {k: np.array([True, False]) for k in res.fields}
    r = dataclasses.replace(res, floor=both, outside=both)
    t = r.table()
    assert "* at the solver/round-off floor" in t and "! as large" not in t
    assert "!" not in "".join(t.splitlines()[1:3])
    few = dataclasses.replace(res, few_steps={k: np.array([True, False]) for k in res.fields})
    t = few.table()
    assert "< fewer than 8 steps" in t and "* at" not in t and "<" in t.splitlines()[1]
    plain = res.table()
    assert not any(s in plain for s in ("* at", "! as", "< fewer"))


def test_few_steps_round_trip_and_older_files(res, tmp_path):
    import dataclasses

    r = dataclasses.replace(res, few_steps={k: np.array([True, False]) for k in res.fields})
    r.save(str(tmp_path))
    back = SweepResult.load(str(tmp_path))
    np.testing.assert_array_equal(back.few_steps["order1"], [True, False])
    assert (tmp_path / "convergence.csv").read_text().splitlines()[0].endswith(
        "few_steps_order0,few_steps_order1")
    doc = json.loads((tmp_path / "convergence.json").read_text())
    del doc["few_steps"]  # a file written before the flag existed
    np.testing.assert_array_equal(SweepResult.from_dict(doc).few_steps["order1"],
                                  [False, False])


def test_save_into_a_file_names_the_path(res, tmp_path):
    from bea.result import GridResult

    f = tmp_path / "taken"
    f.write_text("x")
    for where in (f, f / "below"):
        with pytest.raises(ValueError, match="cannot save into") as e:
            res.save(str(where))
        assert str(where) in str(e.value) and "\n" not in str(e.value)
    g = GridResult(("beta",), [{"beta": 0.5}], [res], 0.0, 1)
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "beta=0.5").write_text("x")  # a member's directory is a file
    with pytest.raises(ValueError, match="beta=0.5"):
        g.save(str(tmp_path / "grid"))
    assert sorted(p.name for p in (tmp_path / "grid").iterdir()) == ["beta=0.5"]
    assert f.read_text() == "x"
