"""experiments.orders: every sweep of docs/orders.md is a valid command, and the report
rewrites the generated table from result files (and nothing else)."""

import shlex

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


def test_report_rewrites_only_the_generated_section(tmp_path):
    r = run_sweep(bilinear(), optimizer="gd", h=[0.02, 0.01], T=0.2)  # N >= 8: fitted
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
