"""Timed executions of a pipeline file in a warm sandbox.

An :class:`Executor` is one warm sandbox for one file, under the runner
(``runner_timer.py`` and ``runner_execution.py``, sent to the sandbox as one source): it
imports torch once, and each execution is a fresh fork of a pristine template, wiped
away before the next.  An execution returns what the *harness* observed: the timer's
interval, the harness's own timestamps of the runner's START and END lines, the output,
and the execution's report, parsed at the boundary (``execution_report``).
:func:`execute` is one execution in a sandbox of its own; :func:`measure` repeats
executions, each in a timing slot (``slots``: one per timing CPU, machine-wide).
Side by side is ``side_by_side``'s; caching, ``cache``'s; judging, the grader's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safe_files
import sandbox
from problems.ml_training.execution_report import (
    ExecutionReport,
    MalformedReport,
    ProbeOutputs,
    is_missing_entry,
    loads,
    parse_probes,
    parse_report,
)
from problems.ml_training.timing import slots

log = logging.getLogger(__name__)

# The runner: its two programs as one source, the execution's before the timer, which
# starts serving at its end (runner_execution.py, runner_timer.py).
RUNNER_SOURCE = "\n\n".join((Path(__file__).parent / name).read_text()
                              for name in ("runner_execution.py", "runner_timer.py"))
# What a cached measurement depends on besides the file: how executions are run and timed
# and how their data is made.  A change to either invalidates the cache.
PROTOCOL = hashlib.sha256((RUNNER_SOURCE + (Path(__file__).parent.parent / "fresh_inputs.py")
                           .read_text()).encode()).hexdigest()[:16]
# Where executions run inside a sandbox: in its private /tmp, so what a candidate writes
# counts against the sandbox's memory limit and never reaches the host's disk.
PRIVATE_WORKDIR = Path("/tmp/execution")


# Contended: other tasks (or the hypervisor) took more than this share of its wall time
# on the timing CPU, beyond the counters' resolution.
CONTENDED_SHARE = 0.05
COUNTER_RESOLUTION = 0.02  # seconds: /proc/stat counts in clock ticks


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
    timing_cpu: int | None = None  # the CPU of its timing slot (None: not timed)
    others_on_cpu: float | None = None  # seconds anything else ran on that CPU meanwhile
    load: float | None = None  # the machine's load average as it ended

    @property
    def contended(self) -> bool:
        """Whether something else took a noticeable share of its timing CPU."""
        return (self.others_on_cpu is not None and self.observed_time is not None
                and self.others_on_cpu > CONTENDED_SHARE * self.observed_time
                + COUNTER_RESOLUTION)

    def timing_record(self) -> dict[str, Any]:
        """How the clock saw it, for the records: ``on_cpu`` is the share of its wall
        time (START to END as observed here) it was on the CPU."""
        on_cpu = (round(self.cpu_time / self.observed_time, 4)
                  if self.cpu_time and self.observed_time else None)
        return {"timing_cpu": self.timing_cpu, "cpu_time": self.cpu_time, "on_cpu": on_cpu,
                "others_on_cpu": self.others_on_cpu, "load": self.load,
                "contended": self.contended}


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
    """A warm sandbox that runs one file, job after job (the runner).

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
        self.path, self.inst, self.threads, self.limits, self.read_only = (
            path, inst, threads, limits, read_only)
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
        self._cpu_at: dict[str, float | None] = {}  # the sandbox's CPU time at START, END
        self._busy_at: dict[str, float | None] = {}  # and the timing CPU's busy time
        self._timing_cpu: int | None = None

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
            if kind in ("START", "END") and self._child is not None and self._queue is queue:
                # CPU time of the sandbox's whole tree at these marks, from its cgroup:
                # the timer waits for the answer (to this sandbox only) before it starts
                # the execution, and the execution for it before its probes.
                self._cpu_at[kind] = self._child.cpu_seconds()
                if self._timing_cpu is not None:  # and what else ran on the timing CPU
                    self._busy_at[kind] = sandbox.cpu_busy_seconds(self._timing_cpu)
                self._child.send_now(b"go\n")
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
            try:
                await child.exited()
                await child.wait(2.0)  # the last control lines
            finally:  # (a reader's failure is raised where the watcher is ended)
                queue.put_nowait((time.monotonic(), "GONE", ""))
        self._watcher = asyncio.ensure_future(watch())  # ended by _discard

    async def _discard(self) -> sandbox.ProcessResult | None:
        self._ready = False
        result = None
        if self._child is not None:
            child, self._child = self._child, None
            try:
                await sandbox.cancel_and_wait(self._watcher)
            finally:  # the sandbox goes, whatever happened to its watcher
                result = await child.stop()
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
        """Start the sandbox if needed (on an untimed CPU, no slot) and wait until it
        can take a job ('' then, else why it cannot)."""
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
        if timed and sandbox.timed_cpu() is None:  # never timed outside a slot
            await self.ready()
            async with slots.timing_slot(f"timing {self.path.name}"):
                return await self.run(data=data, probes=probes, timed=True, seconds=seconds)
        problem = await self.ready()
        if problem:
            return Execution(ok=False, error=problem, time=None, stdout="", stderr_tail="",
                             wall_time=0.0, seed=(data or {}).get("seed"),
                             labelling=(data or {}).get("labelling", 0),
                             isolation=self._isolation)
        child = self._child
        self._ready = False
        oom_kills = child.oom_kills()
        self._timing_cpu = sandbox.timed_cpu() if timed else None
        if timed:
            child.move_to_timed_cpu()
        job = dict(source=self.source, entry=self.inst.entry, threads=self.threads,
                   module_path="candidate.py", watch=list(self.inst.watch), data=data,
                   probes=probes, probe_timeout=min(60.0, seconds))
        marks: dict[str, tuple[float, str]] = {}
        self._cpu_at, self._busy_at = {}, {}
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
        execution = self.execution_of(marks, data, timed_out, seconds, wall, gone)
        if out_of_memory:  # the kernel ended one of its processes at the sandbox's limit
            execution.ok, execution.time = False, None
            execution.error = ("the program ran out of memory (the sandbox's limit of "
                               f"{self.limits.memory_bytes / sandbox.GIB:.1f} GiB for all "
                               "its processes together was reached)")
        return execution

    def execution_of(self, marks: dict[str, tuple[float, str]], data: dict[str, Any] | None,
                     timed_out: bool, seconds: float, wall: float,
                     gone: sandbox.ProcessResult | None) -> Execution:
        """What the harness observed of one execution, from the runner's marks (its
        START and END lines, the report and the output, each as the harness received
        it): the report is parsed here, at the boundary."""
        elapsed = observed = exit_code = cpu = others = None
        if "START" in marks and "END" in marks:
            observed = marks["END"][0] - marks["START"][0]
            started, ended = self._cpu_at.get("START"), self._cpu_at.get("END")
            if started is not None and ended is not None:
                cpu = ended - started
                busy = [self._busy_at.get(k) for k in ("START", "END")]
                if None not in busy:
                    others = round(max(0.0, busy[1] - busy[0] - cpu), 3)
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
                         cpu_limit=self._cpu_limit, cpu_time=cpu,
                         timing_cpu=self._timing_cpu, others_on_cpu=others,
                         load=sandbox.load_average() if self._timing_cpu is not None else None)

    async def close(self) -> None:
        """End the sandbox (killed: nothing in it is worth waiting for)."""
        await self._discard()


async def execute(path: Path, inst: Instrumentation, *, threads: int, limits: sandbox.Limits,
                  read_only: tuple[Path, ...] = (), data: dict[str, Any] | None = None,
                  probes: dict[str, Any] | None = None, timed: bool = True) -> Execution:
    """Run ``path`` once in a sandbox of its own, timed by the harness (see
    :class:`Executor`: ``data`` is a ``fresh_inputs.DataSet.job()``, ``probes`` strict
    mode's).  Never raises for what the file does."""
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
    """Execute ``path`` up to ``repeats`` times, each in a timing slot of the machine's
    (``slots``); execution i runs on ``data[i]`` when given.  Stops early when
    ``keep_going`` says so (a crash, or far below target).  All executions share one
    warm sandbox (``executor``, or one of its own; see :class:`Executor`)."""
    executions: list[Execution] = []
    async with contextlib.AsyncExitStack() as stack:
        if executor is None:
            executor = await stack.enter_async_context(Executor(
                path, inst, threads=threads, limits=limits, read_only=read_only))
        for i in range(repeats):
            await executor.ready()
            async with slots.timing_slot(f"timing {path.name}"):
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
