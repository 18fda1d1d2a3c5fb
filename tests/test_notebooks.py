"""Every notebook in notebooks/ runs top to bottom (small settings), and a failing cell fails.

Each notebook is executed with nbclient in a fresh ``python3`` kernel. jupyter_client
replaces the kernelspec's ``python`` with ``sys.executable``, so the kernel is the
interpreter running pytest (the project's venv); ``test_broken_cell_fails`` checks this.
The kernel inherits ``BEA_NOTEBOOK_SMALL=1`` (each notebook's first code cell reads it and
shrinks its sweeps and runs) and runs in ``tmp_path``, where notebook 03 writes its run.
The notebooks are committed executed at full settings, with their outputs, so a reader
browsing the repository sees the figures (``make notebooks-render`` re-renders them;
``test_committed_executed_at_full_settings``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01_modified_equations", "02_implicit_regularisation", "03_training_one_norm",
            "04_any_optimizer", "05_second_order", "06_small_eps")
TIMEOUT_S = 300  # per cell; the small settings take seconds to a minute per notebook


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run ``nb`` in a fresh python3 kernel with cwd ``cwd``; raise CellExecutionError on the
    first cell that errors."""
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    return client.execute()


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setenv("BEA_NOTEBOOK_SMALL", "1")
    # notebook 03 trains into a run directory relative to the cwd (tmp_path); make sure a
    # researcher's BEA_NB03_RUN_DIR pointing at a real run is not used by the test
    monkeypatch.delenv("BEA_NB03_RUN_DIR", raising=False)
    monkeypatch.delenv("BEA_NB04_OPTIMIZER", raising=False)


def test_all_notebooks_present():
    assert tuple(p.stem for p in NOTEBOOKS) == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_executed_at_full_settings(path):
    """What is committed is one top-to-bottom run at full settings: every code cell executed
    in order (execution counts 1, 2, ...), no error output, the first cell printing
    ``SMALL=False``, and the figures there (matplotlib's PNG outputs) where the notebook
    draws any."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert "BEA_NOTEBOOK_SMALL" in code[0].source, "the first code cell sets the SMALL switch"
    assert "import bea" in code[0].source, "the first code cell imports bea"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not one run, in order"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name} has an error"
    first = "".join(o.get("text", "") for o in code[0].outputs)
    assert "SMALL=False" in first, f"{path.name} was rendered at small settings"
    text = "".join(o.get("text", "") for o in outputs)
    assert str(NOTEBOOK_DIR.parent) not in text, f"{path.name} shows a path of this machine"
    draws = any("plt." in c.source for c in code)
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    assert pngs >= draws, f"{path.name} draws figures but none is committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, small):
    nb = nbformat.read(path, as_version=4)
    out = execute(nb, tmp_path)
    errors = [o for c in out.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    first = "".join(o.get("text", "") for o in out.cells[1].outputs)
    assert "SMALL=True" in first, "the notebook did not pick up BEA_NOTEBOOK_SMALL=1"


def test_broken_cell_fails(tmp_path, small):
    """The failure path: a cell that raises makes the executor raise (so CI fails), and the
    kernel is the interpreter running the tests."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os, sys\nprint(sys.executable)\n"
                                  "print(os.environ['BEA_NOTEBOOK_SMALL'])"),
        nbformat.v4.new_code_cell("raise RuntimeError('deliberately broken cell')"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})
    with pytest.raises(CellExecutionError, match="deliberately broken cell"):
        execute(nb, tmp_path)
    exe, flag = nb.cells[0].outputs[0]["text"].split()
    assert os.path.realpath(exe) == os.path.realpath(sys.executable)
    assert flag == "1"
    assert nb.cells[2].outputs == []
