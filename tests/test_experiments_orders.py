"""experiments.orders: every sweep of docs/orders.md is a valid command, and the report
rewrites the generated table from result files (and nothing else)."""

import shlex
import shutil

import pytest
from _helpers import run_sweep

import bea
from bea.problems import bilinear
from experiments import convergence, orders


@pytest.mark.parametrize("sweep", orders.SWEEPS, ids=[s.name for s in orders.SWEEPS])
def test_every_sweep_is_a_valid_command(sweep):
    a = convergence.parser().parse_args(shlex.split(sweep.args))
    bea.SweepConfig(optimizer=a.optimizer, h=a.h, T=a.T, fields=a.fields, beta=a.beta,
                    rho=a.rho, eps=a.eps, batch_size=a.batch_size, engine=a.engine)


@pytest.fixture(scope="module")
def result():
    """One real (tiny) sweep result, written as any sweep's."""
    return run_sweep(bilinear(), optimizer="gd", h=[0.02, 0.01], T=0.2)  # N >= 8: fitted


def test_report_rewrites_only_the_generated_section(tmp_path, result):
    r = result
    r.save(str(tmp_path / "results" / "logistic_gd"))
    doc = tmp_path / "orders.md"
    doc.write_text(f"# Title\n\nbefore\n{orders.BEGIN}\nstale\n{orders.END}\nafter\n")
    orders.report(str(tmp_path / "results"), str(doc))
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{orders.END}\nafter\n")
    assert "stale" not in text and "`logistic_gd`" in text
    assert f"**{r.slopes['order1']:.3f}**" in text
    assert "not run yet: bilinear_adam" in text
    (tmp_path / "bad.md").write_text("no markers")
    with pytest.raises(SystemExit):
        orders.main(["report", "--doc", str(tmp_path / "bad.md")])


def test_docs_list_every_sweep():
    text = open(orders.DOC).read()
    for s in orders.SWEEPS:
        assert f"`{s.name}`" in text and orders.command(s) in text, s.name


def test_report_keeps_or_drops_measured_rows_only_when_told(tmp_path, result, capsys):
    """Issue 23: a report from a results folder lacking sweeps the document shows refuses,
    document untouched; --keep-missing keeps their rows as they were, --drop-missing drops
    them; a folder that does not exist or holds no sweep is refused whatever the flags."""
    res = tmp_path / "results"
    for name in ("bilinear_adam", "logistic_gd"):
        result.save(str(res / name))
    doc = tmp_path / "orders.md"
    doc.write_text(f"# T\n{orders.BEGIN}\n{orders.END}\n")
    orders.report(str(res), str(doc))
    rows = orders.measured(doc.read_text())
    assert list(rows) == ["bilinear_adam", "logistic_gd"] and len(rows["bilinear_adam"]) == 3
    shutil.rmtree(res / "bilinear_adam")
    before = doc.read_bytes()
    for flags in ([], ["--results", str(tmp_path / "typo")],
                  ["--results", str(tmp_path), "--drop-missing"]):
        with pytest.raises(SystemExit) as e:
            orders.main(["report", "--results", str(res), "--doc", str(doc), *flags])
        assert e.value.code == 2 and doc.read_bytes() == before
    err = capsys.readouterr().err.splitlines()
    assert "would drop the measured rows of bilinear_adam" in err[0]
    assert "is not a directory" in err[1] and "holds none of the" in err[2]
    assert orders.main(["report", "--results", str(res), "--doc", str(doc),
                        "--keep-missing"]) == 0
    text = doc.read_text()
    assert orders.measured(text) == rows  # the kept rows as they were
    assert "(rows kept from the previous report, their runs not at hand: bilinear_adam)" in text
    orders.report(str(res), str(doc), missing="drop")
    assert list(orders.measured(doc.read_text())) == ["logistic_gd"]
    assert "not run yet: bilinear_adam, " in doc.read_text()
