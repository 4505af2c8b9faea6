"""The problem contract and registry: `main.py problems`, `--problem NAME`, the warm-up
problem graded exactly (and hostile answers), and no problem imported or named outside
problems/."""

from __future__ import annotations

import ast
import json
import os
import re
import tokenize
from pathlib import Path

import pytest

import main
from problem import Problem
from problems import registry
from problems.math_calculation import MathCalculationProblem, self_powers

ROOT = Path(__file__).resolve().parent.parent


# ---- the registry and the CLI ---------------------------------------------------------
def test_registry_builds_every_problem_with_its_contract():
    assert registry.names()[0] == registry.DEFAULT_PROBLEM == main.CONFIG.problem
    for name in registry.names():
        problem = registry.build(name)
        assert isinstance(problem, Problem) and problem.name == name
        assert problem.summary and problem.knobs()
        assert {"max_steps", "tools"} <= {k.name for k in problem.knobs()}
        assert problem.tool_names()[-1] in {"submit_answer", "submit_value"}
        assert problem.scripted_turns(set(problem.tool_names()))


def test_unknown_problem_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid: complex, numpy, pytorch, math"):
        registry.build("nope")


@pytest.mark.parametrize("argv", [["--problem", "nope"], ["grade", "x.py", "--problem", "nope"],
                                  ["calibrate", "--problem", "nope"]])
def test_unknown_problem_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main.main(argv)
    assert exc.value.code == 2
    expected = "unknown problem 'nope'; valid: complex, numpy, pytorch, math"
    assert expected in capsys.readouterr().err


def test_problems_command_lists_each_problem(capsys):
    assert main.main(["problems"]) == 0
    text = capsys.readouterr().out
    for name in ("complex  (default)", "numpy", "pytorch", "math"):
        assert re.search(rf"^{re.escape(name)}$", text, re.M), text
    assert "tiers: vectorized, strict" in text and "max_steps=5" in text
    assert main.main(["problems", "--json"]) == 0
    listing = {p["name"]: p for p in json.loads(capsys.readouterr().out)["problems"]}
    assert listing["math"]["tiers"] == [] and listing["math"]["baseline_time_cached"] is None
    assert listing["complex"]["tiers"] == ["vectorized", "strict"]
    assert listing["numpy"]["tiers"] == listing["pytorch"]["tiers"] == ["strict"]


def test_calibrate_on_an_exact_problem_says_there_is_nothing_to_calibrate(capsys):
    assert main.main(["calibrate", "--problem", "math", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["problem"] == "math" and data["tiers"] == [] and data["baseline_time"] is None


TOP_LEVEL = sorted(p.name for p in ROOT.glob("*.py"))


def imported_modules(source: str) -> set[str]:
    """Every module ``source`` imports, at module level or inside a function:
    ``import a.b`` gives ``a.b``, ``from a import b`` gives ``a.b`` (``b`` may be a module
    or a name in ``a``: either way it lies under ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):  # a top-level module has no package: level 0
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def reaches_beyond_the_registry(source: str) -> set[str]:
    """What ``source`` imports from problems/ other than ``problems.registry``."""
    return {name for name in imported_modules(source)
            if name.split(".")[0] == "problems"
            and not (name == "problems.registry" or name.startswith("problems.registry."))}


@pytest.mark.parametrize("module", TOP_LEVEL)
def test_no_top_level_module_imports_a_problem(module):
    """Everything specific to a problem lives in problems/: the modules beside it reach a
    problem only through ``problems.registry`` and the ``problem.Problem`` contract."""
    assert reaches_beyond_the_registry((ROOT / module).read_text()) == set()


@pytest.mark.parametrize("line", [
    "from problems.ml_training import calibration",
    "from problems.ml_training.calibration import TargetRule",
    "import problems.ml_training.task",
    "from problems import ml_training",
    "def f():\n    from problems.math_calculation import self_powers",
    "import problems"])
def test_the_import_check_catches_a_problem_imported_from_main(line):
    main_py = (ROOT / "main.py").read_text()
    assert reaches_beyond_the_registry(main_py + "\n" + line + "\n")


@pytest.mark.parametrize("module", TOP_LEVEL)
def test_no_top_level_module_names_a_problems_files(module):
    # Not redundant with the import check: a path is spelt in a string, not imported
    # (problem_data/slow_ml_training_complex.py opened by name).  Code only: names and
    # strings (docstrings among them), not comments.
    files = re.compile(r"problem_data|slow_ml|optimized_ml")
    with tokenize.open(ROOT / module) as f:
        hits = [tok.string for tok in tokenize.generate_tokens(f.readline)
                if tok.type != tokenize.COMMENT and files.search(tok.string)]
    assert not hits, (module, hits)


# ---- the warm-up, graded exactly -----------------------------------------------------
def test_self_powers_is_the_plain_sum():
    assert self_powers(10, 10) == sum(k ** k for k in range(1, 11)) % 10 ** 10
    assert self_powers(3, 2) == (1 + 4 + 27) % 100


async def _grade(tmp_path: Path, content: bytes | None, problem: MathCalculationProblem):
    path = tmp_path / "answer.txt"
    if content is not None:
        path.write_bytes(content)
    return await problem.grade(path)


@pytest.mark.parametrize("content, passed, check", [
    (None, False, "answer_format"),  # missing
    (b"", False, "answer_format"),
    (b"twelve", False, "answer_format"),
    (b"\x00\xff\xfe binary", False, "answer_format"),
    (b"9" * 20_000, False, "answer_format"),  # over the size limit
    (b"123", False, "exact_answer"),
    (b"RIGHT", True, ""),
    (b"  RIGHT\n", True, ""),
    (b"RIGHT0", False, "exact_answer"),
])
async def test_math_grading_is_exact_and_never_raises(tmp_path, content, passed, check):
    problem = MathCalculationProblem(n=50, digits=8)
    if content is not None:
        content = content.replace(b"RIGHT", str(problem.answer()).encode())
    result = await _grade(tmp_path, content, problem)
    assert result.passed is passed
    assert result.score == (1.0 if passed else 0.0)
    assert (result.failed_checks[:1] or [""]) == [check]


async def test_math_grading_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "answer.txt"
    os.mkfifo(fifo)
    result = await MathCalculationProblem().grade(fifo)
    assert not result.passed and result.failed_checks == ["answer_format"]
    assert MathCalculationProblem().fallback_candidates(tmp_path) == []


def test_math_scripted_batch_passes_with_only_its_tools(tmp_path, capsys):
    out = tmp_path / "out"
    assert main.main(["--agent", "scripted", "--problem", "math", "--runs", "2",
                      "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["pass", "pass"]
    assert results["config"]["problem"] == "math" and results["config"]["max_steps"] == 5
    for run in results["runs"]:
        assert run["tool_calls"] == {"python_expression": 1, "submit_value": 1}
        assert run["score"] == 1.0
    record = json.loads((out / "run_1" / "run.json").read_text())
    assert record["candidate"] == "answer.txt" and record["found_by"] == "submitted"
    transcript = (out / "run_1" / "transcript.jsonl").read_text()
    assert str(MathCalculationProblem().answer()) in transcript  # the code's own output
    md = (out / "run_summary.md").read_text()
    assert "- problem: `math`" in md and "Pass rate: 2/2 (100.0%, 95 % Wilson interval" in md


def test_math_prompt_names_only_its_tools():
    problem = MathCalculationProblem()
    text = problem.prompt(Path("/tmp/ws"))
    assert "python_expression" in text and "submit_value" in text
    assert "read_file" not in text and "problem_data" not in text


# ---- what users and agents write is text, never markup -----------------------------------
@pytest.mark.parametrize("text", ["[/x]", "[bold]x", "[red]", "[link=file:///etc]y[/link]"])
def test_text_from_agents_and_users_is_never_read_as_markup(capsys, text):
    import console

    # a file name the agent chose, in a run's progress; an error quoting the user's input
    console.note(1, f"grading {text}.py")
    console.error(f"{text} is not a rule")
    console.say(text, "done", "bold")
    err = capsys.readouterr().err
    assert err.count(text) == 3, err


@pytest.mark.parametrize(("argv", "why"), [
    (["grade", "x.py", "--target", "[/x]"], "not a target rule: '[/x]'"),
    (["grade", "x.py", "--problem", "math", "--target", "-1"], "a speedup must be a positive"),
    (["grade", "x.py", "--target", "0*strict", "--relative-target", "0.5"], "factor"),
])
def test_a_malformed_target_is_a_usage_error_for_every_problem(capsys, argv, why):
    with pytest.raises(SystemExit) as exc:
        main.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and why in err and "Traceback" not in err


def test_a_grading_config_of_the_wrong_type_is_named(monkeypatch, capsys):
    import dataclasses

    monkeypatch.setattr(main, "CONFIG", dataclasses.replace(main.CONFIG,
                                                            grading={"target": "33"}))
    with pytest.raises(SystemExit) as exc:
        main.main(["--agent", "scripted"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "CONFIG.grading in main.py must be a GradingChoices" in err
