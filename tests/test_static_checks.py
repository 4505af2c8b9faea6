"""The source checks a candidate must pass before it is run (no subprocesses here).

The snippets are judged both by the functions in ``problems.ml_training.static_checks`` and through
the grader's own static stage (``grading.static_gate``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from problems.ml_training import grading, static_checks
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache

CANDIDATES = Path(__file__).resolve().parent / "candidates"
CLEAN = (CANDIDATES / "honest_fast.py").read_text()
BASELINE = Path(__file__).resolve().parent.parent / "problem_data" / "slow_ml_training_complex.py"
IMPORTS = "import torch\nimport torch.nn as nn\nimport numpy as np\n"


@pytest.fixture
def problem(tmp_path) -> MLTrainingTask:
    """The flagship's contract (real baseline name); nothing is measured by the static gate."""
    return MLTrainingTask(complex_spec(), cache=BaselineCache(tmp_path / "c"))


def static_checks_of(problem, tmp_path, source: str | bytes) -> dict[str, object]:
    path = tmp_path / "candidate.py"
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source)
    checks, _ = grading.static_gate(problem.spec, path)
    return {c.name: c for c in checks}


def with_appended(snippet: str) -> tuple[str, int]:
    """The clean pipeline with ``snippet`` appended; the snippet's first line number."""
    assert CLEAN.endswith("\n")
    return CLEAN + snippet + "\n", CLEAN.count("\n") + 1


# ---- clean code -----------------------------------------------------------------------
@pytest.mark.parametrize("source", [CLEAN, BASELINE.read_text()], ids=["fast", "baseline"])
def test_clean_pipelines_pass_every_static_check(problem, tmp_path, source):
    checks = static_checks_of(problem, tmp_path, source)
    assert list(checks) == ["candidate_readable", "syntax", "required_imports",
                            "required_definitions", "advisories"]
    assert all(c.passed for c in checks.values()), checks


# ---- nothing is refused for what the sandbox contains ---------------------------------
# Honest code that the old denylist refused (each found by a review).  They must pass
# every decisive static check: the sandbox, not the source, stops what could harm.
HONEST_FORMS = [
    ("docstring_names_baseline",
     'def note():\n    """Faster version of problem_data/slow_ml_training_complex.py."""'),
    ("self_modules", "def count(model):\n    return sum(1 for _ in model.modules())"),
    ("setattr_layers",
     "class Stack(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        for i in range(3):\n            setattr(self, f'fc{i}', nn.Linear(4, 4))"),
    ("flush_denormal", "torch.set_flush_denormal(True)"),
    ("cudnn_deterministic", "torch.backends.cudnn.deterministic = True"),
    ("scipy_signal", "from scipy import signal"),
    ("gc_disable", "import gc\ngc.disable()"),
]


@pytest.mark.parametrize("snippet", [f[1] for f in HONEST_FORMS], ids=[f[0] for f in HONEST_FORMS])
def test_honest_forms_pass_the_static_checks(problem, tmp_path, snippet):
    source, _ = with_appended(snippet)
    checks = static_checks_of(problem, tmp_path, source)
    assert not [c for c in checks.values() if c.decisive_failure], checks


def test_a_short_solution_is_not_refused_for_its_length(problem, tmp_path):
    # 59 lines was once refused (minimum_length); brevity is no sign of cheating.
    source = IMPORTS + (
        "class ComplexFeatureExtractor:\n    pass\n"
        "class ComplexNN(nn.Module):\n    pass\n"
        "def generate_synthetic_data():\n    return None\n"
        "def run_complex_training_pipeline():\n    return 0.0\n")
    checks = static_checks_of(problem, tmp_path, source)
    assert not [c for c in checks.values() if c.decisive_failure], checks


@pytest.mark.parametrize(("snippet", "note"), [
    ("import subprocess", "single CPU"),
    ("from multiprocessing import Pool", "single CPU"),
    ("import urllib.request", "no network"),
    ("import pickle", "discarded"),
    ("import inspect", "trusts nothing"),
    ("import time\ntime.time = lambda: 0.0", "clock runs in another process"),
], ids=["subprocess", "multiprocessing", "network", "pickle", "introspection", "clock"])
def test_advisories_explain_what_cannot_help(problem, tmp_path, snippet, note):
    source, _ = with_appended(snippet)
    checks = static_checks_of(problem, tmp_path, source)
    advice = checks["advisories"]
    assert advice.advisory and note in advice.message
    assert not [c for c in checks.values() if c.decisive_failure]


def test_clean_code_has_nothing_to_note():
    assert static_checks.advisories(ast.parse(IMPORTS)).message == "nothing to note"


# ---- required definitions -------------------------------------------------------------
def test_renamed_class_fails_naming_it(problem, tmp_path):
    source = CLEAN.replace("ComplexNN", "FastNN")
    check = static_checks_of(problem, tmp_path, source)["required_definitions"]
    assert not check.passed
    assert "class ComplexNN" in check.message
    assert "ComplexFeatureExtractor" not in check.message


def test_renamed_entry_function_fails_naming_it(problem, tmp_path):
    source = CLEAN.replace("def run_complex_training_pipeline", "def main")
    check = static_checks_of(problem, tmp_path, source)["required_definitions"]
    assert not check.passed and "function run_complex_training_pipeline()" in check.message


def test_class_named_only_in_comment_or_string_does_not_count(problem, tmp_path):
    source = (CLEAN.replace("class ComplexNN(nn.Module):",
                            "class FastNN(nn.Module):  # was: class ComplexNN(nn.Module)")
              .replace("model = ComplexNN(", "model = FastNN(")
              + 'NOTE = "class ComplexNN(nn.Module): pass"\n')
    check = static_checks_of(problem, tmp_path, source)["required_definitions"]
    assert not check.passed and "class ComplexNN" in check.message


@pytest.mark.parametrize("wrapper", [
    "def make_model():\n{body}\n    return ComplexNN\n",
    "class Models:\n{body}\n",
    "if True:\n{body}\n",
], ids=["in_function", "in_class", "in_if"])
def test_nested_class_does_not_count(wrapper):
    body = "    class ComplexNN(nn.Module):\n        pass"
    source = (IMPORTS + "class ComplexFeatureExtractor:\n    pass\n"
              + "def run_complex_training_pipeline():\n    return 0.1\n"
              + wrapper.format(body=body))
    check = static_checks.required_definitions(
        ast.parse(source), ["ComplexNN", "ComplexFeatureExtractor"],
        ["run_complex_training_pipeline"])
    assert not check.passed
    assert "class ComplexNN" in check.message and "ComplexFeatureExtractor" not in check.message


def test_async_entry_and_top_level_classes_count():
    source = ("class ComplexNN:\n    pass\nclass ComplexFeatureExtractor:\n    pass\n"
              "async def run_complex_training_pipeline():\n    return 0.1\n")
    check = static_checks.required_definitions(
        ast.parse(source), ["ComplexNN", "ComplexFeatureExtractor"],
        ["run_complex_training_pipeline"])
    assert check.passed


# ---- required imports -----------------------------------------------------------------
REQUIRED = ("torch", "torch.nn", "numpy")


@pytest.mark.parametrize("source", [
    "import torch\nimport torch.nn as nn\nimport numpy as np",
    "import torch\nfrom torch import nn\nimport numpy as np",
    "import torch.nn\nimport numpy",
    "from torch.nn import functional as F\nimport numpy.linalg",
    "def f():\n    import torch.nn as nn\n    import numpy as np",
], ids=["import_as", "from_torch_import_nn", "dotted", "from_submodule", "inside_function"])
def test_required_imports_satisfied(source):
    assert static_checks.required_imports(ast.parse(source), REQUIRED).passed


@pytest.mark.parametrize(("source", "missing"), [
    ("import torch\nimport torch.nn as nn", "numpy"),
    ("import torch\nimport torch.nn as nn\n# import numpy as np", "numpy"),
    ("import torch\nimport torch.nn as nn\nNP = 'import numpy'", "numpy"),
    ("import torch\nimport torch.nn as nn\nimport numpy_financial", "numpy"),
    ("import torch\nimport numpy as np", "torch.nn"),
    ("import numpy as np", "torch, torch.nn"),
], ids=["no_numpy", "numpy_in_comment", "numpy_in_string", "numpy_prefix_lookalike",
        "no_torch_nn", "no_torch"])
def test_required_imports_missing(source, missing):
    check = static_checks.required_imports(ast.parse(source), REQUIRED)
    assert not check.passed
    assert check.message.endswith(f"for: {missing}")


def test_missing_numpy_fails_in_the_grader(problem, tmp_path):
    source = CLEAN.replace("import numpy as np\n", "")
    check = static_checks_of(problem, tmp_path, source)["required_imports"]
    assert not check.passed and "numpy" in check.message


def test_syntax_error_names_the_line(problem, tmp_path):
    lines = CLEAN.splitlines()
    broken = next(i for i, line in enumerate(lines) if line.startswith("def noisy("))
    lines[broken] = lines[broken].rstrip(":")
    checks = static_checks_of(problem, tmp_path, "\n".join(lines) + "\n")
    assert list(checks) == ["candidate_readable", "syntax"]
    assert not checks["syntax"].passed
    assert f"line {broken + 1}:" in checks["syntax"].message


def test_parse_returns_a_tree_for_valid_code():
    tree, check = static_checks.parse(CLEAN, "candidate.py")
    assert check.passed and isinstance(tree, ast.Module)


def test_null_bytes_fail_the_syntax_check():
    tree, check = static_checks.parse("x = 1\ny = 2\0\n", "candidate.py")
    assert tree is None
    assert check.name == "syntax" and not check.passed


def test_null_bytes_name_the_line():
    _, check = static_checks.parse("x = 1\ny = 2\0\n", "candidate.py")
    assert "line 2" in check.message


def test_null_bytes_through_the_grader(problem, tmp_path):
    checks = static_checks_of(problem, tmp_path, CLEAN.encode() + b"\0\n")
    assert checks["candidate_readable"].passed
    assert not checks["syntax"].passed
