"""Execute the notebooks at their full settings and save them with their outputs, so that a
reader browsing the repository sees the figures: ``python notebooks/render.py [NAME ...]``
(``make notebooks-render``). CI executes them again at small settings
(tests/test_notebooks.py); this is what is committed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def render(path: Path, timeout: int = 3600) -> float:
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEA_N")}
    t0 = time.perf_counter()
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits it: no BEA_NOTEBOOK_SMALL, full settings
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    nbformat.write(nb, path)
    return time.perf_counter() - t0


def find(name: str) -> Path:
    """The notebook whose file name starts with ``name`` (``03``, ``03_training_one_norm``)."""
    hits = sorted(HERE.glob(f"{name.removesuffix('.ipynb')}*.ipynb"))
    if len(hits) != 1:
        choices = ", ".join(p.stem for p in sorted(HERE.glob("*.ipynb")))
        sys.exit(f"render.py: error: {name!r} names {len(hits)} notebooks; choose from "
                 f"{choices}")
    return hits[0]


def main(names: list[str]) -> int:
    paths = [find(n) for n in names] or sorted(HERE.glob("*.ipynb"))
    for p in paths:
        print(f"{p.name}: {render(p):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
