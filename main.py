"""hello-py's control panel: edit CONFIG below, or override it with flags.

    uv run main.py                         # a batch with CONFIG (needs ANTHROPIC_API_KEY)
    uv run main.py --agent scripted        # the whole pipeline offline, no key
    uv run main.py grade FILE [--json]     # grade one file, no agent
    uv run main.py calibrate [--json]      # the baseline and the tiers on this machine
    uv run main.py problems                # every problem, its knobs and tiers
    ... --problem NAME                     # any of these on another problem (e.g. math)

This module parses and checks flags, builds the problem and the client, and runs each
command: what to do, in what order, and when to stop.  What the operator reads is
rendered by ``console``; the loop lives in ``agent``, the batch and its records in
``batch``, the grader (and any calibration) in ``problems``, reached only through
``problems.registry`` and the ``problem.Problem`` contract.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import console
import flags
from problem import GradingChoices
from sandbox import PROJECT_ROOT


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
    agent: str = "claude"  # or "scripted": offline, no key
    output: Path = Path("output")
    max_api_calls: int = 4  # in flight at once across the batch
    api_retries: int = 4  # SDK retries (with backoff) for 429/5xx/overloaded
    stream: bool = True
    prompt_cache: str = "1h"  # the conversation's cache TTL: 1h (outlives a grading), 5m, off
    thinking: int | None = None  # extended thinking's token budget per reply; None: off
    max_cost: float | None = None  # USD for the whole batch's model calls; None: no limit
    max_run_cost: float | None = None  # USD for each run's
    unsafe_no_sandbox: bool = False  # run and grade even where no sandbox is available
    save: str | None = None  # copy the batch to saved_outputs/NAME


CONFIG = Config()

RECORDS_FAILED = 4  # exit status: the batch's records could not be written (disk full...)


def parse_args(argv: list[str]) -> tuple[str, argparse.Namespace, Config]:
    """The command, its flags and ``CONFIG`` with the flags applied (``flags``)."""
    return flags.parse_args(argv, CONFIG)


# ---- building blocks ------------------------------------------------------------------
def build_problem(cfg: Config, progress: Any = None, name: str | None = None) -> Any:
    from problems import registry

    return registry.build(name or cfg.problem, registry.Settings(
        include_profiler=cfg.include_profiler,
        include_intermediate_answer=cfg.include_intermediate_answer,
        grading=dataclasses.replace(cfg.grading, allow_unsandboxed=cfg.unsafe_no_sandbox),
        progress=progress))


def build_client(cfg: Config, problem: Any) -> Any:
    if cfg.agent == "scripted":
        from scripted_agent import ScriptedClient
        return ScriptedClient(problem)
    import anthropic

    # The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL itself.
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


def has_credentials() -> bool:
    """Whether the SDK finds credentials of any kind it accepts: ANTHROPIC_API_KEY,
    ANTHROPIC_AUTH_TOKEN, a credentials profile or configuration, federation."""
    import anthropic

    try:
        client = anthropic.AsyncAnthropic()
    except Exception:  # the SDK's own complaint about its configuration
        return False
    return bool(client.api_key or client.auth_token or client.credentials)


NONSTREAMING_MAX_TOKENS = 21_000  # the SDK refuses larger non-streaming requests


def reply_token_limit(cfg: Config, limits: dict[str, Any]) -> int:
    """``max_tokens`` as requested, within the model's own limit (which the preflight
    learnt) and, without streaming, within what the SDK sends unstreamed."""
    wanted = cfg.max_tokens
    ceilings = [(limits.get("max_tokens"), f"{cfg.model}'s limit")]
    if not cfg.stream:
        ceilings.append((NONSTREAMING_MAX_TOKENS, "the SDK's limit without streaming"))
    for ceiling, why in ceilings:
        if ceiling and wanted > ceiling:
            console.say(f"max_tokens {wanted} is above {why}: using {ceiling}")
            wanted = ceiling
    return wanted


def missing_key_message(cfg: Config) -> str | None:
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
    problem = build_problem(cfg, console.say)
    try:
        result = await problem.grade(args.file)
    except GraderError as exc:
        console.error(exc, "could not grade")
        return 3
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
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
            data = await problem.calibrate()
        except GraderError as exc:
            console.error(exc, "could not calibrate")
            return 3
    if data is None:  # graded exactly
        print(console.nothing_to_calibrate(problem.name, args.json))
        return 0
    data = {**data, "isolation": isolation}
    print(json.dumps(data, default=str) if args.json else console.calibration_report(data))
    return 0


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


async def batch_command(cfg: Config) -> int:
    import pricing

    if (cfg.max_cost or cfg.max_run_cost) and pricing.prices_for(cfg.model) is None:
        console.error(f"a cost limit needs {cfg.model}'s prices, which pricing.py does not "
                      "list: add them, or run without --max-cost")
        return 2
    isolation = sandbox_or_refusal(cfg)
    if isolation is None:
        return 2
    problem = build_problem(cfg, console.say)
    client = build_client(cfg, problem)
    try:
        return await _batch_with(cfg, problem, client, isolation)
    finally:  # its connections closed inside this loop, not by a finaliser in another
        close = getattr(client, "close", None)
        if close is not None:
            await close()


async def _batch_with(cfg: Config, problem: Any, client: Any, isolation: str) -> int:
    import batch
    import summary
    import tools
    from agent import AgentSettings
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
    max_tokens = reply_token_limit(cfg, limits)
    if cfg.thinking and cfg.thinking >= max_tokens:  # its range was checked by parse_args
        console.error(f"--thinking {cfg.thinking} must be below max_tokens ({max_tokens})")
        return 2
    max_steps = cfg.max_steps or problem.max_steps
    output = cfg.output if cfg.output.is_absolute() else Path.cwd() / cfg.output
    settings = batch.BatchSettings(
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
    mode = "concurrently" if cfg.concurrent else "one after another"
    console.say(f"batch: problem {problem.name}, {cfg.runs} run(s) {mode}, agent {cfg.agent}"
                + (f" ({cfg.model})" if cfg.agent == "claude" else "")
                + f", sandbox {isolation}, records in {output}")

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        guard = DataGuard(problem.data_dir) if problem.data_dir is not None else None
        results = await batch.run_batch(problem, client, settings, console.note, guard)
    except asyncio.CancelledError:
        console.say(f"finished runs recorded in {output}/run_summary.md", "interrupted",
                    "yellow")
        return 130
    except GraderError as exc:
        console.error(exc, "could not measure the baseline")
        return 3
    except batch.RecordsError as exc:  # the disk is full or read-only
        console.error(exc, soft_wrap=True)
        return RECORDS_FAILED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    t = results["totals"]
    console.say(f"passed {t['passed']}, failed {t['failed']}, errors {t['errors']} — "
                f"{summary.pass_rate_line(t)}; summary: {output / 'run_summary.md'}", "done",
                "bold")
    if cfg.save:
        try:
            dest, report = await asyncio.to_thread(save_batch, output,
                                                   PROJECT_ROOT / "saved_outputs", cfg.save)
        except OSError as exc:
            where = PROJECT_ROOT / "saved_outputs" / cfg.save
            console.error(f"could not save the batch to {where}: "
                          f"{exc.strerror or str(exc)}", soft_wrap=True)
            return RECORDS_FAILED
        left = report.skipped + report.failed
        console.say(f"saved to {dest}" + (f" ({left} entries not copied: see {SAVE_REPORT})"
                                          if left else ""))
    return 0


SAVE_REPORT = "save_report.json"


def save_batch(output: Path, saved: Path, name: str, **limits: int) -> tuple[Path, Any]:
    """Copy the batch to ``saved/name`` (dated if that is taken): its records first, then
    each run's share of the agent's files (``saving.copy_batch``, whose bounds ``limits``
    may narrow).  What was left out, run by run, is listed in ``SAVE_REPORT`` in the
    copy."""
    import safe_files
    import saving

    saved.mkdir(parents=True, exist_ok=True)
    dest = saved / name
    if os.path.lexists(dest):
        dest = dest.with_name(f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    report = saving.copy_batch(output, dest, **limits)
    safe_files.write_bytes(dest, SAVE_REPORT, (json.dumps(report.to_json(), indent=2)
                                               + "\n").encode())
    return dest, report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command, args, cfg = parse_args(sys.argv[1:] if argv is None else argv)
    if message := invalid_target_message(cfg):
        console.error(message)
        return 2
    if command == "problems":
        return problems_command(cfg, args)
    if command == "grade":
        return asyncio.run(grade_command(cfg, args))
    if command == "calibrate":
        return asyncio.run(calibrate_command(cfg, args))
    if message := missing_key_message(cfg):
        console.error(message)
        return 2
    console.show_sdk_retries()
    return asyncio.run(batch_command(cfg))


if __name__ == "__main__":
    sys.exit(main())
