"""Timed executions of a pipeline file, and the on-disk cache of baseline measurements.

:func:`execute` runs one file once in the sandbox under ``problems/timing_runner.py``
and returns what the *harness* observed: the time between the runner's START and END
lines as they arrived here, the stdout, and the runner's counts of the work done.
:func:`measure` repeats that k times, one timed execution on the machine at a time.
:class:`BaselineCache` keeps measurements keyed by everything that changes them.

Judging the figures is the grader's job (``problems.ml_training_optimization``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sandbox

log = logging.getLogger(__name__)

RUNNER_SOURCE = (Path(__file__).parent / "timing_runner.py").read_text()
# What a cached measurement depends on besides the file: how executions are run and timed
# and how their data is made.  A change to either invalidates the cache.
PROTOCOL = hashlib.sha256((RUNNER_SOURCE + (Path(__file__).parent / "fresh_inputs.py")
                           .read_text()).encode()).hexdigest()[:16]
_timing_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def timing_lock() -> asyncio.Lock:
    """One lock per event loop: timed executions never overlap on this machine."""
    loop = asyncio.get_running_loop()
    if loop not in _timing_locks:
        _timing_locks[loop] = asyncio.Lock()
    return _timing_locks[loop]


@dataclass(frozen=True)
class Instrumentation:
    """Which names the runner wraps to count work, and the entry it calls."""

    entry: str
    feature_class: str
    feature_method: str
    model_class: str
    keep_predictions: int
    data_function: str = "generate_synthetic_data"


@dataclass
class Execution:
    """One execution as the harness saw it.  ``time`` is None when it did not finish."""

    ok: bool
    error: str
    time: float | None
    stdout: str
    stderr_tail: str
    wall_time: float
    report: dict[str, Any] | None = None
    probes: dict[str, Any] | None = None  # strict mode's component outputs (untimed)
    seed: int | None = None  # the fresh data set it ran on: its images
    labelling: int = 0  # and their labels (fresh_inputs.DataSet.key)
    observed_time: float | None = None  # START to END as they arrived here
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


async def execute(path: Path, inst: Instrumentation, *, threads: int, limits: sandbox.Limits,
                  read_only: tuple[Path, ...] = (), data: dict[str, Any] | None = None,
                  probes: dict[str, Any] | None = None, timed: bool = True,
                  start: Callable[[], Awaitable[None]] | None = None) -> Execution:
    """Run ``path`` once, timed by the harness.  Never raises for what the file does.

    ``data`` (a ``fresh_inputs.DataSet.job()``) is injected through the pipeline's data
    function; ``probes`` (strict mode) are run on the components after the timed part.
    With ``start``, the process is started (and imports torch) at once, and the job is
    sent when ``start()`` returns: the caller's way of preparing it ahead of time.
    The time is the timer process's (``problems/timing_runner.py``): from just before it
    forks the execution to the moment every holder of the execution's report pipe has
    closed it.  The harness also timestamps both marks as they arrive on the private
    control channel and keeps that interval beside it."""
    marks: dict[str, tuple[float, str]] = {}

    def on_control(arrived: float, line: str) -> None:
        kind, _, payload = line.partition(" ")
        if kind in ("START", "END", "EXIT", "REPORT", "PROBES") and kind not in marks:
            marks[kind] = (arrived, payload)

    isolation = sandbox.best_isolation()
    job = dict(module_path="candidate.py", entry=inst.entry, threads=threads,
               control_fd=sandbox.CONTROL_FD, own_pid_namespace=isolation != "none",
               feature_class=inst.feature_class, feature_method=inst.feature_method,
               model_class=inst.model_class, keep_predictions=inst.keep_predictions,
               data_function=inst.data_function, data=data, probes=probes,
               probe_timeout=min(60.0, limits.timeout))
    encoded = (json.dumps(job) + "\n").encode()

    async def job_bytes() -> bytes:
        await start()
        return encoded

    workdir = Path(tempfile.mkdtemp(prefix="hp-exec-"))
    try:
        shutil.copyfile(path, workdir / "candidate.py")
        result = await sandbox.run_python(
            ["-c", RUNNER_SOURCE], visibility=sandbox.Visibility(workdir, read_only=read_only),
            limits=limits, threads=threads, stdin_data=job_bytes if start else encoded,
            on_control=on_control, isolation=isolation, timed=timed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = observed = exit_code = None
    if "START" in marks and "END" in marks:
        observed = marks["END"][0] - marks["START"][0]
        try:
            elapsed = float(marks["END"][1])
            exit_code = int(marks["EXIT"][1]) if "EXIT" in marks else None
        except ValueError:
            log.warning("unreadable mark from the timer for %s", path)
    report, probe_out = (_payload(marks, kind) for kind in ("REPORT", "PROBES"))
    error = ""
    if report.get("missing_entry"):
        error = f"the entry function {inst.entry}() is not defined"
    elif result.timed_out:
        error = f"the program {result.failure()}"
    elif elapsed is None or exit_code is None:
        error = f"the timer did not finish (the program {result.failure() or 'was stopped'})"
    elif exit_code != 0:
        error = (f"the program exited with status {exit_code}" if exit_code > 0
                 else f"the program was killed by signal {-exit_code}")
        if result.memory_error:
            error = "the program ran out of memory (the memory limit was reached)"
    elif not report or "eval_predictions" not in report:
        error = "the program exited before its entry function returned"
    return Execution(ok=not error, error=error, time=elapsed if not error else None,
                     stdout=result.stdout, stderr_tail=result.stderr[-3000:],
                     wall_time=result.wall_time, report=report or None,
                     probes=probe_out or None, seed=(data or {}).get("seed"),
                     labelling=(data or {}).get("labelling", 0),
                     observed_time=observed, isolation=result.isolation,
                     cpu_limit=result.cpu_limit)


def _payload(marks: dict[str, tuple[float, str]], kind: str) -> dict[str, Any]:
    """A JSON object the execution sent (its own output: untrusted, only parsed)."""
    if kind not in marks:
        return {}
    try:
        parsed = json.loads(marks[kind][1] or "null")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def measure(path: Path, inst: Instrumentation, *, repeats: int, threads: int,
                  limits: sandbox.Limits, read_only: tuple[Path, ...] = (),
                  keep_going: Callable[[Execution], bool] = lambda e: e.ok,
                  on_progress: Callable[[int, int, Execution], None] | None = None,
                  after_each: Callable[[], Any] | None = None,
                  data: Sequence[dict[str, Any] | None] = (),
                  probes: dict[str, Any] | None = None, timed: bool = True) -> Measurement:
    """Execute ``path`` up to ``repeats`` times, serialised with every other timing;
    execution i runs on ``data[i]`` when given.  Stops early when ``keep_going`` says so
    (a crash, or far below target).

    Each execution is a fresh process, started ahead: while execution i runs (on the
    timed CPU), execution i+1's process is started and imports torch on another CPU, and
    it gets its job only when i is done.  So the machine's time per execution is little
    more than its timed part, and no process ever runs the candidate twice."""
    executions: list[Execution] = []
    gates = [asyncio.Event() for _ in range(repeats)]

    def launch(i: int) -> asyncio.Future:
        return asyncio.ensure_future(execute(
            path, inst, threads=threads, limits=limits, read_only=read_only,
            data=data[i] if i < len(data) else None, probes=probes, timed=timed,
            start=gates[i].wait))

    pending = launch(0)
    try:
        for i in range(repeats):
            async with timing_lock():
                gates[i].set()
                current, pending = pending, launch(i + 1) if i + 1 < repeats else None
                execution = await current
            executions.append(execution)
            if after_each is not None:
                after_each()
            if on_progress is not None:
                on_progress(i + 1, repeats, execution)
            if not keep_going(execution):
                break
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
    return Measurement(executions)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_cache_dir() -> Path:
    if env := os.environ.get("HELLO_PY_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hello-py"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@dataclass
class CachedMeasurement:
    """A stored measurement (baseline or reference): times and accuracy, with its key."""

    times: list[float]
    accuracy: float
    key: dict[str, Any] = field(default_factory=dict)
    oracle_agreement: list[float] = field(default_factory=list)  # per execution (baseline)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class BaselineCache:
    """Measurements on disk, keyed by the file's content, the software and the machine."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or default_cache_dir()
        sandbox.hide_from_children(self.directory)

    @staticmethod
    def key(path: Path, *, threads: int, label: str) -> dict[str, Any]:
        return {
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

    def _path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.directory / f"{key['label']}-{digest}.json"

    def load(self, key: dict[str, Any], min_runs: int = 1) -> CachedMeasurement | None:
        """The stored measurement for ``key`` if it has at least ``min_runs`` times."""
        try:
            data = json.loads(self._path(key).read_text())
            found = CachedMeasurement(**data)
        except (OSError, ValueError, TypeError):
            return None
        return found if found.key == key and len(found.times) >= min_runs else None

    def store(self, found: CachedMeasurement) -> None:
        path = self._path(found.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(found), indent=2))
        tmp.replace(path)
