"""The run record and the batch's results: the same keys, in the same order, with the
same values as the dicts batch.py built before they had a type (plus the keys added since:
a run's ``attempts``, the batch's ``provenance``), and older files read."""

from __future__ import annotations

import json
from typing import Any

import pytest

import batch
import scripted_agent
import summary
import tools
from agent import AgentSettings
from records import RESULTS_ENTRY_KEYS, BatchResults, RunRecord

OUTCOME = {"steps": 4, "ended_by": "submitted", "tool_calls": {"write_file": 1},
           "tool_errors": 0, "input_tokens": 3000, "output_tokens": 120,
           "cache_creation_input_tokens": 10, "cache_read_input_tokens": 20,
           "cost_usd": 0.0042, "stream_retries": 1, "refusal": None,
           "intermediate": [{"speedup": 2.0, "passed": True}], "tampering": [],
           "isolation": "bwrap", "wall_time": 12.345}
GRADED = {"speedup": 2.5, "speedup_ci95": (2.1, 2.9), "score": 0.625, "accuracy": 0.11,
          "baseline_accuracy": 0.1, "failed_checks": ["speedup_target"]}
# How each kind of run ended, as the old run_one's branches updated its entry.
ENDINGS = {
    "graded": dict(status="fail", found_by="submitted", reason="speedup_target: 2.5x < 3x",
                   candidate="answer.py", **GRADED),
    "fallback": dict(status="pass", found_by="fallback", candidate="sub/x.py",
                     **{**GRADED, "failed_checks": []}),
    "budget": dict(found_by=None, reason="budget", budget="the run's cost $0.2 reached...",
                   error_cause="budget"),
    "api": dict(found_by=None, reason="API error after retries: boom", error_cause="api"),
    "no-answer": dict(status="fail", found_by=None, reason="no answer: the agent ended"),
    "grader-error": dict(status="error", error_cause="grader",
                         reason="grader error: RuntimeError: x", traceback="Traceback ..."),
}


def old_entry(ending: dict[str, Any], submitted: bool = True) -> dict[str, Any]:
    """The run's entry built the old way: batch.py's literal, its branch's update, then
    the agent's outcome (before records.py)."""
    entry: dict[str, Any] = {"run_id": 3, "status": "error", "error_cause": None,
                             "submitted": False,
                             "found_by": None, "speedup": None, "speedup_ci95": None,
                             "score": None, "accuracy": None,
                             "baseline_accuracy": None, "reason": "", "failed_checks": []}
    entry["submitted"] = submitted
    entry.update(ending)
    entry.update(OUTCOME)
    entry["attempts"] = 1  # added with --resume
    return entry


def old_results_entry(e: dict[str, Any]) -> dict[str, Any]:
    """batch._results_entry, as it was."""
    keys = ("run_id", "status", "error_cause", "steps", "speedup", "speedup_ci95", "score",
            "accuracy", "baseline_accuracy", "reason",
            "submitted", "found_by", "failed_checks", "tool_calls", "intermediate",
            "input_tokens", "output_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens", "cost_usd", "stream_retries", "wall_time",
            "attempts", "record_error", "strategy")  # strategy: issue 28
    return {k: e.get(k) for k in keys}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_run_json_is_what_the_old_dict_wrote(ending):
    old = old_entry(ENDINGS[ending])
    record = RunRecord(run_id=3, submitted=True, **{"status": "error", **ENDINGS[ending]},
                       **OUTCOME)
    assert list(record.to_json()) == list(old)  # the keys, in the file's order
    assert batch.json_text(record.to_json()) == batch.json_text(old)  # byte for byte


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("record_error", [None, "run.json could not be written: No space"])
def test_results_entry_is_what_the_old_filter_kept(ending, record_error):
    old = old_entry(ENDINGS[ending])
    if record_error:
        old["record_error"] = record_error
    record = RunRecord(run_id=3, submitted=True, **{"status": "error", **ENDINGS[ending]},
                       **OUTCOME, record_error=record_error)
    # byte for byte (in memory the interval is now the list JSON reads back, not a tuple)
    assert batch.json_text(record.to_results_json()) == batch.json_text(old_results_entry(old))
    assert tuple(record.to_results_json()) == RESULTS_ENTRY_KEYS


def test_a_record_reads_back_as_it_was_written():
    record = RunRecord(run_id=3, submitted=True, **{"status": "error", **ENDINGS["graded"]},
                       **OUTCOME)
    assert RunRecord.from_json(json.loads(batch.json_text(record.to_json()))) == record


def test_results_from_an_older_batch_are_read_with_defaults():
    # An entry of the first results.json (before error causes, scores, cache tokens and
    # costs), and a key no version of this harness knows.
    seed = {"run_id": 2, "status": "error", "steps": 5, "speedup": None, "accuracy": None,
            "baseline_accuracy": None, "reason": "grader error: x", "submitted": True,
            "found_by": "submitted", "failed_checks": [], "tool_calls": {"read_file": 1},
            "intermediate": [], "input_tokens": 100, "output_tokens": 10, "wall_time": 1.5,
            "from_the_future": 1}
    results = BatchResults.from_json({"config": {"runs": 1}, "baseline": {},
                                      "runs": [seed], "totals": {}})
    [run] = results.runs
    assert (run.error_cause, run.score, run.cost_usd, run.cache_read_input_tokens,
            run.stream_retries) == (None, None, None, 0, 0)
    assert summary.error_cause(run) == "unknown"  # counted against the agent, to be safe
    assert results.interrupted is False
    t = summary.batch_figures(results.runs)
    assert (t["errors_by_cause"], t["input_tokens"], t["cost_usd"]) == ({"unknown": 1}, 100,
                                                                        None)


def test_nulls_in_an_older_record_take_the_defaults():
    run = RunRecord.from_json({"run_id": 1, "status": "pass", "steps": 2,
                               "tool_calls": None, "cache_creation_input_tokens": None,
                               "speedup_ci95": [1.5, 2.5]})
    assert (run.tool_calls, run.cache_creation_input_tokens) == ({}, 0)
    assert run.speedup_ci95 == (1.5, 2.5)


async def test_a_batch_writes_the_pinned_keys_in_order(tmp_path):
    # The math problem with the scripted agent: a whole batch in about a second.
    from problems import registry

    problem = registry.build("math")
    out = tmp_path / "out"
    s = batch.BatchSettings(runs=1, concurrent=False, output_dir=out,
                            agent=AgentSettings("claude-haiku-4-5", 5, 1024),
                            tools=tools.ToolSettings())
    returned = await batch.run_batch(problem, scripted_agent.ScriptedClient(problem), s,
                                     lambda *a: None)
    results = json.loads((out / "results.json").read_text())
    assert returned == results
    assert list(results) == ["config", "baseline", "runs", "totals", "interrupted",
                            "provenance"]
    [entry] = results["runs"]
    assert tuple(entry) == RESULTS_ENTRY_KEYS
    record = json.loads((out / "run_1" / "run.json").read_text())
    assert list(record) == list(old_entry(ENDINGS["fallback"]))  # candidate: graded
    assert BatchResults.from_json(results).to_json() == results


@pytest.mark.parametrize("entry, why", [
    ({"status": 1}, "status"),
    ({"status": True}, "status"),
    ({"status": "pass", "speedup": float("inf")}, "speedup"),
    ({"status": "pass", "speedup": float("nan")}, "speedup"),
    ({"status": "pass", "speedup": "fast"}, "speedup"),
    ({"status": "pass", "score": "1"}, "score"),
    ({"status": "pass", "steps": 2.5}, "steps"),
    ({"status": "pass", "steps": True}, "steps"),
    ({"status": "pass", "cost_usd": "$1"}, "cost_usd"),
    ({"status": "fail", "failed_checks": 3}, "failed_checks"),
    ({"status": "pass", "wall_time": "x"}, "wall_time"),
    ({"status": "pass", "speedup_ci95": [1, "2"]}, "speedup_ci95"),
    ({"status": "pass", "speedup_ci95": [1, 2, 3]}, "speedup_ci95"),
    ({"status": "pass", "submitted": "yes"}, "submitted"),
])
def test_a_results_file_with_a_field_of_the_wrong_type_is_refused(tmp_path, entry, why):
    # compare and export-inspect read results.json files a user points them at
    (tmp_path / "results.json").write_text(json.dumps(
        {"config": {}, "baseline": {}, "runs": [{"run_id": 1, **entry}], "totals": {}}))
    with pytest.raises(ValueError, match=why):
        BatchResults.read(tmp_path)


@pytest.mark.parametrize("section", ["config", "baseline", "provenance", "totals"])
def test_a_results_file_whose_section_is_not_an_object_is_refused(tmp_path, section):
    (tmp_path / "results.json").write_text(json.dumps({"runs": [], section: "x"}))
    with pytest.raises(ValueError, match=section):
        BatchResults.read(tmp_path)


def test_a_batch_s_own_results_read_back(tmp_path):
    record = RunRecord(run_id=3, submitted=True, **{"status": "error", **ENDINGS["graded"]},
                       **OUTCOME)
    results = BatchResults({"runs": 1}, {"target": 2.0}, [record], {"runs": 1})
    (tmp_path / "results.json").write_text(batch.json_text(results.to_json()))
    [back] = BatchResults.read(tmp_path).runs
    assert back.to_results_json() == record.to_results_json()
