"""The agent's tools: each defined once, with its JSON schema generated from it.

Every tool is a typed async function whose docstring is written for the model;
``anthropic.beta_async_tool`` turns it into a schema and a validated call.  ``REGISTRY``
maps names to tools; a problem's toggles choose which names an agent gets.

:func:`dispatch` answers every ``tool_use``: unknown names, bad arguments and anything
the agent's code does wrong come back as ``is_error`` results.  Any other exception is a
harness bug and propagates (the runner records the run as an error), except in an
intermediate grading, which the agent hears of as a tool error while the operator's
record keeps the traceback.

Where a path the agent names leads, what it may read or write, and how a file offered
for grading becomes the copy that is graded are ``workspace``'s; every file the tools
touch in the run directory goes through it or ``safe_files``.

Per-run state (workspace, problem, submissions) lives in :class:`RunContext`, reached
through the ``RUN`` context variable so concurrent runs never share it.  Code the agent
runs goes through ``sandbox.run_python``; nothing here executes agent code in-process.
Profiling itself (py-spy, its report, the shared profile cache) is ``profiler``'s:
``profile_tool`` decides what may be profiled and what the sandbox sees.

Progress goes to the run's callback (``RunContext.progress``): a heartbeat while code or
a profile runs long, and an intermediate grading's lines and result marked as its own
(:func:`marked`), so the console never mistakes one for the final grading.
"""

from __future__ import annotations

import base64
import contextvars
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
from anthropic import beta_async_tool
from anthropic.lib.tools import ToolError

import profiler
import safe_files
import sandbox
from problem import DataGuard, GradeResult, Problem
from workspace import (
    Candidate,
    display,
    graded_copy,
    read_text,
    resolve_readable,
    resolve_writable,
    write_text,
)

log = logging.getLogger(__name__)

MAX_READ_CHARS = 60_000
MAX_TOOL_OUTPUT = 12_000

@dataclass
class ToolSettings:
    python_timeout: float = 120.0
    profile_timeout: float = 900.0
    memory_bytes: int = 4 * sandbox.GIB
    threads: int = 1


@dataclass
class RunContext:
    """Everything one run's tools may touch."""

    workspace: Path
    problem: Problem
    guard: DataGuard | None = None
    settings: ToolSettings = field(default_factory=ToolSettings)
    secrets: tuple[str, ...] = ()
    submitted: Candidate | None = None
    intermediate: list[dict[str, Any]] = field(default_factory=list)
    tampering: list[dict[str, Any]] = field(default_factory=list)
    profiles: int = 0
    progress: Callable[[str], None] | None = None  # where grading progress goes


RUN: contextvars.ContextVar[RunContext] = contextvars.ContextVar("hello_py_run")


@dataclass
class ToolOutcome:
    content: str
    is_error: bool = False


def _process_output(result: sandbox.ProcessResult) -> str:
    """Both streams as the sandbox kept them (head and tail, with a notice if cut)."""
    parts = []
    if result.stdout.strip():
        parts.append("stdout:\n" + result.stdout)
    if result.stderr.strip():
        parts.append("stderr:\n" + result.stderr)
    if result.output_truncated:
        parts.append("(output was truncated)")
    return "\n".join(parts) or "(no output)"


def _visibility(ctx: RunContext, workdir: Path | None = None) -> sandbox.Visibility:
    """The run directory (or ``workdir``) read-write, the problem's data read-only."""
    data = ctx.problem.data_dir
    return sandbox.Visibility(workdir or ctx.workspace,
                              read_only=(data,) if data is not None else ())


# ---- the tools ---------------------------------------------------------------------------
@beta_async_tool
async def read_file(path: str) -> str:
    """Read a text file and return its contents.

    Files inside the task's data directory and inside your run directory can be read.
    Paths may be relative to your run directory or to the project root (the task names
    its files by their project path). Long files are truncated with a notice.

    Args:
        path: The file to read.
    """
    ctx = RUN.get()
    place = resolve_readable(ctx.workspace, ctx.problem.data_dir, path)
    return read_text(place, MAX_READ_CHARS)


@beta_async_tool
async def write_file(path: str, content: str) -> str:
    """Write a text file inside your run directory (parent folders are created).

    Relative paths are resolved in your run directory. Nothing outside it can be written;
    the task's data directory is read-only.

    Args:
        path: Where to write, e.g. the file name the task asks for.
        content: The complete new contents of the file.
    """
    ctx = RUN.get()
    target = resolve_writable(ctx.workspace, ctx.problem.data_dir, path)
    size = write_text(target, content)
    return f"wrote {size} bytes to {display(target.path)}"


@beta_async_tool
async def python_expression(code: str) -> str:
    """Run Python code in a fresh process and return its stdout and stderr.

    The working directory is your run directory; the task's data directory is readable
    there by its project path. numpy, torch and scikit-learn are installed. There is no
    network, the time limit is a couple of minutes and memory is limited. Use print() to
    see values.

    Args:
        code: Python source to run, e.g. "import numpy as np; print(np.__version__)".
    """
    ctx = RUN.get()
    s = ctx.settings
    async with sandbox.heartbeat(ctx.progress, "python_expression running"):
        result = await sandbox.run_python(
            ["-c", code], visibility=_visibility(ctx), threads=s.threads,
            limits=sandbox.Limits(timeout=s.python_timeout, memory_bytes=s.memory_bytes,
                                  max_output=MAX_TOOL_OUTPUT))
    output = _process_output(result)
    if not result.ok:
        raise ToolError(f"the code {result.failure()}.\n{output}")
    return output


@beta_async_tool
async def profile_tool(path: str) -> str:
    """Profile a Python script and return its hottest functions.

    Runs the script as __main__ under a sampling profiler (py-spy, native frames
    included; cProfile when py-spy is not installed) and returns the hottest frames by
    own and by total time, plus the tail of the program's output. The profile (and, with
    py-spy, a flame graph) is saved in your run directory under profiles/.

    Args:
        path: The .py file to profile, in the task's data directory or your run directory.
    """
    ctx = RUN.get()
    script = resolve_readable(ctx.workspace, ctx.problem.data_dir, path)
    if script.rel.suffix != ".py":
        raise ToolError(f"{path} is not a .py file")
    ctx.profiles += 1
    try:
        safe_files.make_dirs(ctx.workspace, "profiles")
    except OSError as exc:
        raise ToolError(f"cannot make profiles/ in your run directory: "
                        f"{exc.strerror or exc}") from exc
    stem = PurePosixPath("profiles", f"{script.rel.stem}-{ctx.profiles}")  # in the run dir
    s = ctx.settings

    async def run(args: list[str], workdir: Path) -> tuple[sandbox.ProcessResult, str]:
        result = await sandbox.run_python(
            args, visibility=_visibility(ctx, workdir), threads=s.threads,
            limits=sandbox.Limits(timeout=s.profile_timeout, memory_bytes=s.memory_bytes,
                                  max_output=MAX_TOOL_OUTPUT * 2))
        return result, _process_output(result)

    job = profiler.Job(path, script.root, script.rel, ctx.workspace, stem, run, display)
    async with sandbox.heartbeat(ctx.progress, f"profile_tool on {script.rel.name} running"):
        if script.root == ctx.problem.data_dir:
            # The task's own files never change: profiled once per machine, then shared
            # by every run (minutes of CPU each, on a machine whose runs share two cores).
            return await profiler.shared_profile(job)
        return await profiler.profile(job)


def _candidate_for_agent(path: str) -> tuple[RunContext, Candidate]:
    ctx = RUN.get()
    place = resolve_readable(ctx.workspace, ctx.problem.data_dir, path)
    if place.rel.suffix != ".py":
        raise ToolError(f"{path} is not a .py file")
    try:
        return ctx, Candidate.read(place)
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from exc


@beta_async_tool
async def submit_intermediate_answer(path: str) -> str:
    """Grade your optimised file now, without ending the task.

    It is timed against the original and checked exactly like a final answer; you get
    the speedup, the accuracy and any failing checks back.

    Args:
        path: Your optimised .py file (in your run directory).
    """
    ctx, candidate = _candidate_for_agent(path)
    started = time.monotonic()
    say = marked(ctx.progress, "intermediate")
    try:
        with graded_copy(candidate) as copy:
            result = await ctx.problem.grade(copy, progress=say)
    except Exception as exc:  # the grader's fault, not an answer: the run goes on
        log.exception("intermediate grading of %s raised", candidate.path)
        if say is not None:
            say(f"error: the grader failed ({type(exc).__name__}); the run goes on")
        ctx.intermediate.append({  # the operator's record: the agent sees none of this
            "path": display(candidate.path), "passed": False, "speedup": None,
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
            "seconds": time.monotonic() - started})
        raise ToolError("this submission could not be graded: the grader failed (recorded "
                        "for the operator). Your run goes on; a final submit_answer is graded "
                        "as usual.") from None
    ctx.intermediate.append({
        "path": display(candidate.path), "passed": result.passed, "speedup": result.speedup,
        "accuracy": result.accuracy, "reason": result.reason,
        "failed_checks": result.failed_checks, "seconds": time.monotonic() - started,
    })
    if say is not None:
        say(outcome_line(result))
    return result.agent_summary()


def marked(progress: Callable[[str], None] | None, mark: str
           ) -> Callable[[str], None] | None:
    """``progress`` with each of its lines marked as one grading's (``intermediate``,
    ``final``), so that the console tells a run's gradings apart."""
    if progress is None:
        return None
    return lambda message: progress(f"{mark}: {message}")


def outcome_line(result: GradeResult) -> str:
    """A grading's result in one line: ``pass 35.1x``, ``fail 1.2x (why)``."""
    speed = f" {result.speedup:.1f}x" if result.speedup else ""
    reason = result.reason if len(result.reason) <= 100 else result.reason[:99] + "…"
    return ("pass" if result.passed else "fail") + speed + (
        f" ({reason})" if not result.passed and reason else "")


ANSWER_FILE = "answer.txt"
MAX_ANSWER_CHARS = 10_000


@beta_async_tool
async def submit_value(answer: str) -> str:
    """Submit your final answer as text (for example a number). This ends the task.

    Args:
        answer: The answer, exactly as asked for (e.g. "1234567890").
    """
    ctx = RUN.get()
    if len(answer) > MAX_ANSWER_CHARS:
        raise ToolError(f"the answer is {len(answer)} characters; the limit is "
                        f"{MAX_ANSWER_CHARS}")
    target = resolve_writable(ctx.workspace, ctx.problem.data_dir, ANSWER_FILE)
    write_text(target, answer)
    ctx.submitted = Candidate(target.path, answer.encode("utf-8"))  # graded as sent
    return "answer submitted; it will be graded after the task ends"


@beta_async_tool
async def submit_answer(path: str) -> str:
    """Submit your optimised file as the final answer. This ends the task.

    Args:
        path: Your optimised .py file (in your run directory).
    """
    ctx, candidate = _candidate_for_agent(path)
    ctx.submitted = candidate
    return f"submitted {display(candidate.path)}; it will be graded after the task ends"


REGISTRY = {t.name: t for t in (read_file, write_file, python_expression, profile_tool,
                                submit_intermediate_answer, submit_answer, submit_value)}


def schemas(names: list[str]) -> list[dict[str, Any]]:
    """The API tool definitions for ``names``, in that order."""
    return [dict(REGISTRY[name].to_dict()) for name in names]


def secrets_from_environment() -> tuple[str, ...]:
    """Values that must never appear in a tool result: the API key and its kin."""
    markers = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    return tuple(v for k, v in os.environ.items()
                 if any(m in k.upper() for m in markers) and len(v) >= 8)


def _spellings(secret: str) -> set[str]:
    """A secret as it is, reversed, and in hex and base64: the usual disguises."""
    raw = secret.encode()
    return {secret, secret[::-1], raw.hex(), raw.hex().upper(),
            base64.b64encode(raw).decode().rstrip("=")}


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """The last line of defence (children never see secrets): every spelling of every
    secret replaced, longest first, so a secret that contains another is never
    half-replaced."""
    spellings = {form for s in secrets if s for form in _spellings(s)}
    for secret in sorted(spellings, key=len, reverse=True):
        text = text.replace(secret, "[REDACTED]")
    return text


def _validation_message(name: str, exc: pydantic.ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "input"
        problems.append(f"{where}: {err.get('msg')}")
    schema = REGISTRY[name].input_schema
    expected = ", ".join(f"{k} ({v.get('type', 'any')})"
                         for k, v in schema.get("properties", {}).items())
    return f"invalid arguments for {name}: {'; '.join(problems)}. Expected: {expected}."


async def dispatch(name: str, arguments: Any, allowed: list[str]) -> ToolOutcome:
    """Run one tool call for the current run.  Agent mistakes become error outcomes."""
    ctx = RUN.get()
    if name not in allowed or name not in REGISTRY:
        return ToolOutcome(f"unknown tool {name!r}; available tools: {', '.join(allowed)}",
                           is_error=True)
    if not isinstance(arguments, dict):
        return ToolOutcome(f"arguments for {name} must be a JSON object", is_error=True)
    try:
        outcome = ToolOutcome(str(await REGISTRY[name].call(arguments)))
    except ToolError as exc:
        outcome = ToolOutcome(str(exc), is_error=True)
    except ValueError as exc:
        if not isinstance(exc.__cause__, pydantic.ValidationError):
            raise
        outcome = ToolOutcome(_validation_message(name, exc.__cause__), is_error=True)
    if ctx.guard is not None and (changed := ctx.guard.restore()):
        ctx.tampering.append({"tool": name, "files": changed})
        outcome.content += (f"\n(note: {ctx.guard.directory.name}/ is read-only; changes to "
                            f"{', '.join(changed)} were reverted)")
    outcome.content = redact(outcome.content, ctx.secrets)
    return outcome
