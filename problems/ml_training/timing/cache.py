"""The on-disk cache of baseline and tier measurements, keyed by everything that
changes them.

:class:`BaselineCache` stores a :class:`CachedMeasurement` under a key of the file's
digest, the runner's protocol, the machine and the library versions, and reads it back
without following links, refusing an entry whose figures do not hold together (a
refusal is a :class:`Lookup` with a reason, and the caller measures again).  An entry
says when it was measured (``measured_at``; an entry older than that field loads with
None: unknown).  Measuring is ``executor``'s and ``side_by_side``'s.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import stat
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import problem
import sandbox
from problems.ml_training.calibration import in_anchor_units
from problems.ml_training.timing.executor import PROTOCOL

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


MAX_CACHE_BYTES = 10 * 1024 * 1024  # an entry is a few kB; a larger file is not read
MAX_CACHED_VALUES = 10_000  # in each list of an entry
# an entry may lack these (older entries do)
OPTIONAL_FIELDS = frozenset({"measured_at", "cpu_times", "cpu_units", "anchor_cpu_times"})
# units were computed from the very times stored beside them: only rounding may differ
UNITS_RTOL = 1e-6
# ISO 8601 in UTC to the second, as ``provenance.utc_now`` writes it
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass
class CachedMeasurement:
    """A stored measurement (baseline or reference): times and accuracy, with its key."""

    times: list[float]
    accuracy: float
    key: dict[str, Any] = field(default_factory=dict)
    oracle_agreement: list[float] = field(default_factory=list)  # per execution (baseline)
    units: list[float] = field(default_factory=list)  # times / the strict tier's beside them
    anchor_times: list[float] = field(default_factory=list)  # those strict-tier times
    measured_at: str | None = None  # ISO 8601 UTC; None: unknown (stored before it was kept)
    # The same executions on the CPU-time clock (their cgroup's, read from outside):
    # empty when an execution or an anchor had none (no cgroup), or for older entries.
    cpu_times: list[float] = field(default_factory=list)
    cpu_units: list[float] = field(default_factory=list)
    anchor_cpu_times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def units_on(self, clock: str) -> list[float]:
        """Its units on ``clock`` ("cpu" or "wall"; empty when it has none there)."""
        return self.cpu_units if clock == "cpu" else self.units


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
    if missing := sorted(names - data.keys() - OPTIONAL_FIELDS):
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
    measured_at = data.get("measured_at")
    if measured_at is not None and not (isinstance(measured_at, str)
                                        and _UTC_TIME.fullmatch(measured_at)):
        raise _Refused("measured_at is not a time such as 2026-12-07T07:10:00Z")
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
    cpu = [_numbers(data, name) if name in data else []
           for name in ("cpu_times", "cpu_units", "anchor_cpu_times")]
    if any(cpu):
        if (len(cpu[0]), len(cpu[1]), len(cpu[2])) != (n, n, len(anchor_times)):
            raise _Refused("its CPU-time figures do not match its times")
        cpu_groups = [cpu[2][i * around:(i + 1) * around] for i in range(n + 1)]
        for j, (unit, expected) in enumerate(zip(cpu[1], in_anchor_units(cpu[0], cpu_groups),
                                                 strict=True)):
            if not math.isclose(unit, expected, rel_tol=UNITS_RTOL):
                raise _Refused(f"cpu_units[{j}] disagrees with cpu_times/anchor_cpu_times")
    return CachedMeasurement(times=times, accuracy=accuracy, key=stored,
                             oracle_agreement=agreement, units=units,
                             anchor_times=anchor_times, measured_at=measured_at,
                             cpu_times=cpu[0], cpu_units=cpu[1], anchor_cpu_times=cpu[2])


class BaselineCache:
    """Measurements on disk, keyed by the file's content, the software and the machine.

    An entry is believed only once checked (:func:`_parse_entry`); a link, a special file
    or an oversized file is never opened for reading, and entries are written whole (a
    fresh temporary file, then renamed over the entry)."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or problem.cache_dir()

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
            # how a timed execution is held to its CPU (and whether it has a CPU clock)
            "cpu_limit": "cgroup" if sandbox.has_cgroups() else "affinity",
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
