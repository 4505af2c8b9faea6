"""Batches end to end: the fake API (or the scripted agent) drives real runs that are
graded for real on a scaled-down copy of the slow pipeline.

The pipelines are scaled to ``N`` samples.  Every Python process here imports torch from
source (the sandbox sets PYTHONDONTWRITEBYTECODE and the venv ships no .pyc files), which
costs several seconds that count in the timed region for baseline and candidate alike;
at 100 samples that fixed cost hides most of the speedup (about 1.2x), so ``N = 300``
(about 2x) with a target of 1.2x keeps an honest candidate clearly passing.  The baseline
is measured once per session (a session-wide ``BaselineCache``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import REFERENCE, ROOT, SLOW_PIPELINE, scaled_copy
from fake_api import (
    FAST_RETRY,
    Conversations,
    Fail,
    FakeMessagesAPI,
    Reply,
    first_user_text,
    text,
    tool_use,
)

import batch
import flags
import main
import output_dir
import records
import safe_files
import sandbox
import saving
import scripted_agent
import summary
import tools
from agent import AgentSettings
from problem import Check, GraderError, GradeResult
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache

N = 300
TARGET = 1.2
OPTIONS = GradingOptions(repeats=1, baseline_repeats=1, target=TARGET, accuracy_tolerance=0.5,
                         min_timed_seconds=0)
OPT = "optimized_ml_training.py"
HONEST = ROOT / "tests" / "candidates" / "honest_fast.py"
RUN_JSON_KEYS = {"status", "steps", "tool_calls", "intermediate", "submitted", "found_by",
                 "input_tokens", "output_tokens", "wall_time", "reason", "isolation"}
RESULTS_RUN_KEYS = {"run_id", "status", "steps", "speedup", "accuracy", "reason", "submitted",
                    "input_tokens", "output_tokens"}


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory) -> dict[str, Path]:
    """The slow baseline and an honest vectorised candidate, both at N samples."""
    d = tmp_path_factory.mktemp("batch_pipelines")
    source = HONEST if HONEST.exists() else REFERENCE
    assert source.exists(), "no honest candidate (tests/candidates/honest_fast.py) found"
    return {"baseline": scaled_copy(SLOW_PIPELINE, d / "slow_small.py", N),
            "reference": scaled_copy(REFERENCE, d / "reference_small.py", N),
            "candidate": scaled_copy(source, d / "honest_small.py", N),
            "cache": d / "baseline_cache"}


def under_root(path: Path) -> Path:
    """``path`` spelt lexically under the project root (``ROOT/../../tmp/...``): a workaround
    for ``MLTrainingTask.prompt``, which calls
    ``spec.baseline.relative_to(PROJECT_ROOT)`` and so raises for a baseline elsewhere
    (see test_prompt_accepts_a_baseline_outside_the_project)."""
    return ROOT / os.path.relpath(path, ROOT)


def make_problem(pipelines: dict[str, Path], **toggles: Any) -> MLTrainingTask:
    spec = complex_spec(under_root(pipelines["baseline"]), N, reference=pipelines["reference"])
    return MLTrainingTask(spec, OPTIONS, cache=BaselineCache(pipelines["cache"]),
                                         **toggles)


def settings(output: Path, runs: int, *, concurrent: bool = True, stream: bool = True,
             max_steps: int = 10) -> batch.BatchSettings:
    return batch.BatchSettings(runs=runs, concurrent=concurrent, output_dir=output,
                               agent=AgentSettings("claude-test-model", max_steps, 2048, stream),
                               tools=tools.ToolSettings())


def sdk_client(server: FakeMessagesAPI) -> anthropic.AsyncAnthropic:
    return server.client(max_retries=2)


class Notes:
    def __init__(self) -> None:
        self.lines: list[tuple[int | None, str]] = []

    def __call__(self, run_id: int | None, message: str) -> None:
        self.lines.append((run_id, message))


def run_number(prompt: str) -> int:
    """Which run a conversation belongs to: its prompt names the run's workspace."""
    found = re.search(r"/run_(\d+)`", prompt)
    assert found, prompt
    return int(found.group(1))


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def canned(passed: bool = True) -> GradeResult:
    return GradeResult(passed=passed, checks=[Check("canned", passed, "canned verdict")],
                       speedup=2.0, baseline_time=2.0, candidate_time=1.0,
                       candidate_times=[1.0], accuracy=0.1, baseline_accuracy=0.1,
                       target=TARGET)


def assert_complete_records(out: Path, run_ids: list[int], interrupted: bool) -> dict:
    results = load(out / "results.json")
    assert set(results) >= {"config", "baseline", "runs", "totals", "interrupted"}
    assert results["interrupted"] is interrupted
    assert [r["run_id"] for r in results["runs"]] == run_ids
    for r in results["runs"]:
        assert RESULTS_RUN_KEYS <= set(r)
    t = results["totals"]
    statuses = [r["status"] for r in results["runs"]]
    assert t["runs"] == len(run_ids)
    assert (t["passed"], t["failed"], t["errors"]) == (
        statuses.count("pass"), statuses.count("fail"), statuses.count("error"))
    left_out = sum(r["status"] == "error" and r["error_cause"] in summary.LEFT_OUT_CAUSES
                   for r in results["runs"])
    assert t["left_out"] == left_out
    counted = len(run_ids) - left_out  # graded runs and the errors held against the agent
    assert t["pass_rate"] == (t["passed"] / counted if counted else None)
    assert results["baseline"]["time_median_s"] > 0
    md = (out / "run_summary.md").read_text()
    assert "| run | verdict |" in md
    assert f"- {summary.pass_rate_line(t)}\n" in md
    for r in results["runs"]:
        assert f"| {r['run_id']} | {r['status']} |" in md
        assert (r["error_cause"] is None) is (r["status"] != "error"), r
        if r["status"] == "error":
            assert f"| {r['run_id']} | {summary.ERROR_CAUSES[r['error_cause']]} |" in md
    assert ("**Interrupted**" in md) is interrupted
    assert not list(out.rglob("*.tmp")), "a record was left half-written"
    return results


# ---- 1. a batch through the fake API ---------------------------------------------------
async def test_batch_via_fake_api(tmp_path, pipelines):
    honest = pipelines["candidate"].read_text()
    broken = honest.replace("class ComplexNN", "class RenamedNN").replace(
        "ComplexNN(", "RenamedNN(")

    def script(prompt: str) -> list:
        n = run_number(prompt)
        write = Reply([text("Writing the vectorised version."),
                       tool_use("write_file", {"path": OPT, "content": honest})], "tool_use",
                      input_tokens=1000 * n, output_tokens=100)
        if n == 1:  # writes and submits: pass
            return [write, Reply([tool_use("submit_answer", {"path": OPT})], "tool_use",
                                 input_tokens=2000, output_tokens=20)]
        if n == 2:  # writes and forgets to submit: graded through the fallback
            return [write, Reply([text("The file is written; done.")], "end_turn")]
        if n == 3:  # the API stays down: an error, not a failure
            return [Fail(500, "api_error", "down", headers=FAST_RETRY)] * 3
        # run 4 renames a required class and submits: fails a static check
        return [Reply([tool_use("write_file", {"path": "mine.py", "content": broken})],
                      "tool_use"),
                Reply([tool_use("submit_answer", {"path": "mine.py"})], "tool_use")]

    out = tmp_path / "out"
    problem = make_problem(pipelines)
    conversations = Conversations(script)
    notes = Notes()
    async with FakeMessagesAPI(conversations) as server:
        results = await batch.run_batch(problem, sdk_client(server), settings(out, 4), notes)

    assert sorted(run_number(p) for p in conversations.counts) == [1, 2, 3, 4]
    assert {run_number(p): n for p, n in conversations.counts.items()} == {1: 2, 2: 2, 3: 3,
                                                                          4: 2}
    assert results == load(out / "results.json")
    runs = {r["run_id"]: r for r in results["runs"]}
    for n in range(1, 5):
        run_dir = out / f"run_{n}"
        assert (run_dir / "transcript.jsonl").is_file()
        for line in (run_dir / "transcript.jsonl").read_text().splitlines():
            json.loads(line)
        record = load(run_dir / "run.json")
        assert RUN_JSON_KEYS <= set(record), RUN_JSON_KEYS - set(record)
        assert record["status"] == runs[n]["status"]
        assert (run_dir / "grade.json").is_file() is (n != 3)

    one, two, three, four = (load(out / f"run_{n}" / "run.json") for n in range(1, 5))
    assert one["status"] == "pass", one["reason"]
    assert (one["submitted"], one["found_by"], one["steps"]) == (True, "submitted", 2)
    assert one["speedup"] >= TARGET and one["tool_calls"] == {"write_file": 1,
                                                              "submit_answer": 1}
    assert (one["input_tokens"], one["output_tokens"]) == (3000, 120)
    assert load(out / "run_1" / "grade.json")["passed"] is True
    assert one["isolation"] == sandbox.best_isolation()
    assert load(out / "run_1" / "grade.json")["details"]["isolation"] == one["isolation"]

    assert two["status"] == "pass", two["reason"]
    assert (two["submitted"], two["found_by"], two["ended_by"]) == (False, "fallback",
                                                                    "no_tool_calls")
    assert two["candidate"] == OPT

    assert three["status"] == "error"  # not "fail": the agent never got a chance
    assert three["error_cause"] == "api" and "traceback" not in three
    assert (three["steps"], three["ended_by"], three["submitted"]) == (1, "api_error", False)
    assert "InternalServerError" in three["reason"] and three["speedup"] is None

    assert four["status"] == "fail" and four["submitted"] is True
    assert four["reason"].startswith("required_definitions"), four["reason"]
    assert four["failed_checks"] == ["required_definitions"]

    results = assert_complete_records(out, [1, 2, 3, 4], interrupted=False)
    t = results["totals"]
    assert (t["passed"], t["failed"], t["errors"]) == (2, 1, 1)
    assert t["pass_rate"] == pytest.approx(2 / 3) and t["pass_rate"] < 1
    assert t["pass_rate_ci95"] == pytest.approx(list(summary.wilson_interval(2, 3)))
    assert t["input_tokens"] == sum(r["input_tokens"] for r in results["runs"])
    assert set(results["config"]) >= {"runs", "concurrent", "agent"}
    assert results["baseline"]["target"] == TARGET
    md = (out / "run_summary.md").read_text()
    assert "Pass rate: 2/3 (66.7%, 95 % Wilson interval" in md
    assert "3 graded; 1 run left out: 1 API error\n" in md
    assert "| 3 | API error | left out | API error after retries: InternalServerError" in md
    assert "`required_definitions`: 1" in md
    assert {r for r, _ in notes.lines} >= {1, 2, 3, 4}


# ---- 2. the scripted agent -------------------------------------------------------------
async def test_scripted_agent_batch_passes(tmp_path, pipelines):
    out = tmp_path / "out"
    problem = make_problem(pipelines)
    client = scripted_agent.ScriptedClient(problem, solution_path=pipelines["candidate"])
    results = await batch.run_batch(problem, client,
                                    settings(out, 2, concurrent=False), Notes())
    assert [r["status"] for r in results["runs"]] == ["pass", "pass"], results["runs"]
    for n in (1, 2):
        record = load(out / f"run_{n}" / "run.json")
        assert record["tool_calls"] == {"read_file": 1, "write_file": 1, "profile_tool": 1,
                                        "submit_intermediate_answer": 1, "submit_answer": 1}
        assert (record["steps"], record["submitted"], record["found_by"]) == (5, True,
                                                                              "submitted")
        [intermediate] = record["intermediate"]
        assert intermediate["passed"] is True and intermediate["speedup"] >= TARGET
        assert list((out / f"run_{n}" / "profiles").glob("*.svg"))
    t = assert_complete_records(out, [1, 2], interrupted=False)["totals"]
    assert (t["passed"], t["pass_rate"]) == (2, 1.0)


async def test_scripted_agent_uses_only_the_offered_tools(tmp_path, pipelines, monkeypatch):
    problem = make_problem(pipelines, include_profiler=False, include_intermediate_answer=False)
    graded: list[tuple[str, str]] = []

    async def grade(candidate: Path, **_: Any) -> GradeResult:
        # a copy the harness made of the submitted file
        graded.append((candidate.name, await asyncio.to_thread(candidate.read_text)))
        return canned()

    monkeypatch.setattr(problem, "grade", grade)  # which tools are used is the point here
    out = tmp_path / "out"
    client = scripted_agent.ScriptedClient(problem, solution_path=pipelines["candidate"])
    results = await batch.run_batch(problem, client, settings(out, 1, stream=False), Notes())
    [run] = results["runs"]
    assert run["status"] == "pass" and run["intermediate"] == []
    assert run["tool_calls"] == {"read_file": 1, "write_file": 1, "submit_answer": 1}
    assert graded == [(OPT, (out / "run_1" / OPT).read_text())]
    assert not (out / "run_1" / "profiles").exists()


# ---- 3. interruption -------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
async def test_interrupted_batch_records_the_finished_runs(tmp_path, pipelines, stream):
    release = threading.Event()
    hanging = threading.Event()

    def responder(body: dict, index: int) -> Reply | Fail:
        if run_number(first_user_text(body)) == 2:  # this run's model never answers
            hanging.set()
            release.wait(30)
            return Fail(500, "api_error", "released", headers={"x-should-retry": "false"})
        return Reply([text("Nothing to do here.")], "end_turn")

    out = tmp_path / "out"
    problem = make_problem(pipelines)
    async with FakeMessagesAPI(responder) as server:
        task = asyncio.create_task(batch.run_batch(problem, sdk_client(server),
                                                   settings(out, 2, stream=stream), Notes()))
        try:
            async with asyncio.timeout(120):
                while not ((out / "run_1" / "run.json").exists() and hanging.is_set()):
                    assert not task.done(), task
                    await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            release.set()

    assert not (out / "run_2" / "run.json").exists()
    results = assert_complete_records(out, [1], interrupted=True)
    [run] = results["runs"]
    assert run["status"] == "fail" and "no answer" in run["reason"]
    assert results["totals"]["runs"] == 1


# ---- 4. the harness fails inside one run ----------------------------------------------
@pytest.mark.parametrize(("stream", "error"), [
    (True, RuntimeError("boom in the grader")),  # a bug in the grader
    (False, GraderError("boom in the grader")),  # the grader could not grade
], ids=["stream-bug", "create-could-not-grade"])
async def test_grading_that_raises_is_a_grader_error_and_the_batch_goes_on(
        tmp_path, pipelines, monkeypatch, stream, error):
    problem = make_problem(pipelines)

    async def grade(candidate: Path, **_: Any) -> GradeResult:
        if tools.RUN.get().workspace.name == "run_2":  # the file graded is a copy
            raise error
        return canned()

    monkeypatch.setattr(problem, "grade", grade)

    def script(prompt: str) -> list:
        return [Reply([tool_use("write_file", {"path": OPT, "content": "print(1)\n"})],
                      "tool_use"),
                Reply([tool_use("submit_answer", {"path": OPT})], "tool_use")]

    out = tmp_path / "out"
    async with FakeMessagesAPI(Conversations(script)) as server:
        results = await batch.run_batch(problem, sdk_client(server),
                                        settings(out, 3, stream=stream), Notes())
    assert [r["status"] for r in results["runs"]] == ["pass", "error", "pass"]
    bug = load(out / "run_2" / "run.json")
    name = type(error).__name__
    assert (bug["error_cause"], bug["reason"]) == ("grader",
                                                   f"grader error: {name}: boom in the grader")
    assert "Traceback" in bug["traceback"] and f"{name}: boom" in bug["traceback"]
    assert (bug["steps"], bug["submitted"]) == (2, True)
    t = assert_complete_records(out, [1, 2, 3], interrupted=False)["totals"]
    # Counted against the agent (summary.LEFT_OUT_CAUSES), and said so in the headline.
    assert (t["passed"], t["failed"], t["errors"], t["left_out"]) == (2, 0, 1, 0)
    assert t["pass_rate"] == pytest.approx(2 / 3)
    md = (out / "run_summary.md").read_text()
    assert "2 graded, 1 grader error counted as not passed; no run left out" in md
    assert "| 2 | grader error | counted as not passed | grader error: " in md


async def test_a_tool_that_raises_is_a_harness_error(tmp_path, pipelines, monkeypatch):
    # dispatch lets anything but a ToolError through: a bug, never the agent's is_error.
    async def broken(arguments: dict) -> str:
        raise KeyError("boom in a tool")

    monkeypatch.setattr(tools.REGISTRY["read_file"], "call", broken)
    script = [Reply([tool_use("read_file", {"path": "x.py"})], "tool_use")]
    async with FakeMessagesAPI(script) as server:
        entry = await batch.run_one(1, make_problem(pipelines), sdk_client(server),
                                    settings(tmp_path / "out", 1), None,
                                    asyncio.Semaphore(1), Notes())
    assert (entry.status, entry.error_cause) == ("error", "harness")
    assert entry.reason == "harness error: KeyError: 'boom in a tool'"
    assert "KeyError" in entry.traceback


async def test_an_intermediate_grading_that_raises_is_a_tool_error_not_a_run_error(
        tmp_path, pipelines, monkeypatch):
    problem = make_problem(pipelines)
    calls: list[Path] = []

    async def grade(candidate: Path, **_: Any) -> GradeResult:
        calls.append(candidate)
        if len(calls) == 1:  # the intermediate submission
            raise RuntimeError("secret-looking grader internals")
        return canned()

    monkeypatch.setattr(problem, "grade", grade)
    script = [Reply([tool_use("write_file", {"path": OPT, "content": "print(1)\n"})],
                    "tool_use"),
              Reply([tool_use("submit_intermediate_answer", {"path": OPT}, id="toolu_i")],
                    "tool_use"),
              Reply([tool_use("submit_answer", {"path": OPT})], "tool_use")]
    out = tmp_path / "out"
    async with FakeMessagesAPI(script) as server:
        entry = await batch.run_one(1, problem, sdk_client(server), settings(out, 1), None,
                                    asyncio.Semaphore(1), Notes())
        bodies = server.bodies
    assert (entry.status, entry.error_cause, entry.steps) == ("pass", None, 3)
    assert entry.tool_errors == 1
    [answer] = [b for m in bodies[2]["messages"] if isinstance(m["content"], list)
                for b in m["content"] if b.get("tool_use_id") == "toolu_i"]
    assert answer["is_error"] is True
    shown = json.dumps(answer["content"])
    assert "could not be graded" in shown
    assert "Traceback" not in shown and "internals" not in shown  # the operator's, not its
    [record] = load(out / "run_1" / "run.json")["intermediate"]
    assert (record["passed"], record["speedup"]) == (False, None)
    assert record["error"] == "RuntimeError: secret-looking grader internals"
    assert "Traceback" in record["traceback"]


# ---- the prompt of a problem whose baseline lives outside the project -----------------
def test_prompt_accepts_a_baseline_outside_the_project(tmp_path, pipelines):
    spec = complex_spec(pipelines["baseline"], N, reference=pipelines["reference"])
    problem = MLTrainingTask(spec, OPTIONS, cache=BaselineCache(tmp_path))
    prompt = problem.prompt(tmp_path / "run_1")
    assert str(pipelines["baseline"]) in prompt


# ---- found_by of a run that was never graded -------------------------------------------
async def test_run_ended_by_an_api_error_found_nothing(tmp_path, pipelines):
    problem = make_problem(pipelines)
    s = settings(tmp_path / "out", 1)

    def down(body: dict, index: int) -> Fail:
        return Fail(500, "api_error", "down", headers=FAST_RETRY)

    async with FakeMessagesAPI(down) as server:
        entry = await batch.run_one(1, problem, sdk_client(server), s, None,
                                    asyncio.Semaphore(1), Notes())
    assert (entry.status, entry.submitted) == ("error", False)
    assert entry.found_by is None


# ---- 5. the CLI ------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bad_values(name: str) -> list[str]:
    low, high = flags.BOUNDS[name]
    return [str(high + 1), "99999999999999999999", "9" * 5000, str(low - 1), "-7", "2.5",
            "1e3", "many", ""]


GRADING_FLAGS = {"repeats", "baseline_repeats", "threads"}  # also on grade and calibrate
BAD_FLAGS = [([*prefix, f"{_flag(name)}={value}"], name)
             for name in flags.BOUNDS for value in _bad_values(name)
             for prefix in ([["--agent", "scripted"]]
                            + ([["grade", "x.py"], ["calibrate"]] if name in GRADING_FLAGS
                               else []))]


@pytest.mark.parametrize(("argv", "name"), BAD_FLAGS, ids=[" ".join(a)[:60] for a, _ in BAD_FLAGS])
def test_cli_refuses_a_sizing_flag_out_of_range(monkeypatch, capsys, argv, name):
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be built from an out-of-range flag")

    monkeypatch.setattr(main, "build_problem", never)
    with pytest.raises(SystemExit) as exc:
        main.main(argv)
    err = capsys.readouterr().err
    low, high = flags.BOUNDS[name]
    assert exc.value.code == 2
    assert f"argument {_flag(name)}: must be a whole number from {low} to {high}" in err
    assert "Traceback" not in err and len(err) < 3000  # 5000 digits are not echoed


def test_cli_explains_the_least_number_of_repeats(capsys):
    with pytest.raises(SystemExit):
        main.main(["grade", "x.py", "--repeats", "2"])
    assert "the grader runs one data set twice (determinism)" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(flags.BOUNDS))
def test_cli_accepts_each_end_of_a_range(name):
    for value in flags.BOUNDS[name]:
        _, _, cfg = main.parse_args(["--agent", "scripted", f"{_flag(name)}={value}"])
        assert flags.knob(cfg, name) == value


@pytest.mark.parametrize("name", list(flags.BOUNDS))
@pytest.mark.parametrize("kind", ["above", "below", "float", "bool", "text", "huge"])
def test_cli_refuses_config_out_of_range(monkeypatch, capsys, name, kind):
    # The same bounds hold for a value edited into CONFIG as for a flag.
    low, high = flags.BOUNDS[name]
    value = {"above": high + 1, "below": low - 1, "float": float(low), "bool": True,
             "text": str(low), "huge": 10 ** 5000}[kind]
    cfg = (replace(main.CONFIG, grading=replace(main.CONFIG.grading, **{name: value}))
           if name in flags.GRADING else replace(main.CONFIG, **{name: value}))
    monkeypatch.setattr(main, "CONFIG", cfg)
    with pytest.raises(SystemExit) as exc:
        main.main(["--agent", "scripted"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert (f"CONFIG.{flags.knob_path(name)} in main.py must be a whole number from {low} "
            f"to {high}") in err
    assert f"(its flag: {_flag(name)})" in err


def test_config_defaults_are_within_their_bounds():
    assert flags.config_errors(main.CONFIG) == []


def test_cli_huge_runs_is_a_usage_error_in_a_real_process(tmp_path):
    # The report: --runs 99999999999999999999 allocated 22 GB before the OOM killer acted.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "main.py", "--agent", "scripted", "--runs",
                           "99999999999999999999", "--output", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "argument --runs: must be a whole number from 1 to 1000" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()


def test_cli_without_a_key_stops_before_measuring(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the baseline must not be measured without a key")

    monkeypatch.setattr(main, "build_problem", never)
    monkeypatch.setattr(main, "build_client", never)
    assert main.main([]) == 2


def test_cli_grade_missing_file_prints_one_json_object(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main.main(["grade", "missing.py", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)  # exactly one JSON document
    assert result["passed"] is False
    assert result["reason"].startswith("candidate_readable")
    assert result["details"] == {"executed": False}


@pytest.mark.parametrize("argv", [["--agent", "scripted"], ["grade", "x.py"]],
                         ids=["batch", "grade"])
def test_cli_refuses_to_run_without_a_sandbox(monkeypatch, argv, capsys):
    monkeypatch.setattr(sandbox, "best_isolation", lambda: "none")

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be measured without a sandbox")

    monkeypatch.setattr(main, "build_problem", never)
    assert main.main(argv) == 2
    assert "--unsafe-no-sandbox" in capsys.readouterr().err


async def test_grading_refuses_without_a_sandbox_unless_allowed(monkeypatch, tmp_path,
                                                                 pipelines):
    monkeypatch.setattr(sandbox, "best_isolation", lambda: "none")
    problem = make_problem(pipelines)
    with pytest.raises(GraderError, match="no sandbox"):
        await problem.grade(pipelines["candidate"])
    allowed = replace(problem.options, allow_unsandboxed=True, repeats=1)
    result = await problem.grade(pipelines["candidate"], options=allowed)
    assert result.details["isolation"] == "none"


def test_secrets_are_redacted_in_records(tmp_path):
    secret = "sk-ant-record-0123456789"
    batch.write_json(tmp_path / "grade.json", {"stdout": f"x {secret} {secret[::-1]}"},
                     (secret,))
    text = (tmp_path / "grade.json").read_text()
    assert secret not in text and secret[::-1] not in text and "[REDACTED]" in text


async def test_records_are_written_whatever_the_agent_left_at_their_names(
        tmp_path, pipelines, monkeypatch):
    # The red team's attack: directories planted at grade.json and run.json from the
    # code tool.  The records are the harness's: written anyway, and the batch goes on
    # for every run (before, the graded fail became a harness error, and run.json's
    # write raised out of the run and cancelled the concurrent runs).
    problem = make_problem(pipelines)
    monkeypatch.setattr(problem, "grade", lambda candidate, **_: _failing())
    plant = ("import os\nfor n in ('grade.json', 'run.json', 'grade.json.tmp'):\n"
             "    os.makedirs(n + '/x', exist_ok=True)\nprint('planted')\n")

    def script(prompt: str) -> list:
        return [Reply([tool_use("python_expression", {"code": plant})], "tool_use"),
                Reply([tool_use("write_file", {"path": OPT, "content": "print(1)\n"})],
                      "tool_use"),
                Reply([tool_use("submit_answer", {"path": OPT})], "tool_use")]

    out = tmp_path / "out"
    async with FakeMessagesAPI(Conversations(script)) as server:
        results = await batch.run_batch(problem, sdk_client(server), settings(out, 2),
                                        Notes())
    assert [r["status"] for r in results["runs"]] == ["fail", "fail"]
    for run in (1, 2):
        assert load(out / f"run_{run}" / "run.json")["status"] == "fail"
        assert load(out / f"run_{run}" / "grade.json")["passed"] is False


async def _failing() -> GradeResult:
    return GradeResult(passed=False, checks=[Check("speed", False, "1.0x < 2.0x")],
                       speedup=1.0)


# ---- 6. a full disk: no run's fault crashes the batch ----------------------------------
# The math problem with the scripted agent: a whole batch in about a second.  ENOSPC is
# raised where the harness writes: run 2's directory or one of its records (the batch goes
# on, run 2 is the harness's error), or the batch's final records (one line, exit status).
def _math_batch(out: Path, runs: int = 3, *, concurrent: bool = True) -> tuple:
    from problems import registry

    problem = registry.build("math")
    return (problem, scripted_agent.ScriptedClient(problem),
            settings(out, runs, concurrent=concurrent))


def _disk_full(monkeypatch, owner: Any, name: str, when: Any) -> None:
    """``owner.name`` raises ENOSPC for the calls ``when(*args)`` picks."""
    real = getattr(owner, name)

    def full(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, full)


def _full_for_the_batch_records(monkeypatch, out: Path) -> None:
    """ENOSPC from the write of any record at the top of ``out`` (the manifest, a few
    hundred bytes, still fits), after its temporary file was made: what a full disk
    does, so that its clean-up is exercised too."""
    def at_top(fd: int, data: bytes) -> bool:
        return (Path(os.readlink(f"/proc/self/fd/{fd}")).parent == out.resolve()
                and b'"format": 1' not in data)

    _disk_full(monkeypatch, safe_files, "_write_all", at_top)


def _run_2(root: Any, rel: Any = "", *_: Any) -> bool:
    return Path(root).name == "run_2"


RUN_FAULTS = [  # where run 2 meets the full disk, and what its entry then says
    # before the agent starts, the disk's fault is the machine's: left out, retried
    ("run-directory", (os, "mkdir", _run_2), True, "error", "disk"),
    ("run-directory-sequential", (os, "mkdir", _run_2), False, "error", "disk"),
    ("grade.json", (safe_files, "write_bytes", lambda root, rel, *_: _run_2(root)
                    and rel == "grade.json"), True, "error", "harness"),
    ("run.json", (safe_files, "write_bytes", lambda root, rel, *_: _run_2(root)
                  and rel == "run.json"), True, "pass", None),
    # the agent's own write: the disk's fault is not the agent's mistake (no "fail")
    ("agent-write", (safe_files, "write_bytes", lambda root, rel, *_: _run_2(root)
                     and str(rel) == "answer.txt"), True, "error", "harness"),
]


@pytest.mark.parametrize(("fault", "concurrent", "status", "cause"),
                         [case[1:] for case in RUN_FAULTS], ids=[c[0] for c in RUN_FAULTS])
async def test_a_full_disk_in_one_run_is_that_run_s_harness_error(
        tmp_path, monkeypatch, fault, concurrent, status, cause):
    out = tmp_path / "out"
    _disk_full(monkeypatch, *fault)
    results = await batch.run_batch(*_math_batch(out, concurrent=concurrent), Notes())
    runs = {r["run_id"]: r for r in results["runs"]}
    assert sorted(runs) == [1, 2, 3]
    assert (runs[1]["status"], runs[3]["status"]) == ("pass", "pass")  # the others go on
    assert (runs[2]["status"], runs[2]["error_cause"]) == (status, cause)
    if status == "error":  # the OS error is named; a disk fault is no verdict on the agent
        assert runs[2]["reason"].startswith(f"{cause} error: OSError: [Errno 28] No space")
    if not (out / "run_2" / "run.json").exists():  # results.json says why it is missing
        assert runs[2]["record_error"].startswith("run.json could not be written: ")
    assert load(out / "results.json")["runs"] == results["runs"]
    assert "| 2 |" in (out / "run_summary.md").read_text()
    assert not list(out.rglob("*.tmp"))


async def test_a_full_disk_for_the_batch_records_is_one_clear_error(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _full_for_the_batch_records(monkeypatch, out)
    with pytest.raises(batch.RecordsError) as raised:
        await batch.run_batch(*_math_batch(out, 2), Notes())
    assert str(raised.value) == (f"could not write results.json (No space left on device) "
                                 f"and run_summary.md (No space left on device) in {out}")
    for run in (1, 2):  # each run's own record was written before
        assert load(out / f"run_{run}" / "run.json")["status"] == "pass"
    # no temporary file left (beside the runs, only the manifest and the lock)
    assert sorted(os.listdir(out)) == [output_dir.MANIFEST, output_dir.LOCK, "run_1",
                                       "run_2"]


@pytest.mark.parametrize(("fault", "status"), [("run_2", 0), ("records", main.RECORDS_FAILED)])
def test_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys, caplog, fault,
                                             status):
    out = tmp_path / "out"
    if fault == "run_2":
        _disk_full(monkeypatch, os, "mkdir", _run_2)
    else:
        _full_for_the_batch_records(monkeypatch, out)
    argv = ["--agent", "scripted", "--problem", "math", "--runs", "2", "--output", str(out)]
    assert main.main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert load(out / "run_1" / "run.json")["status"] == "pass"
    if fault == "run_2":
        assert [r["status"] for r in load(out / "results.json")["runs"]] == ["pass", "error"]
        assert "run 2: error (disk error: OSError: [Errno 28]" in err
    else:
        [line] = [line for line in err.splitlines() if line.startswith("error:")]
        assert line == (f"error: could not write results.json (No space left on device) and "
                        f"run_summary.md (No space left on device) in {out}")
        assert not list(out.rglob("*.tmp"))


# ---- 7. --save: the records first, then each run's share --------------------------------
def _batch_on_disk(out: Path) -> None:
    """What a finished batch of three runs leaves: the batch's records, and in each run
    its records and one file of the agent's."""
    out.mkdir()
    (out / "results.json").write_text('{"runs": [1, 2, 3]}')
    (out / "run_summary.md").write_text("# summary\n")
    (out / "summary.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for n in (1, 2, 3):
        run = out / f"run_{n}"
        run.mkdir()
        for name in records.RUN_RECORDS:
            (run / name).write_text(f"{name} of run {n}\n")
        (run / OPT).write_text(f"# run {n}\n")


def _flood(run: Path) -> None:  # the red team's 100,000 empty files, scaled to the budget
    (run / "many").mkdir()
    for i in range(500):
        os.close(os.open(run / "many" / f"f{i}", os.O_CREAT | os.O_WRONLY))


def _big_file(run: Path) -> None:
    (run / "big.bin").write_bytes(b"x" * 20_000)


def _fat_records(run: Path) -> None:  # its own records take all of its share
    (run / "transcript.jsonl").write_bytes(b"{}\n" * 10_000)


def _planted_records(run: Path) -> None:  # the agent's code replaced two of its records
    (run / "grade.json").unlink()
    (run / "grade.json").mkdir()
    (run / "run.json").unlink()
    (run / "run.json").symlink_to(run.parent / "results.json")


SAVE_CASES = [  # what run 2's agent did; the copy's bounds; what of run 2 is (not) kept
    ("flood-entries", _flood, {"max_entries": 40}, list(records.RUN_RECORDS), ["many/f499"],
     "stopped after 9 entries"),  # 40, less 2 batch records, / 3 runs, less 3 records
    ("one-big-file", _big_file, {"max_bytes": 12_000}, [OPT], ["big.bin"],
     "big.bin: 20000 bytes, over the copy's limit"),
    ("records-over-the-share", _fat_records, {"max_bytes": 12_000}, ["transcript.jsonl"],
     [OPT], f"{OPT}: 8 bytes, over the copy's limit"),
    ("planted-at-record-names", _planted_records, {}, [OPT], ["grade.json", "run.json"],
     "run.json is a symbolic link (links are not followed), not copied"),
    ("no-room-at-all", lambda run: None, {"max_entries": 0, "max_bytes": 0},
     ["run.json"], [OPT], "stopped after 0 entries"),
]


@pytest.mark.parametrize(("agent", "limits", "kept", "left", "note"),
                         [case[1:] for case in SAVE_CASES], ids=[c[0] for c in SAVE_CASES])
def test_save_keeps_every_record_and_each_run_s_share(tmp_path, agent, limits, kept, left,
                                                       note):
    out = tmp_path / "out"
    _batch_on_disk(out)
    agent(out / "run_2")
    dest, report = saving.save_batch(out, tmp_path / "saved", "b", **limits)
    for name in records.BATCH_RECORDS:  # the batch's records, always
        assert (dest / name).read_bytes() == (out / name).read_bytes()
    for n in (1, 3):  # the other runs lose nothing to run 2
        assert sorted(p.name for p in (dest / f"run_{n}").iterdir()) == sorted(
            [*records.RUN_RECORDS, OPT] if limits.get("max_entries") != 0 else records.RUN_RECORDS)
        for name in records.RUN_RECORDS:
            assert (dest / f"run_{n}" / name).read_text() == f"{name} of run {n}\n"
    for rel in kept:
        assert (dest / "run_2" / rel).read_bytes() == (out / "run_2" / rel).read_bytes()
    for rel in left:
        assert not os.path.lexists(dest / "run_2" / rel)
    saved = load(dest / saving.SAVE_REPORT)
    assert saved["batch"]["skipped"] == saved["batch"]["failed"] == 0
    assert any(note in line for line in saved["runs"]["run_2"]["notes"]), saved
    assert saved["runs"]["run_1"]["notes"] == saved["runs"]["run_3"]["notes"]
    assert (saved["skipped"], saved["failed"]) == (report.skipped, report.failed)
    assert report.failed == 0
