"""Run untrusted Python (agent code, profiled code, graded candidates) in a child process.

Everything the harness executes on an agent's behalf goes through :func:`run_python`.
The operating system does the isolating, never a list of forbidden names:

- **bwrap** (bubblewrap, preferred): fresh PID, IPC, UTS, network and cgroup
  namespaces; ``/`` bound read-only; private fresh ``/tmp``, ``/var/tmp``, ``/dev/shm``
  and ``/run``; a minimal ``/dev``; a new ``/proc`` for the child's own PID namespace;
  the project, the harness's home, the cache and the sibling run directories covered
  by empty file systems, with only the interpreter, the venv and the caller's
  read-only paths (a problem's data directory) bound back, read-only, and the child's own
  directory read-write.
- **unshare** (fallback when bwrap is missing and the harness is root): the same
  namespaces and hiding, built with ``unshare`` and a short mount script.
- **none**: neither is available; only the environment and the limits below apply.
  Callers refuse to grade under it unless the user insists (``--unsafe-no-sandbox``).

When the harness is root, the child then drops to an unprivileged uid that owns
nothing of the harness's (``setpriv``: every capability, the bounding set and
supplementary groups dropped, ``no_new_privs`` set).  With cgroups it is confined to one
CPU (``cpuset``) and a process count (``pids``); otherwise its affinity is set to one CPU.
It always gets an environment built from an allow-list (no API keys), rlimits (address
space, file size, core dumps, no POSIX message queues), a timeout that kills the whole
tree, and truncated output.  :func:`run_python` runs a child to its end;
:func:`start_python` hands back a running one (a warm process that forks executions).

``on_control`` gives the caller a private channel: the child's fd 3 (``CONTROL_FD``) is a
pipe whose lines the harness timestamps on arrival.  The timing runner uses it from a
process that never runs candidate code.  What the child may see is the caller's choice;
this module knows nothing of agents or grading.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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
CONTROL_FD = 3
SANDBOX_UID = 64999  # the unprivileged uid children run as when the harness is root
BACKENDS = ("bwrap", "unshare", "none")

# Variables a child may inherit from the harness.  Everything else (API keys included)
# is dropped.  The OpenBLAS pair fixes wrong results on some CPUs here, so it is kept.
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# World-writable places that every child gets fresh and private.
_PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
_STAGE_CANDIDATES = ("/mnt", "/media", "/srv", "/opt")
MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "can't allocate memory",
                 "Cannot allocate memory")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CHILD_HOME = "/tmp/home"
_LINE_CAP = 1 << 23  # longest control line handed to on_control (8 MiB)


_harness_paths: set[Path] = set()


def hide_from_children(path: Path) -> None:
    """Register a directory of the harness's (a cache, say) that no child may see."""
    _harness_paths.add(Path(path))


@dataclass(frozen=True)
class Limits:
    """How much a child may use.  ``max_output`` is characters kept per stream."""

    timeout: float = 60.0
    memory_bytes: int = 6 * GIB
    file_size_bytes: int = 256 * MIB
    max_output: int = 20_000
    max_processes: int = 256  # tasks (threads count) in the child's cgroup


@dataclass(frozen=True)
class Visibility:
    """What of the file system a child sees (enforced under bwrap and unshare)."""

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
    isolation: str = "none"
    cpu_limit: str = "none"

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


# ---- what this machine offers --------------------------------------------------------------
def _is_root() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0


def available_backends() -> list[str]:
    """The isolation backends this machine supports, strongest first ('none' last)."""
    found = []
    if sys.platform == "linux" and shutil.which("bwrap") and (
            not _is_root() or shutil.which("setpriv")):
        found.append("bwrap")
    if _is_root() and shutil.which("unshare") and shutil.which("setpriv"):
        found.append("unshare")
    return [*found, "none"]


_forced: str | None = os.environ.get("HELLO_PY_ISOLATION") or None


def best_isolation() -> str:
    """The backend children run under: the strongest available, unless forced (tests and
    benchmarks set ``HELLO_PY_ISOLATION`` or call :func:`force_isolation`)."""
    if _forced is not None:
        if _forced not in available_backends():
            raise RuntimeError(f"isolation {_forced!r} is not available on this machine "
                               f"(available: {', '.join(available_backends())})")
        return _forced
    return available_backends()[0]


def force_isolation(backend: str | None) -> None:
    global _forced
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown isolation {backend!r}; one of {', '.join(BACKENDS)}")
    _forced = backend


def child_environment(threads: int, home: str, tmpdir: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: str(threads) for k in _THREAD_VARS})
    env.update(
        HOME=home,
        TMPDIR=tmpdir,
        USER="sandbox",  # the sandbox uid has no passwd entry; getpass reads these first
        LOGNAME="sandbox",
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
    )
    return env


# ---- one CPU and a process count per child ----------------------------------------------
_cgroup_ids = itertools.count()


class _Cgroup:
    """A child's own cgroup (v1 or v2): one CPU and at most ``max_processes`` tasks.

    Created before the child starts; the child joins it before it executes anything, so
    no thread it ever starts runs outside it.  ``kill()`` ends every task in it."""

    def __init__(self, cpu: int, max_processes: int):
        self.dirs: list[Path] = []
        self._usage: Path | None = None  # the CPU time its tasks have used
        self._usage_scale = 1e-9
        name = f"hello-py/{os.getpid()}-{next(_cgroup_ids)}"
        unified = (_CGROUP_ROOT / "cgroup.controllers").is_file()
        try:
            if unified:
                self._make_v2(name, cpu, max_processes)
            else:
                self._make_v1(name, cpu, max_processes)
        except OSError as exc:
            self.remove()
            raise RuntimeError(f"cannot create a cgroup: {exc}") from exc

    def _make_v1(self, name: str, cpu: int, max_processes: int) -> None:
        cpuset_root = _CGROUP_ROOT / "cpuset"
        parent = cpuset_root / "hello-py"
        if not parent.is_dir():
            parent.mkdir(exist_ok=True)
            (parent / "cpuset.cpus").write_text((cpuset_root / "cpuset.cpus").read_text())
            (parent / "cpuset.mems").write_text((cpuset_root / "cpuset.mems").read_text())
        mine = cpuset_root / name
        mine.mkdir()
        self.dirs.append(mine)
        (mine / "cpuset.cpus").write_text(str(cpu))
        (mine / "cpuset.mems").write_text((cpuset_root / "cpuset.mems").read_text())
        pids = _CGROUP_ROOT / "pids" / name
        if pids.parent.parent.is_dir():
            pids.mkdir(parents=True)
            self.dirs.append(pids)
            (pids / "pids.max").write_text(str(max_processes))
        cpuacct = _CGROUP_ROOT / "cpuacct" / name
        if cpuacct.parent.parent.is_dir():
            cpuacct.mkdir(parents=True)
            self.dirs.append(cpuacct)
            self._usage = cpuacct / "cpuacct.usage"

    def _make_v2(self, name: str, cpu: int, max_processes: int) -> None:
        parent = _CGROUP_ROOT / "hello-py"
        parent.mkdir(exist_ok=True)
        (_CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpuset +pids")
        (parent / "cgroup.subtree_control").write_text("+cpuset +pids")
        mine = _CGROUP_ROOT / name
        mine.mkdir()
        self.dirs.append(mine)
        (mine / "cpuset.cpus").write_text(str(cpu))
        (mine / "pids.max").write_text(str(max_processes))
        self._usage, self._usage_scale = mine / "cpu.stat", 1e-6

    def join(self) -> None:
        """Move the calling process in (runs in the child before exec)."""
        pid = str(os.getpid())
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(pid)

    def set_cpu(self, cpu: int) -> None:
        """Move the child (every thread it has) to another CPU."""
        for d in self.dirs:
            if (d / "cpuset.cpus").exists():
                (d / "cpuset.cpus").write_text(str(cpu))

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by every task that was ever in it (read by the harness,
        from outside the child)."""
        if self._usage is None:
            return None
        try:
            text = self._usage.read_text()
            if self._usage.name == "cpu.stat":
                text = next(line.split()[1] for line in text.splitlines()
                            if line.startswith("usage_usec"))
            return int(text.strip()) * self._usage_scale
        except (OSError, ValueError, StopIteration):
            return None

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        for _ in range(20):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # tasks still exiting
                    time.sleep(0.01)
        self.dirs = []


def _cgroup_for(cpu: int, limits: Limits) -> _Cgroup | None:
    if not _is_root() or not _CGROUP_ROOT.is_dir():
        return None
    try:
        return _Cgroup(cpu, limits.max_processes)
    except RuntimeError as exc:
        log.debug("no cgroup for the child: %s", exc)
        return None


def default_cpu(timed: bool) -> int:
    """Timed executions get the last CPU; everything else the others, so tools of
    concurrent runs do not share a core with a timing."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if timed or len(cpus) == 1:
        return cpus[-1]
    return cpus[next(_cgroup_ids) % (len(cpus) - 1)]


# ---- file-system layout --------------------------------------------------------------------
def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another of them: hiding /tmp hides a project in /tmp/x too
    (and /tmp/x no longer exists to mount on once /tmp is covered)."""
    unique = sorted(set(paths), key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


@dataclass(frozen=True)
class _Layout:
    hidden: list[Path]  # covered by empty file systems, outermost first
    keep: list[tuple[Path, bool]]  # (path, read_only) bound back, parents first


def _layout(vis: Visibility) -> _Layout:
    workdir = vis.workdir.resolve()
    hidden = [*(Path(p) for p in _PRIVATE_DIRS), PROJECT_ROOT, Path.home(), workdir.parent,
              *_harness_paths, *vis.hidden]
    hidden = _outermost(p.resolve() for p in hidden
                        if p.resolve().is_dir() and p.resolve() != Path("/"))
    keep_ro = [Path(sys.base_prefix), Path(sys.prefix), *vis.read_only]
    keep = [(p.resolve(), True) for p in keep_ro if p.exists()]
    keep = [(p, ro) for p, ro in keep if any(p.is_relative_to(h) for h in hidden)]
    keep.append((workdir, False))
    keep = sorted(set(keep), key=lambda item: len(item[0].parts))
    return _Layout(hidden, keep)


def writable_places(visibility: Visibility) -> dict[str, list[str]]:
    """Inside the sandbox of ``visibility`` (bwrap or unshare): the directories a child
    may be able to write in (``scratch``: what it makes there is its own), what the
    sandbox bound into them read-only, and the directories that must stay (``emptied``:
    the child's own directory and home)."""
    layout = _layout(visibility)
    workdir = str(visibility.workdir.resolve())
    return {"scratch": [*(str(p) for p in layout.hidden), workdir],
            "read_only": [str(p) for p, ro in layout.keep if ro],
            "emptied": [workdir, _CHILD_HOME]}


def _bwrap_argv(vis: Visibility, layout: _Layout) -> list[str]:
    argv = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in layout.hidden:
        argv += ["--perms", "1777" if str(path) in _PRIVATE_DIRS else "0755",
                 "--tmpfs", str(path)]
    made: set[Path] = set()
    for path, read_only in layout.keep:
        root = next((h for h in layout.hidden if path.is_relative_to(h)), None)
        for parent in reversed(path.parents):
            if (root is not None and parent.is_relative_to(root) and parent != root
                    and parent not in made):
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        argv += ["--ro-bind" if read_only else "--bind", str(path), str(path)]
    argv += ["--perms", "0777", "--dir", _CHILD_HOME, "--chdir", str(vis.workdir.resolve())]
    if _is_root():
        # Privileged bwrap keeps only what setpriv needs to become SANDBOX_UID.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP"]
    else:
        argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    return [*argv, "--"]


def _stage_dir(hidden: Sequence[Path]) -> str:
    for candidate in _STAGE_CANDIDATES:
        path = Path(candidate)
        if path.is_dir() and not any(path.is_relative_to(h) or h.is_relative_to(path)
                                     for h in hidden):
            return candidate
    raise RuntimeError("no directory to stage bind mounts in")


def _unshare_script(vis: Visibility, layout: _Layout) -> str:
    """Shell run inside fresh namespaces: hide paths, re-expose the visible ones."""
    stage = _stage_dir(layout.hidden)
    q = shlex.quote
    lines = ["set -e", "umask 022", f"mount -t tmpfs -o size=1m hp-stage {q(stage)}"]
    for i, (path, _) in enumerate(layout.keep):
        lines += [f"mkdir {q(stage)}/{i}", f"mount --rbind {q(str(path))} {q(stage)}/{i}"]
    for path in layout.hidden:
        mode = "1777" if str(path) in _PRIVATE_DIRS else "0755"
        lines.append(f"mount -t tmpfs -o size=512m,mode={mode} hp-hidden {q(str(path))}")
    for i, (path, ro) in enumerate(layout.keep):
        lines += [f"mkdir -p {q(str(path))}", f"mount --rbind {q(stage)}/{i} {q(str(path))}"]
        if ro:
            lines.append(f"mount -o remount,bind,ro {q(str(path))}")
    lines += [f"umount -l {q(stage)}", "mount -o remount,bind,ro / 2>/dev/null || true",
              "rm -rf /run/mount",  # libmount's notes in the private /run: not the child's
              f"mkdir -p {_CHILD_HOME} && chmod 0777 {_CHILD_HOME}",
              f"cd {q(str(vis.workdir.resolve()))}", 'exec "$@"']
    return "\n".join(lines)


def _drop_privileges_argv() -> list[str]:
    uid = str(SANDBOX_UID)
    return ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def hand_over(directory: Path) -> None:
    """Give the child's own directory (and what is in it) to the sandbox uid, so the
    child can write there and nowhere else.  Links are changed, never followed."""
    if not _is_root():
        return
    uid = SANDBOX_UID
    os.chown(directory, uid, uid)
    os.chmod(directory, 0o755)  # bwrap enters it before dropping to the sandbox uid
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


# ---- running ---------------------------------------------------------------------------------
class _Capture:
    """Keeps the head and tail of a stream, and optionally timestamps whole lines."""

    def __init__(self, limit: int, on_line: Callable[[float, str], None] | None = None):
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


def _preexec(limits: Limits, cgroup: _Cgroup | None, cpu: int, control_w: int | None
             ) -> Callable[[], None]:
    def apply() -> None:
        if control_w is not None:
            os.dup2(control_w, CONTROL_FD)
        if cgroup is not None:
            cgroup.join()
        elif hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        size = limits.file_size_bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # No POSIX message queues: they outlive their processes and cannot be listed.
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))

    return apply


def _kill_tree(proc: asyncio.subprocess.Process, cgroup: _Cgroup | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill()


class Child:
    """A sandboxed Python process that may still be running (see :func:`start_python`).

    Its stdout and stderr are captured (head and tail), its control lines go to the
    caller's ``on_control`` as they arrive.  :meth:`stop` kills it and everything it
    started and releases what it held; it is safe to call more than once."""

    def __init__(self, proc: asyncio.subprocess.Process, cgroup: _Cgroup | None,
                 backend: str, limits: Limits, scratch: str | None,
                 on_control: Callable[[float, str], None] | None, control_r: int | None):
        self.proc = proc
        self.backend = backend
        self.started = time.monotonic()
        self._cgroup = cgroup
        self._scratch = scratch
        self._out = _Capture(limits.max_output)
        self._err = _Capture(limits.max_output)
        self._pumps = [asyncio.ensure_future(_pump(proc.stdout, self._out)),
                       asyncio.ensure_future(_pump(proc.stderr, self._err))]
        self._control_r = control_r
        self._on_control = on_control
        self._transport: asyncio.BaseTransport | None = None
        self._waiter = asyncio.ensure_future(proc.wait())
        self._result: ProcessResult | None = None

    async def _open_control(self, limits: Limits) -> None:
        if self._control_r is None:
            return
        reader = asyncio.StreamReader(limit=2**22)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self._control_r, "rb", 0))
        self._pumps.append(asyncio.ensure_future(
            _pump(reader, _Capture(limits.max_output, self._on_control))))

    @property
    def cpu_limit(self) -> str:
        return "cgroup" if self._cgroup is not None else "affinity"

    @property
    def running(self) -> bool:
        return self._result is None and self.proc.returncode is None

    async def send(self, data: bytes, *, close: bool = False) -> bool:
        """Write ``data`` to the child's stdin; False if the child no longer reads it."""
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
            if close:
                self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError, AttributeError):
            return False
        return True

    def cpu_seconds(self) -> float | None:
        """The CPU time the child's whole tree has used so far, from its cgroup (None
        without one)."""
        return self._cgroup.cpu_seconds() if self._cgroup is not None else None

    def move_to_timed_cpu(self) -> None:
        """Give the child (every thread it has) the CPU kept for timed executions.
        Without a cgroup the child keeps the CPU it was started on."""
        if self._cgroup is not None:
            self._cgroup.set_cpu(default_cpu(True))

    async def wait(self, seconds: float | None) -> bool:
        """Wait until the child has exited and its output is read; False on timeout."""
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.gather(self._waiter, *self._pumps)),
                                   timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def exited(self) -> None:
        await asyncio.shield(self._waiter)

    async def stop(self, *, timed_out: bool = False) -> ProcessResult:
        """Kill the child's whole tree and release its cgroup, pipes and scratch space."""
        if self._result is not None:
            return self._result
        for task in self._pumps:
            task.cancel()
        _kill_tree(self.proc, self._cgroup)
        if self.proc.returncode is None:
            await self.proc.wait()
        self._waiter.cancel()
        if self._transport is not None:
            self._transport.close()
        elif self._control_r is not None:
            with contextlib.suppress(OSError):
                os.close(self._control_r)
        if self._cgroup is not None:
            self._cgroup.remove()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        stderr = self._err.text()
        self._result = ProcessResult(
            returncode=None if timed_out else self.proc.returncode,
            stdout=self._out.text(),
            stderr=stderr,
            wall_time=time.monotonic() - self.started,
            timed_out=timed_out,
            output_truncated=bool(self._out.dropped or self._err.dropped),
            memory_error=any(sign in stderr[-3000:] for sign in MEMORY_SIGNS),
            isolation=self.backend,
            cpu_limit=self.cpu_limit,
        )
        return self._result


async def start_python(
    args: Sequence[str],
    *,
    visibility: Visibility,
    limits: Limits = Limits(),
    threads: int = 1,
    stdin: bool = False,
    on_control: Callable[[float, str], None] | None = None,
    isolation: str | None = None,
    timed: bool = False,
) -> Child:
    """Start ``python ARGS`` in ``visibility.workdir`` under the limits (all but the
    timeout, which is the caller's) and return it running.  ``stdin`` gives it a pipe to
    write to (:meth:`Child.send`), else it reads from /dev/null.  ``on_control(t, line)``
    sees each line the child writes to fd 3 with the monotonic time it arrived.
    ``timed`` puts it on the CPU kept for timed executions from the start."""
    backend = isolation or best_isolation()
    python = [sys.executable, "-X", "utf8", *args]
    workdir = visibility.workdir
    cpu = default_cpu(timed)
    cgroup = _cgroup_for(cpu, limits)
    control_r = control_w = None
    if on_control is not None:
        control_r, control_w = os.pipe()
    scratch = None
    try:
        if backend == "none":
            scratch = tempfile.mkdtemp(prefix="hp-env-")
            home = os.path.join(scratch, "home")
            os.mkdir(home)
            env = child_environment(threads, home, scratch)
            argv = python
        else:
            env = child_environment(threads, _CHILD_HOME, "/tmp")
            layout = _layout(visibility)
            drop = _drop_privileges_argv() if _is_root() else []
            if _is_root():
                hand_over(workdir)
            if backend == "bwrap":
                argv = [*_bwrap_argv(visibility, layout), *drop, *python]
            else:
                argv = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--net",
                        "--ipc", "--uts", "--propagation", "private", "--kill-child", "--",
                        "/bin/sh", "-c", _unshare_script(visibility, layout), "sh",
                        *drop, *python]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=workdir, env=env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, pass_fds=(CONTROL_FD,) if control_w is not None else (),
            preexec_fn=_preexec(limits, cgroup, cpu, control_w))
    except BaseException:
        for fd in (control_r, control_w):
            if fd is not None:
                os.close(fd)
        if cgroup is not None:
            cgroup.remove()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if control_w is not None:
        os.close(control_w)
    child = Child(proc, cgroup, backend, limits, scratch, on_control, control_r)
    try:
        await child._open_control(limits)
    except BaseException:
        await child.stop()
        raise
    return child


async def run_python(
    args: Sequence[str],
    *,
    visibility: Visibility,
    limits: Limits = Limits(),
    threads: int = 1,
    stdin_data: bytes | None = None,
    on_control: Callable[[float, str], None] | None = None,
    isolation: str | None = None,
    timed: bool = False,
) -> ProcessResult:
    """Run ``python ARGS`` to its end (or its timeout) under the limits; never raises for
    anything the child does.  See :func:`start_python` for the arguments."""
    child = await start_python(args, visibility=visibility, limits=limits, threads=threads,
                               stdin=stdin_data is not None, on_control=on_control,
                               isolation=isolation, timed=timed)
    try:
        if stdin_data is not None:
            await child.send(stdin_data, close=True)
        finished = await child.wait(limits.timeout)
    finally:
        result = await child.stop(timed_out=False)
    if not finished:
        result.returncode, result.timed_out = None, True
    return result
