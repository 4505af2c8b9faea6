"""Timed executions of a pipeline file, and the on-disk cache of baseline measurements.

An :class:`Executor` is one warm sandbox for one file, under
``problems/ml_training/timing_runner.py``: it imports torch once, and each execution is a fresh fork
of a pristine template, wiped away before the next.  An execution returns what the
*harness* observed: the timer's interval, the harness's own timestamps of the runner's
START and END lines, the output, and the execution's counts of the work done (its own,
to be checked).  :func:`execute` is one execution in a sandbox of its own;
:func:`measure` repeats executions, one timed execution on the machine at a time.
:class:`BaselineCache` keeps measurements keyed by everything that changes them.

Judging the figures is the grader's job (``problems.ml_training.task``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import stat
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import safe_files
import sandbox
from problems.ml_training.calibration import in_anchor_units
from problems.ml_training.execution_report import (
    ExecutionReport,
    MalformedReport,
    ProbeOutputs,
    is_missing_entry,
    loads,
    parse_probes,
    parse_report,
)

log = logging.getLogger(__name__)

RUNNER_SOURCE = (Path(__file__).parent / "timing_runner.py").read_text()
# What a cached measurement depends on besides the file: how executions are run and timed
# and how their data is made.  A change to either invalidates the cache.
PROTOCOL = hashlib.sha256((RUNNER_SOURCE + (Path(__file__).parent / "fresh_inputs.py")
                           .read_text()).encode()).hexdigest()[:16]
_timing_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Where executions run inside a sandbox: in its private /tmp, so what a candidate writes
# counts against the sandbox's memory limit and never reaches the host's disk.
PRIVATE_WORKDIR = Path("/tmp/execution")


def timing_lock() -> asyncio.Lock:
    """One lock per event loop: timed executions never overlap on this machine."""
    loop = asyncio.get_running_loop()
    if loop not in _timing_locks:
        _timing_locks[loop] = asyncio.Lock()
    return _timing_locks[loop]


@dataclass(frozen=True)
class Instrumentation:
    """The entry the runner calls, what it watches (``problems.ml_training.probes``: each probe's
    ``job()``) and the modules its timer imports before any timed region."""

    entry: str
    watch: tuple[dict[str, Any], ...] = ()
    preload: tuple[str, ...] = ()


@dataclass
class Execution:
    """One execution as the harness saw it.  ``time`` is None when it did not finish."""

    ok: bool
    error: str
    time: float | None
    stdout: str
    stderr_tail: str
    wall_time: float
    report: ExecutionReport | None = None  # parsed: every field checked
    probes: ProbeOutputs | None = None  # strict mode's component outputs (untimed)
    seed: int | None = None  # the fresh data set it ran on: its images
    labelling: int = 0  # and their labels (fresh_inputs.DataSet.key)
    observed_time: float | None = None  # START to END as they arrived here
    cpu_time: float | None = None  # the sandbox's CPU time from START to END (its cgroup)
    isolation: str = "none"
    cpu_limit: str = "none"


@dataclass
class Measurement:
    executions: list[Execution]

    @property
    def times(self) -> list[float]:
        return [e.time for e in self.executions if e.ok and e.time is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


class Executor:
    """A warm sandbox that runs one file, job after job (``problems/ml_training/timing_runner.py``).

    The sandbox starts once and imports torch once; each execution is a fresh fork of a
    pristine template inside it, and between executions the runner kills what the
    execution left running and wipes every place it could write, or says so and ends
    (then the next execution gets a new sandbox).  Use as ``async with``.

    Every figure comes from what the harness observed: the timer's interval (its clock,
    its pipe), the harness's own timestamps of START and END, and the execution's output
    as the timer relayed it.  Nothing the execution sends is believed, only parsed."""

    STARTUP_TIMEOUT = 300.0  # importing torch on a loaded machine
    MAX_SOURCE_BYTES = 8 * 1024**2  # what is read of the file to run

    def __init__(self, path: Path, inst: Instrumentation, *, threads: int,
                 limits: sandbox.Limits, read_only: tuple[Path, ...] = ()):
        self.path, self.inst, self.threads, self.limits = path, inst, threads, limits
        self.read_only = read_only
        # Read once, never following a link at the name nor waiting on a FIFO there.
        self.source = base64.b64encode(safe_files.read_bytes(
            path.parent, path.name, self.MAX_SOURCE_BYTES)).decode()
        self.sandboxes = 0  # started so far (a DIRTY report or a timeout starts another)
        self._child: sandbox.Child | None = None
        self._queue: asyncio.Queue | None = None
        self._workdir: Path | None = None
        self._ready = False
        self._isolation = "none"
        self._cpu_limit = "none"
        self._starting = asyncio.Lock()
        self._cpu_at: dict[str, float | None] = {}

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _spawn(self) -> None:
        await self._discard()
        self._isolation = sandbox.best_isolation()
        own = self._isolation != "none"
        if own:  # the executions' directory exists only in the sandbox (its memory)
            workdir = PRIVATE_WORKDIR
        else:  # no sandbox: a directory of the host's, removed with the executor
            workdir = self._workdir = Path(tempfile.mkdtemp(prefix="hp-exec-"))
        visibility = sandbox.Visibility(workdir, read_only=self.read_only, private=own)
        queue: asyncio.Queue = asyncio.Queue()
        self._queue = queue

        def on_control(arrived: float, line: str) -> None:
            kind, _, payload = line.partition(" ")
            if kind in ("START", "END") and self._child is not None:
                # CPU time of the sandbox's whole tree as these marks arrive: read from
                # the cgroup, outside the execution (the timer and template are idle).
                self._cpu_at[kind] = self._child.cpu_seconds()
            queue.put_nowait((arrived, kind, payload))

        places = sandbox.writable_places(visibility) if own else {
            "scratch": [], "read_only": [], "emptied": []}
        config = dict(control_fd=sandbox.CONTROL_FD, workdir=str(workdir),
                      threads=self.threads, max_output=self.limits.max_output,
                      own_pid_namespace=own, preload=list(self.inst.preload), **places)
        self.sandboxes += 1
        child = await sandbox.start_python(
            ["-P", "-c", RUNNER_SOURCE, json.dumps(config)], visibility=visibility,
            limits=self.limits, threads=self.threads, stdin=True, on_control=on_control,
            isolation=self._isolation, timed=False)
        self._child = child
        self._cpu_limit = child.cpu_limit

        async def watch() -> None:
            await child.exited()
            await child.wait(2.0)  # the last control lines
            queue.put_nowait((time.monotonic(), "GONE", ""))
        self._watcher = asyncio.ensure_future(watch())

    async def _discard(self) -> sandbox.ProcessResult | None:
        self._ready = False
        result = None
        if self._child is not None:
            self._watcher.cancel()
            result = await self._child.stop()
            self._child = None
        if self._workdir is not None:
            # What the executions left: links, FIFOs, trees too deep for a recursive walk.
            workdir, self._workdir = self._workdir, None
            removed = await asyncio.to_thread(safe_files.remove_tree, workdir)
            if not removed.ok:
                log.warning("could not remove all of %s: %s", workdir, "; ".join(removed.notes))
        return result

    async def _next(self, kinds: tuple[str, ...]) -> tuple[float, str, str]:
        while True:
            item = await self._queue.get()
            if item[1] in kinds or item[1] == "GONE":
                return item

    async def ready(self) -> str:
        """Start the sandbox if needed and wait until it can take a job ('' then, else
        why it cannot).  Takes no timing lock: the start is on an untimed CPU."""
        async with self._starting:
            return await self._make_ready()

    async def _make_ready(self) -> str:
        reason = ""
        for _ in range(2):
            if self._ready:
                return ""
            if self._child is None:
                await self._spawn()
            try:
                async with asyncio.timeout(self.STARTUP_TIMEOUT):
                    _, kind, payload = await self._next(("READY", "DIRTY"))
            except TimeoutError:
                kind, payload = "GONE", "it did not start in time"
            if kind == "READY":
                self._ready = True
                return ""
            result = await self._discard()
            reason = payload or (result.failure() if result else "") or "it ended"
            log.warning("the sandbox for %s could not run jobs: %s %s", self.path.name,
                        reason, (result.stderr[-500:] if result else ""))
        return f"the sandbox could not be started ({reason})"

    async def run(self, *, data: dict[str, Any] | None = None,
                  probes: dict[str, Any] | None = None, timed: bool = True,
                  seconds: float | None = None) -> Execution:
        """One execution of the file, killed after ``seconds`` (default: the limits'
        timeout); ``timed`` puts it on the CPU kept for timings.  Call :meth:`ready`
        first, outside any timing lock.  Never raises for what the file does."""
        seconds = self.limits.timeout if seconds is None else seconds
        problem = await self.ready()
        if problem:
            return Execution(ok=False, error=problem, time=None, stdout="", stderr_tail="",
                             wall_time=0.0, seed=(data or {}).get("seed"),
                             labelling=(data or {}).get("labelling", 0),
                             isolation=self._isolation)
        child = self._child
        self._ready = False
        oom_kills = child.oom_kills()
        if timed:
            child.move_to_timed_cpu()
        job = dict(source=self.source, entry=self.inst.entry, threads=self.threads,
                   module_path="candidate.py", watch=list(self.inst.watch), data=data,
                   probes=probes, probe_timeout=min(60.0, seconds))
        marks: dict[str, tuple[float, str]] = {}
        self._cpu_at = {}
        sent = time.monotonic()
        timed_out = False
        if await child.send((json.dumps(job) + "\n").encode()):
            try:
                async with asyncio.timeout(seconds):
                    while "OUTPUT" not in marks:
                        arrived, kind, payload = await self._next(
                            ("START", "END", "EXIT", "REPORT", "PROBES", "OUTPUT"))
                        if kind == "GONE":
                            break
                        marks.setdefault(kind, (arrived, payload))
            except TimeoutError:
                timed_out = True
        wall = time.monotonic() - sent
        out_of_memory = child.oom_kills() > oom_kills
        gone = None
        if "OUTPUT" in marks:
            try:  # the runner cleans up, then says whether the sandbox can go on
                async with asyncio.timeout(30.0):
                    _, kind, payload = await self._next(("READY", "DIRTY"))
            except TimeoutError:
                kind, payload = "DIRTY", "the clean-up did not finish"
            if kind == "READY":
                self._ready = True
            else:
                log.info("a new sandbox for %s: %s", self.path.name, payload or kind)
                await self._discard()
        else:
            gone = await self._discard()
        execution = self._execution(marks, data, timed_out, seconds, wall, gone)
        if out_of_memory:  # the kernel ended one of its processes at the sandbox's limit
            execution.ok, execution.time = False, None
            execution.error = ("the program ran out of memory (the sandbox's limit of "
                               f"{self.limits.memory_bytes / sandbox.GIB:.1f} GiB for all "
                               "its processes together was reached)")
        return execution

    def _execution(self, marks: dict[str, tuple[float, str]], data: dict[str, Any] | None,
                   timed_out: bool, seconds: float, wall: float,
                   gone: sandbox.ProcessResult | None) -> Execution:
        elapsed = observed = exit_code = cpu = None
        if "START" in marks and "END" in marks:
            observed = marks["END"][0] - marks["START"][0]
            started, ended = self._cpu_at.get("START"), self._cpu_at.get("END")
            if started is not None and ended is not None:
                cpu = ended - started
            try:
                elapsed = float(marks["END"][1])
                exit_code = int(marks["EXIT"][1]) if "EXIT" in marks else None
            except ValueError:
                log.warning("unreadable mark from the timer for %s", self.path)
        try:
            output = _payload(marks, "OUTPUT")  # the timer's own
        except MalformedReport:
            output = None
        output = output if isinstance(output, dict) else {}
        stdout, stderr = (str(output.get(k, "")) for k in ("stdout", "stderr"))
        memory = any(sign in stderr[-3000:] for sign in sandbox.MEMORY_SIGNS)
        # The execution's own records, parsed here once: a malformed one is a failed
        # execution naming the field, never an exception further on.
        report: ExecutionReport | None = None
        probe_out: ProbeOutputs | None = None
        missing_entry, malformed = False, ""
        try:
            raw = _payload(marks, "REPORT")
            missing_entry = is_missing_entry(raw)
            if raw is not None and not missing_entry:
                report = parse_report(raw)
            raw = _payload(marks, "PROBES")
            if raw is not None:
                probe_out = parse_probes(raw)
        except MalformedReport as exc:
            report, probe_out, malformed = None, None, str(exc)
        error = ""
        if missing_entry:
            error = f"the entry function {self.inst.entry}() is not defined"
        elif timed_out:
            error = f"the program timed out after {seconds:.0f} s and was killed"
        elif elapsed is None or exit_code is None:
            why = (gone.failure() if gone else "") or "was stopped"
            error = f"the timer did not finish (the program {why})"
            if gone is not None and not stderr:
                stderr = gone.stderr
        elif exit_code != 0:
            error = (f"the program exited with status {exit_code}" if exit_code > 0
                     else f"the program was killed by signal {-exit_code}")
            if memory:
                error = "the program ran out of memory (the memory limit was reached)"
        elif malformed:
            error = f"the program's report is malformed ({malformed})"
        elif report is None:
            error = "the program exited before its entry function returned"
        return Execution(ok=not error, error=error, time=elapsed if not error else None,
                         stdout=stdout, stderr_tail=stderr[-3000:], wall_time=wall,
                         report=report, probes=probe_out,
                         seed=(data or {}).get("seed"),
                         labelling=(data or {}).get("labelling", 0),
                         observed_time=observed, isolation=self._isolation,
                         cpu_limit=self._cpu_limit, cpu_time=cpu)

    async def close(self) -> None:
        """End the sandbox (killed: nothing in it is worth waiting for)."""
        await self._discard()


async def execute(path: Path, inst: Instrumentation, *, threads: int, limits: sandbox.Limits,
                  read_only: tuple[Path, ...] = (), data: dict[str, Any] | None = None,
                  probes: dict[str, Any] | None = None, timed: bool = True) -> Execution:
    """Run ``path`` once in a sandbox of its own, timed by the harness.  Never raises for
    what the file does.

    ``data`` (a ``fresh_inputs.DataSet.job()``) is injected through the pipeline's data
    function; ``probes`` (strict mode) are run on the components after the timed part.
    The time is the timer process's (``problems/ml_training/timing_runner.py``): from just before it
    lets the execution start to the moment every holder of the execution's report pipe
    has closed it.  The harness also timestamps both marks as they arrive on the private
    control channel and keeps that interval beside it."""
    async with Executor(path, inst, threads=threads, limits=limits,
                        read_only=read_only) as executor:
        return await executor.run(data=data, probes=probes, timed=timed)


def _payload(marks: dict[str, tuple[float, str]], kind: str) -> Any:
    """The JSON value sent as ``kind`` (the execution's REPORT and PROBES are its own
    output: untrusted, to be parsed by ``problems.ml_training.execution_report``); None when nothing
    was sent.  Text that is not JSON raises MalformedReport naming the kind."""
    return loads(marks[kind][1], kind.lower()) if kind in marks else None


async def measure(path: Path, inst: Instrumentation, *, repeats: int, threads: int,
                  limits: sandbox.Limits, read_only: tuple[Path, ...] = (),
                  keep_going: Callable[[Execution], bool] = lambda e: e.ok,
                  on_progress: Callable[[int, int, Execution], None] | None = None,
                  after_each: Callable[[], Any] | None = None,
                  data: Sequence[dict[str, Any] | None] = (),
                  probes: dict[str, Any] | None = None, timed: bool = True,
                  executor: Executor | None = None) -> Measurement:
    """Execute ``path`` up to ``repeats`` times, serialised with every other timing;
    execution i runs on ``data[i]`` when given.  Stops early when ``keep_going`` says so
    (a crash, or far below target).

    All executions share one warm sandbox (``executor``, or one of its own): it starts
    and imports torch outside the timing lock, and each execution is a fresh fork of its
    pristine template, wiped away before the next (see :class:`Executor`)."""
    executions: list[Execution] = []
    async with contextlib.AsyncExitStack() as stack:
        if executor is None:
            executor = await stack.enter_async_context(Executor(
                path, inst, threads=threads, limits=limits, read_only=read_only))
        for i in range(repeats):
            await executor.ready()
            async with timing_lock():
                execution = await executor.run(data=data[i] if i < len(data) else None,
                                               probes=probes, timed=timed,
                                               seconds=limits.timeout)
            executions.append(execution)
            if after_each is not None:
                after_each()
            if on_progress is not None:
                on_progress(i + 1, repeats, execution)
            if not keep_going(execution):
                break
    return Measurement(executions)


class SideBySide:
    """Executions of a subject file in alternation with an anchor file (A S A S ... A),
    each timed on its own, one at a time, on the timing CPU.

    Before each subject execution ``around`` anchor executions run on the same data, and
    :meth:`close` runs the group after the last one.  ``units()`` gives each subject time
    over the median of the anchor times around it (``calibration.in_anchor_units``), so
    a slow spell of the machine that slows both cancels out.  ``anchor_probes`` go with
    the very first anchor execution only (strict mode's untimed probes)."""

    def __init__(self, subject: Executor, anchor: Executor, *, around: int = 1,
                 anchor_probes: dict[str, Any] | None = None):
        self.subject_executor, self.anchor_executor = subject, anchor
        self.around = max(1, around)
        self.anchor_probes = anchor_probes
        self.subject: list[Execution] = []
        self.anchors: list[list[Execution]] = []  # groups: before each subject, then after
        self.closed = False

    async def _anchor_group(self, data: dict[str, Any] | None) -> None:
        group = []
        for _ in range(self.around):
            await self.anchor_executor.ready()
            first = not self.anchors and not group
            async with timing_lock():
                group.append(await self.anchor_executor.run(
                    data=data, probes=self.anchor_probes if first else None))
        self.anchors.append(group)

    async def step(self, data: dict[str, Any] | None = None,
                   probes: dict[str, Any] | None = None) -> Execution:
        """One anchor group, then one subject execution, on ``data``."""
        if self.closed:
            raise RuntimeError("the side-by-side measurement is closed")
        # the subject's sandbox starts (imports torch) on the free CPU meanwhile
        warming = asyncio.ensure_future(self.subject_executor.ready())
        try:
            await self._anchor_group(data)
            await warming
        finally:
            if not warming.done():
                warming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warming
        async with timing_lock():
            execution = await self.subject_executor.run(data=data, probes=probes)
        self.subject.append(execution)
        return execution

    async def close(self, data: dict[str, Any] | None = None) -> None:
        """The anchor group after the last subject execution."""
        if not self.closed and self.subject:
            await self._anchor_group(data)
        self.closed = True

    def anchor_runs(self) -> list[Execution]:
        return [e for group in self.anchors for e in group]

    def anchor_times(self) -> list[list[float]]:
        return [[e.time for e in group if e.ok and e.time is not None]
                for group in self.anchors]

    def units(self) -> list[float]:
        times = [e.time if e.ok else None for e in self.subject]
        return in_anchor_units(times, self.anchor_times())


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_cache_dir() -> Path:
    """The harness's own cache directory: ``HELLO_PY_CACHE_DIR``, else ``hello-py`` under
    ``XDG_CACHE_HOME`` or ``~/.cache``.  No sandbox sees it: a sandbox sees only
    what is bound into it (``sandbox``)."""
    if env := os.environ.get("HELLO_PY_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hello-py"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


MAX_CACHE_BYTES = 10 * 1024 * 1024  # an entry is a few kB; a larger file is not read
MAX_CACHED_VALUES = 10_000  # in each list of an entry
# units were computed from the very times stored beside them: only rounding may differ
UNITS_RTOL = 1e-6


@dataclass
class CachedMeasurement:
    """A stored measurement (baseline or reference): times and accuracy, with its key."""

    times: list[float]
    accuracy: float
    key: dict[str, Any] = field(default_factory=dict)
    oracle_agreement: list[float] = field(default_factory=list)  # per execution (baseline)
    units: list[float] = field(default_factory=list)  # times / the strict tier's beside them
    anchor_times: list[float] = field(default_factory=list)  # those strict-tier times

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class Lookup(NamedTuple):
    """What :meth:`BaselineCache.load` found: the measurement to use (None: measure), and
    why a stored entry was refused (None when there was none, or it was used)."""

    found: CachedMeasurement | None = None
    refused: str | None = None


class _Refused(ValueError):
    """A stored entry that is not used; the message says why."""


def _number(value: Any, where: str, low: float, high: float, *, above_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{where} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise _Refused(f"{where} is not finite") from None
    if not math.isfinite(number):
        raise _Refused(f"{where} is not finite")
    if number < low or number > high or (above_low and number == low):
        bounds = "positive" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise _Refused(f"{where} = {number!r} is not {bounds}")
    return number


def _numbers(data: dict[str, Any], name: str, low: float = 0.0, high: float = math.inf, *,
             above_low: bool = True) -> list[float]:
    values = data[name]
    if not isinstance(values, list):
        raise _Refused(f"{name} is {type(values).__name__}, not a list")
    if len(values) > MAX_CACHED_VALUES:
        raise _Refused(f"{name} has more than {MAX_CACHED_VALUES} values")
    return [_number(v, f"{name}[{i}]", low, high, above_low=above_low)
            for i, v in enumerate(values)]


def _parse_entry(data: Any, key: dict[str, Any]) -> CachedMeasurement:
    """A stored entry (parsed JSON) checked field by field, and against itself, as the
    measurement stored under ``key``: its units must be its times over the median of the
    anchor times around each (``SideBySide``: a group of anchor executions before each
    time and one after the last, flattened).  Raises :class:`_Refused` saying why not."""
    if not isinstance(data, dict):
        raise _Refused(f"the entry is {type(data).__name__}, not an object")
    names = {f.name for f in fields(CachedMeasurement)}
    if missing := sorted(names - data.keys()):
        raise _Refused(f"the entry has no {', '.join(missing)}")
    if extra := sorted(data.keys() - names):
        raise _Refused(f"the entry has an unexpected field {extra[0][:40]!r}")
    stored = data["key"]
    if not isinstance(stored, dict):
        raise _Refused(f"key is {type(stored).__name__}, not an object")
    if stored != key:
        differing = [k for k in key if k not in stored or stored[k] != key[k]]
        raise _Refused(f"its key differs from the one asked for "
                       f"({', '.join(differing) or 'extra fields'})")
    times, units = _numbers(data, "times"), _numbers(data, "units")
    anchor_times = _numbers(data, "anchor_times")
    agreement = _numbers(data, "oracle_agreement", 0.0, 1.0, above_low=False)
    accuracy = _number(data["accuracy"], "accuracy", 0.0, 1.0, above_low=False)
    n = len(times)
    if not n:
        raise _Refused("it has no times")
    if len(units) != n:
        raise _Refused(f"it has {len(units)} units for {n} times")
    if len(agreement) not in (0, n):  # one per execution (the baseline's), or none (a tier)
        raise _Refused(f"it has {len(agreement)} oracle agreements for {n} times")
    around, rest = divmod(len(anchor_times), n + 1)
    if rest or not around:
        raise _Refused(f"its {len(anchor_times)} anchor times are not {n + 1} equal groups "
                       f"(one before each time and one after the last)")
    groups = [anchor_times[i * around:(i + 1) * around] for i in range(n + 1)]
    for j, (unit, expected) in enumerate(zip(units, in_anchor_units(times, groups),
                                             strict=True)):
        if not math.isclose(unit, expected, rel_tol=UNITS_RTOL):
            raise _Refused(f"units[{j}] disagrees with times/anchor_times")
    return CachedMeasurement(times=times, accuracy=accuracy, key=stored,
                             oracle_agreement=agreement, units=units,
                             anchor_times=anchor_times)


class BaselineCache:
    """Measurements on disk, keyed by the file's content, the software and the machine.

    An entry is believed only once checked (:func:`_parse_entry`); a link, a special file
    or an oversized file is never opened for reading, and entries are written whole (a
    fresh temporary file, then renamed over the entry)."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or default_cache_dir()

    @staticmethod
    def key(path: Path, *, threads: int, label: str,
            anchor: Path | None = None) -> dict[str, Any]:
        """``anchor``: the file it was measured beside (its times are in its units)."""
        return {
            "anchor": file_digest(anchor) if anchor is not None else None,
            "label": label,
            "sha256": file_digest(path),
            "protocol": PROTOCOL,
            "python": sys.version.split()[0],
            "torch": _version("torch"),
            "numpy": _version("numpy"),
            "threads": threads,
            "host": platform.node(),
            "machine": platform.machine(),
        }

    @staticmethod
    def _name(key: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return f"{key['label']}-{digest}.json"

    def _open_directory(self) -> int:
        return os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _read(self, name: str) -> bytes | None:
        """The entry's bytes (None: there is none), opened without following a link and
        without blocking on a FIFO; anything but a regular file is refused."""
        try:
            dir_fd = self._open_directory()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Refused(f"the cache directory cannot be opened: {exc.strerror}") from None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Refused("the entry is a symbolic link") from None
            raise _Refused(f"the entry cannot be opened: {exc.strerror}") from None
        finally:
            os.close(dir_fd)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise _Refused("the entry is not a regular file")
            if status.st_size > MAX_CACHE_BYTES:
                raise _Refused(f"the entry is larger than {MAX_CACHE_BYTES} bytes")
            with open(fd, "rb", closefd=False) as f:
                data = f.read(MAX_CACHE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_CACHE_BYTES:
            raise _Refused(f"the entry is larger than {MAX_CACHE_BYTES} bytes")
        return data

    def load(self, key: dict[str, Any], min_runs: int = 1) -> Lookup:
        """The stored measurement for ``key`` if there is one, it passes every check
        (:func:`_parse_entry`) and it has at least ``min_runs`` times; else why it was
        refused, if it was.  Never raises for what is on disk."""
        try:
            raw = self._read(self._name(key))
            if raw is None:
                return Lookup()
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                raise _Refused("the entry is not valid JSON") from None
            found = _parse_entry(data, key)
        except _Refused as why:
            log.info("cached measurement %s refused: %s", self._name(key), why)
            return Lookup(refused=str(why))
        return Lookup(found if len(found.times) >= min_runs else None)

    def store(self, found: CachedMeasurement) -> None:
        """Write the entry whole: into a temporary file of its own (``O_EXCL``, never
        through a link), then renamed over the entry, so a reader sees the old or the new."""
        name = self._name(found.key)
        payload = json.dumps(asdict(found), indent=2).encode()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        dir_fd = self._open_directory()
        try:
            tmp = f".{name}.{os.urandom(8).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                with open(fd, "wb") as f:
                    f.write(payload)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)
