"""``--save``: copy a finished batch so that no run can crowd out the records.

A run directory holds whatever the agent's code left there, as much of it as it liked
(100,000 empty files cost it nothing).  The copy has bounds (entries, bytes), and within
them the harness's records come first and always; what is left is shared evenly between
the runs, so one run's flood costs only its own files.  Which names are records is
``records``'s; copying without following links is ``safe_files``'s; printing is
``main``'s.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safe_files
from records import BATCH_RECORDS, RUN_RECORDS
from sandbox import PROJECT_ROOT

MAX_ENTRIES = 100_000  # the whole copy's bounds
MAX_BYTES = 4 * 1024**3
MAX_FILE_BYTES = 256 * 1024**2  # any one file, a record included
_RUN_DIR = re.compile(r"run_\d+")


@dataclass
class SaveReport:
    """What :func:`copy_batch` copied and left out: the batch's records at the top, and
    each run directory (its records, then its agent files within its share)."""

    run_entries: int  # each run directory's share of the copy's entries and bytes
    run_bytes: int
    batch: safe_files.TreeReport = field(default_factory=safe_files.TreeReport)
    runs: dict[str, safe_files.TreeReport] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.batch.done + sum(r.done for r in self.runs.values())

    @property
    def skipped(self) -> int:
        return self.batch.skipped + sum(r.skipped for r in self.runs.values())

    @property
    def failed(self) -> int:
        return self.batch.failed + sum(r.failed for r in self.runs.values())

    @property
    def notes(self) -> list[str]:
        """The first reasons, the batch's then each run's (all are in ``runs``)."""
        notes = [*self.batch.notes, *(f"{name}: {note}" for name, r in self.runs.items()
                                      for note in r.notes)]
        return notes[:safe_files.MAX_NOTES]

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed,
                "notes": self.notes,
                "share_per_run": {"entries": self.run_entries, "bytes": self.run_bytes},
                "batch": self.batch.to_json(),
                "runs": {name: r.to_json() for name, r in self.runs.items()}}


def copy_batch(output: Path, dest: Path, *, max_entries: int = MAX_ENTRIES,
               max_bytes: int = MAX_BYTES) -> SaveReport:
    """Copy the batch in ``output`` to the new directory ``dest``.  The harness's records
    come first and always (each up to ``MAX_FILE_BYTES``): ``BATCH_RECORDS``, then every
    run's ``RUN_RECORDS``.  What the batch's records leave of ``max_entries`` and
    ``max_bytes`` is split evenly between the run directories; each run's share, less its
    own records, bounds the copy of its agent files (``safe_files.copy_tree``: regular
    files and directories only, no link followed).  So no run can crowd out the records
    or another run's files.  Anything else at the top of ``output`` is not the batch's
    and is left out."""
    os.mkdir(dest, 0o755)
    batch = safe_files.TreeReport()
    runs = []
    with os.scandir(output) as listing:
        for found in listing:
            if _RUN_DIR.fullmatch(found.name) and found.is_dir(follow_symlinks=False):
                runs.append(found.name)
            elif found.name not in BATCH_RECORDS:
                batch.skip(f"{found.name}: not a record of the batch, not copied")
    runs.sort(key=lambda name: int(name[4:]))
    entries, size = _copy_records(output, dest, BATCH_RECORDS, batch)
    shares = max(len(runs), 1)
    report = SaveReport(max(0, max_entries - entries) // shares,
                        max(0, max_bytes - size) // shares, batch)
    used = {}
    for name in runs:
        report.runs[name] = safe_files.TreeReport()
        try:
            os.mkdir(dest / name, 0o755)
        except OSError as exc:
            report.runs[name].fail(f"{name}: {exc.strerror or exc}")
            continue
        used[name] = _copy_records(output / name, dest / name, RUN_RECORDS, report.runs[name])
    for name, (entries, size) in used.items():
        _copy_agent_files(output / name, dest / name, report.runs[name],
                          report.run_entries - entries, report.run_bytes - size)
    return report


def _copy_records(src: Path, dst: Path, names: tuple[str, ...],
                  report: safe_files.TreeReport) -> tuple[int, int]:
    """Copy the records ``src/NAME`` that are there: how many were copied, and their
    bytes."""
    entries = size = 0
    for name in names:
        try:
            data = safe_files.read_bytes(src, name, MAX_FILE_BYTES)
        except FileNotFoundError:  # grade.json is there only for a graded run
            continue
        except OSError as exc:  # the agent's code left something else at the name
            report.skip(f"{exc.strerror or exc}, not copied")  # it names the file
            continue
        try:
            safe_files.write_bytes(dst, name, data)
        except OSError as exc:
            report.fail(exc.strerror or str(exc))
            continue
        report.done += 1
        entries, size = entries + 1, size + len(data)
    return entries, size


def _copy_agent_files(src: Path, dst: Path, report: safe_files.TreeReport,
                      max_entries: int, max_bytes: int) -> None:
    """The rest of a run directory, within what its records left of its share."""
    try:
        files = safe_files.copy_tree(src, dst, exclude=RUN_RECORDS, exist_ok=True,
                                     max_entries=max(0, max_entries),
                                     max_total_bytes=max(0, max_bytes),
                                     max_file_bytes=MAX_FILE_BYTES)
    except OSError as exc:
        report.fail(f"the agent's files: {exc.strerror or exc}")
        return
    report.done += files.done
    report.skipped += files.skipped
    report.failed += files.failed
    report.notes += files.notes[:safe_files.MAX_NOTES - len(report.notes)]


SAVE_REPORT = "save_report.json"  # in the copy: what was left out, run by run


def saved_outputs() -> Path:
    """Where --save copies a batch: saved_outputs/ (HELLO_PY_SAVED_OUTPUTS moves it, as
    the tests do)."""
    return Path(os.environ.get("HELLO_PY_SAVED_OUTPUTS") or PROJECT_ROOT / "saved_outputs")


def save_batch(output: Path, saved: Path, name: str, **limits: int) -> tuple[Path, SaveReport]:
    """Copy the batch to ``saved/name`` (dated if that is taken): its records first, then
    each run's share of the agent's files (:func:`copy_batch`, whose bounds ``limits``
    may narrow).  What was left out, run by run, is listed in ``SAVE_REPORT`` in the
    copy."""
    dest = _free_name(saved, name)
    report = copy_batch(output, dest, **limits)
    safe_files.write_bytes(dest, SAVE_REPORT, (json.dumps(report.to_json(), indent=2)
                                               + "\n").encode())
    return dest, report


def _free_name(saved: Path, name: str) -> Path:
    """``saved/name`` (``saved`` made if need be), dated when that name is taken."""
    saved.mkdir(parents=True, exist_ok=True)
    dest = saved / name
    if os.path.lexists(dest):
        dest = dest.with_name(f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return dest


def save_group(top: Path, parts: list[str], records: tuple[str, ...], saved: Path,
               name: str) -> tuple[Path, int]:
    """Copy an experiment or suite (``experiment``) to ``saved/name`` (dated if that is
    taken): its own ``records`` at the top, then each part's batch directory as
    :func:`save_batch` copies a batch, with its ``SAVE_REPORT``.  Returns the copy and
    how many entries were left out."""
    dest = _free_name(saved, name)
    os.mkdir(dest, 0o755)
    for record in records:
        try:
            data = safe_files.read_bytes(top, record, MAX_FILE_BYTES)
        except FileNotFoundError:
            continue
        safe_files.write_bytes(dest, record, data)
    left = 0
    for part in parts:
        if os.path.isdir(top / part) and not os.path.islink(top / part):
            report = copy_batch(top / part, dest / part)
            safe_files.write_bytes(dest / part, SAVE_REPORT, (
                json.dumps(report.to_json(), indent=2) + "\n").encode())
            left += report.skipped + report.failed
    return dest, left
