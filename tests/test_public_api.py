"""bea's public face (bea/__init__.py): what it exports exists, and the project's own users
(experiments/, benchmarks/, notebooks/) import nothing private: no module named ``_name``,
no name ``_name`` from a bea module, no ``module._name`` attribute of one."""

import ast
import glob
import importlib
import json
import os

import pytest

import bea

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTED = ("fields", "problems", "optimizers", "optimizer_registry", "io", "programs",
              "bilinear", "models", "data", "distributed", "nn", "mechanism")


def private_uses(source: str) -> list[str]:
    """Every private bea name ``source`` imports or reaches: ``from bea._x import ...``,
    ``import bea.fields._y``, ``from bea.fields import _z``, and ``m._name`` where ``m`` is
    bound by an import from bea."""
    tree = ast.parse(source)
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bea":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module} import ...")
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"from {node.module} import {a.name}")
                bound.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "bea":
                    if any(part.startswith("_") for part in a.name.split(".")):
                        found.append(f"import {a.name}")
                    bound.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{ast.unparse(node)}")
    return found


def _notebook_code(path: str) -> str:
    cells = json.load(open(path))["cells"]
    code = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return "\n".join("\n".join(line for line in c.splitlines()
                               if not line.lstrip().startswith(("%", "!"))) for c in code)


def _users() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                  + glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
                  + glob.glob(os.path.join(ROOT, "notebooks", "*.py"))
                  + glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


@pytest.mark.parametrize("snippet", [
    "from bea._measure import global_error", "import bea.fields._window",
    "from bea.fields import _window", "from bea import nn\nnn._run_files.read_json('x')",
    "import bea\nbea._convergence.sweep", "from bea import fields as F\nF.grouped._x",
])
def test_the_check_finds_private_uses(snippet):
    assert private_uses(snippet)


def test_public_uses_pass():
    assert not private_uses("import bea\nfrom bea.fields import grouped, window_length\n"
                            "from bea import nn\nbea.sweep, nn.read_json, grouped.SCANS\n"
                            "import numpy as np\nnp._NoValue")


@pytest.mark.parametrize("path", _users(), ids=lambda p: os.path.relpath(p, ROOT))
def test_experiments_benchmarks_and_notebooks_use_only_the_public_api(path):
    source = _notebook_code(path) if path.endswith(".ipynb") else open(path).read()
    assert not private_uses(source), f"{os.path.relpath(path, ROOT)} reaches private names"


def test_every_export_and_documented_submodule_exists():
    for name in bea.__all__:
        assert hasattr(bea, name), name
    for name in DOCUMENTED:
        mod = importlib.import_module(f"bea.{name}")
        assert mod.__doc__, f"bea.{name} has no docstring"
        for export in getattr(mod, "__all__", ()):
            assert hasattr(mod, export), f"bea.{name}.{export}"
