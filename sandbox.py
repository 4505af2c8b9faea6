"""Run untrusted Python (agent code, profiled code, graded candidates) in a child process.

Everything the harness executes on an agent's behalf goes through :func:`run_python`:
an asyncio subprocess of ``sys.executable`` with

- an environment built from an allow-list (no API keys, no harness variables), a fresh
  ``HOME`` and ``TMPDIR``, and a fixed thread count;
- resource limits (address space, file size, core dumps) and a wall-clock timeout after
  which the whole process tree is killed;
- captured, truncated output (head and tail kept);
- where the harness runs as root and ``unshare`` exists (as on this project's machines):
  its own PID, mount and network namespaces.  The child then sees no harness process
  (so not the harness's environment through ``/proc``), no network, a fresh ``/tmp``,
  and of the project only what the caller makes visible: the interpreter, the read-only
  paths it names (``problem_data/``) and its own working directory.

It knows nothing about agents or grading; callers decide what is visible and how long
things may take.  ``on_line`` lets a caller timestamp output lines as they arrive,
which is how the grader owns the clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2
PROJECT_ROOT = Path(__file__).resolve().parent

# Variables a child may inherit from the harness.  Everything else (API keys included)
# is dropped.  The OpenBLAS pair fixes wrong results on some CPUs here, so it is kept.
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_STAGE_CANDIDATES = ("/mnt", "/media", "/srv", "/opt")
_MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "can't allocate memory",
                 "Cannot allocate memory")
_LINE_CAP = 65536  # longest stdout line handed to on_line


@dataclass(frozen=True)
class Limits:
    """How much a child may use.  ``max_output`` is characters kept per stream."""

    timeout: float = 60.0
    memory_bytes: int = 6 * GIB
    file_size_bytes: int = 64 * MIB
    max_output: int = 20_000


@dataclass(frozen=True)
class Visibility:
    """What of the file system a child sees (enforced only under namespace isolation)."""

    workdir: Path
    read_only: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()


@dataclass
class ProcessResult:
    returncode: int | None
    stdout: str
    stderr: str
    wall_time: float
    timed_out: bool = False
    output_truncated: bool = False
    memory_error: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> str:
        """One sentence on why the process did not succeed ('' when it did)."""
        if self.timed_out:
            return f"timed out after {self.wall_time:.0f} s and was killed"
        if self.memory_error:
            return "ran out of memory (the memory limit was reached)"
        if self.returncode is not None and self.returncode < 0:
            return f"was killed by signal {-self.returncode}"
        if self.returncode:
            return f"exited with status {self.returncode}"
        return ""


def namespaces_available() -> bool:
    """True when children can get their own PID/mount/network namespaces."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None and sys.platform == "linux"


def child_environment(threads: int, home: str, tmpdir: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: str(threads) for k in _THREAD_VARS})
    env.update(
        HOME=home,
        TMPDIR=tmpdir,
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
    )
    return env


def _limit_resources(limits: Limits) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        size = limits.file_size_bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _stage_dir(hidden: Sequence[Path]) -> str:
    for candidate in _STAGE_CANDIDATES:
        path = Path(candidate)
        if path.is_dir() and not any(path.is_relative_to(h) or h.is_relative_to(path)
                                     for h in hidden):
            return candidate
    raise RuntimeError("no directory to stage bind mounts in")


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another of them: hiding /tmp hides a project in /tmp/x too
    (and /tmp/x no longer exists to mount on once /tmp is covered)."""
    unique = sorted(set(paths), key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def _isolation_script(vis: Visibility) -> str:
    """Shell run inside fresh namespaces: hide paths, re-expose the visible ones."""
    hidden = [Path("/tmp"), PROJECT_ROOT, Path.home(), *vis.hidden]
    keep_ro = [Path(sys.base_prefix), Path(sys.prefix), *vis.read_only]
    keep = [(p.resolve(), True) for p in keep_ro if p.exists()]
    keep.append((vis.workdir.resolve(), False))
    stage = _stage_dir(hidden)
    q = shlex.quote
    lines = ["set -e", f"mount -t tmpfs -o size=1m hp-stage {q(stage)}"]
    for i, (path, _) in enumerate(keep):
        lines += [f"mkdir {q(stage)}/{i}", f"mount --rbind {q(str(path))} {q(stage)}/{i}"]
    for path in _outermost(p.resolve() for p in hidden):
        if path.is_dir():
            lines.append(f"mount -t tmpfs -o size=256m,mode=1777 hp-hidden {q(str(path))}")
    for i, (path, ro) in enumerate(keep):
        lines += [f"mkdir -p {q(str(path))}", f"mount --rbind {q(stage)}/{i} {q(str(path))}"]
        if ro:
            lines.append(f"mount -o remount,bind,ro {q(str(path))}")
    lines += [f"umount -l {q(stage)}", "mkdir -p /tmp/home", f"cd {q(str(vis.workdir))}",
              'exec "$@"']
    return "\n".join(lines)


class _Capture:
    """Keeps the head and tail of a stream, and optionally timestamps whole lines."""

    def __init__(self, limit: int, on_line: Callable[[float, str], None] | None):
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.on_line = on_line
        self.partial = bytearray()

    def feed(self, chunk: bytes, now: float) -> None:
        if self.on_line is not None:
            self.partial += chunk
            *complete, rest = self.partial.split(b"\n")
            for line in complete:
                self.on_line(now, line[:_LINE_CAP].decode("utf-8", "replace"))
            self.partial = bytearray(rest[-_LINE_CAP:])
        half = self.limit // 2
        room = half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > half:
            self.dropped += len(self.tail) - half
            del self.tail[: len(self.tail) - half]

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes of output truncated ...]\n{tail}"
        return head + tail


async def _pump(stream: asyncio.StreamReader, capture: _Capture) -> None:
    while chunk := await stream.read(65536):
        capture.feed(chunk, time.monotonic())


def _kill_tree(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_python(
    args: Sequence[str],
    *,
    visibility: Visibility,
    limits: Limits = Limits(),
    threads: int = 1,
    stdin_data: bytes | None = None,
    on_line: Callable[[float, str], None] | None = None,
    isolate: bool | None = None,
) -> ProcessResult:
    """Run ``python ARGS`` in ``visibility.workdir`` under the limits; never raises for
    anything the child does.  ``on_line(t, line)`` sees each stdout line with the
    monotonic time it arrived."""
    isolate = namespaces_available() if isolate is None else isolate
    python = [sys.executable, "-X", "utf8", *args]
    with tempfile.TemporaryDirectory(prefix="hp-env-") as scratch:
        if isolate:
            env = child_environment(threads, "/tmp/home", "/tmp")
            argv = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--net",
                    "--propagation", "private", "--kill-child", "--",
                    "/bin/sh", "-c", _isolation_script(visibility), "sh", *python]
        else:
            home = os.path.join(scratch, "home")
            os.mkdir(home)
            env = child_environment(threads, home, scratch)
            argv = python
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=visibility.workdir,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_limit_resources(limits),
        )
        out = _Capture(limits.max_output, on_line)
        err = _Capture(limits.max_output, None)
        timed_out = False
        try:
            if stdin_data is not None:
                try:
                    proc.stdin.write(stdin_data)
                    await proc.stdin.drain()
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the child exited before reading its input; its status says why
            pumps = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), proc.wait())
            await asyncio.wait_for(pumps, timeout=limits.timeout)
        except TimeoutError:
            timed_out = True
        finally:
            _kill_tree(proc)
            if proc.returncode is None:
                await proc.wait()
        wall = time.monotonic() - started
    stderr = err.text()
    return ProcessResult(
        returncode=None if timed_out else proc.returncode,
        stdout=out.text(),
        stderr=stderr,
        wall_time=wall,
        timed_out=timed_out,
        output_truncated=bool(out.dropped or err.dropped),
        memory_error=any(sign in stderr[-3000:] for sign in _MEMORY_SIGNS),
    )
