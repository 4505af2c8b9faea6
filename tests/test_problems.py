"""The problem contract and registry: `main.py problems`, `--problem NAME`, the warm-up
problem graded exactly (and hostile answers), and no problem named outside problems/."""

from __future__ import annotations

import json
import os
import re
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
    expected = "invalid choice: 'nope' (choose from 'complex', 'numpy', 'pytorch', 'math')"
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


def test_no_top_level_module_names_a_problem():
    """Everything specific to a problem lives in problems/ (and problem_data/)."""
    specific = re.compile(r"problem_data|slow_ml|ml_training|ComplexML|optimized_ml|"
                          r"math_calculation")
    for module in ("main.py", "batch.py", "tools.py", "agent.py", "summary.py", "sandbox.py",
                   "scripted_agent.py", "problem.py"):
        hits = [line for line in (ROOT / module).read_text().splitlines()
                if specific.search(line)]
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
