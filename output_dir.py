"""A batch's output directory: where it may be, who holds it, and what in it is the
harness's to replace.

- **Where.**  :func:`check_place` refuses places that make no sense for records (the
  root, the checkout or above it, a file or device, a place that cannot be written):
  an :class:`OutputError`, a usage error, found before anything is measured.
- **Who.**  One batch at a time: :meth:`OutputDir.open` takes an ``flock`` on ``LOCK``
  until :meth:`close` (the kernel drops it with the process: no stale lock).  A second
  batch is refused with the first's process id.
- **What.**  The harness owns exactly what its manifest (``MANIFEST``) lists, plus the
  manifest, the lock and ``PREVIOUS``.  Anything else is *foreign*: the batch refuses
  to start beside it (naming it) unless told to (``beside_foreign``), and even then
  never touches it nor writes a name it holds.  Names are never matched by pattern.
- **The previous batch** is kept until the new one has something to replace it with:
  moved aside into ``PREVIOUS`` when the new one starts its runs, removed once it has
  recorded a finished run, moved back if it ends with none (interrupted, killed).
- **Resume.**  The manifest keeps the configuration, each run's attempts and each
  finished run's record (the harness's, where no sandbox sees: a ``run.json`` the
  agent's code could forge is never trusted); :meth:`OutputDir.resume_plan` says what
  to keep, retry and run.
- **Groups.**  An experiment's directory is one too; each part's batch directory in it
  is opened with it as ``parent`` (``experiment``).

Every write is atomic (``safe_files``).  Running the batch is ``batch``'s; the records'
shapes are ``records``'s.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safe_files
import sandbox
from records import BATCH_RECORDS, RESULTS, BatchResults, RunRecord, manifest_error
from sandbox import PROJECT_ROOT

MANIFEST = ".hello-py-manifest.json"
LOCK = ".hello-py.lock"
PREVIOUS = ".hello-py-previous"  # the previous batch's entries, while they are held back
HARNESS_FILES = frozenset({MANIFEST, LOCK, PREVIOUS})
# Names that are neither the harness's nor refused: the checkout's own placeholder.
IGNORED = frozenset({".gitkeep"})
# Errors outside the agent's reach that --resume retries: the API unavailable, a disk
# fault before the agent started (summary.LEFT_OUT_CAUSES less budget stops).
RETRIED_CAUSES = frozenset({"api", "disk", "setup"})
# Configuration keys a resumed batch may change: none changes what an agent sees or how
# it is graded.  Where a copy goes, the output directory's spelling (the same directory
# by construction), how the API is called (retries, calls in flight, streaming, the
# model's limits as the preflight found them), run order, and the cost limits.
RESUME_MAY_DIFFER = frozenset({"save", "output", "api_retries", "max_api_calls", "stream",
                               "model_limits", "concurrent", "max_cost", "max_run_cost"})
KERNEL_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))  # whatever is mounted there
FORMAT = 1
_MANIFEST_LIMIT = 64 * 1024**2


class OutputError(Exception):
    """The output directory cannot be used as asked; the message is for the operator,
    ``status`` the exit status (2: a usage error; 4: the file system refused a write)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def run_dir_name(run_id: int) -> str:
    return f"run_{run_id}"


def check_place(path: Path, within: Path | None = None) -> Path:
    """The output directory ``path`` resolved (it need not exist yet); OutputError when
    it is no place for a batch's records (inside another's: only ``within``'s)."""
    if str(path) == "":
        raise OutputError("--output is empty: name a directory (default output/)")
    where = Path(os.path.realpath(path))
    if where == Path(where.anchor):
        raise OutputError(f"--output {path} is the root directory: name a directory of "
                          "its own, e.g. output/")
    root = Path(os.path.realpath(PROJECT_ROOT))
    if where == root or where in root.parents:
        what = "the checkout itself" if where == root else "a directory that holds the checkout"
        raise OutputError(f"--output {path} is {what} ({where}): name a directory of its "
                          "own, e.g. output/")
    existing = next(p for p in (where, *where.parents) if os.path.lexists(p))
    if any(where == k or k in where.parents for k in KERNEL_TREES):
        raise OutputError(f"--output {path} is under the kernel's own file systems "
                          "(/proc, /sys, /dev): name a directory on a disk")
    if (kind := sandbox.filesystem_type(existing)) in sandbox.KERNEL_FILESYSTEMS:
        raise OutputError(f"--output {path} is on {kind}, the kernel's own file system: "
                          "name a directory on a disk")
    if (outer := next((p for p in where.parents if os.path.lexists(p / MANIFEST)), None)
            ) and outer != within:
        raise OutputError(f"--output {path} is inside {outer}, another batch's output "
                          "directory: name a directory of its own")
    try:
        mode = os.stat(where).st_mode
    except FileNotFoundError:
        if not os.path.isdir(existing):
            raise OutputError(f"--output {path}: {existing} is not a directory") from None
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"--output {path}: {existing} cannot be written") from None
        return where
    except OSError as exc:
        raise OutputError(f"--output {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        kind = ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a file")
        raise OutputError(f"--output {path} is {kind}, not a directory")
    return where


@dataclass
class ResumePlan:
    """A resumed batch's runs: kept, retried (errors out of the agent's reach), to run."""

    kept: list[RunRecord] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    earlier: dict[int, RunRecord] = field(default_factory=dict)  # a retried run's last try
    to_run: list[int] = field(default_factory=list)  # retried included, in order

    def describe(self) -> str:
        fresh = len(self.to_run) - len(self.retried)
        return (f"{len(self.kept)} finished run(s) kept, {len(self.retried)} retried (API "
                f"errors, runs that could not start), {fresh} to run")


class OutputDir:
    """An output directory held by this process (see the module's docstring).  The
    manifest in memory changes only once its file has (a refused write changes none)."""

    def __init__(self, path: Path, lock_fd: int, manifest: dict[str, Any]) -> None:
        self.path, self._lock_fd, self.manifest = path, lock_fd, manifest
        self.parent: OutputDir | None = None  # the group it is a part of (open)
        self.begun = False  # the batch started its runs (begin)
        self.restored = False  # it ended with no finished run: the previous one is back

    # ---- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, runs: int, beside_foreign: bool = False,
             resume: bool | None = False, parent: OutputDir | None = None,
             names: tuple[str, ...] = ()) -> OutputDir:
        """Check the place, take the lock and read the manifest; refuse foreign entries
        (unless ``beside_foreign``) and any foreign name the batch would write.
        ``parent``: the group (``experiment``) whose part this batch is, told of each
        run it finishes; ``resume`` None: held as it is (an export's claim); ``names``:
        what else it will write at the top (an experiment's)."""
        where = check_place(path, parent and parent.path)
        if os.path.isdir(where):  # refused before anything is written there
            cls(where, -1, {})._check(runs, beside_foreign, names)
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd = os.open(where / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise OutputError(f"--output {path}: cannot keep records there: "
                              f"{exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"{where / LOCK} is not a regular file: remove it")
            out = cls(where, fd, {})
            out.parent = parent
            out._lock(path)
            out._check(runs, beside_foreign, names)  # again, now no batch can change it
            try:
                if resume is not None:
                    out._finish_moves() if resume else out._settle_previous()
            except OSError as exc:
                raise OutputError(f"cannot keep records in {where}: "
                                  f"{exc.strerror or exc}", status=4) from None
            if resume and not out.manifest.get("batch"):
                raise OutputError(f"nothing to resume in {where}: no batch of hello-py's is "
                                  "recorded there")
        except BaseException:
            os.close(fd)
            raise
        return out

    def _lock(self, shown: Path) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(self._lock_fd, 4096, 0).decode("utf-8", "replace").strip()
            raise OutputError(f"another batch is writing to {shown} "
                              f"({holder or 'its process is unknown'}): wait for it to end, "
                              "or choose another --output") from None
        with contextlib.suppress(OSError):  # who holds it: for the message above only
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"process {os.getpid()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)

    def _read_manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(safe_files.read_bytes(self.path, MANIFEST, _MANIFEST_LIMIT))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            raise OutputError(f"{self.path / MANIFEST} cannot be read ({exc}): it says what "
                              "the harness wrote there; move the directory's contents away "
                              "or choose another --output") from None
        if why := manifest_error(data, FORMAT):
            raise OutputError(f"{self.path / MANIFEST} is not a manifest this version reads "
                              f"({why}): move the directory's contents away or choose "
                              "another --output")
        return data

    def owned(self) -> set[str]:
        """What the harness may replace: the manifest's entries, the held-back batch's,
        and its own files (``PREVIOUS`` only where a manifest says it made one)."""
        held = self.manifest.get("previous") or {}
        own = {MANIFEST, LOCK} | ({PREVIOUS} if self.manifest else set())
        return set(self.manifest.get("entries", [])) | set(held.get("entries", [])) | own

    def foreign(self) -> list[str]:
        """Entries the harness did not write, sorted (a killed write's temporary is its)."""
        return sorted(n for n in set(os.listdir(self.path)) - self.owned() - IGNORED
                      if not (self.manifest and _TEMPORARY.match(n)))

    def _check(self, runs: int, beside_foreign: bool, names: tuple[str, ...] = ()) -> None:
        self.manifest = self._read_manifest()
        foreign = self.foreign()
        if not foreign:
            return
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more"
                                           if len(foreign) > 10 else "")
        if not beside_foreign:
            raise OutputError(
                f"{self.path} holds entries hello-py did not write: {shown}. It deletes only "
                "what it wrote, so it will not start here: move them away, choose another "
                "--output, or pass --beside-foreign to write beside them (they will not be "
                "touched)")
        wanted = ({run_dir_name(i) for i in range(1, runs + 1)} | set(BATCH_RECORDS)
                  | {PREVIOUS, *names})
        if clash := sorted(wanted & set(foreign)):
            raise OutputError(f"{self.path} holds {', '.join(clash)}, which hello-py did not "
                              "write and this batch would: move them away or choose another "
                              "--output")

    # ---- the manifest and the previous batch ------------------------------------------
    def _save(self, manifest: dict[str, Any]) -> None:
        """Write ``manifest``, then hold it (OSError: neither happened)."""
        manifest = {**manifest, "format": FORMAT}
        text = json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n"
        safe_files.write_bytes(self.path, MANIFEST, text.encode(), make_parents=False)
        self.manifest = manifest

    def _changed(self, **changes: Any) -> dict[str, Any]:  # nested values copied too
        return {**copy.deepcopy(self.manifest), **changes}

    def _settle_previous(self) -> None:
        """What a killed batch left: its temporary files removed; a batch it held back
        restored when it recorded no finished run, else removed."""
        self._remove_temporaries()
        held = self.manifest.get("previous")
        if held is not None and not self.manifest.get("finished"):
            self._restore(held)
        elif os.path.lexists(self.path / PREVIOUS) or held is not None:
            safe_files.remove_tree(self.path, PREVIOUS)
            self._save(self._changed(previous=None))

    def _finish_moves(self) -> None:
        """Before a resume: what a batch killed while it moved the previous batch aside
        left at the top goes where it was going (the resumed batch owns only its own
        entries), and its temporary files are removed."""
        self._remove_temporaries()
        held = self.manifest.get("previous") or {}
        left = [n for n in held.get("entries", []) if n not in self.manifest.get(
            "entries", []) and os.path.lexists(self.path / n)]
        if left and not os.path.isdir(self.path / PREVIOUS):
            os.mkdir(self.path / PREVIOUS, 0o755)
        for name in left:
            safe_files.remove_tree(self.path / PREVIOUS, name)
            os.rename(self.path / name, self.path / PREVIOUS / name)

    def _remove_temporaries(self) -> None:  # a killed process's unfinished writes
        for name in filter(_TEMPORARY.match, os.listdir(self.path) if self.manifest else ()):
            safe_files.remove_tree(self.path, name)

    def _restore(self, held: dict[str, Any]) -> None:
        for name in self.manifest.get("entries", []):
            if name not in held.get("entries", []) or os.path.lexists(
                    self.path / PREVIOUS / name):
                safe_files.remove_tree(self.path, name)
        for name in held.get("entries", []):
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.path / PREVIOUS / name, self.path / name)
        safe_files.remove_tree(self.path, PREVIOUS)
        self._save({**held, "previous": None})

    # ---- a batch ------------------------------------------------------------------------
    def resume_plan(self, config: dict[str, Any], runs: int) -> ResumePlan:
        """What continuing the recorded batch means; :class:`OutputError` naming every
        difference when ``config`` is not the recorded batch's."""
        recorded = self.manifest["batch"].get("config") or {}
        now = json.loads(json.dumps(config, default=str))  # as the manifest holds it
        differences = [f"{k}: {recorded.get(k)!r} then, {now.get(k)!r} now"
                       for k in sorted(set(recorded) | set(now))
                       if k not in RESUME_MAY_DIFFER and recorded.get(k) != now.get(k)]
        if differences:
            raise OutputError(f"--resume: the configuration differs from the batch in "
                              f"{self.path}: " + "; ".join(differences)
                              + ". Resume with the same flags, or start a new batch")
        plan = ResumePlan()
        finished = {**self._recorded_results(), **self.manifest.get("finished", {})}
        for run_id in range(1, runs + 1):
            record = finished.get(str(run_id))
            if record is None:
                plan.to_run.append(run_id)
            elif (r := RunRecord.from_json(record)).status == "error" and \
                    r.error_cause in RETRIED_CAUSES:
                plan.retried.append(run_id)
                plan.to_run.append(run_id)
                plan.earlier[run_id] = r
            else:
                plan.kept.append(r)
        return plan

    def _recorded_results(self) -> dict[str, dict[str, Any]]:
        """The runs this batch's own results.json records (a run whose manifest entry
        could not be written, a full disk say, keeps its verdict): only a results.json
        of this batch (its provenance's start) counts, as the harness wrote it."""
        try:
            data = json.loads(safe_files.read_bytes(self.path, RESULTS, _MANIFEST_LIMIT))
            if (data.get("provenance") or {}).get("started") != self.started:
                return {}
            return {str(r.run_id): r.to_json()
                    for r in BatchResults.from_json(data).runs}
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            return {}

    def begin(self, config: dict[str, Any], *, resume: bool) -> None:
        """The batch starts its runs: a new one holds the previous batch back (moves its
        entries into ``PREVIOUS``); a resumed one records when it was resumed."""
        if resume:
            batch = {**self.manifest["batch"], "state": "running",
                     "resumed": [*self.manifest["batch"].get("resumed", []), _now()]}
            self._save(self._changed(batch=batch))
            self.begun = True
            return
        held = {k: v for k, v in self.manifest.items() if k != "previous"}
        moved = [n for n in self.manifest.get("entries", [])
                 if n not in (MANIFEST, LOCK, PREVIOUS) and os.path.lexists(self.path / n)]
        if moved:
            safe_files.remove_tree(self.path, PREVIOUS)
            os.mkdir(self.path / PREVIOUS, 0o755)
        # First the manifest: a crash from here on finds the previous batch's entries
        # (in either place) listed as held back, and the next start puts them back.
        self._save({"batch": {"id": secrets.token_hex(6), "started": _now(),
                              "process": os.getpid(), "state": "running",
                              "config": json.loads(json.dumps(config, default=str))},
                    "entries": [], "attempts": {}, "finished": {},
                    "previous": ({**held, "entries": moved} if held.get("batch") or moved
                                 else None)})
        self.begun = True
        for name in moved:
            os.rename(self.path / name, self.path / PREVIOUS / name)

    @property
    def started(self) -> str | None:
        return (self.manifest.get("batch") or {}).get("started")

    @property
    def resumed(self) -> list[str]:
        return list((self.manifest.get("batch") or {}).get("resumed", []))

    def _with_entries(self, *names: str) -> list[str]:
        return [*(e := self.manifest.get("entries", [])), *(n for n in names if n not in e)]

    def start_run(self, run_id: int) -> tuple[Path, int]:
        """The run's directory, new, empty and real (what an unfinished or retried
        attempt left there, a link included, is removed), and which attempt this is."""
        name = run_dir_name(run_id)
        if name in self.manifest.get("entries", []):
            report = safe_files.remove_tree(self.path, name)
            if not report.ok:
                raise OSError(errno.EIO, f"{name} of an earlier attempt could not be "
                              f"removed: {'; '.join(report.notes)}")
        attempts = {**self.manifest.get("attempts", {})}
        attempts[str(run_id)] = attempts.get(str(run_id), 0) + 1
        self._save(self._changed(entries=self._with_entries(name), attempts=attempts))
        os.mkdir(self.path / name, 0o755)  # FileExistsError for anything made meanwhile
        return self.path / name, attempts[str(run_id)]

    def finish_run(self, record: RunRecord, key: str | None = None) -> None:
        finished = {**self.manifest.get("finished", {}),
                    key or str(record.run_id): record.to_json()}
        self._save(self._changed(finished=finished))
        if self.parent is not None:  # the group keeps its parts while one has a run
            self.parent.finish_run(record, f"{self.path.name}/{record.run_id}")

    def claim(self, *names: str) -> None:
        """Record that the harness writes ``names`` at the top of the directory (before
        it writes them, so a crash between leaves nothing it does not own)."""
        self._save(self._changed(entries=self._with_entries(*names)))

    @property
    def segments(self) -> list[dict[str, Any]]:
        """The provenance of each earlier part of the batch (the first run, then each
        resume), oldest first."""
        found = (self.manifest.get("batch") or {}).get("segments", [])
        return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []

    def end(self, state: str, written: bool = True,
            origin: dict[str, Any] | None = None) -> bool:
        """The batch is over (``state``: finished, interrupted; ``written``: its
        results.json was written; ``origin``: this part's provenance, kept for the next
        resume).  The previous batch is restored when this one finished no run, kept
        while this one's results are missing (--resume writes them), else removed;
        returns whether it was restored."""
        held = self.manifest.get("previous")
        if held is not None and not self.manifest.get("finished"):
            self._restore(held)
            self.restored = True
            return True
        keep = held is not None and not written
        if not keep and os.path.lexists(self.path / PREVIOUS):
            safe_files.remove_tree(self.path, PREVIOUS)
        batch = {**self.manifest["batch"], "state": state, "ended": _now()}
        if origin is not None:
            batch["segments"] = [*self.segments, {k: v for k, v in origin.items()
                                                  if k != "earlier"}]
        self._save(self._changed(batch=batch, previous=held if keep else None))
        return False

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the lock
            self._lock_fd = -1


# safe_files' temporary names: a write or a removal a killed process never finished.
_TEMPORARY = re.compile(r"\.hp-([0-9a-f]{16}\.tmp|flat-[0-9a-f]{16})\Z")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
