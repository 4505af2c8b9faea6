"""``inspect_log.export``: a small batch made by hand (a pass and a fail) is written as an
Inspect eval log and read back with Inspect's own ``read_eval_log``; a run directory's
files that are missing or malformed are noted, never a crash; an experiment gives one log
per part.  Skipped only when the ``inspect`` extra is not installed (CI installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import inspect_log
import summary
from records import BatchResults, RunRecord

inspect_ai_log = pytest.importorskip("inspect_ai.log")

PROMPT = "Make solve() in solution.py faster; submit it when done."
CHECKS_PASS = [{"name": "correctness", "passed": True, "message": "outputs match"},
               {"name": "speedup", "passed": True, "message": "12.0x >= 10x"}]
CHECKS_FAIL = [{"name": "correctness", "passed": False, "message": "outputs differ"},
               {"name": "speedup", "passed": True, "message": "3.0x", "advisory": True}]


def _response(step: int, *blocks: dict, stop: str = "tool_use") -> dict:
    return {"id": f"msg_{step}", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5", "content": list(blocks), "stop_reason": stop,
            "usage": {"input_tokens": 100, "output_tokens": 20}}


def _transcript(run_id: int) -> list[dict]:
    """Two steps: a tool call and its result, then a submission."""
    call, submit = f"toolu_{run_id}a", f"toolu_{run_id}b"
    return [
        {"step": 1, "request": [{"role": "user", "content": PROMPT}],
         "response": _response(1, {"type": "thinking", "thinking": "read it", "signature": "s"},
                               {"type": "text", "text": "Reading the file."},
                               {"type": "tool_use", "id": call, "name": "read_file",
                                "input": {"path": "solution.py"}})},
        {"step": 2, "request": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call, "content": "def solve(): ...",
             "is_error": False}]}],
         "response": _response(2, {"type": "tool_use", "id": submit, "name": "submit",
                                   "input": {"path": "solution.py"}})},
        {"step": 2, "request": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": submit, "content": "submitted",
             "is_error": run_id == 2}]}], "note": "submitted"},
    ]


def _record(run_id: int, passed: bool) -> RunRecord:
    return RunRecord(
        run_id=run_id, status="pass" if passed else "fail", submitted=True,
        found_by="submitted", speedup=12.0 if passed else 3.0, speedup_ci95=(11.0, 13.0),
        score=0.8 if passed else 0.0, reason="" if passed else "correctness: outputs differ",
        failed_checks=[] if passed else ["correctness"], candidate="solution.py", steps=2,
        ended_by="submitted", tool_calls={"read_file": 1, "submit": 1}, input_tokens=200,
        output_tokens=40, cache_creation_input_tokens=50, cache_read_input_tokens=30,
        cost_usd=0.0012, wall_time=4.5)


def make_batch(root: Path, problem: str = "complex") -> Path:
    runs = [_record(1, True), _record(2, False)]
    results = BatchResults(
        config={"problem": problem, "model": "claude-haiku-4-5", "agent": "claude",
                "runs": 2, "max_steps": 15, "max_tokens": 32000},
        baseline={"time": 1.0}, runs=runs, totals=summary.batch_figures(runs),
        provenance={"started": "2026-12-07T07:10:00Z", "ended": "2026-12-07T07:20:00Z"})
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(results.to_json()))
    for run, checks in zip(runs, (CHECKS_PASS, CHECKS_FAIL), strict=True):
        run_dir = root / f"run_{run.run_id}"
        run_dir.mkdir()
        (run_dir / "run.json").write_text(json.dumps(run.to_json()))
        (run_dir / "grade.json").write_text(json.dumps(
            {"passed": run.status == "pass", "checks": checks, "speedup": run.speedup,
             "target": 10.0, "target_rule": "10x"}))
        (run_dir / "transcript.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in _transcript(run.run_id)))
    return root


def test_a_batch_is_read_back_by_inspect(tmp_path):
    batch = make_batch(tmp_path / "batch")
    written = inspect_log.export(batch)
    assert written == [batch / "inspect" / "complex.eval"]
    assert sorted(p.name for p in (batch / "inspect").iterdir()) == ["complex.eval"]

    log = inspect_ai_log.read_eval_log(str(written[0]))
    assert log.status == "success"
    assert log.eval.task == "complex"
    assert log.eval.model == "anthropic/claude-haiku-4-5"
    assert log.eval.dataset.samples == 2
    metrics = log.results.scores[0].metrics
    assert log.results.scores[0].name == "hello_py"
    assert metrics["accuracy"].value == 0.5
    usage = log.stats.model_usage["anthropic/claude-haiku-4-5"]
    assert (usage.input_tokens, usage.output_tokens) == (400, 80)
    assert usage.total_cost == pytest.approx(0.0024)

    first, second = sorted(log.samples, key=lambda s: s.id)
    assert (first.id, first.epoch, second.id) == (1, 1, 2)
    assert first.input == PROMPT
    # user, assistant (tool call), tool, assistant (submit), tool
    assert [m.role for m in first.messages] == ["user", "assistant", "tool", "assistant",
                                                 "tool"]
    assistant = first.messages[1]
    assert assistant.tool_calls[0].function == "read_file"
    assert assistant.tool_calls[0].arguments == {"path": "solution.py"}
    assert [c.type for c in assistant.content] == ["reasoning", "text"]
    assert first.messages[2].function == "read_file"
    assert first.messages[2].error is None and second.messages[4].error is not None

    assert first.scores["hello_py"].value == "C"
    assert second.scores["hello_py"].value == "I"
    assert second.scores["hello_py"].explanation == "correctness: outputs differ"
    meta = second.scores["hello_py"].metadata
    assert meta["failed_checks"] == ["correctness"]
    assert meta["speedup"] == 3.0 and meta["speedup_ci95"] == [11.0, 13.0]
    assert [c["name"] for c in meta["checks"]] == ["correctness", "speedup"]
    assert meta["checks"][0] == {"name": "correctness", "passed": False,
                                 "message": "outputs differ"}
    assert meta["checks"][1]["advisory"] is True
    assert first.target == "speedup >= 10x (10x)"

    sample_usage = first.model_usage["anthropic/claude-haiku-4-5"]
    assert sample_usage.input_tokens_cache_write == 50
    assert sample_usage.input_tokens_cache_read == 30
    assert first.metadata["cost_usd"] == 0.0012
    assert first.metadata["ended_by"] == "submitted"
    assert first.metadata["export_notes"] == []
    assert first.metadata["transcript_notes"] == [{"step": 2, "note": "submitted"}]


def test_damaged_run_files_are_noted_not_fatal(tmp_path):
    batch = make_batch(tmp_path / "batch")
    (batch / "run_1" / "run.json").unlink()
    with (batch / "run_1" / "transcript.jsonl").open("a") as f:
        f.write('{"step": 3, "request": [{"role": "user", "content": [{"type": \n')
        f.write('[1, 2]\n{"step": 3, "request": [{"role": "user", "content": [7]}]}\n')
    (batch / "run_2" / "grade.json").write_text("{not json")
    (batch / "run_2" / "transcript.jsonl").unlink()
    (batch / "run_2" / "transcript.jsonl").symlink_to(batch / "results.json")

    out = tmp_path / "elsewhere"
    written = inspect_log.export(batch, out)
    assert written == [out / "complex.eval"] and not (batch / "inspect").exists()
    first, second = sorted(inspect_ai_log.read_eval_log(str(written[0])).samples,
                           key=lambda s: s.id)
    assert first.metadata["export_notes"] == ["run.json: missing",
                                              "transcript.jsonl: 3 malformed lines skipped"]
    assert len(first.messages) == 5  # the sound lines are all there
    assert first.scores["hello_py"].value == "C"  # results.json's verdict
    assert second.messages == [] and second.input == ""
    assert second.metadata["export_notes"][0].startswith("grade.json: unreadable")
    assert second.metadata["export_notes"][1].startswith("transcript.jsonl: unreadable")
    assert second.scores["hello_py"].metadata["checks"] is None


def test_an_error_has_its_reason_and_a_score_only_if_the_pass_rate_counts_it(tmp_path):
    batch = make_batch(tmp_path / "batch")
    data = json.loads((batch / "results.json").read_text())
    for entry, cause in zip(data["runs"], ("api", "harness"), strict=True):
        entry.update(status="error", error_cause=cause, reason=f"{cause} error: boom")
    data["interrupted"] = True
    (batch / "results.json").write_text(json.dumps(data))
    log = inspect_ai_log.read_eval_log(str(inspect_log.export(batch)[0]))
    api, harness = sorted(log.samples, key=lambda s: s.id)
    assert log.status == "cancelled"
    assert api.error.message == "api error: boom" and api.scores is None  # left out
    assert harness.error.message == "harness error: boom"
    assert harness.scores["hello_py"].value == "I"
    assert log.results.scores[0].metrics["accuracy"].value == 0.0
    assert log.results.scores[0].unscored_samples == 1


def test_an_experiment_gives_one_log_per_part(tmp_path):
    exp = tmp_path / "exp"
    make_batch(exp / "a" / "complex", "complex")
    make_batch(exp / "b" / "numpy", "numpy")
    (exp / "experiment.json").write_text(json.dumps({"parts": [
        {"arm": "a", "problem": "complex", "directory": "a/complex"},
        {"arm": "b", "problem": "numpy", "directory": "b/numpy"},
        {"arm": None, "problem": "math", "directory": "math"}]}))  # not run yet
    written = inspect_log.export(exp)
    assert [p.name for p in written] == ["01_a_complex.eval", "02_b_numpy.eval"]
    log = inspect_ai_log.read_eval_log(str(written[1]))
    assert (log.eval.task, log.eval.metadata["arm"], len(log.samples)) == ("numpy", "b", 2)


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "is not a batch or an experiment directory"),
    (lambda d: (d / "results.json").write_text("[1, 2]"), "is not a batch's results"),
    (lambda d: (d / "experiment.json").write_text('{"parts": [{"directory": "../x"}]}'),
     "has no directory inside the experiment"),
])
def test_what_is_no_batch_is_one_clear_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(inspect_log.ExportError, match=message):
        inspect_log.export(tmp_path)
    with pytest.raises(inspect_log.ExportError, match="is not a directory"):
        inspect_log.export(tmp_path / "missing")


def test_without_the_extra_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)  # import fails
    with pytest.raises(inspect_log.ExportError, match="uv sync --extra inspect"):
        inspect_log.export(make_batch(tmp_path / "batch"))


def test_the_command_claims_its_logs_so_the_next_batch_replaces_them(tmp_path, capsys):
    import main

    out = tmp_path / "out"
    argv = ["--agent", "scripted", "--problem", "math", "--runs", "2", "--output", str(out)]
    assert main.main(argv) == 0
    assert main.main(["export-inspect", str(out)]) == 0
    [log] = (out / inspect_log.INSPECT_DIR).iterdir()
    assert capsys.readouterr().out.strip() == str(log)
    manifest = json.loads((out / ".hello-py-manifest.json").read_text())
    assert inspect_log.INSPECT_DIR in manifest["entries"]
    assert len(inspect_ai_log.read_eval_log(str(log)).samples) == 2
    assert main.main(argv) == 0  # not refused as foreign; the old batch's logs go with it
    assert not (out / inspect_log.INSPECT_DIR).exists()


def test_the_command_never_writes_into_a_folder_of_the_user_s(tmp_path, capsys):
    import main

    out = tmp_path / "out"
    assert main.main(["--agent", "scripted", "--problem", "math", "--runs", "1",
                      "--output", str(out)]) == 0
    (out / inspect_log.INSPECT_DIR).mkdir()
    (out / inspect_log.INSPECT_DIR / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert main.main(["export-inspect", str(out)]) == 2
    assert "not the harness's" in capsys.readouterr().err
    assert [p.name for p in (out / inspect_log.INSPECT_DIR).iterdir()] == ["mine.txt"]
    assert main.main(["export-inspect", str(out), "--to", str(tmp_path / "logs")]) == 0
    assert len(list((tmp_path / "logs").iterdir())) == 1
