"""Export a batch or an experiment as Inspect AI eval logs, for ``inspect view``.

:func:`export` writes one ``.eval`` log per batch (an experiment: one per part) through
Inspect's public API (``inspect_ai.log``, the optional extra ``inspect``: ``uv sync
--extra inspect``).  A batch becomes an ``EvalLog`` whose task is the problem and whose
samples are the runs, in ``run_id`` order: each sample holds the conversation (its
transcript as Inspect chat messages), the verdict as the score ``hello_py`` (``C`` passed,
``I`` did not; the checks, speedup and reason in its metadata), and the run's tokens and
cost (``model_usage`` and metadata).  The log's results hold the batch's pass rate.

Where: ``DIR/inspect/`` (``INSPECT_DIR``, claimed in DIR's manifest by :func:`command`)
or ``dest``: ``PROBLEM.eval`` for a batch, ``NN_ARM_PROBLEM.eval`` per experiment part,
each written whole under a temporary name, then renamed.

``results.json`` (and ``experiment.json``) are the harness's: a malformed one is an
:class:`ExportError`.  The files in run directories are not: the agent's code ran there.
They are read through ``safe_files`` with size limits, and a file that is missing, too
large or malformed (a bad transcript line, say) is left out and named in the sample's
``export_notes``, never a crash.  Running, grading and the records' shapes are
``batch``'s and ``records``'s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import sys
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any

import safe_files
import summary
from output_dir import run_dir_name
from records import RESULTS, RESULTS_ENTRY_KEYS, BatchResults, RunRecord

log = logging.getLogger(__name__)

INSPECT_DIR = "inspect"  # what export writes in a batch or an experiment directory
EXPERIMENT = "experiment.json"
SCORER = "hello_py"
INSTALL = "install the extra: uv sync --extra inspect"
RESULTS_LIMIT = 64 * 1024**2
RECORD_LIMIT = 16 * 1024**2  # run.json, grade.json
TRANSCRIPT_LIMIT = 64 * 1024**2
_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# What run.json holds beyond the run's entry in results.json (traceback: the sample's error)
_RUN_ONLY = frozenset(f.name for f in fields(RunRecord)) - {*RESULTS_ENTRY_KEYS, "traceback"}


class ExportError(Exception):
    """What keeps the export from being written, in one line for the operator."""


def export(directory: Path, dest: Path | None = None) -> list[Path]:
    """Write the Inspect logs of the batch or experiment at ``directory`` (in
    ``directory/inspect/``, or in ``dest``); returns the files written.  An experiment's
    part that has no results yet is skipped with a warning."""
    api = _inspect_api()
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a directory")
    out = Path(dest) if dest is not None else directory / INSPECT_DIR
    if (directory / RESULTS).exists():
        logs = [(f"{_safe_name(_problem(_results(directory, RESULTS)))}.eval",
                 _batch_log(api, directory, PurePosixPath(), None))]
    elif (directory / EXPERIMENT).exists():
        logs = _experiment_logs(api, directory)
    else:
        raise ExportError(f"{directory} is not a batch or an experiment directory: it has "
                          f"no {RESULTS} (nor {EXPERIMENT})")
    return [_write(api, eval_log, out, name) for name, eval_log in logs]


# ---- the files ------------------------------------------------------------------------
def _inspect_api() -> Any:
    try:
        import inspect_ai.log
        import inspect_ai.model
        import inspect_ai.scorer
        import inspect_ai.tool
    except ImportError as exc:
        raise ExportError(f"inspect_ai is not installed ({exc}): {INSTALL}") from exc
    return inspect_ai


def _load_json(root: Path, rel: str | PurePosixPath, limit: int) -> Any:
    """The JSON in ``root/rel``; ``OSError`` or ``ValueError`` when it is not there, too
    large or not JSON."""
    data = safe_files.read_bytes(root, rel, limit)
    try:
        return json.loads(data.decode("utf-8", errors="replace"))
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def _results(directory: Path, rel: str | PurePosixPath) -> BatchResults:
    """The results.json at ``directory/rel`` (``BatchResults.read``)."""
    try:
        return BatchResults.read(directory / PurePosixPath(rel).parent)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def _problem(results: BatchResults) -> str:
    return str(results.config.get("problem") or "batch")


def _safe_name(text: str) -> str:
    return _NAME.sub("-", text).strip("-.") or "batch"


def _experiment_logs(api: Any, directory: Path) -> list[tuple[str, Any]]:
    try:
        data = _load_json(directory, EXPERIMENT, RESULTS_LIMIT)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {directory / EXPERIMENT}: {exc}") from exc
    parts = data.get("parts") if isinstance(data, dict) else data
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise ExportError(f"{directory / EXPERIMENT} has no list of parts")
    logs = []
    for index, part in enumerate(parts, 1):
        rel = part.get("directory")
        if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() \
                or ".." in PurePosixPath(rel).parts:
            raise ExportError(f"{directory / EXPERIMENT}: part {index} has no directory "
                              "inside the experiment")
        if not (directory / rel / RESULTS).exists():
            log.warning("part %d (%s) has no %s yet: skipped", index, rel, RESULTS)
            continue
        arm = part.get("arm")
        label = "_".join(_safe_name(str(x)) for x in (arm, part.get("problem")) if x)
        logs.append((f"{index:02d}_{label or 'part'}.eval",
                     _batch_log(api, directory, PurePosixPath(rel), arm)))
    if not logs:
        raise ExportError(f"{directory}: no part of the experiment has {RESULTS} yet")
    return logs


def _write(api: Any, eval_log: Any, out: Path, name: str) -> Path:
    """``eval_log`` at ``out/name``, written under a temporary name and renamed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot make {out}: {exc.strerror or exc}") from exc
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out} is not a directory")
    temporary = out / f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        api.log.write_eval_log(eval_log, str(temporary), format="eval")
        os.replace(temporary, out / name)
    except OSError as exc:
        raise ExportError(f"cannot write {out / name}: {exc.strerror or exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return out / name


# ---- a batch --------------------------------------------------------------------------
def _batch_log(api: Any, root: Path, rel: PurePosixPath, arm: str | None) -> Any:
    """The ``EvalLog`` of the batch at ``root/rel``."""
    results = _results(root, rel / RESULTS)
    config, totals, origin = results.config, results.totals, results.provenance
    problem = _problem(results)
    model = f"{'scripted' if config.get('agent') == 'scripted' else 'anthropic'}/" \
            f"{config.get('model') or 'unknown'}"
    created = origin.get("started") or _mtime(root / rel / RESULTS)
    log_api, model_api = api.log, api.model
    samples = [_sample(api, root, rel, run, model) for run in results.runs]
    usage = [u for s in samples for u in s.model_usage.values()]
    total = sum(usage[1:], usage[0]) if usage else model_api.ModelUsage()
    ident = hashlib.sha256(f"{root / rel}|{created}|{arm}".encode()).hexdigest()[:22]
    spec = log_api.EvalSpec(
        eval_id=ident, run_id=ident, created=created, task=problem, task_id=ident,
        task_display_name=f"{arm}: {problem}" if arm else problem,
        dataset=log_api.EvalDataset(name=problem, samples=len(samples),
                                    sample_ids=[r.run_id for r in results.runs]),
        model=model,
        model_generate_config=model_api.GenerateConfig(max_tokens=config.get("max_tokens")),
        config=log_api.EvalConfig(epochs=1),
        packages={"inspect_ai": api.__version__},
        tags=[f"arm:{arm}"] if arm else None,
        metadata={"harness": "hello-py", "arm": arm, "config": config,
                  "baseline": results.baseline, "totals": totals, "provenance": origin,
                  "interrupted": results.interrupted, "directory": str(root / rel)})
    plan = log_api.EvalPlan(steps=[log_api.EvalPlanStep(
        solver="hello_py_agent", params={k: config.get(k) for k in (
            "agent", "model", "max_steps", "max_tokens", "thinking", "prompt_cache")})])
    return log_api.EvalLog(
        status="cancelled" if results.interrupted else "success", eval=spec, plan=plan,
        results=_eval_results(api, results, samples),
        stats=log_api.EvalStats(started_at=origin.get("started") or "",
                                completed_at=origin.get("ended") or "",
                                model_usage={model: total} if usage else {}),
        samples=samples)


def _eval_results(api: Any, results: BatchResults, samples: list[Any]) -> Any:
    totals = summary.batch_figures(results.runs)  # recomputed: the same as the file's
    scored = sum(1 for s in samples if s.scores)
    figures = {"accuracy": totals["pass_rate"], "mean_score": totals["mean_score"],
               "geomean_speedup_passing": totals["geomean_speedup_passing"],
               "cost_usd": totals["cost_usd"]}
    metrics = {name: api.log.EvalMetric(name=name, value=value)
               for name, value in figures.items() if isinstance(value, int | float)}
    score = api.log.EvalScore(
        name=SCORER, scorer=SCORER, scored_samples=scored,
        unscored_samples=len(samples) - scored, metrics=metrics,
        metadata={k: totals[k] for k in ("pass_rate_ci95", "mean_score_ci95", "passed",
                                         "failed", "errors", "errors_by_cause", "left_out",
                                         "check_failures")})
    return api.log.EvalResults(total_samples=len(samples),
                               completed_samples=len(samples), scores=[score])


def _mtime(path: Path) -> str:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat()
    except OSError:
        return dt.datetime.now(dt.UTC).isoformat()


# ---- a run ----------------------------------------------------------------------------
def _sample(api: Any, root: Path, batch: PurePosixPath, run: RunRecord, model: str) -> Any:
    """One run as an ``EvalSample``: its entry in results.json is the verdict; run.json,
    grade.json and the transcript add what they hold, when they are sound."""
    notes: list[str] = []
    run_dir = batch / run_dir_name(run.run_id)
    extra = _record(root, run_dir / "run.json", notes)
    grade = _record(root, run_dir / "grade.json", notes) if summary.was_graded(run) else {}
    messages, transcript_notes = _transcript(api, root, run_dir / "transcript.jsonl", notes)
    metadata = {**{k: v for k, v in extra.items() if k in _RUN_ONLY},  # e.g. ended_by
                **run.to_results_json(), "export_notes": notes,
                "transcript_notes": transcript_notes}
    prompt = next((m.text for m in messages if m.role == "user"), "")
    assistants = [m for m in messages if m.role == "assistant"]
    output = (api.model.ModelOutput.from_message(assistants[-1]) if assistants
              else api.model.ModelOutput(model=model))
    usage = api.model.ModelUsage(
        input_tokens=run.input_tokens, output_tokens=run.output_tokens,
        input_tokens_cache_write=run.cache_creation_input_tokens,
        input_tokens_cache_read=run.cache_read_input_tokens, total_cost=run.cost_usd,
        total_tokens=run.input_tokens + run.output_tokens
        + run.cache_creation_input_tokens + run.cache_read_input_tokens)
    error = None
    if run.status == "error":
        error = api.log.EvalError(message=run.reason or "error",
                                  traceback=str(extra.get("traceback") or ""),
                                  traceback_ansi=str(extra.get("traceback") or ""))
    scores = ({SCORER: _score(api, run, grade, extra)}
              if summary.counts_in_pass_rate(run) else None)
    return api.log.EvalSample(
        id=run.run_id, epoch=1, input=prompt, target=_target(grade), messages=messages,
        output=output, scores=scores, metadata=metadata, model_usage={model: usage},
        total_time=run.wall_time or None, working_time=run.wall_time or None, error=error)


def _score(api: Any, run: RunRecord, grade: dict[str, Any], extra: dict[str, Any]) -> Any:
    passed = run.status == "pass"
    return api.scorer.Score(
        value=api.scorer.CORRECT if passed else api.scorer.INCORRECT,
        answer=run.candidate or extra.get("candidate") or run.found_by,
        explanation=run.reason or ("passed" if passed else run.status),
        metadata={"status": run.status, "error_cause": run.error_cause,
                  "speedup": run.speedup, "speedup_ci95": run.speedup_ci95,
                  "score": run.score, "accuracy": run.accuracy,
                  "baseline_accuracy": run.baseline_accuracy,
                  "failed_checks": run.failed_checks, "checks": _checks(grade),
                  "grade": {k: v for k, v in grade.items() if k != "checks"}})


def _checks(grade: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The grader's checks, each with its name, verdict and message (None: no sound
    list in grade.json)."""
    checks = grade.get("checks")
    if not isinstance(checks, list):
        return None
    return [{"name": str(c.get("name")), "passed": c.get("passed") is True,
             "message": str(c.get("message") or ""),
             **{k: c[k] for k in ("skipped", "advisory") if k in c}}
            for c in checks if isinstance(c, dict)]


def _target(grade: dict[str, Any]) -> str:
    target, rule = grade.get("target"), grade.get("target_rule")
    if isinstance(target, int | float):
        return f"speedup >= {target:g}x" + (f" ({rule})" if rule else "")
    return "pass every check"


def _record(root: Path, rel: PurePosixPath, notes: list[str]) -> dict[str, Any]:
    """A JSON object from a run directory, or {} with a note of why not."""
    try:
        data = _load_json(root, rel, RECORD_LIMIT)
    except FileNotFoundError:
        notes.append(f"{rel.name}: missing")
        return {}
    except (OSError, ValueError) as exc:
        notes.append(f"{rel.name}: unreadable ({getattr(exc, 'strerror', None) or exc})")
        return {}
    if not isinstance(data, dict):
        notes.append(f"{rel.name}: not a JSON object")
        return {}
    return data


# ---- a transcript ---------------------------------------------------------------------
def _transcript(api: Any, root: Path, rel: PurePosixPath, notes: list[str]
                ) -> tuple[list[Any], list[dict[str, Any]]]:
    """The conversation in ``transcript.jsonl`` as Inspect chat messages, and the lines'
    notes and API errors.  A line that is not sound is skipped (and counted)."""
    try:
        text = safe_files.read_bytes(root, rel, TRANSCRIPT_LIMIT).decode("utf-8", "replace")
    except OSError as exc:
        notes.append(f"{rel.name}: " + ("missing" if isinstance(exc, FileNotFoundError)
                                        else f"unreadable ({exc.strerror or exc})"))
        return [], []
    messages: list[Any] = []
    events: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            converted = _line_messages(api, record, tool_names)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            skipped += 1
            continue
        messages.extend(converted)
        for key in ("note", "error"):
            if isinstance(record.get(key), str):
                events.append({"step": record.get("step"), key: record[key]})
    if skipped:
        notes.append(f"{rel.name}: {skipped} malformed line{'s' * (skipped != 1)} skipped")
    return messages, events


def _line_messages(api: Any, record: dict[str, Any], tool_names: dict[str, str]
                   ) -> list[Any]:
    """One transcript line: the request's new (user) messages, then the response."""
    m = api.model
    out: list[Any] = []
    for message in record.get("request") or []:
        if message.get("role") == "assistant":
            out.append(_assistant(api, message, record.get("step"), tool_names))
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(m.ChatMessageUser(content=content))
            continue
        pending: list[Any] = []
        for block in content:
            if block.get("type") == "tool_result":
                if pending:
                    out.append(m.ChatMessageUser(content=pending))
                    pending = []
                out.append(_tool_result(api, block, tool_names))
            else:
                pending.append(_content(api, block))
        if pending:
            out.append(m.ChatMessageUser(content=pending))
    if isinstance(record.get("response"), dict):
        out.append(_assistant(api, record["response"], record.get("step"), tool_names))
    return out


def _assistant(api: Any, response: dict[str, Any], step: Any,
               tool_names: dict[str, str]) -> Any:
    content, calls = [], []
    for block in response.get("content") or []:
        if block.get("type") == "tool_use":
            arguments = block.get("input")
            calls.append(api.tool.ToolCall(
                id=str(block["id"]), function=str(block["name"]),
                arguments=arguments if isinstance(arguments, dict) else {"input": arguments}))
            tool_names[str(block["id"])] = str(block["name"])
        else:
            content.append(_content(api, block))
    metadata = {"step": step, **{k: response[k] for k in ("stop_reason", "usage")
                                 if k in response}}
    return api.model.ChatMessageAssistant(
        content=content, tool_calls=calls or None, model=response.get("model"),
        source="generate", metadata=metadata)


def _content(api: Any, block: dict[str, Any]) -> Any:
    kind = block.get("type")
    if kind == "text":
        return api.model.ContentText(text=str(block["text"]))
    if kind == "thinking":
        return api.model.ContentReasoning(reasoning=str(block.get("thinking") or ""),
                                          signature=block.get("signature"))
    if kind == "redacted_thinking":
        return api.model.ContentReasoning(reasoning=str(block.get("data") or ""),
                                          redacted=True)
    return api.model.ContentText(text=f"[{kind}] {json.dumps(block, default=str)}")


def _tool_result(api: Any, block: dict[str, Any], tool_names: dict[str, str]) -> Any:
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(str(b.get("text", "")) if isinstance(b, dict) else str(b)
                            for b in content)
    text = "" if content is None else str(content)
    call_id = str(block["tool_use_id"])
    error = (api.tool.ToolCallError(type="unknown", message=text)
             if block.get("is_error") else None)
    return api.model.ChatMessageTool(content=text, tool_call_id=call_id,
                                     function=tool_names.get(call_id), error=error)


def command(args: Any) -> int:
    """``main.py export-inspect DIR [--to DEST]``: the logs written, one path a line;
    status 2 with one line when there is nothing to export or it cannot be written.
    In a directory of the harness's, ``INSPECT_DIR`` is first claimed in its manifest
    (under its lock: not while a batch writes there), so the next batch replaces it."""
    from output_dir import MANIFEST, OutputDir, OutputError

    out = None
    try:
        if args.to is None and os.path.lexists(args.directory / MANIFEST):
            out = OutputDir.open(args.directory, runs=0, beside_foreign=True, resume=None)
            if INSPECT_DIR in out.foreign():
                raise ExportError(f"{args.directory / INSPECT_DIR} is not the harness's: "
                                  "move it away, or write elsewhere with --to")
            out.claim(INSPECT_DIR)
        written = export(args.directory, args.to)
    except (ExportError, OutputError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"export-inspect: {why}", file=sys.stderr)
        return 2
    finally:
        if out is not None:
            out.close()
    for path in written:
        print(path)
    return 0
