"""The source checks a candidate must pass before it is run (no subprocesses here).

The snippets are judged both by the functions in ``problems.static_checks`` and through
the grader's own static stage (``MLTrainingOptimizationProblem._static``), which adds
the forbidden strings (the baseline's name, ``problem_data``...) of the real task.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from problems import static_checks
from problems.measurement import BaselineCache
from problems.ml_training_optimization import MLTrainingOptimizationProblem, complex_spec

CANDIDATES = Path(__file__).resolve().parent / "candidates"
CLEAN = (CANDIDATES / "honest_fast.py").read_text()
BASELINE = Path(__file__).resolve().parent.parent / "problem_data" / "slow_ml_training_complex.py"
IMPORTS = "import torch\nimport torch.nn as nn\nimport numpy as np\n"


@pytest.fixture
def problem(tmp_path) -> MLTrainingOptimizationProblem:
    """The flagship's contract (real baseline name); nothing is measured by _static."""
    return MLTrainingOptimizationProblem(complex_spec(), cache=BaselineCache(tmp_path / "c"))


def static_checks_of(problem, tmp_path, source: str | bytes) -> dict[str, object]:
    path = tmp_path / "candidate.py"
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source)
    checks, _ = problem._static(path)
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
                            "required_definitions", "forbidden_constructs", "minimum_length"]
    assert all(c.passed for c in checks.values()), checks


# ---- forbidden constructs -------------------------------------------------------------
FORBIDDEN = [
    ("import_os", "import os", "import of os"),
    ("import_os_path", "import os.path as osp", "import of os.path"),
    ("from_subprocess", "from subprocess import run", "import of subprocess"),
    ("import_pickle_alias", "import pickle as serial", "import of pickle"),
    ("open", "data = open('features.npy', 'rb').read()", "call to open()"),
    ("exec", "exec('x = 1')", "call to exec()"),
    ("eval", "y = eval('1 + 1')", "call to eval()"),
    ("dunder_import", "m = __import__('o' + 's')", "call to __import__()"),
    ("setattr", "setattr(time, 'time', lambda: 0.0)", "call to setattr()"),
    ("fake_time", "time.time = lambda: 0.0", "assignment to time.time"),
    ("fake_perf_counter", "time.perf_counter = lambda: 0.0", "assignment to time.perf_counter"),
    ("patch_seed", "np.random.seed = lambda *args: None", "assignment to np.random.seed"),
    ("patch_via_subscript", "torch.__dict__['manual_seed'] = print", "use of .__dict__"),
    ("delete_module_attr", "del np.random.seed", "assignment to np.random.seed"),
    ("getframe_attribute", "frame = torch.sys._getframe(0)", "use of ._getframe"),
    ("f_back", "caller = frame.f_back", "use of .f_back"),
    ("f_globals", "env = frame.f_globals", "use of .f_globals"),
    ("torch_save", "torch.save({}, 'model.pt')", "use of .save"),
    ("np_load", "cached = np.load('features.npy')", "use of .load"),
    ("set_num_threads", "torch.set_num_threads(2)", "use of .set_num_threads"),
    ("raise_system_exit", "raise SystemExit(0)", "use of SystemExit"),
    ("exit", "exit()", "call to exit()"),
    ("quit", "quit(0)", "call to quit()"),
    ("globals", "g = globals()", "call to globals()"),
    ("builtins_name", "b = __builtins__", "use of __builtins__"),
    ("baseline_name", "NAME = 'slow_ml_training_complex'", "slow_ml_training_complex"),
    ("baseline_file", "PATH = 'problem_data/slow_ml_training_complex.py'",
     "slow_ml_training_complex.py"),
    ("runner_name", "R = 'timing_runner'", "timing_runner"),
    ("proc", "P = '/proc/self/status'", "/proc/"),
]


@pytest.mark.parametrize(("snippet", "fragment"), [f[1:] for f in FORBIDDEN],
                         ids=[f[0] for f in FORBIDDEN])
def test_forbidden_construct_fails_naming_the_line(problem, tmp_path, snippet, fragment):
    source, line = with_appended(snippet)
    checks = static_checks_of(problem, tmp_path, source)
    check = checks["forbidden_constructs"]
    assert not check.passed
    assert f"line {line}: " in check.message
    assert fragment in check.message
    # everything else about the file is fine: only this check fails
    assert [n for n, c in checks.items() if not c.passed] == ["forbidden_constructs"]


def test_forbidden_construct_inside_a_function_is_found():
    source = IMPORTS + "def helper():\n    if True:\n        return eval('2')\n"
    check = static_checks.forbidden_constructs(ast.parse(source))
    assert not check.passed and "line 6: call to eval()" in check.message


def test_many_forbidden_constructs_are_summarised():
    source = "\n".join(["import os"] * 8)
    check = static_checks.forbidden_constructs(ast.parse(source))
    assert not check.passed
    assert check.message.count("import of os") == 5 and "and 3 more" in check.message


@pytest.mark.parametrize("snippet", [
    "t0 = time.time()",
    "elapsed = time.perf_counter() - 1.0",
    "np.random.seed(42)",
    "torch.manual_seed(0)",
    "model_state = {'time': 1}",
    "label = 'the slow pipeline'",
    "def load_data():\n    return 1",
], ids=["time_call", "perf_counter_call", "seed_call", "manual_seed", "dict_key", "string",
        "function_named_load"])
def test_harmless_lookalikes_pass(snippet):
    source = IMPORTS + "import time\n" + snippet + "\n"
    assert static_checks.forbidden_constructs(ast.parse(source), ("slow_ml_training",)).passed


# Ways around the checks that a pipeline never needs.  Each reaches the interpreter, the
# process or the grader's runner; each was once missed by the checks.
BYPASSES = [
    ("import_main", "import __main__\ncounts = __main__.counts\ncounts.update(train_rows=10**6)"),
    ("module_attribute_os", "torch.os.system('echo hi')"),
    ("module_attribute_sys", "runner = torch.sys.modules['__main__']"),
    ("from_import_os", "from torch import os as o"),
    ("computed_getattr", "s = getattr(torch, 'o' + 's')"),
]


@pytest.mark.parametrize("snippet", [b[1] for b in BYPASSES], ids=[b[0] for b in BYPASSES])
def test_bypasses_of_the_forbidden_constructs_are_caught(snippet):
    source = IMPORTS + snippet + "\n"
    assert not static_checks.forbidden_constructs(ast.parse(source)).passed


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


# ---- minimum length -------------------------------------------------------------------
def test_minimum_length_counts_code_lines_only():
    source = "\n".join(["# a comment"] * 30 + [""] * 30 + ["    # indented comment"] * 5
                       + ["x = 1", "y = 2  # trailing comment", "    z = 3"])
    short = static_checks.minimum_length(source, 4)
    assert not short.passed and short.message.startswith("3 lines of code")
    assert static_checks.minimum_length(source, 3).passed


def test_minimum_length_of_the_fixture(problem, tmp_path):
    check = static_checks_of(problem, tmp_path, CLEAN)["minimum_length"]
    assert check.passed  # the flagship requires 60 lines of code
    padded = "\n\n".join("# padding" for _ in range(200)) + "\n" + IMPORTS
    assert not static_checks_of(problem, tmp_path, padded)["minimum_length"].passed


# ---- parsing --------------------------------------------------------------------------
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
