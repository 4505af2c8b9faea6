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
import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import plots
import pricing
import provenance
import safe_files
import sandbox
import summary
import tools
from agent import AgentOutcome, AgentSettings, Transcript, run_agent
from output_dir import OutputDir, OutputError, ResumePlan, run_dir_name
from problem import DataGuard, GradeResult, Problem
from records import BATCH_RECORDS, RESULTS, BatchResults, RunRecord
from workspace import first_candidate, graded_copy

log = logging.getLogger(__name__)
Note = Callable[[int | None, str], None]
# A run that meets a fault of the file system itself is the harness's error whatever
# stage it was in (the grader's included), never a verdict on the agent's answer.
DISK_FAULTS = safe_files.DISK_FAULTS


class RecordsError(Exception):
    """The batch's own records could not be written (the disk is full or read-only); the
    message is one line, for the operator.  ``results_written``: results.json was."""

    results_written = False


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
    # A part of an experiment: when each run may start (``experiment.Turns``, its runs
    # interleaved with the other parts') and the model calls in flight across them all.
    turns: Any = None
    api_slots: asyncio.Semaphore | None = None


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
            return f"{self.BATCH} ${total:.4f} reached --max-cost ${self.batch_usd:.2f}"
        return None

    BATCH = "the batch's cost"  # how a stop by the batch's limit begins


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


async def run_one(run_id: int, problem: Problem, client: Any,
                  s: BatchSettings, guard: DataGuard | None, api_slots: asyncio.Semaphore,
                  note: Note, budget: Budget | None = None,
                  out: OutputDir | None = None, earlier: RunRecord | None = None
                  ) -> RunRecord:
    """One agent run, graded and recorded in ``run.json`` (and in ``out``'s manifest,
    which ``--resume`` trusts).  ``earlier``: its failed tries' record, whose tokens and
    cost the record adds to its own.  Returns its record."""
    started = time.monotonic()
    # The run's directory first, new and real (what an earlier attempt left there, a
    # link included, is removed): the context, the sandbox's mount and its owner all
    # take this path, never one resolved before.
    workspace, attempts, made = s.output_dir.resolve() / run_dir_name(run_id), 1, None
    try:
        if out is not None:
            workspace, attempts = out.start_run(run_id)
        else:
            workspace.mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # raised again below, inside the run's own handling
        made = exc
    ctx = tools.RunContext(
        workspace, problem, guard, s.tools, tools.secrets_from_environment(),
        progress=lambda message: note(run_id, message))
    tools.RUN.set(ctx)
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
    candidate_name = stopped_by = trace = strategy = None
    # What an exception is blamed on: "setup" until the agent starts (a disk fault there
    # is outside its reach), the grader while it grades, else the harness.
    stage = "setup"
    try:
        if made is not None:
            raise made
        stage = "harness"
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
            stopped_by = outcome.api_error
        # The batch's limit, which other runs used up, is outside this run's reach: left
        # out.  Its own limit it spent itself: like a step limit, what it left is graded.
        if outcome.ended_by == "budget" and stopped_by.startswith(Budget.BATCH):
            found_by, cause, reason = None, "budget", "budget"
        elif outcome.ended_by == "api_error" and outcome.api_error_transient:
            found_by, cause = None, "api"
            reason = f"API error after retries: {outcome.api_error}"
        elif outcome.ended_by == "api_error":  # the request refused: counted, not retried
            found_by, cause = None, "request"
            reason = f"the API refused the request: {outcome.api_error}"
        elif candidate is None:
            status, found_by = "fail", None
            reason = (f"no answer: the agent ended ({outcome.ended_by}) without submitting, "
                      "and its run directory holds no .py file")
        else:
            note(run_id, f"final: grading {candidate.path.name}")
            stage = "grader"
            clock = await asyncio.to_thread(provenance.start, sandbox.best_isolation())
            with graded_copy(candidate) as copy:  # the bytes read when it was offered
                result = await problem.grade(copy, progress=tools.marked(ctx.progress,
                                                                          "final"))
                stage = "harness"
                strategy = await strategy_of(problem, copy, run_id)
            write_record(workspace, "grade.json", {
                **result.to_dict(), "provenance": clock.finish(problem.calibration_used())},
                ctx.secrets)
            path = candidate.path
            grade, status, reason, candidate_name = (
                result, "pass" if result.passed else "fail", result.reason,
                str(path.relative_to(workspace) if path.is_relative_to(workspace) else path))
    except Exception as exc:  # the harness's fault (GraderError included): record it, go on
        disk_fault = isinstance(exc, OSError) and exc.errno in DISK_FAULTS
        # Before the agent started, a fault is the machine's (cause "disk" for the disk,
        # "setup" else: left out of the pass rate, retried by --resume); once it runs,
        # its code can fill the disk, so a disk fault then counts against it ("harness").
        stage = ("disk" if stage == "setup" and disk_fault else
                 "harness" if disk_fault else stage)
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
        isolation=sandbox.best_isolation(), wall_time=round(time.monotonic() - started, 3),
        attempts=attempts, strategy=strategy)
    if earlier is not None:  # what every try spent
        record = with_earlier_spend(record, earlier)
    try:
        if made is not None:  # no directory to write it in
            raise OSError(made.errno if isinstance(made, OSError) else None,
                          "its directory could not be made")
        write_record(workspace, "run.json", record.to_json(), ctx.secrets)
    except OSError as exc:  # the disk's fault: the record still reaches results.json
        why = f"run.json could not be written: {exc.strerror or exc}"
        record = replace(record, record_error=why)
        log.error("run %d: %s", run_id, why)
    if out is not None:
        try:
            out.finish_run(record)
        except OSError as exc:  # results.json still has it; --resume would run it again
            log.error("run %d: the manifest could not record it: %s", run_id,
                      exc.strerror or exc)
    short = reason if len(reason) <= 100 else reason[:99] + "…"
    note(run_id, status + (f" {record.speedup:.1f}x" if record.speedup else "")
         + (f" ({short})" if status != "pass" else ""))
    return record


async def strategy_of(problem: Problem, candidate: Path, run_id: int
                      ) -> dict[str, Any] | None:
    """The graded candidate's strategy (``Problem.strategy``), after its verdict: advisory,
    so whatever goes wrong in it is recorded as its error, never the run's."""
    try:
        return await problem.strategy(candidate)
    except Exception as exc:  # noqa: BLE001 (advisory: never changes the verdict)
        log.warning("run %d: its strategy could not be analysed: %s", run_id, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


SPEND = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
         "cache_read_input_tokens", "stream_retries")


def with_earlier_spend(record: RunRecord, earlier: RunRecord) -> RunRecord:
    """``record`` with the tokens and cost of its run's earlier tries added (the cost is
    unknown when either is)."""
    cost = (None if record.cost_usd is None or earlier.cost_usd is None
            else round(record.cost_usd + earlier.cost_usd, 6))
    return replace(record, cost_usd=cost, **{k: getattr(record, k) + getattr(earlier, k)
                                             for k in SPEND})


def write_records(s: BatchSettings, baseline: dict[str, Any], records: list[RunRecord],
                  interrupted: bool, out: OutputDir | None = None,
                  origin: dict[str, Any] | None = None) -> BatchResults:
    """Write results.json, then run_summary.md and its plot (``plots.write_summary``);
    :class:`RecordsError` names those the file system refused (each is tried, and none
    is left half-written)."""
    runs = sorted(records, key=lambda r: r.run_id)
    config = s.config or {"runs": s.runs, "concurrent": s.concurrent,
                          "agent": asdict(s.agent)}
    results = BatchResults(config, baseline, runs, summary.batch_figures(runs), interrupted,
                           origin or {})
    refused, written = [], False
    try:
        if out is not None:
            out.claim(*BATCH_RECORDS)
        write_atomic(s.output_dir / RESULTS, json_text(results.to_json()))
        written = True
    except OSError as exc:
        refused.append(f"{RESULTS} ({os.strerror(exc.errno) if exc.errno else exc})")
    try:
        plots.write_summary(s.output_dir, results)
    except OSError as exc:
        refused.append(f"{summary.SUMMARY_NAME} "
                       f"({os.strerror(exc.errno) if exc.errno else exc})")
    if refused:
        error = RecordsError(f"could not write {' and '.join(refused)} in {s.output_dir}")
        error.results_written = written
        raise error
    return results


def progress_line(done: list[RunRecord], total: int) -> str:
    """The batch's aggregate progress, e.g. ``batch: 3/10 runs finished (2 passed,
    1 failed, 0 errors)``."""
    count = {k: sum(r.status == k for r in done) for k in ("pass", "fail", "error")}
    return (f"batch: {len(done)}/{total} runs finished ({count['pass']} passed, "
            f"{count['fail']} failed, {count['error']} errors)")


async def run_batch(problem: Problem, client: Any, s: BatchSettings, note: Note,
                    guard: DataGuard | None = None, out: OutputDir | None = None,
                    plan: ResumePlan | None = None) -> dict[str, Any]:
    """Run the batch in ``out`` (opened here when None), continuing the recorded one when
    ``plan`` (``OutputDir.resume_plan``) is given; on cancellation, record what finished
    and re-raise.  Returns what it wrote to results.json, in its JSON form
    (``BatchResults.to_json``)."""
    if out is not None:
        return await _run_batch(problem, client, s, note, guard, out, plan)
    try:
        out = OutputDir.open(s.output_dir, runs=s.runs)
    except OutputError as exc:
        raise RecordsError(str(exc)) from None
    try:
        return await _run_batch(problem, client, s, note, guard, out, plan)
    finally:
        out.close()


async def _run_batch(problem: Problem, client: Any, s: BatchSettings, note: Note,
                     guard: DataGuard | None, out: OutputDir,
                     plan: ResumePlan | None) -> dict[str, Any]:
    config = s.config or {}
    clock = await asyncio.to_thread(provenance.start, str(config.get("isolation")
                                                          or sandbox.best_isolation()))
    if plan is not None and out.segments and (changed := provenance.differences(
            out.segments[-1], clock.finish(None))):
        note(None, "resuming on another setup than the batch's last part: "
             + "; ".join(changed) + " (each part's provenance is kept)")
    baseline = await problem.prepare()  # interrupted here, the directory is untouched
    try:
        out.begin(config, resume=plan is not None)
    except OSError as exc:
        raise RecordsError(f"cannot keep records in {s.output_dir}: "
                           f"{exc.strerror or exc}") from exc
    api_slots = s.api_slots or asyncio.Semaphore(s.max_api_calls)
    records: list[RunRecord] = list(plan.kept) if plan else []
    to_run = plan.to_run if plan else list(range(1, s.runs + 1))
    budget = (Budget(s.max_cost_usd, s.max_run_cost_usd)
              if s.max_cost_usd is not None or s.max_run_cost_usd is not None else None)
    if budget is not None:  # what kept runs and failed tries cost counts towards the limit
        budget.spent.update({-r.run_id: r.cost_usd or 0.0
                             for r in [*records, *(plan.earlier.values() if plan else [])]})

    async def one(run_id: int) -> None:
        try:
            async with s.turns.turn(run_id) if s.turns else contextlib.nullcontext():
                record = await run_one(run_id, problem, client, s, guard, api_slots, note,
                                       budget, out,
                                       plan.earlier.get(run_id) if plan else None)
        except Exception as exc:  # never: run_one records its faults; nor cancels others
            log.exception("run %d could not be recorded", run_id)
            record = RunRecord(run_id=run_id, status="error", error_cause="harness",
                               reason=f"harness error: {type(exc).__name__}: {exc}")
        records.append(record)
        note(None, progress_line(records, s.runs))

    interrupted = False
    try:
        if s.concurrent or s.turns:  # the turns say when each starts
            async with asyncio.TaskGroup() as group:
                for i in to_run:
                    group.create_task(one(i))
        else:
            for i in to_run:
                await one(i)
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        origin = clock.finish(problem.calibration_used())
        # A resumed batch's earlier parts ran elsewhen, perhaps on another commit, host
        # or calibration: each part's provenance is kept, the latest first.
        origin.update(started=out.started or origin.get("started"), resumed=out.resumed,
                      earlier=out.segments)
        written = False
        try:
            results = write_records(s, baseline, records, interrupted, out, origin)
            written = True
        except RecordsError as exc:
            written = exc.results_written
            raise
        finally:
            try:  # the previous batch goes only once this one's results are written
                out.end("interrupted" if interrupted else "finished", written=written,
                        origin=origin)
            except OSError as exc:
                log.error("the output directory's manifest could not be updated: %s",
                          exc.strerror or exc)
    return results.to_json()
