"""The layout's rules, checked on the files themselves: every module of the harness says
what it does first, and stays small enough to have one job.

The exceptions are named here with their reason: a program that cannot import helpers
(the runner's two parts, sent to the sandbox as source) or one cohesive job (the
sandbox; the one safe way to touch what a child could write).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450
LONGER = {
    "sandbox.py": "one cohesive job: isolation by the operating system",
    "safe_files.py": "one cohesive job: every touch of a path a child could write",
    "problems/ml_training/timing/runner_timer.py": "a program sent as source: no helpers",
    "problems/ml_training/timing/runner_execution.py": "a program sent as source: no helpers",
}
MODULES = sorted(
    str(p.relative_to(ROOT)) for p in [*ROOT.glob("*.py"), *ROOT.glob("problems/**/*.py")]
    if "reference" not in p.parts and p.name != "__init__.py" or p.parent.name == "ml_training")


@pytest.mark.parametrize("module", MODULES)
def test_each_module_opens_with_what_it_does(module):
    tree = ast.parse((ROOT / module).read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 8, f"{module} has no docstring saying what it does"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_has_one_job_in_a_few_hundred_lines(module):
    lines = len((ROOT / module).read_text().splitlines())
    if module in LONGER:
        return
    assert lines <= MAX_LINES, f"{module} has {lines} lines: look for its second job"


def test_the_exceptions_still_exist():
    assert all((ROOT / m).is_file() for m in LONGER)


BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_imports_through_public_seams(name):
    # Benchmarks run rarely (minutes to hours each), so a name moved from under them is
    # found here, not at their next run: they import, and name nothing private.
    import importlib

    importlib.import_module(f"benchmarks.{name}")
    tree = ast.parse((ROOT / "benchmarks" / f"{name}.py").read_text())
    private = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names if alias.name.startswith("_")]
    assert not private, f"benchmarks/{name}.py imports private names: {private}"
