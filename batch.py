"""A batch of agent runs: each run's loop, its grading, its records, and the summary.

:func:`run_batch` measures the baseline once (cached), starts the runs (concurrently
or one after another), and, however the batch ends (done, Ctrl-C, SIGTERM), writes
``results.json`` and ``run_summary.md`` for the runs that finished.  Every file is
written whole (temporary file, then rename), so nothing is ever half-written.

Each run gets ``run_N/`` with the agent's files, ``transcript.jsonl``, ``grade.json`` and
``run.json`` (its :class:`records.RunRecord`, made once when the run ends).  A run is an
``error`` only for a fault outside the agent's answer, named in ``error_cause``: ``api``
(the API failed after retries), ``budget`` (a cost limit stopped it), ``grader`` (grading
raised) or ``harness`` (anything else raised, a full or read-only disk included); the
last two keep their traceback, and the batch goes on.  When the batch's own records
cannot be written, :class:`RecordsError` says so in one line.  The records' names and
shapes are ``records``'s; how the summary counts each cause is ``summary``'s.  Console
output is the caller's (``note`` callback).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pricing
import safe_files
import sandbox
import summary
import tools
from agent import AgentOutcome, AgentSettings, Transcript, run_agent
from problem import DataGuard, GradeResult, Problem
from records import BATCH_RECORDS, BatchResults, RunRecord
from workspace import first_candidate, graded_copy

log = logging.getLogger(__name__)
Note = Callable[[int | None, str], None]
# Errors of the file system itself: a run that meets one is the harness's error whatever
# stage it was in (the grader's included), never a verdict on the agent's answer.
DISK_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


class RecordsError(Exception):
    """The batch's own records could not be written (the disk is full or read-only); the
    message is one line, for the operator."""


@dataclass(frozen=True)
class BatchSettings:
    runs: int
    concurrent: bool
    output_dir: Path
    agent: AgentSettings
    tools: tools.ToolSettings
    max_api_calls: int = 4
    config: dict[str, Any] | None = None  # echoed into the records
    max_cost_usd: float | None = None  # the whole batch's model cost
    max_run_cost_usd: float | None = None  # each run's


def outcome_cost(model: str, o: AgentOutcome) -> float | None:
    """What the run's model calls cost so far (None: the model's prices are unknown)."""
    return pricing.cost_usd(model, input_tokens=o.input_tokens, output_tokens=o.output_tokens,
                            cache_write_5m_tokens=(o.cache_creation_input_tokens
                                                   - o.cache_creation_1h_tokens),
                            cache_write_1h_tokens=o.cache_creation_1h_tokens,
                            cache_read_tokens=o.cache_read_input_tokens)


@dataclass
class Budget:
    """The batch's and each run's cost limits, against what every run has spent so far
    (finished runs and runs still going)."""

    batch_usd: float | None
    run_usd: float | None
    spent: dict[int, float] = field(default_factory=dict)

    def exceeded(self, run_id: int) -> str | None:
        """Why run ``run_id`` may make no further model call (None: it may)."""
        mine, total = self.spent.get(run_id, 0.0), sum(self.spent.values())
        if self.run_usd is not None and mine >= self.run_usd:
            return f"the run's cost ${mine:.4f} reached its limit of ${self.run_usd:.2f}"
        if self.batch_usd is not None and total >= self.batch_usd:
            return f"the batch's cost ${total:.4f} reached --max-cost ${self.batch_usd:.2f}"
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write a record whole, in a directory the agent's code may have written in: a
    link planted at the name (or at a temporary name) is replaced, never followed."""
    safe_files.write_bytes(path.parent, path.name, text.encode("utf-8"), make_parents=False)


def json_text(data: Any, secrets: tuple[str, ...] = ()) -> str:
    text = json.dumps(data, indent=2, default=str) + "\n"
    return tools.redact(text, secrets) if secrets else text


def write_json(path: Path, data: Any, secrets: tuple[str, ...] = ()) -> None:
    write_atomic(path, json_text(data, secrets))


def write_record(workspace: Path, name: str, data: Any, secrets: tuple[str, ...]) -> None:
    """A record of the harness's in a run directory.  Its name is the harness's: whatever
    the agent's code left there (a directory, a FIFO, a link) is removed first, never
    written through, so the agent cannot keep its run's record from being written."""
    try:
        write_json(workspace / name, data, secrets)
    except OSError:
        safe_files.remove_tree(workspace, name)
        write_json(workspace / name, data, secrets)


def prepare_output(directory: Path) -> None:
    """Clear the previous batch's records (keep batches worth keeping with --save)."""
    directory.mkdir(parents=True, exist_ok=True)
    # A run directory holds what the agent's code left: links, FIFOs, trees too deep
    # for a recursive walk.  Each entry is removed as it is, nothing followed.
    names = [n for n in os.listdir(directory) if n.startswith("run_")]
    for name in [*names, *BATCH_RECORDS]:
        report = safe_files.remove_tree(directory, name)
        if not report.ok:
            log.warning("could not remove all of %s: %s", directory / name,
                        "; ".join(report.notes))


async def run_one(run_id: int, problem: Problem, client: Any,
                  s: BatchSettings, guard: DataGuard | None, api_slots: asyncio.Semaphore,
                  note: Note, budget: Budget | None = None) -> RunRecord:
    """One agent run, graded and recorded in ``run.json``.  Returns its record."""
    workspace = (s.output_dir / f"run_{run_id}").resolve()
    ctx = tools.RunContext(workspace, problem, guard, s.tools, tools.secrets_from_environment(),
                           progress=lambda message: note(run_id, message))
    tools.RUN.set(ctx)
    started = time.monotonic()
    outcome = AgentOutcome()

    def over_budget(so_far: AgentOutcome) -> str | None:
        if budget is None:
            return None
        budget.spent[run_id] = outcome_cost(s.agent.model, so_far) or 0.0
        return budget.exceeded(run_id)

    # How the run ended, as far as it got: the record is made of these once, below.
    status, cause, reason = "error", None, ""
    submitted, found_by = False, None
    grade = GradeResult(passed=False, checks=[])  # no figures until a grader gives them
    candidate_name = stopped_by = trace = None
    stage = "harness"  # what an exception is blamed on: the grader while it grades
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        outcome = await run_agent(
            client, problem.prompt(workspace), problem.tool_names(), s.agent,
            Transcript(workspace / "transcript.jsonl",
                       scrub=lambda text: tools.redact(text, ctx.secrets)), api_slots,
            on_step=lambda k: note(run_id, f"step {k}/{s.agent.max_steps}"),
            should_stop=over_budget)
        over_budget(outcome)  # the last call's cost counts towards the others' limit
        candidate = ctx.submitted
        submitted = candidate is not None
        found_by = "submitted" if candidate is not None else None
        if candidate is None and (candidate := first_candidate(
                workspace, problem.fallback_candidates(workspace))):
            found_by = "fallback"
        if outcome.ended_by == "budget":
            found_by, cause, reason, stopped_by = None, "budget", "budget", outcome.api_error
        elif outcome.ended_by == "api_error":
            found_by, cause = None, "api"
            reason = f"API error after retries: {outcome.api_error}"
        elif candidate is None:
            status, found_by = "fail", None
            reason = (f"no answer: the agent ended ({outcome.ended_by}) without submitting, "
                      "and its run directory holds no .py file")
        else:
            note(run_id, f"grading {candidate.path.name}")
            stage = "grader"
            with graded_copy(candidate) as copy:  # the bytes read when it was offered
                result = await problem.grade(copy, progress=ctx.progress)
            stage = "harness"
            write_record(workspace, "grade.json", result.to_dict(), ctx.secrets)
            path = candidate.path
            grade, status, reason, candidate_name = (
                result, "pass" if result.passed else "fail", result.reason,
                str(path.relative_to(workspace) if path.is_relative_to(workspace) else path))
    except Exception as exc:  # the harness's fault (GraderError included): record it, go on
        disk_fault = isinstance(exc, OSError) and exc.errno in DISK_FAULTS
        stage = "harness" if disk_fault else stage
        status, cause, reason = "error", stage, f"{stage} error: {type(exc).__name__}: {exc}"
        trace = traceback.format_exc()
        if disk_fault:  # no bug to trace: one line
            log.error("run %d: %s", run_id, reason)
        else:
            log.exception("run %d failed with a %s error", run_id, stage)
    record = RunRecord(
        run_id=run_id, status=status, error_cause=cause, submitted=submitted,
        found_by=found_by, speedup=grade.speedup, speedup_ci95=grade.speedup_ci95,
        score=grade.score, accuracy=grade.accuracy, baseline_accuracy=grade.baseline_accuracy,
        reason=reason, failed_checks=grade.failed_checks, budget=stopped_by,
        candidate=candidate_name, traceback=trace,
        steps=outcome.steps, ended_by=outcome.ended_by,
        tool_calls=dict(outcome.tool_calls), tool_errors=outcome.tool_errors,
        input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens,
        cache_creation_input_tokens=outcome.cache_creation_input_tokens,
        cache_read_input_tokens=outcome.cache_read_input_tokens,
        cost_usd=outcome_cost(s.agent.model, outcome), stream_retries=outcome.stream_retries,
        refusal=outcome.refusal, intermediate=ctx.intermediate, tampering=ctx.tampering,
        isolation=sandbox.best_isolation(), wall_time=round(time.monotonic() - started, 3))
    try:
        write_record(workspace, "run.json", record.to_json(), ctx.secrets)
    except OSError as exc:  # the disk's fault: the record still reaches results.json
        why = f"run.json could not be written: {exc.strerror or exc}"
        record = replace(record, record_error=why)
        log.error("run %d: %s", run_id, why)
    short = reason if len(reason) <= 100 else reason[:99] + "…"
    note(run_id, status + (f" {record.speedup:.1f}x" if record.speedup else "")
         + (f" ({short})" if status != "pass" else ""))
    return record


def write_records(s: BatchSettings, baseline: dict[str, Any], records: list[RunRecord],
                  interrupted: bool) -> BatchResults:
    """Write results.json and run_summary.md; :class:`RecordsError` names those the file
    system refused (each is tried, and none is left half-written)."""
    runs = sorted(records, key=lambda r: r.run_id)
    config = s.config or {"runs": s.runs, "concurrent": s.concurrent,
                          "agent": asdict(s.agent)}
    results = BatchResults(config, baseline, runs, summary.batch_figures(runs), interrupted)
    texts = (json_text(results.to_json()), summary.render_markdown(results))
    refused = []
    for name, text in zip(BATCH_RECORDS, texts, strict=True):
        try:
            write_atomic(s.output_dir / name, text)
        except OSError as exc:
            refused.append(f"{name} ({os.strerror(exc.errno) if exc.errno else exc})")
    if refused:
        raise RecordsError(f"could not write {' and '.join(refused)} in {s.output_dir}")
    return results


async def run_batch(problem: Problem, client: Any, s: BatchSettings,
                    note: Note, guard: DataGuard | None = None) -> dict[str, Any]:
    """Run the batch; on cancellation, record what finished and re-raise.  Returns what
    it wrote to results.json, in its JSON form (``BatchResults.to_json``)."""
    try:
        prepare_output(s.output_dir)
    except OSError as exc:
        raise RecordsError(f"cannot keep records in {s.output_dir}: "
                           f"{exc.strerror or exc}") from exc
    baseline = await problem.prepare()
    api_slots = asyncio.Semaphore(s.max_api_calls)
    records: list[RunRecord] = []
    budget = (Budget(s.max_cost_usd, s.max_run_cost_usd)
              if s.max_cost_usd is not None or s.max_run_cost_usd is not None else None)

    async def one(run_id: int) -> None:
        records.append(await run_one(run_id, problem, client, s, guard, api_slots, note,
                                     budget))

    interrupted = False
    try:
        if s.concurrent:
            async with asyncio.TaskGroup() as group:
                for i in range(1, s.runs + 1):
                    group.create_task(one(i))
        else:
            for i in range(1, s.runs + 1):
                await one(i)
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        results = write_records(s, baseline, records, interrupted)
    return results.to_json()
