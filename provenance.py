"""Provenance of a record: when it ran, on which code, software and machine.

``started = start(isolation)`` takes what holds for the whole batch or grading (the
time, the load average, the project's git commit and whether the tree was dirty, the
versions of Python and the libraries that matter, the CPU); ``started.finish(calibration)``
adds the end time and load and returns the JSON section every record carries
(``results.json``, ``grade.json``).  :func:`short_form` gives its lines for a markdown
summary.  Nothing here raises for what it cannot learn: an unknown fact is None.

The calibration itself (the figures, when they were measured) is the problem's to give
(``Problem.calibration_used``); wiring the section into the records is the batch's and
the CLI's.  Only the standard library is imported: versions are read from the installed
distributions' metadata, never by importing them.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

import sandbox

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("torch", "numpy", "scikit-learn", "anthropic")
GIT_TIMEOUT_S = 5.0
# Where batches write their records: files there never make the tree dirty.  output/ is
# ignored by git already; saved_outputs/ is not (saved batches may be committed).
RECORD_DIRS = ("output", "saved_outputs")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names


def utc_now() -> str:
    """Now, in ISO 8601 UTC to the second (``2026-12-07T07:10:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime(_TIME_FORMAT)


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, to 2 decimals (None where unknown)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True)
class GitState:
    """The project's commit and whether its tree differed from it (None: unknown)."""

    commit: str | None = None
    dirty: bool | None = None


def _git(*args: str) -> str | None:
    """``git -C <project root> ARGS``'s output, or None if it failed in any way."""
    command = ["git", "-C", str(sandbox.PROJECT_ROOT), *args]
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.info("git %s: %s", " ".join(args), exc)
        return None
    if done.returncode != 0:
        log.info("git %s failed (%d): %s", " ".join(args), done.returncode,
                 done.stderr.strip()[:300])
        return None
    return done.stdout


def git_state() -> GitState:
    """HEAD of the project's checkout, and whether anything outside the record
    directories (tracked or untracked, not ignored) differs from it.  Any failure (no
    git, not a checkout, a repository git refuses as of dubious ownership, a timeout)
    leaves the field None."""
    head = _git("rev-parse", "HEAD")
    commit = head.strip() if head else None
    if commit is None or not _COMMIT.fullmatch(commit):
        return GitState()
    excluded = [f":(exclude){name}" for name in RECORD_DIRS]
    status = _git("status", "--porcelain", "--", ".", *excluded)
    return GitState(commit, None if status is None else bool(status.strip()))


def versions() -> dict[str, str | None]:
    """Python's version and each of ``DISTRIBUTIONS``' (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu_model() -> str | None:
    """The first ``model name`` of /proc/cpuinfo, else ``platform.processor()``, else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, colon, value = line.partition(":")
                if colon and name.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


@dataclass(frozen=True)
class Host:
    """The CPU: its model, how many the machine has and how many this process may use."""

    cpu_model: str | None
    cpu_count: int
    cpus_usable: int

    @classmethod
    def here(cls) -> Host:
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            usable = os.cpu_count() or 1
        return cls(cpu_model(), os.cpu_count() or usable, usable)


@dataclass(frozen=True)
class Provenance:
    """What :func:`start` took; :meth:`finish` completes it into the record's section."""

    started: str
    isolation: str
    load_start: list[float] | None
    git: GitState
    versions: dict[str, str | None]
    host: Host

    def finish(self, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """The record's ``provenance`` section, ended now: see :func:`start`."""
        return {"started": self.started, "ended": utc_now(), "git": asdict(self.git),
                "versions": dict(self.versions), "host": asdict(self.host),
                "isolation": self.isolation,
                "load_average": {"start": self.load_start, "end": load_average()},
                "calibration": None if calibration is None else dict(calibration)}


def start(isolation: str) -> Provenance:
    """Take the start of a batch or a grading under ``isolation`` (the sandbox backend,
    ``sandbox.best_isolation()``).  Runs git twice (a few milliseconds; at most
    ``GIT_TIMEOUT_S`` each): from async code, call it in a thread.

    ``start(...).finish(calibration)`` is::

        {"started": ISO, "ended": ISO,
         "git": {"commit": hex or None, "dirty": bool or None},
         "versions": {"python", "torch", "numpy", "scikit-learn", "anthropic": str or None},
         "host": {"cpu_model": str or None, "cpu_count": int, "cpus_usable": int},
         "isolation": str,
         "load_average": {"start": [1m, 5m, 15m], "end": [1m, 5m, 15m]},
         "calibration": dict or None}
    """
    return Provenance(started=utc_now(), isolation=isolation, load_start=load_average(),
                      git=git_state(), versions=versions(), host=Host.here())


# ---- the summary's lines ---------------------------------------------------------------
def _time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, _TIME_FORMAT)
    except (TypeError, ValueError):
        return None


def _when(started: Any, ended: Any) -> str | None:
    start, end = _time(started), _time(ended)
    if start is None:
        return None
    if end is None:
        return f"started {start:%Y-%m-%d %H:%M} UTC"
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
    return f"ran {start:%Y-%m-%d %H:%M}–{until} UTC"


def _commit(git: Any) -> str | None:
    if not isinstance(git, dict):
        return None
    commit = git.get("commit")
    if not isinstance(commit, str) or not commit:
        return "commit unknown"
    dirty = git.get("dirty")
    state = {True: " (dirty)", False: "", None: " (dirty: unknown)"}.get(dirty, "")
    return f"commit {commit[:7]}{state}"


def _versions(found: Any) -> str | None:
    if not isinstance(found, dict) or not found:
        return None
    names = {"python": "Python"}
    return ", ".join(f"{names.get(name, name)} {version}" if version else
                     f"{names.get(name, name)} not installed"
                     for name, version in found.items())


def _load(load: Any) -> str | None:
    if not isinstance(load, dict):
        return None

    def one_minute(values: Any) -> str:
        ok = isinstance(values, list) and values and isinstance(values[0], int | float)
        return f"{values[0]:.2f}" if ok else "?"
    start, end = one_minute(load.get("start")), one_minute(load.get("end"))
    return None if start == end == "?" else f"load {start} → {end}"


def _machine(p: dict[str, Any]) -> str | None:
    parts = []
    if isinstance(host := p.get("host"), dict):
        count, usable = host.get("cpu_count"), host.get("cpus_usable")
        cpus = f"{count} CPUs" if isinstance(count, int) else "CPUs unknown"
        if isinstance(usable, int) and usable != count:
            cpus += f" ({usable} usable)"
        parts.append(f"host: {host.get('cpu_model') or 'unknown CPU'}, {cpus}")
    if isinstance(isolation := p.get("isolation"), str):
        parts.append(f"sandbox {isolation}")
    if load := _load(p.get("load_average")):
        parts.append(load)
    return "; ".join(parts) or None


def calibration_line(calibration: Any, now: dt.datetime | None = None) -> str | None:
    """``calibration: measured 2026-12-07 06:59 UTC, 3.2 h before this (cached); ladder
    within ±3 % (strict ±1.2 %, vectorized ±2.4 %)``, or the ladder marked POOR and
    why; None without one.  The age is given against ``now`` (the record's start)."""
    if not isinstance(calibration, dict):
        return None
    measured = _time(calibration.get("measured_at"))
    when = f"measured {measured:%Y-%m-%d %H:%M} UTC" if measured else "measured at an unknown time"
    hours = (now - measured).total_seconds() / 3600 if measured and now else 0.0
    if hours >= 0.1:  # its age when the record began (a re-render says the same)
        when += (f", {hours:.1f} h before this" if hours < 48
                 else f", {hours / 24:.0f} days before this")
    source = {"cache": "cached", "measured": "measured for this record",
              "mixed": "partly cached"}.get(calibration.get("source"))
    line = f"calibration: {when}" + (f" ({source})" if source else "")
    quality = calibration.get("quality")
    if isinstance(quality, dict) and isinstance(quality.get("half_widths"), dict):
        widths = ", ".join(f"{name} ±{w * 100:.1f} %" if isinstance(w, (int, float)) else
                           f"{name} unknown" for name, w in quality["half_widths"].items())
        goal = quality.get("width_goal")
        goal = f"±{goal * 100:.0f} %" if isinstance(goal, (int, float)) else "its goal"
        line += (f"; ladder within {goal} ({widths})" if quality.get("holds") else
                 f"; ladder POOR: {quality.get('poor') or widths}")
    return line


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two records' setups: the commit, the versions, the host's
    CPU and the sandbox (``git.commit: 1a2b3c4 then, 5d6e7f8 now``)."""
    def facts(p: dict[str, Any]) -> dict[str, Any]:
        git = p.get("git") if isinstance(p.get("git"), dict) else {}
        host = p.get("host") if isinstance(p.get("host"), dict) else {}
        versions = p.get("versions") if isinstance(p.get("versions"), dict) else {}
        return {"commit": git.get("commit"), "CPU": host.get("cpu_model"),
                "CPUs": host.get("cpus_usable"), "sandbox": p.get("isolation"),
                **{name: version for name, version in versions.items()}}
    a, b = facts(before), facts(now)
    return [f"{k}: {a.get(k)} then, {b.get(k)} now" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def short_form(p: dict[str, Any]) -> list[str]:
    """A few one-line strings of a ``provenance`` section for a markdown summary.  An
    older record's section may lack any key (or be empty: no lines)."""
    if not isinstance(p, dict):
        return []
    lines = [_when(p.get("started"), p.get("ended")), _commit(p.get("git")),
             _versions(p.get("versions")), _machine(p),
             calibration_line(p.get("calibration"), _time(p.get("started")))]
    return [line for line in lines if line]
