"""The agent's tools: each defined once, with its JSON schema generated from it.

Every tool is a typed async function whose docstring is written for the model;
``anthropic.beta_async_tool`` turns it into a schema and a validated call.  ``REGISTRY``
maps names to tools; a problem's toggles choose which names an agent gets.

:func:`dispatch` answers every ``tool_use``: unknown names, bad arguments and anything
the agent's code does wrong come back as ``is_error`` results.  Any other exception is a
harness bug and propagates (the runner records the run as an error), except in an
intermediate grading, which the agent hears of as a tool error while the operator's
record keeps the traceback.  Every file the tools touch in the run directory goes
through ``safe_files``; a file offered for grading is read once and graded as a copy.

Per-run state (workspace, problem, submissions) lives in :class:`RunContext`, reached
through the ``RUN`` context variable so concurrent runs never share it.  Code the agent
runs goes through ``sandbox.run_python``; nothing here executes agent code in-process.
Profiling itself (py-spy, its report, the shared profile cache) is ``profiler``'s:
``profile_tool`` decides what may be profiled and what the sandbox sees.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import logging
import os
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
from anthropic import beta_async_tool
from anthropic.lib.tools import ToolError

import profiler
import safe_files
import sandbox
from problem import DataGuard, Problem
from sandbox import PROJECT_ROOT

log = logging.getLogger(__name__)

MAX_READ_CHARS = 60_000
MAX_READ_BYTES = 8 * 1024**2  # what read_file reads at most
MAX_WRITE_BYTES = 1_000_000
MAX_CANDIDATE_BYTES = 8 * 1024**2  # what the harness reads of a file offered for grading
MAX_TOOL_OUTPUT = 12_000

@dataclass
class ToolSettings:
    python_timeout: float = 120.0
    profile_timeout: float = 900.0
    memory_bytes: int = 4 * sandbox.GIB
    threads: int = 1


@dataclass(frozen=True)
class Place:
    """A path the agent named, as a root the harness trusts (the run directory or the
    data directory) and a path below it.  The harness opens it only through
    ``safe_files``, relative to ``root``: no link below the root is ever followed."""

    root: Path
    rel: PurePosixPath

    @property
    def path(self) -> Path:
        return self.root / self.rel


@dataclass(frozen=True)
class Candidate:
    """A file offered for grading, read once (never following a link) when it was
    offered.  The grader gets a harness-owned copy of ``data`` (:func:`graded_copy`),
    never the agent's path, which the agent's code could have changed since."""

    path: Path  # where the agent had it, for the records
    data: bytes

    @classmethod
    def read(cls, place: Place) -> Candidate:
        return cls(place.path, safe_files.read_bytes(place.root, place.rel,
                                                     MAX_CANDIDATE_BYTES))


def first_candidate(workspace: Path, paths: list[Path]) -> Candidate | None:
    """The first of ``paths`` (inside ``workspace``) that reads as a regular file."""
    for path in paths:
        try:
            return Candidate.read(Place(workspace, PurePosixPath(path.relative_to(
                workspace))))
        except (OSError, ValueError):  # changed since it was listed, or not inside
            continue
    return None


@contextlib.contextmanager
def graded_copy(candidate: Candidate) -> Iterator[Path]:
    """The candidate's bytes in a file of the harness's own, under the candidate's
    name, for as long as the grader needs it."""
    with tempfile.TemporaryDirectory(prefix="hp-graded-") as directory:
        path = Path(directory) / candidate.path.name
        path.write_bytes(candidate.data)
        yield path


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


# ---- path rules ------------------------------------------------------------------------
def _display(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(
        path)


def _data_dir(ctx: RunContext) -> Path | None:
    """The problem's read-only data directory (None: the problem has none)."""
    return ctx.problem.data_dir


def _in_data_dir(ctx: RunContext, given: Path) -> bool:
    data = _data_dir(ctx)
    return data is not None and given.parts[:1] == (data.name,)


def _candidates(ctx: RunContext, raw: str) -> list[Path]:
    if not raw or "\x00" in raw:
        raise ToolError("the path is empty or contains a NUL byte")
    given = Path(raw)
    if given.is_absolute():
        return [given]
    if _in_data_dir(ctx, given):  # the project's data, never a shadow copy
        return [_data_dir(ctx).parent / given, ctx.workspace / given]
    return [ctx.workspace / given, PROJECT_ROOT / given]


def _place(path: Path, roots: tuple[Path, ...]) -> Place | None:
    """``path`` (``..`` taken lexically: no link is ever followed below a root, so the
    result is the same) as a place inside one of ``roots``, or None."""
    normal = Path(os.path.normpath(path))
    for root in roots:
        for spelling in dict.fromkeys((root, root.resolve())):
            if normal.is_relative_to(spelling):
                return Place(root, PurePosixPath(normal.relative_to(spelling)))
    return None


def resolve_readable(ctx: RunContext, raw: str) -> Place:
    """A file the agent may read: inside the problem's data directory or its own run
    directory, reached without following a link."""
    data = _data_dir(ctx)
    roots = (ctx.workspace, *((data,) if data is not None else ()))
    for candidate in _candidates(ctx, raw):
        place = _place(candidate, roots)
        if place is None:
            continue
        try:
            mode = safe_files.lstat(place.root, place.rel).st_mode
        except OSError:  # missing, a link on the way, a name too long, ...
            continue
        if stat.S_ISDIR(mode):
            raise ToolError(f"{raw} is a directory, not a file")
        if stat.S_ISLNK(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ToolError(f"{raw} is not a regular file")
        return place
    where = f"{_display(data)}/ and " if data is not None else ""
    raise ToolError(f"cannot read {raw!r}: only files inside {where}"
                    f"your run directory {_display(ctx.workspace)}/ can be read (no such "
                    "file there, or the path leads elsewhere: links are not followed)")


def resolve_writable(ctx: RunContext, raw: str) -> Place:
    """A path the agent may write: inside its own run directory only."""
    given = Path(raw) if raw and "\x00" not in raw else None
    if given is None:
        raise ToolError("the path is empty or contains a NUL byte")
    rel_ws = ctx.workspace.relative_to(PROJECT_ROOT) if ctx.workspace.is_relative_to(
        PROJECT_ROOT) else None
    if given.is_absolute():
        target = given
    elif _in_data_dir(ctx, given):
        raise ToolError(f"cannot write {raw!r}: {given.parts[0]}/ is read-only; write your "
                        f"files inside your run directory {_display(ctx.workspace)}/")
    elif rel_ws is not None and given.is_relative_to(rel_ws):
        target = PROJECT_ROOT / given
    else:
        target = ctx.workspace / given
    place = _place(target, (ctx.workspace,))
    denied = f"files can only be written inside your run directory {_display(ctx.workspace)}/"
    if place is None or not place.rel.parts:
        raise ToolError(f"cannot write {raw!r}: {denied}")
    with contextlib.suppress(OSError):  # what cannot be looked at is refused when written
        if stat.S_ISLNK(safe_files.lstat(place.root, place.rel).st_mode):
            raise ToolError(f"cannot write {raw!r}: it is a symbolic link, and links are not "
                            f"followed; {denied}")
    return place


def _read_text(place: Place, limit: int) -> str:
    shown = _display(place.path)
    try:
        data = safe_files.read_bytes(place.root, place.rel, MAX_READ_BYTES)
    except OSError as exc:
        raise ToolError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    if b"\x00" in data[:8192]:
        raise ToolError(f"{shown} is a binary file; only text files can be read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"{shown} is not UTF-8 text") from exc
    if len(text) > limit:
        return text[:limit] + f"\n[... truncated: showing {limit} of {len(text)} characters]"
    return text


def _write_text(place: Place, content: str) -> int:
    """Write ``content`` at ``place`` (a fresh file renamed over the name: nothing there
    is written through).  Only a regular file is replaced: a link, FIFO or directory
    the agent's code left at the name is refused (``resolve_writable`` names a link)."""
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content is {len(data)} bytes; the limit is {MAX_WRITE_BYTES}")
    shown = _display(place.path)
    try:
        mode = safe_files.lstat(place.root, place.rel).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    except OSError as exc:
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise ToolError(f"{shown} is a directory")
    if not stat.S_ISREG(mode):
        raise ToolError(f"cannot write {shown}: it is not a regular file")
    try:
        safe_files.write_bytes(place.root, place.rel, data)
    except OSError as exc:
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from exc
    return len(data)


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
    data = _data_dir(ctx)
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
    return _read_text(resolve_readable(ctx, path), MAX_READ_CHARS)


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
    target = resolve_writable(ctx, path)
    size = _write_text(target, content)
    return f"wrote {size} bytes to {_display(target.path)}"


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
    script = resolve_readable(ctx, path)
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

    job = profiler.Job(path, script.root, script.rel, ctx.workspace, stem, run, _display)
    if script.root == _data_dir(ctx):
        # The task's own files never change: profiled once per machine, then shared by
        # every run (minutes of CPU each, on a machine whose runs share two cores).
        return await profiler.shared_profile(job)
    return await profiler.profile(job)


def _candidate_for_agent(path: str) -> tuple[RunContext, Candidate]:
    ctx = RUN.get()
    place = resolve_readable(ctx, path)
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
    try:
        with graded_copy(candidate) as copy:
            result = await ctx.problem.grade(copy, progress=ctx.progress)
    except Exception as exc:  # the grader's fault, not an answer: the run goes on
        log.exception("intermediate grading of %s raised", candidate.path)
        ctx.intermediate.append({  # the operator's record: the agent sees none of this
            "path": _display(candidate.path), "passed": False, "speedup": None,
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
            "seconds": time.monotonic() - started})
        raise ToolError("this submission could not be graded: the grader failed (recorded "
                        "for the operator). Your run goes on; a final submit_answer is graded "
                        "as usual.") from None
    ctx.intermediate.append({
        "path": _display(candidate.path), "passed": result.passed, "speedup": result.speedup,
        "accuracy": result.accuracy, "reason": result.reason,
        "failed_checks": result.failed_checks, "seconds": time.monotonic() - started,
    })
    return result.agent_summary()


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
    target = resolve_writable(ctx, ANSWER_FILE)
    _write_text(target, answer)
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
    return f"submitted {_display(candidate.path)}; it will be graded after the task ends"


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
