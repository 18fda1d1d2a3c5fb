"""The README's two examples print what the README says they print (every digit shown)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()

pytestmark = pytest.mark.slow


def _block_after(marker: str, lang: str = "", skip: int = 0) -> str:
    """The first fenced block of language ``lang`` after ``marker`` (``skip`` more blocks
    of any language after it)."""
    start = README.index(marker)
    spans = [(m.start(), m.group(1), m.group(2))
             for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)]
    after = [(lg, body) for pos, lg, body in spans if pos > start]
    i = next(k for k, (lg, _) in enumerate(after) if lg == lang)
    return after[i + skip][1]


def _run(args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env, **kw)


def test_readme_is_short_and_self_contained():
    assert README.count("\n") <= 150
    assert "../shared" not in README and "MATH.md" not in README
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        assert os.path.exists(os.path.join(ROOT, link)), link


def test_cli_example_prints_the_readme_table(tmp_path):
    expected = _block_after("## From the command line").strip().splitlines()
    r = _run(["-m", "experiments.convergence", "--out", str(tmp_path), "--no-compile-cache"])
    assert r.returncode == 0, r.stderr
    got = r.stdout.strip().splitlines()
    assert [ln.rstrip() for ln in got[: len(expected)]] == [ln.rstrip() for ln in expected]


def test_python_example_prints_the_readme_table():
    code = _block_after("## From Python", "python")
    expected = _block_after("## From Python", "python", skip=1)
    r = _run(["-c", code])
    assert r.returncode == 0, r.stderr
    assert [ln.rstrip() for ln in r.stdout.strip().splitlines()] == [
        ln.rstrip() for ln in expected.strip().splitlines()]
