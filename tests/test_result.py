"""bea._result: the typed results, their files (JSON that reads back, version 1 included,
CSV, PNG), tables and grid member names that round-trip the values."""

import json
import os

import numpy as np
import pytest
from _helpers import run_sweep

import bea
from bea._result import FieldResult, GridResult, Schedule, SweepResult, member_name
from bea.io import jsonable
from bea.problems import bilinear

PROB = bilinear()
V1 = os.path.join(os.path.dirname(__file__), "data", "result_v1")


NEWER_OPTIONS = {"time_budget": 300.0, "force": False}  # options added since version 1


def assert_same(a: SweepResult, b: SweepResult, timing: bool = True):
    """Every measured value of ``a`` equals that of ``b``, bit for bit (NaN equal to NaN),
    the configuration as JSON writes it (an option newer than a file missing from it reads
    as its default)."""
    assert list(a.fields) == list(b.fields) and a.problem == b.problem
    np.testing.assert_array_equal(a.h, b.h)
    np.testing.assert_array_equal(a.N, b.N)
    for k, f in a.fields.items():
        g = b.fields[k]
        assert isinstance(f, FieldResult)
        for name in ("errors", "solver_error", "floor", "outside", "few_steps",
                     "local_slopes"):
            np.testing.assert_array_equal(getattr(f, name), getattr(g, name), err_msg=name)
        np.testing.assert_array_equal(f.slope, g.slope)
        for name in ("solver", "tableau", "estimate", "ode_diverged_at"):
            assert getattr(f, name) == getattr(g, name), name
    assert a.schedule == b.schedule and a.diverged_at == b.diverged_at
    assert json.loads(json.dumps(NEWER_OPTIONS | a.config)) == json.loads(
        json.dumps(NEWER_OPTIONS | b.config))
    if timing:
        assert (a.seconds, a.devices, a.platform, a.placement) == (
            b.seconds, b.devices, b.platform, b.placement)


@pytest.fixture(scope="module")
def res():
    return run_sweep(PROB, optimizer="gd", h=[0.02, 0.01], T=0.2, fields=["order0", "order1"])


def test_save_and_load_round_trip(res, tmp_path):
    paths = res.save(str(tmp_path), plot=True)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "convergence.csv", "convergence.json", "convergence.png"]
    back = SweepResult.load(str(tmp_path))
    assert_same(back, res)
    assert json.loads((tmp_path / "convergence.json").read_text())["version"] == 2
    rows = (tmp_path / "convergence.csv").read_text().splitlines()
    assert rows[0].startswith("h,N,error_order0") and len(rows) == 3
    assert float(rows[1].split(",")[2]) == res.errors["order0"][0]  # repr: bit for bit


def test_nan_is_written_as_null(tmp_path):
    """A diverged run (gd at h = 0.2 on the stiff bilinear model) is NaN in memory, null in
    the JSON, 'diverged' in the table, and reported with its step."""
    # the pre-flight charges nothing for a diverged run (it once priced the blown-up
    # discrete run's lambda ~ 1e115 at 200-330 s and refused this 0.3 s sweep)
    r = run_sweep(PROB, optimizer="gd", h=[0.2, 0.1], T=4.0, fields=["order1"])
    assert r.preflight["solve"] == ["diverged", "diverged"]
    assert r.preflight["total_seconds"] == 0
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
    g = bea.grid(PROB.loss, PROB.theta0, PROB.data, over={"beta": [0.5000001, 0.5000002]},
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
    both = {k: np.array([True, False]) for k in res.fields}
    r = res.replace_field("order0", floor=both["order0"], outside=both["order0"])
    r = r.replace_field("order1", floor=both["order1"], outside=both["order1"])
    t = r.table()
    assert "* at the solver/round-off floor" in t and "! as large" not in t
    assert "!" not in "".join(t.splitlines()[1:3])
    few = res.replace_field("order1", few_steps=np.array([True, False]))
    t = few.table()
    assert "< fewer than 8 steps" in t and "* at" not in t and "<" in t.splitlines()[1]
    plain = res.table()
    assert not any(s in plain for s in ("* at", "! as", "< fewer"))


def test_few_steps_round_trip_and_older_files(res, tmp_path):
    r = res.replace_field("order1", few_steps=np.array([True, False]))
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
    from bea._result import GridResult

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


def test_per_field_views_are_the_field_results(res):
    f = res.fields["order1"]
    assert isinstance(f, FieldResult) and res.errors["order1"] is f.errors
    assert res.slopes == {k: r.slope for k, r in res.fields.items()}
    assert res.local_slopes["order1"] is f.local_slopes and len(f.local_slopes) == 1
    assert res.schedule == Schedule("iid", None, {"order0": "full batch",
                                                  "order1": "full batch"})


def test_version_1_files_read_to_the_values_of_todays_runs():
    """tests/data/result_v1 was written before the version field (the schedule in the
    config): a file loads to the values a sweep measures now, bit for bit, and every value
    of a mini-batch file (its schedule from the old config) is the one written."""
    old = SweepResult.load(os.path.join(V1, "diverged"))
    new = run_sweep(PROB, optimizer="gd", h=[0.2, 0.02], T=2.0, fields=["order0", "order1"])
    assert "max_steps" not in old.config  # recorded since issue 21
    new.config.pop("max_steps")
    assert_same(old, new, timing=False)
    assert old.diverged_at == {0.2: 7} and "histories" not in old.config
    old = SweepResult.load(os.path.join(V1, "epoch"))
    doc = json.loads(open(os.path.join(V1, "epoch", "convergence.json")).read())
    assert "version" not in doc and doc["config"]["histories"]
    back = old.to_dict()
    assert back["version"] == 2 and back["schedule"] == {
        "batching": "epoch", "batch_size": 16, "histories": doc["config"]["histories"],
        "distinct_batches": 4, "left_out": 0}
    assert json.loads(json.dumps(back["config"])) == {
        k: v for k, v in doc["config"].items()
        if k not in ("histories", "distinct_batches", "left_out")}
    rest = {k: v for k, v in jsonable(back).items() if k not in ("version", "schedule",
                                                                  "config")}
    assert rest == {k: v for k, v in doc.items() if k != "config"}  # every other value


def test_version_1_grid_loads_and_rewrites_as_version_2(tmp_path):
    g = GridResult.load(os.path.join(V1, "grid"))
    index = json.loads(open(os.path.join(V1, "grid", "grid.json")).read())
    assert g.names == ("beta",) and [c["beta"] for c in g.params] == [0.5, 0.6]
    assert [r.slopes for r in g.results] == [c["slopes"] for c in index["combinations"]]
    member = json.loads(open(os.path.join(V1, "grid", "beta=0.6", "convergence.json")).read())
    assert list(g.results[1].errors["order1"]) == member["errors"]["order1"]
    assert g.results[1].schedule.histories == {"order1": "full batch"}
    assert (g.seconds, g.devices, g.processes) == (index["seconds"], 1, 1)
    g.save(str(tmp_path / "v2"))
    back = GridResult.load(tmp_path / "v2")
    assert json.loads((tmp_path / "v2" / "grid.json").read_text())["version"] == 2
    assert back.params == g.params and back.seconds == g.seconds
    for a, b in zip(back.results, g.results, strict=True):
        assert_same(a, b)


def test_loading_what_is_not_a_result_names_the_path(res, tmp_path):
    for path, needle in ((tmp_path / "nowhere", "no result at"),
                         (tmp_path / "nowhere" / "convergence.json", "no such file")):
        with pytest.raises(ValueError, match=needle) as e:
            SweepResult.load(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="grid.json"):
        GridResult.load(tmp_path)
    (tmp_path / "grid.json").write_text('{"combinations": [{"params": {}}]}')
    with pytest.raises(ValueError, match="not a complete grid result \\('name'"):
        GridResult.load(tmp_path)
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a result file of bea"):
        SweepResult.load(tmp_path / "other.json")
    res.save(str(tmp_path / "r"))
    doc = json.loads((tmp_path / "r" / "convergence.json").read_text())
    with pytest.raises(ValueError, match="version 3"):
        SweepResult.from_dict(doc | {"version": 3})
    del doc["schedule"]
    (tmp_path / "r" / "convergence.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not a complete sweep result \\('schedule'"):
        SweepResult.load(tmp_path / "r")


def test_grid_plot_draws_its_own_axes_or_the_given_ones(res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = GridResult(("beta",), [{"beta": 0.5}, {"beta": 0.6}], [res, res], 0.0, 1)
    axes = g.plot()
    assert len(axes) == 2 and axes[0].get_title() == "fitted slope, order0"
    fig, two = plt.subplots(1, 2)
    assert list(g.plot(two)) == list(two) and two[1].get_title() == "fitted slope, order1"
    one = GridResult(("beta",), [{"beta": 0.5}], [only_order1(res)], 0.0, 1)
    ax = plt.subplots()[1]
    assert one.plot(ax) == [ax] and ax.get_title() == "fitted slope, order1"
    with pytest.raises(ValueError, match="1 axes for the 2 fields order0, order1"):
        g.plot(ax)
    plt.close("all")
    assert res.plot().get_title() == res.title()  # SweepResult.plot(ax=None) alike
    plt.close("all")


def only_order1(res):
    """``res`` with only its order1 field."""
    import dataclasses

    return dataclasses.replace(res, fields={"order1": res.fields["order1"]})


def test_a_failed_error_reference_is_shown_though_the_solve_finished(res):
    """A solve that finished (its path finite) whose reference at 100x tighter tolerance
    ran out of steps: the table says so, instead of hiding the recorded failure."""
    import dataclasses

    f = res.fields["order1"]
    why = {"cause": "max_steps", "message": "h=0.02: ran out of steps (stand-in)"}
    bad = dataclasses.replace(f, failure=(why,) + tuple(f.failure[1:]))
    r = dataclasses.replace(res, fields={**res.fields, "order1": bad})
    assert all(s is None for s in bad.ode_diverged_at)
    assert ("the order1 field's solve finished but its error reference (at 100x tighter "
            "tolerance) did not" in r.table())
    assert "did not" not in res.table()
