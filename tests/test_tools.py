"""The agent's tools, driven through ``tools.dispatch`` the way the runner drives them.

Every workspace lives under ``tmp_path``.  The only writes into the checkout are the
tampering tests, which change ``problem_data/`` (DataGuard-protected) and put the bytes
back in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import profiler
import sandbox
import tools
import workspace
from problem import Check, DataGuard, GradeResult, Problem
from problems.ml_training.spec import PROBLEM_DATA
from tools import RunContext, ToolSettings

SECRET = "sk-ant-test-SECRET-123456"
ALL_TOOLS = list(tools.REGISTRY)
BASELINE = PROBLEM_DATA / "slow_ml_training_complex.py"
ISOLATED = sandbox.best_isolation() != "none"
needs_isolation = pytest.mark.skipif(
    not ISOLATED, reason="needs root + unshare (namespace isolation of the sandbox)")


class StubProblem(Problem):
    """A problem whose grader returns a canned result and records what it was asked."""

    name = "stub"
    data_dir = PROBLEM_DATA

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.result = GradeResult(
            passed=False,
            checks=[Check("accuracy", True, "ok"), Check("speed", False, "1.20x < 2.0x")],
            speedup=1.2, baseline_time=10.0, candidate_time=8.333, accuracy=0.9,
            baseline_accuracy=0.91, target=2.0)

    def prompt(self, workspace: Path) -> str:
        return "optimise it"

    def tool_names(self) -> list[str]:
        return list(tools.REGISTRY)

    async def grade(self, candidate: Path, **options: Any) -> GradeResult:
        self.calls.append(candidate)
        return self.result


def make_context(workspace: Path) -> RunContext:
    workspace.mkdir(parents=True, exist_ok=True)
    return RunContext(
        workspace=workspace, problem=StubProblem(), guard=DataGuard(PROBLEM_DATA),
        settings=ToolSettings(python_timeout=5, memory_bytes=2 * 1024**3),
        secrets=(SECRET,))


@pytest.fixture
def baseline_bytes() -> bytes:
    return BASELINE.read_bytes()


@pytest.fixture
def ctx(tmp_path, monkeypatch, baseline_bytes):
    """A run context on tmp_path/run_1, set as the current run, with some odd files."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    ws = tmp_path / "run_1"
    run = make_context(ws)
    (ws / "notes.txt").write_text("hello notes\n")
    (ws / "sub").mkdir()
    (ws / "blob.bin").write_bytes(b"text\x00more text")
    (ws / "latin1.txt").write_bytes(b"caf\xe9 \xff\xfe")
    (ws / "to_passwd").symlink_to("/etc/passwd")
    (ws / "to_main.py").symlink_to(sandbox.PROJECT_ROOT / "main.py")
    (ws / "to_outside.py").symlink_to(tmp_path / "outside.py")
    (ws / "loop").symlink_to(ws / "loop")
    os.mkfifo(ws / "fifo")
    token = tools.RUN.set(run)
    try:
        yield run
    finally:
        tools.RUN.reset(token)
        assert BASELINE.read_bytes() == baseline_bytes, "the baseline was changed"


# ---- 1. schemas ------------------------------------------------------------------------
def _path_only(description: str) -> dict[str, Any]:
    return {
        "additionalProperties": False,
        "properties": {"path": {"description": description, "title": "Path", "type": "string"}},
        "required": ["path"],
        "type": "object",
    }


EXPECTED_SCHEMAS = [
    {
        "name": "read_file",
        "description": (
            "Read a text file and return its contents.\n\n"
            "Files inside the task's data directory and inside your run directory can be "
            "read.\nPaths may be relative to your run directory or to the project root (the "
            "task names\nits files by their project path). Long files are truncated with a "
            "notice."),
        "input_schema": _path_only("The file to read."),
    },
    {
        "name": "write_file",
        "description": (
            "Write a text file inside your run directory (parent folders are created).\n\n"
            "Relative paths are resolved in your run directory. Nothing outside it can be "
            "written;\nthe task's data directory is read-only."),
        "input_schema": {
            "additionalProperties": False,
            "properties": {
                "path": {"description": "Where to write, e.g. the file name the task asks "
                                        "for.",
                         "title": "Path", "type": "string"},
                "content": {"description": "The complete new contents of the file.",
                            "title": "Content", "type": "string"},
            },
            "required": ["path", "content"],
            "type": "object",
        },
    },
    {
        "name": "python_expression",
        "description": (
            "Run Python code in a fresh process and return its stdout and stderr.\n\n"
            "The working directory is your run directory; the task's data directory is "
            "readable\nthere by its project path. numpy, torch and scikit-learn are installed. "
            "There is no\nnetwork, the time limit is a couple of minutes and memory is "
            "limited. Use print() to\nsee values."),
        "input_schema": {
            "additionalProperties": False,
            "properties": {
                "code": {"description": 'Python source to run, e.g. "import numpy as np; '
                                        'print(np.__version__)".',
                         "title": "Code", "type": "string"},
            },
            "required": ["code"],
            "type": "object",
        },
    },
    {
        "name": "profile_tool",
        "description": (
            "Profile a Python script and return its hottest functions.\n\n"
            "Runs the script as __main__ under a sampling profiler (py-spy, native frames\n"
            "included; cProfile when py-spy is not installed) and returns the hottest frames "
            "by\nown and by total time, plus the tail of the program's output. The profile "
            "(and, with\npy-spy, a flame graph) is saved in your run directory under "
            "profiles/."),
        "input_schema": _path_only(
            "The .py file to profile, in the task's data directory or your run directory."),
    },
    {
        "name": "submit_intermediate_answer",
        "description": (
            "Grade your optimised file now, without ending the task.\n\n"
            "It is timed against the original and checked exactly like a final answer; you "
            "get\nthe speedup, the accuracy and any failing checks back."),
        "input_schema": _path_only("Your optimised .py file (in your run directory)."),
    },
    {
        "name": "submit_answer",
        "description": "Submit your optimised file as the final answer. This ends the task.",
        "input_schema": _path_only("Your optimised .py file (in your run directory)."),
    },
    {
        "name": "submit_value",
        "description": ("Submit your final answer as text (for example a number). This ends "
                        "the task."),
        "input_schema": {
            "additionalProperties": False,
            "properties": {
                "answer": {"description": 'The answer, exactly as asked for (e.g. '
                                          '"1234567890").',
                           "title": "Answer", "type": "string"},
            },
            "required": ["answer"],
            "type": "object",
        },
    },
]


def test_schemas_are_pinned():
    assert list(tools.REGISTRY) == [s["name"] for s in EXPECTED_SCHEMAS]
    assert tools.schemas(list(tools.REGISTRY)) == EXPECTED_SCHEMAS


def test_schemas_follow_the_requested_order():
    names = ["submit_answer", "read_file"]
    assert [s["name"] for s in tools.schemas(names)] == names


# ---- 2. bad inputs ---------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One tool call: ``args`` may be a callable of the workspace.  ``expect`` are
    substrings of the content; ``absent`` must not appear in it."""

    tool: str
    args: Any
    expect: tuple[str, ...]
    error: bool = True
    allowed: tuple[str, ...] | None = None
    absent: tuple[str, ...] = ()
    max_len: int | None = None
    max_seconds: float = 4.0


_SCAN_PROC = """
import glob
key = ('sk-ant-test-' + 'SECRET-123456').encode()
hits, scanned = [], 0
for p in glob.glob('/proc/[0-9]*/environ') + ['/proc/self/environ']:
    try:
        data = open(p, 'rb').read()
    except OSError:
        continue
    scanned += 1
    if key in data:
        hits.append(p)
print('scanned', scanned > 0, 'hits', hits)
"""

_FORK_TREE = """
import os
kids = []
for _ in range(3):
    pid = os.fork()
    if pid:
        kids.append(pid)
    else:
        kids = []
for k in kids:
    os.waitpid(k, 0)
print('proc', os.getpid(), flush=True)
"""

_ORPHAN = """
import os, time
if os.fork() == 0:
    time.sleep(60)
print('parent done')
"""

_READ_DENIED = "only files inside problem_data/ and your run directory"
_WRITE_DENIED = "files can only be written inside your run directory"

BAD_INPUTS = [
    # -- read_file: paths leading out of the allowed roots
    pytest.param(Case("read_file", {"path": "../../../etc/passwd"},
                      ("cannot read '../../../etc/passwd'", _READ_DENIED), absent=("root:",)),
                 id="read-dotdot-etc-passwd"),
    pytest.param(Case("read_file", {"path": "/etc/passwd"},
                      ("cannot read '/etc/passwd'", _READ_DENIED), absent=("root:",)),
                 id="read-abs-etc-passwd"),
    pytest.param(Case("read_file",
                      {"path": str(sandbox.PROJECT_ROOT / "problems/ml_training/task.py")},
                      ("problems/ml_training/task.py'", _READ_DENIED), absent=("import",)),
                 id="read-abs-harness-file"),
    pytest.param(Case("read_file", {"path": "problems/ml_training/task.py"},
                      ("cannot read 'problems/ml_training/task.py'", _READ_DENIED)),
                 id="read-rel-harness-file"),
    pytest.param(Case("read_file", {"path": "tests/conftest.py"},
                      ("cannot read 'tests/conftest.py'", _READ_DENIED)),
                 id="read-tests-conftest"),
    pytest.param(Case("read_file", {"path": "problem_data/../main.py"},
                      ("cannot read 'problem_data/../main.py'", _READ_DENIED)),
                 id="read-dotdot-out-of-problem-data"),
    pytest.param(Case("read_file", {"path": "to_passwd"},
                      ("cannot read 'to_passwd'", _READ_DENIED), absent=("root:",)),
                 id="read-symlink-to-etc-passwd"),
    pytest.param(Case("read_file", {"path": "to_main.py"},
                      ("cannot read 'to_main.py'", _READ_DENIED)),
                 id="read-symlink-to-harness-main"),
    # -- read_file: things that are not readable text files
    pytest.param(Case("read_file", {"path": "sub"}, ("sub is a directory, not a file",)),
                 id="read-directory"),
    pytest.param(Case("read_file", {"path": "problem_data"},
                      ("problem_data is a directory, not a file",)),
                 id="read-problem-data-directory"),
    pytest.param(Case("read_file", {"path": "fifo"}, ("fifo is", "not a")),
                 id="read-fifo"),
    pytest.param(Case("read_file", {"path": "missing.py"},
                      ("cannot read 'missing.py'", "no such file there")),
                 id="read-missing-file"),
    pytest.param(Case("read_file", {"path": "blob.bin"},
                      ("blob.bin is a binary file; only text files can be read",)),
                 id="read-binary-nul-bytes"),
    pytest.param(Case("read_file", {"path": "latin1.txt"}, ("latin1.txt is not UTF-8 text",)),
                 id="read-non-utf8"),
    pytest.param(Case("read_file", {"path": ""},
                      ("the path is empty or contains a NUL byte",)),
                 id="read-empty-path"),
    pytest.param(Case("read_file", {"path": "notes.txt\x00.py"},
                      ("the path is empty or contains a NUL byte",)),
                 id="read-nul-in-path"),
    pytest.param(Case("read_file", {"path": SECRET + ".py"}, ("cannot read '[REDACTED].py'",)),
                 id="read-secret-in-path-is-redacted"),
    # -- argument validation and tool selection
    pytest.param(Case("read_file", {},
                      ("invalid arguments for read_file: path: Missing required argument",
                       "Expected: path (string).")),
                 id="missing-argument"),
    pytest.param(Case("read_file", {"path": 5},
                      ("invalid arguments for read_file: path: Input should be a valid string",)),
                 id="wrong-type-int"),
    pytest.param(Case("read_file", {"path": "notes.txt", "extra": 1},
                      ("invalid arguments for read_file: extra: Unexpected keyword argument",)),
                 id="extra-argument"),
    pytest.param(Case("write_file", {"path": "a.py"},
                      ("content: Missing required argument",
                       "Expected: path (string), content (string).")),
                 id="write-missing-content"),
    pytest.param(Case("read_file", ["notes.txt"],
                      ("arguments for read_file must be a JSON object",)),
                 id="arguments-are-a-list"),
    pytest.param(Case("read_file", None, ("arguments for read_file must be a JSON object",)),
                 id="arguments-are-null"),
    pytest.param(Case("run_shell", {"cmd": "ls"},
                      ("unknown tool 'run_shell'; available tools: read_file, write_file",)),
                 id="unknown-tool"),
    pytest.param(Case("profile_tool", {"path": "notes.txt"},
                      ("unknown tool 'profile_tool'; available tools: read_file, write_file, "
                       "python_expression",),
                      allowed=("read_file", "write_file", "python_expression")),
                 id="tool-not-allowed"),
    # -- write_file: outside the run directory, or not a file
    pytest.param(Case("write_file", {"path": "../escape.py", "content": "x"},
                      ("cannot write '../escape.py'", _WRITE_DENIED)),
                 id="write-dotdot-escape"),
    pytest.param(Case("write_file", {"path": "/tmp/x.py", "content": "x"},
                      ("cannot write '/tmp/x.py'", _WRITE_DENIED)),
                 id="write-abs-tmp"),
    pytest.param(Case("write_file", {"path": str(BASELINE), "content": "# pwned\n"},
                      ("cannot write", _WRITE_DENIED)),
                 id="write-abs-baseline"),
    pytest.param(Case("write_file",
                      {"path": "problem_data/slow_ml_training_complex.py", "content": "# pwned\n"},
                      ("cannot write 'problem_data/slow_ml_training_complex.py'",)),
                 id="write-rel-baseline"),
    pytest.param(Case("write_file", {"path": "to_outside.py", "content": "x"},
                      ("cannot write 'to_outside.py'", _WRITE_DENIED)),
                 id="write-through-symlink-outside"),
    pytest.param(Case("write_file", {"path": "big.py", "content": "x" * 1_000_001},
                      ("content is 1000001 bytes; the limit is 1000000",)),
                 id="write-over-1mb"),
    pytest.param(Case("write_file", {"path": "big.py", "content": "é" * 500_001},
                      ("content is 1000002 bytes; the limit is 1000000",)),
                 id="write-over-1mb-in-utf8-bytes"),
    pytest.param(Case("write_file", {"path": ".", "content": "x"},
                      ("cannot write '.'", _WRITE_DENIED)),
                 id="write-workspace-root-dot"),
    pytest.param(Case("write_file", lambda ws: {"path": str(ws), "content": "x"},
                      ("cannot write", _WRITE_DENIED)),
                 id="write-workspace-root-abs"),
    pytest.param(Case("write_file", {"path": "sub", "content": "x"}, ("sub is a directory",)),
                 id="write-onto-directory"),
    pytest.param(Case("write_file", {"path": "", "content": "x"},
                      ("the path is empty or contains a NUL byte",)),
                 id="write-empty-path"),
    pytest.param(Case("write_file", {"path": "notes.txt/x.py", "content": "x"},
                      ("notes.txt",)),
                 id="write-under-a-file"),
    pytest.param(Case("write_file", {"path": "a" * 300 + ".py", "content": "x"},
                      ("too long",)),
                 id="write-name-too-long"),
    pytest.param(Case("read_file", {"path": "a" * 300 + ".py"}, ("cannot read",)),
                 id="read-name-too-long"),
    pytest.param(Case("read_file", {"path": "loop"}, ("cannot read 'loop'",)),
                 id="read-symlink-loop"),
    # -- python_expression: misbehaving code
    pytest.param(Case("python_expression", {"code": "while True: pass"},
                      ("the code timed out after 5 s and was killed",), max_seconds=9),
                 id="python-infinite-loop"),
    pytest.param(Case("python_expression", {"code": "def f():\n    raise ValueError('boom')\nf()"},
                      ("the code exited with status 1.", "stderr:",
                       "Traceback (most recent call last):", "ValueError: boom")),
                 id="python-raises"),
    pytest.param(Case("python_expression", {"code": "import sys; sys.exit(3)"},
                      ("the code exited with status 3.", "(no output)")),
                 id="python-exit-status-3"),
    pytest.param(Case("python_expression", {"code": "x = bytearray(8*1024**3)"},
                      ("the code ran out of memory (the memory limit was reached)",
                       "MemoryError")),
                 id="python-memory-blowup"),
    pytest.param(Case("python_expression", {"code": _FORK_TREE},
                      ("stdout:",), error=False),
                 id="python-fork-tree"),
    pytest.param(Case("python_expression", {"code": _ORPHAN},
                      ("parent done",), error=False, max_seconds=3),
                 id="python-fork-orphan-sleeper"),
    pytest.param(Case("python_expression", {"code": "print('x'*50_000_000)"},
                      ("bytes of output truncated", "(output was truncated)"),
                      error=False, max_len=20_000),
                 id="python-output-flood"),
    pytest.param(Case("python_expression", {"code": "import os; print(os.environ)"},
                      ("environ({",), error=False,
                      absent=("ANTHROPIC_API_KEY", "[REDACTED]", "sk-ant")),
                 id="python-print-environ"),
    pytest.param(Case("python_expression", {"code": "print(open('/proc/self/environ').read())"},
                      ("stdout:",), error=False,
                      absent=("ANTHROPIC_API_KEY", "[REDACTED]", "sk-ant")),
                 id="python-proc-self-environ"),
    pytest.param(Case("python_expression", {"code": _SCAN_PROC},
                      ("scanned True hits []",), error=False, absent=("[REDACTED]",)),
                 id="python-scan-proc-environ"),
    pytest.param(Case("python_expression",
                      {"code": "print('sk-ant-test-' + 'SECRET-123456')"},
                      ("stdout:\n[REDACTED]",), error=False),
                 id="python-prints-secret-is-redacted"),
    pytest.param(Case("python_expression", {"code": f"open({str(BASELINE)!r}, 'a').write('#x')"},
                      ("the code exited with status 1.", "[Errno")),
                 marks=needs_isolation,
                 id="python-append-to-baseline"),
    pytest.param(Case("python_expression",
                      {"code": f"open({str(sandbox.PROJECT_ROOT / 'main.py')!r}).read()"},
                      ("FileNotFoundError",)),
                 marks=needs_isolation,
                 id="python-harness-invisible"),
    pytest.param(Case("python_expression",
                      {"code": "import socket; socket.create_connection(('1.1.1.1', 80), 2)"},
                      ("the code exited with status 1.", "OSError")),
                 marks=needs_isolation,
                 id="python-no-network"),
    # -- profile_tool and submissions
    pytest.param(Case("profile_tool", {"path": "notes.txt"}, ("notes.txt is not a .py file",)),
                 id="profile-non-py"),
    pytest.param(Case("profile_tool", {"path": "missing.py"},
                      ("cannot read 'missing.py'", _READ_DENIED)),
                 id="profile-missing-file"),
    pytest.param(Case("profile_tool", {"path": "to_main.py"},
                      ("cannot read 'to_main.py'", _READ_DENIED)),
                 id="profile-symlink-to-harness"),
    pytest.param(Case("submit_answer", {"path": "notes.txt"}, ("notes.txt is not a .py file",)),
                 id="submit-non-py"),
    pytest.param(Case("submit_intermediate_answer", {"path": "/etc/passwd"},
                      ("cannot read '/etc/passwd'",)),
                 id="submit-intermediate-outside"),
]


@pytest.mark.parametrize("case", BAD_INPUTS)
async def test_bad_input(case: Case, ctx: RunContext, tmp_path: Path, baseline_bytes: bytes):
    args = case.args(ctx.workspace) if callable(case.args) else case.args
    allowed = list(case.allowed) if case.allowed is not None else ALL_TOOLS
    started = time.monotonic()
    outcome = await tools.dispatch(case.tool, args, allowed)
    elapsed = time.monotonic() - started

    assert outcome.is_error is case.error, outcome.content
    for text in case.expect:
        assert text in outcome.content, outcome.content[:2000]
    for text in (*case.absent, SECRET):
        assert text not in outcome.content, outcome.content[:2000]
    if case.max_len is not None:
        assert len(outcome.content) < case.max_len
    assert elapsed < case.max_seconds
    # Nothing any of these did may touch the baseline or escape the run directory.
    assert BASELINE.read_bytes() == baseline_bytes
    assert ctx.tampering == []
    assert not (tmp_path / "outside.py").exists()
    assert not (tmp_path / "escape.py").exists()
    assert ctx.problem.calls == [] and ctx.submitted is None and ctx.intermediate == []


async def test_fork_tree_runs_all_eight_processes(ctx):
    """The sandbox does not forbid fork: 2**3 processes each print once, status 0."""
    outcome = await tools.dispatch("python_expression", {"code": _FORK_TREE}, ALL_TOOLS)
    assert not outcome.is_error
    assert outcome.content.count("proc") == 8


async def test_write_to_fifo_does_not_block(ctx):
    """A FIFO the agent made (e.g. os.mkfifo in python_expression) must not hang the loop."""
    fifo = ctx.workspace / "pipe.py"
    os.mkfifo(fifo)

    def unblock() -> None:  # open the read end so a blocked writer can finish
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        time.sleep(0.5)
        try:
            os.read(fd, 1 << 16)
        except BlockingIOError:
            pass
        os.close(fd)

    watchdog = threading.Timer(2.0, unblock)
    watchdog.start()
    started = time.monotonic()
    try:
        outcome = await tools.dispatch("write_file", {"path": "pipe.py", "content": "x"},
                                       ALL_TOOLS)
    finally:
        watchdog.cancel()
        watchdog.join()
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, "write_file blocked the event loop on a FIFO"
    assert outcome.is_error


async def test_problem_data_path_is_not_shadowed_by_run_directory(ctx, baseline_bytes):
    """read_file('problem_data/...') is documented to mean the project file."""
    shadow = ctx.workspace / "problem_data" / BASELINE.name
    shadow.parent.mkdir()
    shadow.write_text("# my own version\n")
    outcome = await tools.dispatch("read_file", {"path": f"problem_data/{BASELINE.name}"},
                                   ALL_TOOLS)
    assert outcome.content == baseline_bytes.decode()


# ---- 3. good paths ---------------------------------------------------------------------
async def test_write_then_read_back(ctx):
    content = "def f():\n    return 'é'\n"
    outcome = await tools.dispatch("write_file", {"path": "pkg/mod.py", "content": content},
                                   ALL_TOOLS)
    assert not outcome.is_error
    size = len(content.encode())
    assert outcome.content == f"wrote {size} bytes to {ctx.workspace / 'pkg' / 'mod.py'}"
    assert (ctx.workspace / "pkg" / "mod.py").read_text() == content
    back = await tools.dispatch("read_file", {"path": "pkg/mod.py"}, ALL_TOOLS)
    assert back.is_error is False and back.content == content
    by_abs = await tools.dispatch("read_file", {"path": str(ctx.workspace / "pkg/mod.py")},
                                  ALL_TOOLS)
    assert by_abs.content == content
    # overwriting replaces the whole file
    await tools.dispatch("write_file", {"path": "pkg/mod.py", "content": "x = 1\n"}, ALL_TOOLS)
    assert (await tools.dispatch("read_file", {"path": "pkg/mod.py"}, ALL_TOOLS)).content == (
        "x = 1\n")


async def test_exactly_1mb_is_accepted(ctx):
    outcome = await tools.dispatch(
        "write_file", {"path": "big.txt", "content": "x" * workspace.MAX_WRITE_BYTES},
        ALL_TOOLS)
    assert not outcome.is_error
    read = await tools.dispatch("read_file", {"path": "big.txt"}, ALL_TOOLS)
    assert not read.is_error
    assert read.content.startswith("x" * tools.MAX_READ_CHARS)
    assert read.content.endswith(
        f"[... truncated: showing {tools.MAX_READ_CHARS} of {workspace.MAX_WRITE_BYTES} "
        "characters]")


async def test_read_baseline_by_project_root_path(ctx, baseline_bytes):
    outcome = await tools.dispatch(
        "read_file", {"path": "problem_data/slow_ml_training_complex.py"}, ALL_TOOLS)
    assert not outcome.is_error
    assert outcome.content == baseline_bytes.decode()
    by_abs = await tools.dispatch("read_file", {"path": str(BASELINE)}, ALL_TOOLS)
    assert by_abs.content == baseline_bytes.decode()


def test_run_dir_from_project_root_form_resolves_into_workspace(tmp_path):
    """With the workspace under the checkout, output/<batch>/run_1/x.py means the run dir.

    Only path arithmetic: nothing is created in the checkout.
    """
    ws = sandbox.PROJECT_ROOT / "output" / f"pytest-{uuid.uuid4().hex}" / "run_1"
    writable = functools.partial(workspace.resolve_writable, ws, StubProblem.data_dir)
    rel = ws.relative_to(sandbox.PROJECT_ROOT)
    assert writable(f"{rel}/x.py").path == ws / "x.py"
    assert writable("x.py").path == ws / "x.py"
    assert writable(str(ws / "d" / "x.py")).path == ws / "d" / "x.py"
    with pytest.raises(tools.ToolError, match="cannot write"):
        writable(f"{rel}/../run_2/x.py")
    with pytest.raises(tools.ToolError, match="cannot write"):
        writable(str(rel))
    assert not ws.parent.exists()


async def test_python_expression_prints(ctx):
    outcome = await tools.dispatch(
        "python_expression", {"code": "import os, sys\nprint(6 * 7)\nprint(os.getcwd())\n"
                                      "print('to stderr', file=sys.stderr)"}, ALL_TOOLS)
    assert not outcome.is_error
    assert outcome.content == f"stdout:\n42\n{ctx.workspace}\n\nstderr:\nto stderr\n"


async def test_python_expression_no_output(ctx):
    outcome = await tools.dispatch("python_expression", {"code": "x = 1"}, ALL_TOOLS)
    assert outcome.is_error is False and outcome.content == "(no output)"


async def test_python_expression_sees_workspace_files(ctx):
    outcome = await tools.dispatch(
        "python_expression", {"code": "print(open('notes.txt').read())"}, ALL_TOOLS)
    assert not outcome.is_error and "hello notes" in outcome.content


async def test_python_expression_reads_problem_data(ctx, baseline_bytes):
    code = f"print(len(open({str(BASELINE)!r}, 'rb').read()))"
    outcome = await tools.dispatch("python_expression", {"code": code}, ALL_TOOLS)
    assert not outcome.is_error
    assert outcome.content == f"stdout:\n{len(baseline_bytes)}\n"


SMALL_SCRIPT = ("def work(n):\n    return sum(i * i for i in range(n))\n\n"
                "if __name__ == '__main__':\n    print('result', work(3_000_000))\n")


async def test_profile_tool_samples_with_py_spy(ctx):
    assert profiler.py_spy() is not None, "py-spy is a dependency of the project"
    await tools.dispatch("write_file", {"path": "small.py", "content": SMALL_SCRIPT}, ALL_TOOLS)
    outcome = await tools.dispatch("profile_tool", {"path": "small.py"}, ALL_TOOLS)
    assert not outcome.is_error, outcome.content
    raw = ctx.workspace / "profiles" / "small-1.txt"
    svg = ctx.workspace / "profiles" / "small-1.svg"
    assert outcome.content.startswith(f"profile saved to {raw} (flame graph: {svg})\n")
    assert "=== top 15 frames by own samples (where the time is spent) ===" in outcome.content
    assert "=== top 15 frames by total samples" in outcome.content
    assert "work (small.py:2)" in outcome.content  # the hot function, by file and line
    assert f"result {sum(i * i for i in range(3_000_000))}" in outcome.content
    stacks = profiler.parse_stacks(raw.read_text())
    assert sum(stacks.values()) >= 1
    assert svg.read_text().startswith("<svg") and "work (small.py:2)" in svg.read_text()
    assert ctx.profiles == 1


async def test_profile_tool_falls_back_to_cprofile_and_says_so(ctx, monkeypatch):
    monkeypatch.setattr(profiler, "py_spy", lambda: None)
    await tools.dispatch("write_file", {"path": "small.py", "content": SMALL_SCRIPT}, ALL_TOOLS)
    outcome = await tools.dispatch("profile_tool", {"path": "small.py"}, ALL_TOOLS)
    assert not outcome.is_error, outcome.content
    prof = ctx.workspace / "profiles" / "small-1.prof"
    assert outcome.content.startswith("(py-spy is not installed: a cProfile profile)\n"
                                      f"profile saved to {prof}\n")
    assert "=== top 15 functions by cumulative time ===" in outcome.content
    assert "=== top 15 functions by own time ===" in outcome.content
    assert "work" in outcome.content
    assert prof.is_file() and prof.stat().st_size > 0


@pytest.mark.parametrize("spy", [True, False], ids=["py-spy", "cprofile"])
async def test_profile_tool_reports_a_failing_script(ctx, monkeypatch, spy):
    if not spy:
        monkeypatch.setattr(profiler, "py_spy", lambda: None)
    await tools.dispatch("write_file", {"path": "bad.py", "content": "raise KeyError('k')\n"},
                         ALL_TOOLS)
    outcome = await tools.dispatch("profile_tool", {"path": "bad.py"}, ALL_TOOLS)
    assert outcome.is_error
    assert outcome.content.startswith("profiling bad.py: the program exited with status 1.")
    assert "KeyError: 'k'" in outcome.content


def test_profile_output_is_read_as_untrusted(tmp_path):
    """The profiled script runs in the same sandbox as py-spy and may plant a link or a
    FIFO where the profile goes: the harness neither follows nor blocks on it."""
    link = tmp_path / "link.txt"
    link.symlink_to("/etc/passwd")
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    (tmp_path / "dir").symlink_to(tmp_path)  # a link among the parents, too
    for rel in ("link.txt", "fifo.txt", "missing.txt", "dir/link.txt"):
        assert profiler.read_stacks(tmp_path, rel) == {}


def test_parse_stacks_skips_malformed_lines_and_the_svg_escapes_names():
    text = ("a (x.py:1);b (x.py:2) 5\n"
            "garbage line\n"
            "a (x.py:1) 3\n"
            ";;; 2\n"
            "<script>alert(1)</script> 4\n"
            "a (x.py:1);b (x.py:2) notanumber\n")
    stacks = profiler.parse_stacks(text)
    assert stacks[("a (x.py:1)", "b (x.py:2)")] == 5 and stacks[("a (x.py:1)",)] == 3
    report = profiler.stacks_report(stacks)
    assert report.splitlines()[0].startswith("14 samples")
    own = report.split("=== top 15 frames by total")[0]
    assert "35.7%  b (x.py:2)" in own  # 5 of 14 samples end in b
    svg = profiler.flame_graph_svg(stacks)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert profiler.stacks_report(profiler.parse_stacks("")).startswith("(no samples")


async def test_submit_intermediate_answer_grades_and_records(ctx):
    await tools.dispatch("write_file", {"path": "fast.py", "content": "print(1)\n"}, ALL_TOOLS)
    outcome = await tools.dispatch("submit_intermediate_answer", {"path": "fast.py"}, ALL_TOOLS)
    assert not outcome.is_error
    stub: StubProblem = ctx.problem  # type: ignore[assignment]
    assert outcome.content == stub.result.agent_summary()
    assert outcome.content.startswith("NOT PASSED\nspeedup: 1.20x (target 2.0x)")
    assert "FAILED speed: 1.20x < 2.0x" in outcome.content
    # The grader gets a copy of its own, never the agent's path.
    assert [p.name for p in stub.calls] == ["fast.py"]
    assert not stub.calls[0].is_relative_to(ctx.workspace)
    assert len(ctx.intermediate) == 1
    record = ctx.intermediate[0]
    assert record["path"] == str(ctx.workspace / "fast.py")
    assert (record["passed"], record["speedup"], record["accuracy"]) == (False, 1.2, 0.9)
    assert (record["reason"], record["failed_checks"]) == ("speed: 1.20x < 2.0x", ["speed"])
    assert record["seconds"] >= 0
    assert ctx.submitted is None


async def test_submit_answer_sets_submitted(ctx):
    await tools.dispatch("write_file", {"path": "fast.py", "content": "print(1)\n"}, ALL_TOOLS)
    outcome = await tools.dispatch("submit_answer", {"path": "fast.py"}, ALL_TOOLS)
    assert not outcome.is_error
    assert outcome.content == (f"submitted {ctx.workspace / 'fast.py'}; "
                               "it will be graded after the task ends")
    assert ctx.submitted == workspace.Candidate(ctx.workspace / "fast.py", b"print(1)\n")
    assert ctx.problem.calls == []  # graded later, not now


# ---- 4. integrity ----------------------------------------------------------------------
async def test_tampering_is_reverted_and_recorded(ctx, baseline_bytes):
    try:
        with BASELINE.open("ab") as f:
            f.write(b"\n# tampered\n")
        outcome = await tools.dispatch("read_file", {"path": "notes.txt"}, ALL_TOOLS)
        assert BASELINE.read_bytes() == baseline_bytes
    finally:
        BASELINE.write_bytes(baseline_bytes)
    assert not outcome.is_error
    assert outcome.content == ("hello notes\n\n(note: problem_data/ is read-only; changes to "
                               "slow_ml_training_complex.py were reverted)")
    assert ctx.tampering == [{"tool": "read_file", "files": ["slow_ml_training_complex.py"]}]


async def test_added_and_deleted_files_in_problem_data_are_reverted(ctx, baseline_bytes):
    extra = PROBLEM_DATA / f"pytest-extra-{uuid.uuid4().hex}.py"
    try:
        extra.write_text("x = 1\n")
        BASELINE.unlink()
        outcome = await tools.dispatch("read_file", {"path": "missing.py"}, ALL_TOOLS)
        assert not extra.exists()
        assert BASELINE.read_bytes() == baseline_bytes
    finally:
        extra.unlink(missing_ok=True)
        BASELINE.write_bytes(baseline_bytes)
    assert outcome.is_error  # the call's own outcome is kept
    assert "cannot read 'missing.py'" in outcome.content
    assert "were reverted" in outcome.content
    assert ctx.tampering == [{"tool": "read_file",
                              "files": sorted([extra.name, BASELINE.name])}]


async def test_clean_call_records_no_tampering(ctx):
    outcome = await tools.dispatch("read_file", {"path": "notes.txt"}, ALL_TOOLS)
    assert outcome.content == "hello notes\n"
    assert ctx.tampering == []


# ---- 5. concurrency --------------------------------------------------------------------
async def test_concurrent_python_calls_do_not_block_the_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    runs = [make_context(tmp_path / "run_a"), make_context(tmp_path / "run_b")]
    code = "import os, time; time.sleep(2); print('cwd', os.getcwd())"

    async def call_in(run: RunContext) -> tools.ToolOutcome:
        tools.RUN.set(run)  # this task's own copy of the context
        return await tools.dispatch("python_expression", {"code": code}, ALL_TOOLS)

    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    tick_task = asyncio.create_task(ticker())
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(asyncio.create_task(call_in(r), context=contextvars.copy_context()) for r in runs))
    elapsed = time.monotonic() - started
    stop.set()
    await tick_task

    assert elapsed < 3.5, f"calls ran one after the other ({elapsed:.1f} s)"
    for run, outcome in zip(runs, outcomes, strict=True):
        assert not outcome.is_error, outcome.content
        assert outcome.content == f"stdout:\ncwd {run.workspace}\n"
    assert len(ticks) >= 25, f"only {len(ticks)} ticks in {elapsed:.1f} s"
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"
    with pytest.raises(LookupError):
        tools.RUN.get()  # the tasks' contexts did not leak into ours


# ---- 6. secrets ------------------------------------------------------------------------
def test_redact_replaces_every_occurrence():
    text = f"key={SECRET}; again {SECRET}; other=tok-abcdefgh-99"
    assert tools.redact(text, (SECRET, "tok-abcdefgh-99")) == (
        "key=[REDACTED]; again [REDACTED]; other=[REDACTED]")
    assert tools.redact(text, ()) == text
    assert tools.redact("nothing here", (SECRET,)) == "nothing here"


@pytest.mark.parametrize("disguise", [
    lambda s: s[::-1], lambda s: s.encode().hex(), lambda s: s.encode().hex().upper(),
    lambda s: __import__("base64").b64encode(s.encode()).decode()],
    ids=["reversed", "hex", "HEX", "base64"])
def test_redact_catches_the_usual_disguises(disguise):
    assert disguise(SECRET) not in tools.redact(f"leak: {disguise(SECRET)}", (SECRET,))


def test_redact_handles_overlapping_secrets():
    assert tools.redact("abcdefgh-LONGER-TAIL", ("abcdefgh", "abcdefgh-LONGER-TAIL")) == (
        "[REDACTED]")


def test_secrets_from_environment(monkeypatch):
    for key in list(os.environ):
        if any(m in key.upper() for m in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    monkeypatch.setenv("db_password", "hunter2hunter2")
    monkeypatch.setenv("SHORT_API_KEY", "1234567")  # under 8 characters: ignored
    monkeypatch.setenv("HARMLESS", "not-a-secret-value")
    found = tools.secrets_from_environment()
    assert set(found) == {SECRET, "sk-openai-0123456789", "hf_abcdefghijkl", "hunter2hunter2"}


def test_child_environment_drops_keys(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    env = sandbox.child_environment(1, "/h", "/t")
    assert SECRET not in env.values() and "ANTHROPIC_API_KEY" not in env
    assert env["HOME"] == "/h" and env["TMPDIR"] == "/t" and env["OMP_NUM_THREADS"] == "1"


async def test_the_unchanged_task_file_is_profiled_once_and_shared(tmp_path, monkeypatch):
    """Every run that profiles the task's own (read-only) file gets one shared profile,
    measured once per machine, even when they ask at the same time; a file of the run's
    own is profiled afresh each time."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "slow.py").write_text(SMALL_SCRIPT)

    class DataProblem(StubProblem):
        data_dir = data

    monkeypatch.setenv("HELLO_PY_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = profiler.profile

    async def counted(job: profiler.Job, *args: Any, **kwargs: Any) -> str:
        calls.append(job.script)
        return await real(job, *args, **kwargs)

    monkeypatch.setattr(profiler, "profile", counted)

    async def profile_in(run: str, path: str) -> tuple[RunContext, tools.ToolOutcome]:
        ws = tmp_path / run
        ws.mkdir()
        ctx = RunContext(workspace=ws, problem=DataProblem(), guard=DataGuard(data),
                         settings=ToolSettings(python_timeout=30))
        tools.RUN.set(ctx)
        return ctx, await tools.dispatch("profile_tool", {"path": path}, ALL_TOOLS)

    (first, a), (second, b) = await asyncio.gather(profile_in("run_1", str(data / "slow.py")),
                                                   profile_in("run_2", str(data / "slow.py")))
    assert len(calls) == 1 and not a.is_error and not b.is_error, (a.content, b.content)
    shared, fresh = (b, a) if b.content.startswith("(the shared") else (a, b)
    assert shared.content.startswith("(the shared profile of this unchanged file")
    assert not fresh.content.startswith("(the shared")
    for ctx, outcome in ((first, a), (second, b)):
        raw = ctx.workspace / "profiles" / "slow-1.txt"
        assert raw.is_file() and (ctx.workspace / "profiles" / "slow-1.svg").is_file()
        assert f"profile saved to {raw}" in outcome.content  # its own copy, named as such
        assert "work (slow.py:2)" in outcome.content
    (_, c) = await profile_in("run_3", str(data / "slow.py"))
    assert len(calls) == 1 and c.content.startswith("(the shared")  # from the cache on disk
    ws = tmp_path / "run_3"
    (ws / "mine.py").write_text(SMALL_SCRIPT)
    await tools.dispatch("profile_tool", {"path": "mine.py"}, ALL_TOOLS)
    await tools.dispatch("profile_tool", {"path": "mine.py"}, ALL_TOOLS)
    assert len(calls) == 3  # the run's own file: every time


async def test_what_one_run_plants_never_reaches_another_through_the_shared_profile(
        tmp_path, monkeypatch):
    # The shared profile is measured in a clean room of the harness's: a module planted in
    # the run directory (the task file imports it from its working directory) and a file
    # planted at a profile's name stay in the run that planted them.
    data = tmp_path / "data"
    data.mkdir()
    (data / "slow.py").write_text("import statistics\n" + SMALL_SCRIPT)

    class DataProblem(StubProblem):
        data_dir = data

    monkeypatch.setenv("HELLO_PY_CACHE_DIR", str(tmp_path / "cache"))

    async def profile_in(run: str, plant: bool) -> tools.ToolOutcome:
        ws = tmp_path / run
        (ws / "profiles").mkdir(parents=True)
        if plant:
            (ws / "statistics.py").write_text("print('INJECTED by run_1')\n")
            (ws / "profiles" / "slow-1.prof").write_text("PLANTED by run_1\n")
        tools.RUN.set(RunContext(workspace=ws, problem=DataProblem(), guard=DataGuard(data),
                                 settings=ToolSettings(python_timeout=30)))
        return await tools.dispatch("profile_tool", {"path": str(data / "slow.py")},
                                    ALL_TOOLS)

    first = await profile_in("run_1", plant=True)
    second = await profile_in("run_2", plant=False)
    assert not first.is_error and not second.is_error, (first.content, second.content)
    assert second.content.startswith("(the shared profile")
    for outcome in (first, second):
        assert "INJECTED" not in outcome.content, outcome.content
    assert not (tmp_path / "run_2" / "profiles" / "slow-1.prof").exists()
    assert "work (slow.py:3)" in second.content


# ---- 7. the console while a tool runs, and nothing left behind ---------------------------
NEVER_RETRIEVED = "never retrieved"


def _my_cgroups() -> list[Path]:
    return [p for parent in sandbox._cgroup_parents() for p in parent.glob(f"{os.getpid()}-*")]


async def _nothing_left_unretrieved(caplog) -> None:
    # asyncio reports an unretrieved exception when the future is collected
    import gc

    await asyncio.sleep(0.1)
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if NEVER_RETRIEVED in r.getMessage()]


async def test_python_expression_past_its_timeout_leaves_nothing_unretrieved(ctx, caplog):
    # The fake API's hostile scenario once printed asyncio's "exception was never
    # retrieved" traceback on the console here: the sandbox's wait left a future behind.
    caplog.set_level(logging.ERROR, logger="asyncio")
    ctx.settings.python_timeout = 1.5
    outcome = await tools.dispatch(
        "python_expression", {"code": "print('up', flush=True)\nimport time\ntime.sleep(60)"},
        ALL_TOOLS)
    assert outcome.is_error and "timed out after" in outcome.content
    await _nothing_left_unretrieved(caplog)
    assert _my_cgroups() == []


async def test_python_expression_cancelled_mid_run_leaves_nothing_behind(ctx, caplog):
    # Ctrl-C mid-batch cancels every run's task, whatever its tool is doing.
    caplog.set_level(logging.ERROR, logger="asyncio")
    call = asyncio.ensure_future(tools.dispatch(
        "python_expression", {"code": "import time\ntime.sleep(60)"}, ALL_TOOLS))
    await asyncio.sleep(1.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _nothing_left_unretrieved(caplog)
    assert _my_cgroups() == [] and not sandbox._running


async def test_a_long_python_expression_has_a_heartbeat(ctx, monkeypatch):
    said: list[str] = []
    ctx.progress = said.append
    monkeypatch.setattr(sandbox, "HEARTBEAT_SECONDS", 0.4)
    outcome = await tools.dispatch(
        "python_expression", {"code": "import time\ntime.sleep(1.5)"}, ALL_TOOLS)
    assert not outcome.is_error, outcome.content
    await asyncio.sleep(0.5)  # and nothing once it has ended
    assert 1 <= len(said) <= 4, said
    assert all(m.startswith("python_expression running (") and m.endswith(" s so far)")
               for m in said)


async def test_a_short_python_expression_says_nothing(ctx):
    said: list[str] = []
    ctx.progress = said.append
    await tools.dispatch("python_expression", {"code": "print(1)"}, ALL_TOOLS)
    assert said == []


def test_the_heartbeat_keeps_the_console_readable():
    # One line per long execution every 20-30 s: a 2-minute execution says so four
    # times, ten concurrent runs still leave the console legible.
    assert 20 <= sandbox.HEARTBEAT_SECONDS <= 30


async def test_an_intermediate_gradings_lines_and_result_are_marked(ctx):
    # On the console an intermediate grading once looked like the final one.
    said: list[str] = []
    ctx.progress = said.append
    stub: StubProblem = ctx.problem  # type: ignore[assignment]

    async def grade(candidate: Path, progress=None, **options: Any) -> GradeResult:
        progress(f"grading {candidate.name}: timed execution 1/1: 0.500 s")
        return stub.result

    stub.grade = grade  # type: ignore[method-assign]
    await tools.dispatch("write_file", {"path": "fast.py", "content": "print(1)\n"}, ALL_TOOLS)
    await tools.dispatch("submit_intermediate_answer", {"path": "fast.py"}, ALL_TOOLS)
    assert said == ["intermediate: grading fast.py: timed execution 1/1: 0.500 s",
                    "intermediate: fail 1.2x (speed: 1.20x < 2.0x)"]


async def test_an_intermediate_grading_that_failed_says_so_in_one_marked_line(ctx):
    said: list[str] = []
    ctx.progress = said.append

    async def grade(candidate: Path, **options: Any) -> GradeResult:
        raise RuntimeError("the grader's bug")

    ctx.problem.grade = grade  # type: ignore[method-assign]
    await tools.dispatch("write_file", {"path": "fast.py", "content": "print(1)\n"}, ALL_TOOLS)
    outcome = await tools.dispatch("submit_intermediate_answer", {"path": "fast.py"},
                                   ALL_TOOLS)
    assert outcome.is_error
    assert said == ["intermediate: error: the grader failed (RuntimeError); the run goes on"]


async def test_each_timed_execution_of_a_grading_has_a_heartbeat(monkeypatch, tmp_path):
    # A candidate's timed execution (beside its strict-tier run) once kept the console
    # silent for 90 s.  The executions are stand-ins here: only what is said is checked.
    from problems.ml_training import evidence, ladder, session
    from problems.ml_training.declarations.complex_pipeline import complex_spec
    from problems.ml_training.fresh_inputs import make_dataset
    from problems.ml_training.spec import GradingOptions
    from problems.ml_training.timing.cache import CachedMeasurement
    from problems.ml_training.timing.executor import Execution

    class Pairs:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.subject: list[Execution] = []

        async def step(self, data: Any, probes: Any = None) -> Execution:
            await asyncio.sleep(0.5)
            self.subject.append(Execution(ok=True, error="", time=1.0, stdout="",
                                          stderr_tail="", wall_time=1.0))
            return self.subject[-1]

        async def close(self, data: Any) -> None:
            pass

        def units(self, clock: str = "wall") -> list[float]:
            return []

        def anchor_times(self, clock: str = "wall") -> list[list[float]]:
            return []

        def complete_on(self, clock: str) -> bool:
            return False

        def contention(self) -> dict:
            return {}

    class NoSandbox:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def __aenter__(self) -> NoSandbox:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

    async def no_evidence(*args: Any, **kwargs: Any) -> dict:
        return {}

    monkeypatch.setattr(session, "SideBySide", Pairs)
    monkeypatch.setattr(session, "Executor", NoSandbox)
    monkeypatch.setattr(session, "answers_from", lambda pairs, datasets: {})
    monkeypatch.setattr(evidence, "training_basis", no_evidence)
    monkeypatch.setattr(sandbox, "HEARTBEAT_SECONDS", 0.2)
    spec = complex_spec(BASELINE, 50)
    opts = GradingOptions(repeats=2, min_timed_seconds=0).resolved(spec)
    fig = ladder.Figures(CachedMeasurement(times=[100.0] * 3, accuracy=0.3), 400.0, 2.0,
                         1200.0)
    said: list[str] = []
    await session.run(spec, opts, tmp_path / "fast.py", fig,
                      [make_dataset(1, 50), make_dataset(2, 50)], said.append)
    for k in (1, 2):
        beats = [m for m in said if m.startswith(f"grading fast.py: timed execution {k}/2 "
                                                 "running (")]
        assert 1 <= len(beats) <= 3, said
        assert f"grading fast.py: timed execution {k}/2: 1.000 s" in said
