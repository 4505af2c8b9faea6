"""The agent's tools: each defined once, with its JSON schema generated from it.

Every tool is a typed async function whose docstring is written for the model;
``anthropic.beta_async_tool`` turns it into a schema and a validated call.  ``REGISTRY``
maps names to tools; a problem's toggles choose which names an agent gets.

:func:`dispatch` answers every ``tool_use``: unknown names, bad arguments and anything
the agent's code does wrong come back as ``is_error`` results.  Any other exception is a
harness bug and propagates (the runner records the run as an error).

Per-run state (workspace, problem, submissions) lives in :class:`RunContext`, reached
through the ``RUN`` context variable so concurrent runs never share it.  Code the agent
runs goes through ``sandbox.run_python``; nothing here executes agent code in-process.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import html
import logging
import os
import shutil
import stat
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from anthropic import beta_async_tool
from anthropic.lib.tools import ToolError

import sandbox
from problem import DataGuard, Problem

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent
MAX_READ_CHARS = 60_000
MAX_WRITE_BYTES = 1_000_000
MAX_TOOL_OUTPUT = 12_000

_PROFILER = r"""
import cProfile, pstats, io, runpy, sys
script, out_file = sys.argv[1], sys.argv[2]
sys.argv = [script]
profiler = cProfile.Profile()
status = 0
try:
    profiler.runcall(runpy.run_path, script, run_name="__main__")
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else 1
except BaseException:
    import traceback; traceback.print_exc(); status = 1
profiler.dump_stats(out_file)
for key, title in (("cumulative", "cumulative time"), ("tottime", "own time")):
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats(key).print_stats(15)
    text = buf.getvalue()
    start = text.find("   ncalls")
    print(f"\n=== top 15 functions by {title} ===\n" + (text[start:] if start >= 0 else text))
sys.exit(status)
"""


# py-spy runs the script as its own child (inside the same sandbox) and samples it from
# outside the interpreter, native frames included; the harness reads its stacks.
_PY_SPY_LAUNCHER = r'''
import os, subprocess, sys, tempfile
spy, rate, out_file, script = sys.argv[1:5]
fd, status_file = tempfile.mkstemp()  # py-spy exits 0 whatever the script did
os.close(fd)
runner = """
import runpy, sys
script, status_file = sys.argv[1:3]
sys.argv = [script]
status = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
except BaseException:
    import traceback; traceback.print_exc(); status = 1
with open(status_file, "w") as f:
    f.write(str(status))
sys.exit(status)
"""
subprocess.run([spy, "record", "--native", "--format", "raw", "--rate", rate, "-o", out_file,
                "--", sys.executable, "-X", "utf8", "-c", runner, script, status_file])
try:
    with open(status_file) as f:
        status = int(f.read().strip() or 1)
except (OSError, ValueError):
    status = 1
sys.exit(status)
'''
PY_SPY_RATE = 100  # samples a second
MAX_STACKS_BYTES = 20_000_000  # what the harness reads of a profile the sandbox wrote
TOP_FRAMES = 15


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter (the project's environment), or
    on PATH; None when the package is not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def parse_stacks(text: str) -> Counter[tuple[str, ...]]:
    """Collapsed stacks ('frame;frame;frame COUNT' per line) as counts; malformed lines
    are skipped (the file was written inside the sandbox)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(f.strip() for f in stack.split(";") if f.strip())] += int(count)
    return stacks


def stacks_report(stacks: Counter[tuple[str, ...]], top: int = TOP_FRAMES) -> str:
    """The hottest frames by own samples (the stack's leaf) and by total samples (any
    place in the stack, once per stack), as text for the model."""
    total = sum(stacks.values())
    if not total:
        return "(no samples: the program ended before the first one)"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        if stack:
            own[stack[-1]] += count
        for frame in set(stack):
            inclusive[frame] += count
    lines = [f"{total} samples at {PY_SPY_RATE} per second (py-spy, native frames included)"]
    for title, table in (("own samples (where the time is spent)", own),
                         ("total samples (including what they call)", inclusive)):
        lines.append(f"\n=== top {top} frames by {title} ===")
        lines += [f"{100 * n / total:6.1f}%  {frame[:200]}" for frame, n in
                  table.most_common(top)]
    return "\n".join(lines)


def flame_graph_svg(stacks: Counter[tuple[str, ...]], width: int = 1200) -> str:
    """A static icicle-style flame graph (root at the top), every name XML-escaped."""
    total = sum(stacks.values()) or 1
    tree: dict = {}
    for stack, count in stacks.items():
        node = tree
        for frame in stack:
            entry = node.setdefault(frame, [0, {}])
            entry[0] += count
            node = entry[1]
    rows: list[str] = []
    depth_max = 0

    def draw(node: dict, x: float, depth: int) -> None:
        nonlocal depth_max
        for frame, (count, children) in sorted(node.items()):
            w = width * count / total
            if w >= 0.5:
                depth_max = max(depth_max, depth)
                name = html.escape(frame, quote=True)
                label = html.escape(frame[: int(w / 7)], quote=True) if w > 30 else ""
                hue = 20 + zlib.crc32(frame.encode()) % 40
                rows.append(f'<g><title>{name} ({count} samples, {100 * count / total:.1f}%)'
                            f'</title><rect x="{x:.1f}" y="{depth * 17}" width="{w:.1f}" '
                            f'height="16" fill="hsl({hue},90%,60%)"/><text x="{x + 2:.1f}" '
                            f'y="{depth * 17 + 12}" font-size="11">{label}</text></g>')
                draw(children, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    height = (depth_max + 1) * 17
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace">\n' + "\n".join(rows) + "\n</svg>\n")


def read_regular(path: Path, limit: int, *, follow: bool = True) -> bytes:
    """At most ``limit`` bytes of a regular file, never blocking: a FIFO or device planted
    under the expected name raises ``OSError`` (as does a link, with ``follow=False``)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return f.read(limit)


def _read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    try:
        data = read_regular(path, MAX_STACKS_BYTES, follow=False)
    except OSError:
        return Counter()
    return parse_stacks(data.decode("utf-8", errors="replace"))


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
    submitted: Path | None = None
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


def _within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_readable(ctx: RunContext, raw: str) -> Path:
    """A path the agent may read: inside the problem's data directory or its own run
    directory."""
    data = _data_dir(ctx)
    roots = (ctx.workspace.resolve(), *((data.resolve(),) if data is not None else ()))
    for candidate in _candidates(ctx, raw):
        try:
            resolved = candidate.resolve()
            if not (resolved.exists() and any(_within(resolved, r) for r in roots)):
                continue
        except (OSError, RuntimeError):  # name too long, symlink loop, ...
            continue
        if resolved.is_dir():
            raise ToolError(f"{raw} is a directory, not a file")
        if not resolved.is_file():
            raise ToolError(f"{raw} is not a regular file")
        return resolved
    where = f"{_display(data)}/ and " if data is not None else ""
    raise ToolError(f"cannot read {raw!r}: only files inside {where}"
                    f"your run directory {_display(ctx.workspace)}/ can be read (no such "
                    "file there, or the path leads elsewhere)")


def resolve_writable(ctx: RunContext, raw: str) -> Path:
    """A path the agent may write: inside its own run directory only."""
    root = ctx.workspace.resolve()
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
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError) as exc:
        raise ToolError(f"cannot write {raw!r}: {exc}") from exc
    if not _within(resolved, root) or resolved == root:
        raise ToolError(f"cannot write {raw!r}: files can only be written inside your run "
                        f"directory {_display(ctx.workspace)}/")
    return resolved


def _read_text(path: Path, limit: int) -> str:
    try:
        data = path.read_bytes()  # agent-written files are capped by the sandbox (64 MiB)
    except OSError as exc:
        raise ToolError(f"cannot read {_display(path)}: {exc.strerror or exc}") from exc
    if b"\x00" in data[:8192]:
        raise ToolError(f"{_display(path)} is a binary file; only text files can be read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"{_display(path)} is not UTF-8 text") from exc
    if len(text) > limit:
        return text[:limit] + f"\n[... truncated: showing {limit} of {len(text)} characters]"
    return text


def _write_text(path: Path, content: str) -> int:
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content is {len(data)} bytes; the limit is {MAX_WRITE_BYTES}")
    try:
        if path.is_dir():
            raise ToolError(f"{_display(path)} is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: a FIFO planted by the agent's code must not stall the event loop.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK
                     | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ToolError(f"cannot write {_display(path)}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ToolError(f"{_display(path)} is not a regular file")
        f.write(data)
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


def _visibility(ctx: RunContext) -> sandbox.Visibility:
    data = _data_dir(ctx)
    return sandbox.Visibility(ctx.workspace, read_only=(data,) if data is not None else ())


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
    return f"wrote {size} bytes to {_display(target)}"


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
    if script.suffix != ".py":
        raise ToolError(f"{path} is not a .py file")
    ctx.profiles += 1
    out_dir = ctx.workspace / "profiles"
    out_dir.mkdir(exist_ok=True)
    stem = out_dir / f"{script.stem}-{ctx.profiles}"
    data = _data_dir(ctx)
    if data is not None and script.resolve().is_relative_to(data.resolve()):
        # The task's own files never change: profiled once per machine, then shared by
        # every run (minutes of CPU each, on a machine whose runs share two cores).
        return await _shared_profile(script, stem, lambda: _profile(ctx, path, script, stem))
    return await _profile(ctx, path, script, stem)


PROFILE_CACHE_VERSION = 1
_profile_locks: dict[str, asyncio.Lock] = {}


def _profile_cache_dir() -> Path:
    from problems.measurement import default_cache_dir

    directory = default_cache_dir() / "profiles"
    sandbox.hide_from_children(directory.parent)
    return directory


async def _shared_profile(script: Path, stem: Path,
                          measure: Callable[[], Any]) -> str:
    """The profile of an unchanged task file: from the machine's cache when there, else
    measured (once, however many runs ask at the same time) and stored.  The run gets
    its own copies of the raw profile and the flame graph."""
    kind = f"py-spy-{PY_SPY_RATE}" if py_spy() is not None else "cprofile"
    entry = await asyncio.to_thread(_profile_entry, script, kind)
    lock = _profile_locks.setdefault(entry.name, asyncio.Lock())
    async with lock:
        found = await asyncio.to_thread(_load_profile, entry, stem)
        if found is not None:
            return ("(the shared profile of this unchanged file, measured once on this "
                    f"machine)\n{found.replace(_STEM, _display(stem))}")
        result = await measure()
        await asyncio.to_thread(_store_profile, entry, stem,
                                result.replace(_display(stem), _STEM))
        return result


_STEM = "\0stem\0"  # where a stored profile names the run's own files


def _profile_entry(script: Path, kind: str) -> Path:
    import hashlib

    digest = hashlib.sha256(script.read_bytes() + f"\0{kind}\0{sys.version}\0"
                            f"{PROFILE_CACHE_VERSION}".encode()).hexdigest()[:32]
    return _profile_cache_dir() / digest


def _load_profile(entry: Path, stem: Path) -> str | None:
    import json

    record = entry / "record.json"
    if not record.is_file():
        return None
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
        for name in found["files"]:
            shutil.copyfile(entry / name, stem.with_suffix(Path(name).suffix))
        return str(found["result"])
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(entry, ignore_errors=True)  # unreadable: measured again
        return None


def _store_profile(entry: Path, stem: Path, result: str) -> None:
    import json

    files = [p for p in (stem.with_suffix(x) for x in (".txt", ".svg", ".prof"))
             if p.is_file()]
    tmp = entry.with_name(entry.name + ".tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for p in files:
            shutil.copyfile(p, tmp / f"profile{p.suffix}")
        (tmp / "record.json").write_text(json.dumps(
            {"result": result, "files": [f"profile{p.suffix}" for p in files]}),
            encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    except OSError as exc:
        log.warning("the shared profile could not be stored: %s", exc)


async def _profile(ctx: RunContext, path: str, script: Path, stem: Path) -> str:
    s = ctx.settings
    spy = py_spy()
    if spy is not None:
        raw = stem.with_suffix(".txt")
        args = ["-c", _PY_SPY_LAUNCHER, spy, str(PY_SPY_RATE), str(raw), str(script)]
    else:
        raw = stem.with_suffix(".prof")
        args = ["-c", _PROFILER, str(script), str(raw)]
    result = await sandbox.run_python(
        args, visibility=_visibility(ctx), threads=s.threads,
        limits=sandbox.Limits(timeout=s.profile_timeout, memory_bytes=s.memory_bytes,
                              max_output=MAX_TOOL_OUTPUT * 2))
    output = _process_output(result)
    if not result.ok:
        raise ToolError(f"profiling {path}: the program {result.failure()}.\n{output}")
    if spy is None:
        return (f"(py-spy is not installed: a cProfile profile)\n"
                f"profile saved to {_display(raw)}\n{output}")
    stacks = await asyncio.to_thread(_read_stacks, raw)
    svg = stem.with_suffix(".svg")
    try:
        await asyncio.to_thread(_write_text, svg, flame_graph_svg(stacks))
        graph = f"flame graph: {_display(svg)}"
    except ToolError as exc:
        graph = f"no flame graph: {exc}"
    return (f"profile saved to {_display(raw)} ({graph})\n"
            f"{stacks_report(stacks)}\n\nprogram output:\n{output}")


def _candidate_for_agent(path: str) -> tuple[RunContext, Path]:
    ctx = RUN.get()
    candidate = resolve_readable(ctx, path)
    if candidate.suffix != ".py":
        raise ToolError(f"{path} is not a .py file")
    return ctx, candidate


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
    result = await ctx.problem.grade(candidate, progress=ctx.progress)
    ctx.intermediate.append({
        "path": _display(candidate), "passed": result.passed, "speedup": result.speedup,
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
    ctx.submitted = target
    return "answer submitted; it will be graded after the task ends"


@beta_async_tool
async def submit_answer(path: str) -> str:
    """Submit your optimised file as the final answer. This ends the task.

    Args:
        path: Your optimised .py file (in your run directory).
    """
    ctx, candidate = _candidate_for_agent(path)
    ctx.submitted = candidate
    return f"submitted {_display(candidate)}; it will be graded after the task ends"


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
