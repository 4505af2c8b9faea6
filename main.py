"""hello-py's control panel: edit CONFIG below, or override it with flags.

    uv run main.py                         # a batch with CONFIG (needs ANTHROPIC_API_KEY)
    uv run main.py --agent scripted        # the whole pipeline offline, no key
    uv run main.py grade FILE [--json]     # grade one file, no agent
    uv run main.py calibrate [--json]      # the baseline and the tiers on this machine
    uv run main.py problems                # every problem, its knobs and tiers
    ... --problem NAME                     # any of these on another problem (e.g. math)
    uv run main.py --problem a,b           # a suite: a batch on each problem
    uv run main.py experiment --vary FIELD=x,y   # an A/B: a batch per arm, interleaved
    uv run main.py compare DIR_A DIR_B     # two batches' records compared
    uv run main.py export-inspect DIR      # a batch or experiment as an Inspect log

This module parses and checks flags, builds the problem and the client, and runs each
command: what to do, in what order, and when to stop.  What the operator reads is
rendered by ``console``; the loop lives in ``agent``, the batch and its records in
``batch``, the grader (and any calibration) in ``problems`` (through ``problems.registry``
and ``problem.Problem``; on a Ray cluster's nodes with ``--cluster``: ``cluster``).
"""

from __future__ import annotations

import signal
import sys


def _stopped_while_starting(sig: int, frame: object) -> None:
    sys.stderr.write("interrupted: stopped before it started\n")
    raise SystemExit(130)


if __name__ == "__main__":  # Ctrl-C or SIGTERM while the modules below load: one line
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, _stopped_while_starting)

import argparse  # noqa: E402  (after the handlers above)
import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cluster  # noqa: E402
import console  # noqa: E402
import flags  # noqa: E402
from problem import GradingChoices  # noqa: E402


@dataclass(frozen=True)
class Config:
    problem: str = "complex"  # see `main.py problems`: complex, numpy, pytorch, math
    runs: int = 10
    concurrent: bool = True
    include_intermediate_answer: bool = True
    include_profiler: bool = True
    model: str = "claude-haiku-4-5"
    max_steps: int | None = None  # None: the problem's own (15 for complex)
    max_tokens: int = 32000  # a whole-file write fits (about 8k tokens for 24 KB of code)
    # how the problem grades: target, semantics, repeats, baseline_repeats, threads,
    # use_cache (problem.GradingChoices, e.g. GradingChoices(target="0.9*strict"))
    grading: GradingChoices = GradingChoices()
    agent: str = "claude"  # or "scripted" / "scripted-draft": offline, no key
    output: Path = Path("output")
    max_api_calls: int = 4  # in flight at once across the batch
    api_retries: int = 4  # SDK retries (with backoff) for 429/5xx/overloaded
    stream: bool = True
    prompt_cache: str = "1h"  # the conversation's cache TTL: 1h (outlives a grading), 5m, off
    thinking: int | None = None  # extended thinking's token budget per reply; None: off
    max_cost: float | None = None  # USD for the whole batch's model calls; None: no limit
    max_run_cost: float | None = None  # USD for each run's
    unsafe_no_sandbox: bool = False  # run and grade even where no sandbox is available
    cluster: str | None = None  # a Ray cluster's address: gradings on its nodes (cluster.py)
    save: str | None = None  # copy the batch to saved_outputs/NAME


CONFIG = Config()
# The offline agents (``scripted_agent``): the reference played, or a first draft that
# falls short in about half the runs and is corrected where the intermediate tool shows it.
SCRIPTED = {"scripted": "reference", "scripted-draft": "drafts"}

RECORDS_FAILED = 4  # exit status: the batch's records could not be written (disk full...)
INTERRUPTED = 130  # exit status: Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)


def parse_args(argv: list[str]) -> tuple[str, argparse.Namespace, Config]:
    """The command, its flags and ``CONFIG`` with the flags applied (``flags``)."""
    return flags.parse_args(argv, CONFIG)


# ---- building blocks ------------------------------------------------------------------
def build_problem(cfg: Config, progress: Any = None, name: str | None = None) -> Any:
    from problems import registry

    return cluster.build(cfg.cluster, name or cfg.problem, registry.Settings(
        include_profiler=cfg.include_profiler,
        include_intermediate_answer=cfg.include_intermediate_answer,
        grading=dataclasses.replace(cfg.grading, allow_unsandboxed=cfg.unsafe_no_sandbox),
        progress=progress))


def build_client(cfg: Config, problem: Any) -> Any:
    if cfg.agent in SCRIPTED:
        from scripted_agent import ScriptedClient
        return ScriptedClient(problem, behaviour=SCRIPTED[cfg.agent])
    import anthropic  # the SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL itself

    return anthropic.AsyncAnthropic(max_retries=cfg.api_retries)


def invalid_target_message(cfg: Config) -> str | None:
    """Why the target rule cannot be the problem's (a malformed rule, a tier it does not
    have), checked before anything is measured; None when it can."""
    from problems import registry

    problem = registry.build(cfg.problem)  # builds only: measures nothing
    text = cfg.grading.rule_text()
    if text is None:
        text = problem.default_target()
    if text is not None and (why := problem.target_error(text)):
        return f"--target: {why}"
    return None


def missing_key_message(cfg: Config) -> str | None:
    from agent import has_credentials

    if cfg.agent == "claude" and not has_credentials():
        return ("ANTHROPIC_API_KEY is not set, so no Claude agent can run.\n"
                "Set it (export ANTHROPIC_API_KEY=...), or run the whole pipeline offline "
                "with the scripted agent:  uv run main.py --agent scripted")
    return None


def sandbox_or_refusal(cfg: Config) -> str | None:
    """The isolation children run under, after a warning when there is none; None when
    the command must stop (no sandbox, and --unsafe-no-sandbox not given)."""
    import sandbox

    isolation = sandbox.best_isolation()
    if isolation == "none":
        console.no_sandbox(allowed=cfg.unsafe_no_sandbox)
        if not cfg.unsafe_no_sandbox:
            return None
    return isolation


# ---- commands -------------------------------------------------------------------------
async def grade_command(cfg: Config, args: argparse.Namespace) -> int:
    from problem import GraderError

    isolation = sandbox_or_refusal(cfg)
    if isolation is None:
        return 2
    import provenance

    problem = build_problem(cfg, console.say)
    clock = await asyncio.to_thread(provenance.start, isolation)
    try:
        result = await problem.grade(args.file)
    except GraderError as exc:
        console.error(exc, "could not grade")
        return 3
    if args.json:
        record = {**result.to_dict(), "provenance": clock.finish(problem.calibration_used())}
        print(json.dumps(record, default=str))
    else:
        print(console.format_report(result))
    return 0 if result.passed else 1


async def calibrate_command(cfg: Config, args: argparse.Namespace) -> int:
    from problem import GraderError

    problem = build_problem(cfg, console.say)
    data, isolation = None, None
    if problem.tier_names():  # something to measure: only in a sandbox
        isolation = sandbox_or_refusal(cfg)
        if isolation is None:
            return 2
        try:
            data = await (problem.check_calibration() if args.check else problem.calibrate())
        except GraderError as exc:
            console.error(exc, "could not calibrate")
            return 3
    if data is None:  # graded exactly
        print(console.nothing_to_calibrate(problem.name, args.json))
        return 0
    data = {**data, "isolation": isolation}
    shown = console.check_report if args.check else console.calibration_report
    print(json.dumps(data, default=str) if args.json else shown(data))
    return 1 if data.get("holds") is False else 0


def problems_command(cfg: Config, args: argparse.Namespace) -> int:
    from problems import registry

    listing = []
    for name in registry.names():
        problem = build_problem(cfg, name=name)
        baseline = problem.cached_baseline_time()
        listing.append({"name": name, "summary": problem.summary,
                        "default": name == cfg.problem,
                        "baseline_time_cached": baseline, "tiers": problem.tier_names(),
                        "knobs": [dataclasses.asdict(k) for k in problem.knobs()]})
    print(json.dumps({"problems": listing}, default=str) if args.json
          else console.problems_listing(listing))
    return 0


def cost_limit_error(cfg: Config) -> str | None:
    import pricing

    if (cfg.max_cost or cfg.max_run_cost) and pricing.prices_for(cfg.model) is None:
        return (f"a cost limit needs {cfg.model}'s prices, which pricing.py does not list: "
                "add them, or run without --max-cost")
    return None


def batch_settings(cfg: Config, problem: Any, isolation: str, output: Path,
                   limits: dict[str, Any]) -> Any:
    """``batch.BatchSettings`` for ``cfg``'s batch on ``problem`` in ``output``, with the
    configuration its records echo; ValueError (why) when its thinking budget leaves no
    room in a reply."""
    import batch
    import tools
    from agent import AgentSettings, reply_token_limit

    max_tokens, notes = reply_token_limit(cfg.max_tokens, cfg.model, cfg.stream, limits)
    for note in notes:
        console.say(note)
    if cfg.thinking and cfg.thinking >= max_tokens:  # its range was checked by parse_args
        raise ValueError(f"--thinking {cfg.thinking} must be below max_tokens ({max_tokens})")
    max_steps = cfg.max_steps or problem.max_steps
    return batch.BatchSettings(
        runs=cfg.runs, concurrent=cfg.concurrent, output_dir=output,
        agent=AgentSettings(cfg.model, max_steps, max_tokens, cfg.stream,
                            None if cfg.prompt_cache == "off" else cfg.prompt_cache,
                            cfg.thinking),
        tools=tools.ToolSettings(threads=cfg.grading.threads), max_api_calls=cfg.max_api_calls,
        max_cost_usd=cfg.max_cost, max_run_cost_usd=cfg.max_run_cost,
        config={**{k: str(v) if isinstance(v, Path) else v
                   for k, v in dataclasses.asdict(cfg).items() if k != "grading"},
                **{k: v for k, v in dataclasses.asdict(cfg.grading).items()
                   if k != "allow_unsandboxed"},  # that is unsafe_no_sandbox
                "max_steps": max_steps,
                "max_tokens": max_tokens,
                "isolation": isolation, "model_limits": limits or None})


async def batch_command(cfg: Config, args: argparse.Namespace) -> int:
    from output_dir import OutputDir, OutputError

    if "," in cfg.problem or args.command == "experiment":  # a suite, or arms
        import experiment

        return await experiment.run_group(cfg, args, sys.modules[__name__])
    if message := cost_limit_error(cfg):
        console.error(message)
        return 2
    isolation = sandbox_or_refusal(cfg)
    if isolation is None:
        return 2
    resume = bool(getattr(args, "resume", False))
    try:  # the place, its lock and what else is there: before anything is measured
        out = OutputDir.open(cfg.output, runs=cfg.runs, resume=resume,
                             beside_foreign=bool(getattr(args, "beside_foreign", False)))
    except OutputError as exc:
        console.error(exc, soft_wrap=True)
        return exc.status
    try:
        problem = build_problem(cfg, console.say)
        client = build_client(cfg, problem)
        try:
            return await _batch_with(cfg, problem, client, isolation, out, resume)
        finally:  # its connections closed inside this loop, not by a finaliser in another
            close = getattr(client, "close", None)
            if close is not None:
                await close()
    finally:
        out.close()


async def _batch_with(cfg: Config, problem: Any, client: Any, isolation: str, out: Any,
                      resume: bool) -> int:
    import batch
    import saving
    import summary
    from output_dir import OutputError
    from problem import DataGuard, GraderError

    limits: dict[str, Any] = {}
    if cfg.agent == "claude":
        from agent import PreflightError, preflight

        # Before the old records are touched and before any baseline is measured.
        try:
            limits = await preflight(client, cfg.model)
        except PreflightError as exc:
            console.error(f"{exc} (nothing was run; {cfg.output} is untouched)")
            return 2
    try:
        settings = batch_settings(cfg, problem, isolation, out.path, limits)
    except ValueError as exc:
        console.error(exc)
        return 2
    output = out.path
    plan = None
    if resume:
        try:
            plan = out.resume_plan(settings.config, cfg.runs)
        except OutputError as exc:
            console.error(exc, soft_wrap=True)
            return 2
        console.say(f"resuming the batch in {output}: {plan.describe()}")
    mode = "concurrently" if cfg.concurrent else "one after another"
    console.say(f"batch: problem {problem.name}, {cfg.runs} run(s) {mode}, agent {cfg.agent}"
                + (f" ({cfg.model})" if cfg.agent == "claude" else "")
                + f", sandbox {isolation}, records in {output}")
    status = 0
    try:
        guard = DataGuard(problem.data_dir) if problem.data_dir is not None else None
        results = await batch.run_batch(problem, client, settings, console.note, guard, out,
                                        plan)
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()  # handled: --save below may still await
        status = INTERRUPTED
        console.say(console.interrupted_message(out), "interrupted", "yellow")
        if not out.begun or out.restored:
            return status
    except GraderError as exc:
        console.error(exc, "could not measure the baseline")
        return 3
    except batch.RecordsError as exc:  # the disk is full or read-only
        console.error(exc, soft_wrap=True)
        return RECORDS_FAILED
    else:
        t = results["totals"]
        console.say(f"passed {t['passed']}, failed {t['failed']}, errors {t['errors']} — "
                    f"{summary.pass_rate_line(t)}; summary: {output / 'run_summary.md'}",
                    "done", "bold")
    if cfg.save:
        try:
            dest, report = await asyncio.to_thread(saving.save_batch, output,
                                                   saving.saved_outputs(), cfg.save)
        except OSError as exc:
            where = saving.saved_outputs() / cfg.save
            console.error(f"could not save the batch to {where}: "
                          f"{exc.strerror or str(exc)}", soft_wrap=True)
            return RECORDS_FAILED
        left = report.skipped + report.failed
        console.say(f"saved to {dest}" + (f" ({left} entries not copied: see "
                                          f"{saving.SAVE_REPORT})" if left else ""))
    return status


async def interruptible(command: Any) -> int:
    """Run ``command`` (a coroutine) so that Ctrl-C or SIGTERM cancels it: what it
    started is stopped and cleaned up on the way out, and the command says what it kept.
    A second signal while it stops is reported, not obeyed (it would cut the records
    short)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    stopping: list[int] = []

    def stop(sig: int) -> None:
        if stopping:
            console.say("still stopping: recording what finished", "interrupted", "yellow")
            return
        stopping.append(sig)
        task.cancel()

    handled = threading.current_thread() is threading.main_thread()  # else: the caller's
    for sig in signals if handled else ():
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await command
    except asyncio.CancelledError:
        if not stopping:
            raise
        console.say("stopped before it finished", "interrupted", "yellow")
        return INTERRUPTED
    finally:
        for sig in signals if handled else ():
            loop.remove_signal_handler(sig)
            if stopping:  # asyncio.run's own teardown follows: not cut short either
                signal.signal(sig, signal.SIG_IGN)


def _interrupt(sig: int, frame: object) -> None:  # not default_int_handler: asyncio.run
    raise KeyboardInterrupt  # would install its own SIGINT handler over that one


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Outside the event loop (parsing, building, listing), SIGTERM stops as Ctrl-C does;
    # inside it, ``interruptible`` handles both.
    main_thread = threading.current_thread() is threading.main_thread()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if main_thread:
        for sig in before:
            signal.signal(sig, _interrupt)
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        console.say("stopped before it finished", "interrupted", "yellow")
        return INTERRUPTED
    finally:
        if main_thread:
            for sig, handler in before.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _main(argv: list[str]) -> int:
    import sandbox

    command, args, cfg = parse_args(argv)
    args.command = command
    if command in ("compare", "export-inspect"):  # records only: nothing runs
        import experiment
        import inspect_log

        return (experiment.compare_command if command == "compare"
                else inspect_log.command)(args)
    sandbox.clean_leftovers()  # what a killed run left: cgroups, sandboxes still running
    if "," in cfg.problem and command in ("grade", "calibrate"):
        console.error(f"{command} takes one problem, got --problem {cfg.problem}")
        return 2
    for name in cfg.problem.split(","):
        if message := invalid_target_message(dataclasses.replace(cfg, problem=name)):
            console.error(message)
            return 2
    if command == "problems":
        return problems_command(cfg, args)
    if message := ((cfg.cluster and cluster.connect_error(cfg.cluster))  # before measuring
                   or (command == "batch" and missing_key_message(cfg))):  # else each arm's
        console.error(message)
        return 2
    if command in ("grade", "calibrate"):
        return asyncio.run(interruptible((grade_command if command == "grade"
                                          else calibrate_command)(cfg, args)))
    console.show_sdk_retries()
    return asyncio.run(interruptible(batch_command(cfg, args)))


if __name__ == "__main__":
    sys.exit(main())
