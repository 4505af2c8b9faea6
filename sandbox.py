"""Run untrusted Python (agent code, profiled code, graded candidates) in a child process.

Everything the harness executes on an agent's behalf goes through :func:`run_python`.
The operating system does the isolating, and what a child may reach is an allow-list:

- **What it sees** (:func:`plan`): an empty root, onto which the system's programs and
  libraries (``/usr`` and its links), the dynamic linker's cache, the time zone, the CPU
  topology, the interpreter and the venv are bound read-only, then the caller's
  read-only paths (a problem's data directory), the child's own directory read-write,
  fresh private ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run``, a minimal ``/dev`` and a
  ``/proc`` of its own PID namespace.  The root itself is read-only.  Nothing else of the
  host exists inside: not the project, not another checkout, not ``/etc``, not a home.
- **Who it is** (:func:`fresh_identity`): when the harness is root, every sandbox runs as
  a uid no earlier sandbox on the machine has had (``setpriv``: every capability, the
  bounding set and supplementary groups dropped, ``no_new_privs`` set), so nothing the
  kernel keeps per uid (keyrings, their quotas) can pass from one sandbox to another.
  Unprivileged, bwrap's own user namespace plays that part.
- **Fresh namespaces**: PID, IPC, UTS, network (a loopback of its own) and cgroup.
- **Limits**: its own cgroup (one CPU, a task count, and a memory limit on the sandbox
  as a whole: the kernel's OOM killer then acts inside it, never on the host), rlimits
  (address space, file size, core dumps, no POSIX message queues), a timeout that kills
  the whole tree, an environment built from an allow-list (no API keys), and truncated
  output.

Backends: **bwrap** (bubblewrap, preferred) and **unshare** (when bwrap is missing and
the harness is root: the same plan, built by a short mount script and ``pivot_root``).
**none** has only the environment and the limits; callers refuse to grade under it
unless the user insists (``--unsafe-no-sandbox``).

:func:`run_python` runs a child to its end; :func:`start_python` hands back a running one
(a warm process that forks executions).  ``on_control`` gives the caller a private
channel: the child's fd 3 (``CONTROL_FD``) is a pipe whose lines the harness timestamps
on arrival.  What the child may see is the caller's choice; this module knows nothing of
agents or grading.

Nothing a child holds outlives the harness: a child is killed when the harness ends,
however it ends (the kernel's parent-death signal); :meth:`Child.stop` releases its
cgroup and scratch space even when its caller is cancelled again meanwhile; every task
that watches a child is ended and its outcome retrieved (:func:`cancel_and_wait`); what
a normal exit finds still running is killed and removed then.  The empty cgroups a
killed harness (``kill -9``) leaves are removed by :func:`clean_leftovers`, which the CLI
calls as every command starts.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import fcntl
import functools
import itertools
import logging
import os
import resource
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import safe_files

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2
PROJECT_ROOT = Path(__file__).resolve().parent  # the checkout (tools and main import it)
CONTROL_FD = 3
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


@dataclass(frozen=True)
class Limits:
    """How much a child may use.  ``max_output`` is characters kept per stream."""

    timeout: float = 60.0
    memory_bytes: int = 6 * GIB
    file_size_bytes: int = 256 * MIB
    max_output: int = 20_000
    max_processes: int = 256  # tasks (threads count) in the child's cgroup
    disk_bytes: int = 2 * GIB  # what the child's own directory may hold (a host's)


@dataclass(frozen=True)
class Visibility:
    """What of the file system a child sees (enforced under bwrap and unshare).

    ``workdir`` is the host's directory bound in read-write, or, when ``private``, a
    directory that exists only inside the sandbox, in its private ``/tmp`` (memory that
    counts against the sandbox's limit, never the host's disk, gone with the sandbox)."""

    workdir: Path
    read_only: tuple[Path, ...] = ()
    private: bool = False


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
    oom_killed: bool = False  # the kernel ended a process of it at the sandbox's limit
    disk_exceeded: int | None = None  # the bytes its directory held when it was stopped

    @property
    def ok(self) -> bool:
        return (self.returncode == 0 and not self.timed_out and not self.oom_killed
                and self.disk_exceeded is None)

    def failure(self) -> str:
        """One sentence on why the process did not succeed ('' when it did)."""
        if self.disk_exceeded is not None:
            return (f"was stopped: its directory held {self.disk_exceeded / GIB:.1f} GiB or "
                    "more, past its limit (delete what it does not need)")
        if self.timed_out:
            return f"timed out after {self.wall_time:.0f} s and was killed"
        if self.oom_killed:
            return ("ran out of memory (the sandbox's limit for all its processes together "
                    "was reached, and the kernel ended one of them)")
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
    if _is_root() and all(shutil.which(tool, path=_SYSTEM_PATH)
                           for tool in ("unshare", "setpriv", "pivot_root", "mount")):
        found.append("unshare")
    return [*found, "none"]


_forced: str | None = os.environ.get("HELLO_PY_ISOLATION") or None


# What to do where no sandbox is available: the CLI and the grader refuse alike.
INSTALL_HINT = ("install bubblewrap (apt-get install bubblewrap) to sandbox agent code and "
                "candidates")
REFUSAL = (f"no sandbox on this machine: {INSTALL_HINT}, or pass --unsafe-no-sandbox to run "
           "anyway")


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


SHARE_OF_MEMORY = 0.8  # of the machine's memory, for every sandbox together


def _shared_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * SHARE_OF_MEMORY)
    except (ValueError, OSError):
        return 1 << 62


def _write_limits(directory: Path, names: Sequence[str], value: int) -> None:
    """Each limit the kernel offers here (a missing file: not on this kernel)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).write_text(str(value))


class _Cgroup:
    """A child's own cgroup (v1 or v2): one CPU, at most ``max_processes`` tasks, and at
    most ``memory_bytes`` of memory for all of them together (swap included where the
    kernel accounts it).

    Created before the child starts; the child joins it before it executes anything, so
    no thread it ever starts runs outside it.  ``kill()`` ends every task in it.  Every
    sandbox's cgroup sits in ``hello-py/``, which holds at most :data:`SHARE_OF_MEMORY`
    of the machine's memory: many sandboxes at once meet that limit, not the host's."""

    def __init__(self, cpu: int, limits: Limits):
        self.dirs: list[Path] = []
        self._usage: Path | None = None  # the CPU time its tasks have used
        self._usage_scale = 1e-9
        self._events: Path | None = None  # where the kernel counts its OOM kills
        self.released = False  # its child is done with it: only its removal is left
        _clean_once()
        # whose it is (the process, by pid, start time and pid namespace: see
        # clean_leftovers), then a counter and a random part, which keep a leftover
        # that was never removed from ever being taken for this one
        name = f"hello-py/{_owner_tag()}-{next(_cgroup_ids)}-{secrets.token_hex(4)}"
        unified = (_CGROUP_ROOT / "cgroup.controllers").is_file()
        _live_cgroups.add(self)  # from the first directory made, so none is forgotten
        try:
            if unified:
                self._make_v2(name, cpu, limits)
            else:
                self._make_v1(name, cpu, limits)
        except OSError as exc:
            self.remove()
            raise RuntimeError(f"cannot create a cgroup: {exc}") from exc

    def _make_v1(self, name: str, cpu: int, limits: Limits) -> None:
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
            (pids / "pids.max").write_text(str(limits.max_processes))
        cpuacct = _CGROUP_ROOT / "cpuacct" / name
        if cpuacct.parent.parent.is_dir():
            cpuacct.mkdir(parents=True)
            self.dirs.append(cpuacct)
            self._usage = cpuacct / "cpuacct.usage"
        memory = _CGROUP_ROOT / "memory" / name
        if memory.parent.parent.is_dir():
            if not memory.parent.is_dir():
                memory.parent.mkdir(exist_ok=True)
                _write_limits(memory.parent, ("memory.limit_in_bytes",
                                              "memory.memsw.limit_in_bytes"), _shared_memory())
            memory.mkdir()
            self.dirs.append(memory)
            # memory first: the kernel refuses a memory+swap limit below it
            _write_limits(memory, ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
                          limits.memory_bytes)
            self._events = memory / "memory.oom_control"
        # A hybrid host also has the unified (v2) hierarchy, without controllers: the
        # sandbox gets a cgroup there too, so that its cgroup namespace's root in every
        # hierarchy is its own, never the host's.
        unified = _CGROUP_ROOT / "unified" / name
        if (unified.parent.parent / "cgroup.procs").is_file():
            unified.mkdir(parents=True)
            self.dirs.append(unified)

    def _make_v2(self, name: str, cpu: int, limits: Limits) -> None:
        parent = _CGROUP_ROOT / "hello-py"
        fresh = not parent.is_dir()
        parent.mkdir(exist_ok=True)
        (_CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpuset +pids +memory")
        (parent / "cgroup.subtree_control").write_text("+cpuset +pids +memory")
        if fresh:
            _write_limits(parent, ("memory.max",), _shared_memory())
        mine = _CGROUP_ROOT / name
        mine.mkdir()
        self.dirs.append(mine)
        (mine / "cpuset.cpus").write_text(str(cpu))
        (mine / "pids.max").write_text(str(limits.max_processes))
        _write_limits(mine, ("memory.max",), limits.memory_bytes)
        _write_limits(mine, ("memory.swap.max",), 0)
        self._usage, self._usage_scale = mine / "cpu.stat", 1e-6
        self._events = mine / "memory.events"

    def oom_kills(self) -> int:
        """How many of its tasks the kernel has killed for want of memory so far."""
        if self._events is None:
            return 0
        try:
            for line in self._events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

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

    def remove(self, attempts: int = 50) -> bool:
        """Remove its directories, retrying while its last tasks exit; True when none is
        left.  One that stays (a task slow to die) is retried by :func:`clean_leftovers`
        and at the harness's exit, never forgotten."""
        self.released = True
        left = []
        for d in self.dirs:
            for attempt in range(attempts):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # tasks still exiting
                    if attempt + 1 < attempts:
                        time.sleep(0.01)
            else:
                left.append(d)
        self.dirs = left
        if not left:
            _live_cgroups.discard(self)
        return not left


# Every cgroup this process made and has not removed yet: those in use, and those whose
# removal is still to be retried.
_live_cgroups: set[_Cgroup] = set()
_cleaned = False


def _clean_once() -> None:
    global _cleaned
    if not _cleaned:
        _cleaned = True
        clean_leftovers()


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot); None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[19]  # field 22; the name may hold ')'
    except (OSError, ValueError, IndexError):
        return None


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _owner_tag() -> str:
    """``pid-start-pidns``: which process made a cgroup, even once its pid is reused."""
    pid = os.getpid()
    return f"{pid}-{_start_time(pid) or 0}-{_pid_namespace()}"


def _owner_gone(name: str) -> bool:
    """Whether the hello-py process that made the cgroup ``name`` has ended.  A process
    of another pid namespace (another container on the host) cannot be seen from here,
    so its cgroups are never judged gone; names from before the start time was part of
    them (``pid-n-hex``) are judged by the pid alone."""
    fields = name.split("-")
    if not fields[0].isdigit():
        return False  # not a sandbox's
    if len(fields) >= 5:
        if fields[2] != _pid_namespace():
            return False
        return _start_time(int(fields[0])) != fields[1]
    return not os.path.exists(f"/proc/{fields[0]}")


def _cgroup_parents() -> list[Path]:
    """``hello-py/`` in each hierarchy: shared by every hello-py process (it holds the
    memory all sandboxes together may use), so it stays."""
    return [p for p in [*_CGROUP_ROOT.glob("*/hello-py"), _CGROUP_ROOT / "hello-py"]
            if p.is_dir()]


def clean_leftovers() -> list[Path]:
    """Remove what sandboxes left behind; safe to call at any time, from any command.

    That is every cgroup of a hello-py process that is gone (killed before it could
    remove its own: ``kill -9``, or a SIGTERM it had no handler for), with everything
    below it, and this process's own released cgroups whose removal failed earlier.
    A sandbox still running in a gone process's cgroup (a harness killed while bwrap was
    starting can leave one) is killed first: its owner is provably gone (its pid, start
    time and pid namespace are in the cgroup's name), so nothing waits for it.  Never a
    cgroup of a live hello-py process.  Returns what was removed."""
    removed: list[Path] = []
    for cgroup in [c for c in _live_cgroups if c.released]:
        before = list(cgroup.dirs)
        cgroup.remove(attempts=1)
        removed += [d for d in before if d not in cgroup.dirs]
    for parent in _cgroup_parents():
        try:
            entries = [e for e in parent.iterdir() if e.is_dir()]
        except OSError:
            continue
        for entry in entries:
            if _owner_gone(entry.name):
                _kill_tree_of_cgroups(entry)
                removed += _remove_tree_of_cgroups(entry)
    if removed:
        log.info("removed %d cgroup(s) that ended processes left behind", len(removed))
    return removed


def _kill_tree_of_cgroups(top: Path, wait: float = 1.0) -> None:
    """Kill every task in ``top`` and the cgroups below it (``cgroup.kill``, else each
    pid of ``cgroup.procs``), and wait up to ``wait`` seconds for them to be gone."""
    def tasks(directory: str) -> list[int]:
        try:
            return [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    dirs = [d for d, _, _ in os.walk(top)]
    if not any(tasks(d) for d in dirs):
        return
    for directory in dirs:
        try:
            Path(directory, "cgroup.kill").write_text("1")
        except OSError:
            for pid in tasks(directory):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while any(tasks(d) for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.02)


def _remove_tree_of_cgroups(top: Path) -> list[Path]:
    """``top`` and the cgroups below it, deepest first; a cgroup with tasks (and so each
    one above it) stays."""
    removed = []
    for below, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(below)
            removed.append(Path(below))
    return removed


_has_cgroups: bool | None = None


def has_cgroups() -> bool:
    """Whether children get a cgroup of their own here (root, and a writable cgroup file
    system): found once, by making one and removing it."""
    global _has_cgroups
    if _has_cgroups is None:
        probe = _cgroup_for(0, Limits())
        _has_cgroups = probe is not None
        if probe is not None:
            probe.remove()
    return _has_cgroups


def _cgroup_for(cpu: int, limits: Limits) -> _Cgroup | None:
    if not _is_root() or not _CGROUP_ROOT.is_dir():
        return None
    try:
        return _Cgroup(cpu, limits)
    except RuntimeError as exc:
        log.warning("no cgroup for the child (one CPU by affinity, no memory or task "
                    "limit for the sandbox as a whole): %s", exc)
        return None


# The CPU of the timing slot this task holds (problems.ml_training.timing.slots).
TIMED_CPU: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "hello_py_timed_cpu", default=None)


def timed_cpu() -> int | None:
    """The timing CPU this task holds a slot on; None outside a slot."""
    return TIMED_CPU.get()


def timing_cpus() -> list[int]:
    """The CPUs kept for timed executions: the highest-numbered ``HELLO_PY_TIMING_CPUS``
    of this process's CPUs, by default one per four (at least one: 1 of 2 to 7 CPUs, 2
    of 8, 4 of 16), so that three quarters of the machine stay for what is not timed
    (agents' tools and models' answers, sandboxes importing torch, profiles) and a
    timing shares memory bandwidth with few others."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    wanted = os.environ.get("HELLO_PY_TIMING_CPUS", "")
    count = int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, len(cpus) // 4)
    return cpus[-min(count, len(cpus)):]


def cpu_busy_seconds(cpu: int) -> float | None:
    """Seconds CPU ``cpu`` has been busy since boot, for every task on it and the time the
    hypervisor took (``/proc/stat``: user, nice, system, irq, softirq, steal); None when
    unreadable.  Beside a cgroup's own CPU time it tells what else ran on that CPU."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    v = [int(x) for x in line.split()[1:9]]
                    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None
    return None


def load_average() -> float | None:
    """The machine's one-minute load average."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def default_cpu(timed: bool) -> int:
    """Timed executions get the CPU of the task's timing slot (the first timing CPU
    outside one); everything else the CPUs that are not kept for timings, so tools of
    concurrent runs do not share a core with a timing."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    timing = timing_cpus()
    if timed:
        held = timed_cpu()
        return held if held is not None else timing[0]
    free = [c for c in cpus if c not in timing] or cpus
    return free[next(_cgroup_ids) % len(free)]


# ---- file-system layout: an allow-list -----------------------------------------------------
# What every child sees of the host, read-only: the system's programs and libraries (as the
# host lays them out: a directory, or a link into /usr), the dynamic linker's cache, the
# time zone and the CPU topology.  The interpreter, the venv and the caller's read-only
# paths come on top, and the child's own directory read-write; nothing else of the host
# exists inside, whatever it is called.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
                 "/etc/localtime", "/sys/devices/system/cpu")


@dataclass(frozen=True)
class Mount:
    """One step of building a child's root from an empty file system: ``kind`` is ``ro``
    or ``rw`` (bind the host's ``source`` at ``path``), ``tmpfs``, ``dir``, ``symlink`` (to
    ``source``), ``dev`` (a minimal /dev) or ``proc`` (the child's own PID namespace)."""

    kind: str
    path: str
    source: str = ""
    mode: str = "0755"


def _inside(vis: Visibility) -> Path:
    """The child's own directory as the child sees it."""
    return vis.workdir if vis.private else vis.workdir.resolve()


def _python_roots() -> list[Path]:
    """The interpreter's installation and the venv (where the packages are)."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(sys.executable).resolve().parent.parent}
    return sorted(p for p in roots if p.is_dir())


def plan(vis: Visibility) -> list[Mount]:
    """Every step that builds the child's root, in order (both backends follow it)."""
    steps: list[Mount] = []
    made: set[Path] = {Path("/")}  # directories that exist inside, empty
    bound: list[Path] = []  # host directories bound in: what is below them exists too
    system: list[Path] = []

    def parents(path: Path) -> None:
        for parent in reversed(path.parents):
            if parent not in made and not any(parent.is_relative_to(b) for b in bound):
                steps.append(Mount("dir", str(parent)))
                made.add(parent)

    for name in _SYSTEM_DIRS:
        host = Path(name)
        if host.is_symlink():
            steps.append(Mount("symlink", name, os.readlink(host)))
        elif host.is_dir():
            steps.append(Mount("ro", name, name))
            bound.append(host)
            system.append(host)
    steps += [Mount("dev", "/dev"), Mount("proc", "/proc")]
    made |= {Path("/dev"), Path("/proc")}
    for private in map(Path, _PRIVATE_DIRS):
        parents(private)
        steps.append(Mount("tmpfs", str(private), mode="1777"))
        made.add(private)
    binds = [(Path(p), "ro") for p in _SYSTEM_FILES if os.path.exists(p)]
    binds += [(p, "ro") for p in _python_roots()]
    binds += [(Path(p).resolve(), "ro") for p in vis.read_only if Path(p).exists()]
    if not vis.private:
        binds.append((vis.workdir.resolve(), "rw"))
    seen: set[Path] = set()
    for path, kind in sorted(binds, key=lambda b: (len(b[0].parts), str(b[0]))):
        inside_system = any(path.is_relative_to(s) for s in system)
        if path in seen or (kind == "ro" and inside_system):
            continue  # bound twice, or already there (a Python installed under /usr)
        seen.add(path)
        parents(path)
        steps.append(Mount(kind, str(path), str(path)))
        if path.is_dir():
            bound.append(path)
    for own in ([Path(_CHILD_HOME), vis.workdir] if vis.private else [Path(_CHILD_HOME)]):
        if not own.is_relative_to("/tmp"):
            raise ValueError(f"a private directory must be in the sandbox's /tmp: {own}")
        parents(own)
        steps.append(Mount("dir", str(own), mode="0777"))
    return steps


def writable_places(visibility: Visibility) -> dict[str, list[str]]:
    """Inside the sandbox of ``visibility`` (bwrap or unshare): the directories a child
    may be able to write in (``scratch``: what it makes there is its own), what the
    sandbox bound into them read-only, and the directories that must stay (``emptied``:
    the child's own directory and home).  Everything else is read-only or absent."""
    workdir = str(_inside(visibility))
    scratch = [*_PRIVATE_DIRS, workdir]
    inside = [m.path for m in plan(visibility) if m.kind == "ro" and any(
        Path(m.path).is_relative_to(s) for s in scratch)]
    return {"scratch": scratch, "read_only": inside, "emptied": [workdir, _CHILD_HOME]}


def _bwrap_argv(vis: Visibility, steps: list[Mount], identity: int | None) -> list[str]:
    argv = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    for m in steps:
        if m.kind in ("ro", "rw"):
            argv += ["--ro-bind" if m.kind == "ro" else "--bind", m.source, m.path]
        elif m.kind == "symlink":
            argv += ["--symlink", m.source, m.path]
        elif m.kind in ("dir", "tmpfs"):
            argv += ["--perms", m.mode, f"--{m.kind}", m.path]
        else:  # dev, proc
            argv += [f"--{m.kind}", m.path]
    argv += ["--remount-ro", "/", "--chdir", str(_inside(vis))]
    if identity is not None:
        # Privileged bwrap keeps only what setpriv needs to become the fresh uid.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP"]
    else:  # unprivileged: a user namespace of its own is the fresh identity
        argv += ["--unshare-user", "--cap-drop", "ALL"]
    return [*argv, "--"]


_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # where the mount script finds its tools


def _stage_dir(sources: Sequence[str]) -> str:
    """An existing directory, outside every bound source, to build the new root on."""
    for candidate in _STAGE_CANDIDATES:
        path = Path(candidate)
        if path.is_dir() and not path.is_symlink() and not any(
                Path(s).is_relative_to(path) for s in sources):
            return candidate
    raise RuntimeError("no directory to build the sandbox's root in")


def _unshare_script(vis: Visibility, steps: list[Mount]) -> str:
    """Shell run as root inside fresh namespaces: build the root the plan describes on an
    empty tmpfs, make it the root (pivot_root), forget the host's, then run the child.
    ``mount -n``: libmount keeps no notes in any /run, the host's or the child's."""
    q = shlex.quote
    root = _stage_dir([m.source for m in steps if m.kind in ("ro", "rw")])
    lines = ["set -e", "umask 022", f"PATH={_SYSTEM_PATH}",
             f"mount -n -t tmpfs -o mode=0755,size=1m hp-root {q(root)}"]
    for m in steps:
        at = q(root + m.path)
        if m.kind in ("ro", "rw"):
            make = "mkdir -p" if os.path.isdir(m.source) else "touch"
            lines += [f"{make} {at}", f"mount -n --bind {q(m.source)} {at}"]
            if m.kind == "ro":
                lines.append(f"mount -n -o remount,bind,ro {at}")
        elif m.kind == "symlink":
            lines.append(f"ln -s {q(m.source)} {at}")
        elif m.kind == "dir":
            lines.append(f"mkdir -p -m {m.mode} {at}")
        elif m.kind == "tmpfs":
            lines += [f"mkdir -p {at}",
                      f"mount -n -t tmpfs -o size=512m,mode={m.mode} hp-private {at}"]
        elif m.kind == "proc":
            lines += [f"mkdir -p {at}", f"mount -n -t proc proc {at}"]
        else:  # dev: a few device nodes of the host's, nothing else
            lines += [f"mkdir -p {at}", f"mount -n -t tmpfs -o size=64k,mode=0755 hp-dev {at}"]
            for dev in _DEVICES:
                lines += [f"touch {at}/{dev}", f"mount -n --bind /dev/{dev} {at}/{dev}"]
            lines += [f"ln -s /proc/self/fd {at}/fd", f"ln -s /proc/self/fd/0 {at}/stdin",
                      f"ln -s /proc/self/fd/1 {at}/stdout",
                      f"ln -s /proc/self/fd/2 {at}/stderr"]
    lines += [f"mkdir {q(root)}/.old-root", f"cd {q(root)}", "pivot_root . .old-root",
              "cd /", "umount -n -l /.old-root", "rmdir /.old-root",
              "mount -n -o remount,ro,bind /",
              f"cd {q(str(_inside(vis)))}", 'exec "$@"']
    return "\n".join(lines)


def _drop_privileges_argv(identity: int) -> list[str]:
    uid = str(identity)
    return ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


# ---- a fresh identity for every sandbox --------------------------------------------------------
# The kernel keys some state by uid alone (keyrings and their quotas, process counts):
# whatever a child leaves there would meet the next child of the same uid.  So no two
# sandboxes ever share a uid: each takes the next one of a range far above any account's,
# from a counter on disk that every hello-py process on the machine shares.
_IDENTITY_FILE = Path("/var/lib/hello-py/next-identity")
FIRST_IDENTITY, LAST_IDENTITY = 1 << 24, (1 << 31) - 2


def fresh_identity() -> int:
    """A uid (and gid) no earlier sandbox on this machine has had."""
    try:
        _IDENTITY_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(_IDENTITY_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "r+") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            text = counter.read(32).strip()
            # A missing or reset counter starts at a random place, so that a uid from
            # before the reset is not met again.
            taken = int(text) if text.isdigit() else FIRST_IDENTITY + secrets.randbelow(
                (LAST_IDENTITY - FIRST_IDENTITY) // 2)
            if not FIRST_IDENTITY <= taken <= LAST_IDENTITY:
                taken = FIRST_IDENTITY
            counter.seek(0)
            counter.truncate()
            counter.write(str(taken + 1))
        return taken
    except OSError as exc:
        log.warning("no shared identity counter (%s): a random uid instead", exc)
        return FIRST_IDENTITY + secrets.randbelow(LAST_IDENTITY - FIRST_IDENTITY)


def hand_over(directory: Path, identity: int) -> None:
    """Give the child's own directory (and what is in it) to the child's uid, so the child
    can write there and nowhere else.  Links are changed, never followed."""
    os.chmod(directory, 0o755, follow_symlinks=False)  # entered before the uid is dropped
    report = safe_files.chown_tree(directory, identity, identity)
    if report.notes:
        log.info("handing %s over: %s", directory, "; ".join(report.notes[:3]))


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
            # Only the new chunk is searched, and a line past the cap keeps its head
            # (its first word is its kind) and drops the rest: linear in what arrives.
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                self._extend_line(chunk[start:end])
                self.on_line(now, self.partial.decode("utf-8", "replace"))
                self.partial = bytearray()
                start = end + 1
            self._extend_line(chunk[start:])
        half = self.limit // 2
        room = half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > half:
            self.dropped += len(self.tail) - half
            del self.tail[: len(self.tail) - half]

    def _extend_line(self, part: bytes) -> None:
        room = _LINE_CAP - len(self.partial)
        if room > 0:
            self.partial += part[:room]

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
    harness, prctl = os.getpid(), _prctl()  # looked up here, not in the forked child

    def apply() -> None:
        _die_with(harness, prctl)
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
        _refuse_fallocate()

    return apply


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with(harness: int, prctl: Callable[..., int] | None) -> None:
    """Have the kernel kill the child when the harness ends, however it ends (``kill -9``
    too), from before anything runs: a harness killed while bwrap sets up (before its
    own ``--die-with-parent`` holds), or the unshare backend's ``unshare``, leaves no
    sandbox running on with no one to time it out."""
    if prctl is None:
        return
    prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != harness:  # it ended before that took hold
        os._exit(1)


# fallocate() reserves disk blocks without growing the file, past RLIMIT_FSIZE: the
# child gets EOPNOTSUPP instead (glibc's posix_fallocate then writes, under the limit).
_FALLOCATE = {"x86_64": (0xC000003E, 285), "aarch64": (0xC00000B7, 47)}


def _refuse_fallocate() -> None:
    """A seccomp filter (inherited by everything the child starts) refusing fallocate."""
    import ctypes

    arch, nr = _FALLOCATE.get(os.uname().machine, (None, None))
    if arch is None:
        return
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET
    allow, refuse = 0x7FFF0000, 0x00050000 | 95  # SECCOMP_RET_ALLOW, _ERRNO | EOPNOTSUPP
    program = [(ld, 0, 0, 4), (jeq, 0, 4, arch), (ld, 0, 0, 0),  # arch, then the number
               (jeq, 1, 0, nr), (jeq, 0, 1, nr | 0x40000000),  # (also x32's)
               (ret, 0, 0, refuse), (ret, 0, 0, allow)]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*program)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(22, 2, ctypes.byref(Program(len(program), filters)), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot install the sandbox's seccomp filter")


def _kill_tree(proc: asyncio.subprocess.Process, cgroup: _Cgroup | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill()


# ---- tasks beside a child: each one ended and its outcome retrieved ---------------------
async def _wait_ended(tasks: Sequence[asyncio.Future]) -> BaseException | None:
    """Wait until every one of ``tasks`` has ended, through cancellations of the caller
    (each wait is short: the tasks were cancelled, or their process killed).  Returns
    the caller's cancellation, for the caller to raise once its clean-up is done."""
    interrupted = None
    pending = [t for t in tasks if not t.done()]
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError as exc:
            interrupted = exc
        pending = [t for t in pending if not t.done()]
    return interrupted


def _failures(tasks: Sequence[asyncio.Future]) -> list[BaseException]:
    """The exceptions the ended ``tasks`` raised (cancellations aside), which marks each
    as retrieved: asyncio then never reports one as 'never retrieved'."""
    return [exc for t in tasks if t.done() and not t.cancelled()
            and (exc := t.exception()) is not None]


async def cancel_and_wait(*tasks: asyncio.Future) -> None:
    """Cancel ``tasks`` and wait until each has ended, so that none outlives the code that
    started it.  The first exception one of them raised is raised here (it is a bug, not
    to be lost; any others are logged); a cancellation of the caller meanwhile is raised
    once they have all ended."""
    for task in tasks:
        task.cancel()
    interrupted = await _wait_ended(tasks)
    failures = _failures(tasks)
    for failure in failures[1:] if interrupted is None else failures:
        log.error("a task of the harness failed", exc_info=failure)
    if interrupted is not None:
        raise interrupted
    if failures:
        raise failures[0]


# File systems that are the kernel's interfaces, not storage: a directory made there is
# a cgroup, a sysctl...
KERNEL_FILESYSTEMS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devtmpfs", "devpts",
                                "debugfs", "tracefs", "securityfs", "configfs", "bpf",
                                "pstore", "efivarfs", "fusectl", "mqueue", "hugetlbfs"})


def filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on (``/proc/self/mountinfo``'s longest
    mount point above it); None when it cannot be told."""
    best, kind = -1, None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        point = Path(parts[4].encode().decode("unicode_escape"))
        if (point == path or point in path.parents) and len(str(point)) > best:
            best, kind = len(str(point)), rest.split()[0]
    return kind


HEARTBEAT_SECONDS = 30.0  # while a long execution runs: a line this often, no more


@contextlib.asynccontextmanager
async def heartbeat(say: Callable[[str], None] | None, text: str,
                    every: float | None = None) -> AsyncIterator[None]:
    """Say ``text`` with the time so far every ``every`` seconds (default
    :data:`HEARTBEAT_SECONDS`) until the block ends, so that a long execution is not
    silent: nothing if it ends sooner, or without ``say``.  The beat never outlives the
    block."""
    if say is None:
        yield
        return
    started = time.monotonic()
    every = HEARTBEAT_SECONDS if every is None else every

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            say(f"{text} ({time.monotonic() - started:.0f} s so far)")

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        await cancel_and_wait(task)


# Children started and not stopped yet: what is left of them is killed and removed when
# the interpreter exits (a normal exit that forgot one; signals are the CLI's to handle).
_running: set[Child] = set()


class Child:
    """A sandboxed Python process that may still be running (see :func:`start_python`).

    Its stdout and stderr are captured (head and tail), its control lines go to the
    caller's ``on_control`` as they arrive.  :meth:`stop` kills it and everything it
    started and releases what it held; it is safe to call more than once, and completes
    even when its caller is cancelled meanwhile."""

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
        # Every task it starts is ended by stop(), and its outcome retrieved.
        self._pumps = [asyncio.ensure_future(_pump(proc.stdout, self._out)),
                       asyncio.ensure_future(_pump(proc.stderr, self._err))]
        self._control_r = control_r
        self._on_control = on_control
        self._transport: asyncio.BaseTransport | None = None
        self._waiter = asyncio.ensure_future(proc.wait())
        self._result: ProcessResult | None = None
        self._raised = False  # a reader's failure was raised by wait()
        _running.add(self)

    async def _open_control(self, limits: Limits) -> None:
        if self._control_r is None:
            return
        reader = asyncio.StreamReader(limit=2**22)
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self._control_r, "rb", 0)
        self._control_r = None  # the file's now, then the transport's
        try:
            self._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except BaseException:
            pipe.close()
            raise
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

    def send_now(self, data: bytes) -> None:
        """Write a few bytes to the child's stdin without waiting (an answer to a control
        line, from ``on_control``); nothing if the child no longer reads it."""
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ConnectionResetError, AttributeError, RuntimeError):
            pass

    def cpu_seconds(self) -> float | None:
        """The CPU time the child's whole tree has used so far, from its cgroup (None
        without one)."""
        return self._cgroup.cpu_seconds() if self._cgroup is not None else None

    def oom_kills(self) -> int:
        """How many of the child's processes the kernel killed at the sandbox's memory
        limit so far (0 without a cgroup)."""
        return self._cgroup.oom_kills() if self._cgroup is not None else 0

    def move_to_timed_cpu(self) -> None:
        """Give the child (every thread it has) the CPU kept for timed executions.
        Without a cgroup the child keeps the CPU it was started on."""
        if self._cgroup is not None:
            self._cgroup.set_cpu(default_cpu(True))

    async def wait(self, seconds: float | None) -> bool:
        """Wait until the child has exited and its output is read; False on timeout (the
        child runs on: nothing is cancelled).  A reader of its output that failed raises
        here."""
        done, pending = await asyncio.wait([self._waiter, *self._pumps], timeout=seconds,
                                           return_when=asyncio.FIRST_EXCEPTION)
        if failures := _failures(list(done)):
            self._raised = True
            raise failures[0]
        return not pending

    async def exited(self) -> None:
        """Wait until the child's process has exited (its last output may still come)."""
        await asyncio.wait([self._waiter])

    async def stop(self, *, timed_out: bool = False) -> ProcessResult:
        """Kill the child's whole tree and release its cgroup, pipes and scratch space.
        A cancellation of the caller meanwhile is raised once all of that is done."""
        if self._result is not None:
            return self._result
        for task in self._pumps:
            task.cancel()
        oom_kills = self.oom_kills()
        _kill_tree(self.proc, self._cgroup)
        try:  # the killed tree's exit is reaped, its readers end
            interrupted = await _wait_ended([self._waiter, *self._pumps])
        finally:
            if self._transport is not None:
                self._transport.close()
            self._release()
        for failure in _failures(self._pumps):
            if not self._raised:
                log.error("a reader of a sandboxed child's output failed", exc_info=failure)
        stderr = self._err.text()
        self._result = ProcessResult(
            returncode=None if timed_out else self.proc.returncode,
            stdout=self._out.text(),
            stderr=stderr,
            wall_time=time.monotonic() - self.started,
            timed_out=timed_out,
            output_truncated=bool(self._out.dropped or self._err.dropped),
            memory_error=oom_kills > 0 or any(sign in stderr[-3000:] for sign in MEMORY_SIGNS),
            oom_killed=oom_kills > 0,
            isolation=self.backend,
            cpu_limit=self.cpu_limit,
        )
        if interrupted is not None:
            raise interrupted
        return self._result

    def _release(self) -> None:
        """Give back what the child held: its control pipe, cgroup and scratch space (no
        event loop needed: also at the interpreter's exit)."""
        _running.discard(self)
        if self._control_r is not None:
            with contextlib.suppress(OSError):
                os.close(self._control_r)
            self._control_r = None
        if self._cgroup is not None:
            self._cgroup.remove()
        if self._scratch is not None:
            safe_files.remove_tree(Path(self._scratch))
            self._scratch = None


def _release_at_exit(owner: int = os.getpid()) -> None:
    """At the interpreter's exit: kill every child not stopped, and remove every cgroup
    of this process (a fork of it owns none of them)."""
    if os.getpid() != owner:
        return
    for child in list(_running):
        if child.proc.returncode is None:
            _kill_tree(child.proc, child._cgroup)
        child._release()
    for cgroup in list(_live_cgroups):
        cgroup.kill()
        cgroup.remove()


atexit.register(_release_at_exit)


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
            steps = plan(visibility)
            identity = fresh_identity() if _is_root() else None
            drop = _drop_privileges_argv(identity) if identity is not None else []
            if identity is not None and not visibility.private:
                await asyncio.to_thread(hand_over, workdir, identity)
            if backend == "bwrap":
                argv = [*_bwrap_argv(visibility, steps, identity), *drop, *python]
            else:
                argv = ["unshare", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts",
                        "--cgroup", "--propagation", "private", "--kill-child", "--",
                        "/bin/sh", "-c", _unshare_script(visibility, steps), "sh",
                        *drop, *python]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd="/" if visibility.private else workdir, env=env,
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
            safe_files.remove_tree(Path(scratch))
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
    guard = None if visibility.private else asyncio.ensure_future(
        _guard_disk(child, visibility.workdir, limits.disk_bytes))
    try:
        if stdin_data is not None:
            await child.send(stdin_data, close=True)
        finished = await child.wait(limits.timeout)
    finally:
        try:
            if guard is not None:
                await cancel_and_wait(guard)
        finally:  # even when the caller is cancelled again meanwhile
            result = await child.stop(timed_out=False)
    if guard is not None and not guard.cancelled() and guard.result() is not None:
        result.disk_exceeded = guard.result()
    elif not finished:
        result.returncode, result.timed_out = None, True
    return result


DISK_POLL = 0.25  # seconds between looks at the file system's free space


async def _guard_disk(child: Child, directory: Path, budget: int) -> int | None:
    """Stop ``child`` once its directory (on the host's disk) holds more than ``budget``
    bytes, and return what it held (more than ``budget`` when the walk could not see all
    of it); None when the child ended first.
    The directory is walked only when the file system's free space has dropped by an
    eighth of the budget since the child started: a cheap look, four times a second."""

    def free() -> int:
        try:
            found = os.statvfs(directory)
            return found.f_bavail * found.f_frsize
        except OSError:
            return 0

    def held() -> int:
        entries, report = safe_files.walk(directory)
        total = sum(e.size for e in entries)
        return total if report.ok and not report.skipped else max(total, budget + 1)

    start = free()
    while True:
        await asyncio.sleep(DISK_POLL)
        if child.proc.returncode is not None:
            return None
        if start - free() < budget // 8:
            continue
        used = await asyncio.to_thread(held)
        if used > budget:
            _kill_tree(child.proc, child._cgroup)
            return used
