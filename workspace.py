"""Where a path the agent names leads, what it may read or write there, and how a file it
offers for grading becomes the copy the harness grades.

The agent may read inside the problem's data directory and its own run directory, and
write inside its run directory only; a path is resolved lexically against those roots
and never through a link (:func:`resolve_readable`, :func:`resolve_writable`).  Text is
read and written within fixed bounds (:func:`read_text`, :func:`write_text`).  A file
offered for grading is read once, when it is offered (:class:`Candidate`), and the
grader gets a harness-owned copy of those bytes (:func:`graded_copy`).  Whatever the
agent got wrong is a ``ToolError``, which goes back to the agent as a tool error.

Opening a file below a root without following a link is ``safe_files``'s.  The tools
themselves, their per-run state and what they show the model are ``tools``'s; which
files a problem would grade when nothing was submitted is the problem's
(``fallback_candidates``); what code run in the sandbox may see is ``sandbox``'s.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anthropic.lib.tools import ToolError

import safe_files
from sandbox import PROJECT_ROOT

MAX_READ_BYTES = 8 * 1024**2  # what read_file reads at most
MAX_WRITE_BYTES = 1_000_000
MAX_CANDIDATE_BYTES = 8 * 1024**2  # what the harness reads of a file offered for grading


@dataclass(frozen=True)
class Place:
    """A path the agent named, as a root the harness trusts (the run directory or the
    data directory) and a path below it.  The harness opens it only through
    ``safe_files``, relative to ``root``: no link below the root is ever followed."""

    root: Path
    rel: PurePosixPath

    @property
    def path(self) -> Path:
        return self.root / self.rel


@dataclass(frozen=True)
class Candidate:
    """A file offered for grading, read once (never following a link) when it was
    offered.  The grader gets a harness-owned copy of ``data`` (:func:`graded_copy`),
    never the agent's path, which the agent's code could have changed since."""

    path: Path  # where the agent had it, for the records
    data: bytes

    @classmethod
    def read(cls, place: Place) -> Candidate:
        return cls(place.path, safe_files.read_bytes(place.root, place.rel,
                                                     MAX_CANDIDATE_BYTES))


def first_candidate(workspace: Path, paths: list[Path]) -> Candidate | None:
    """The first of ``paths`` (inside ``workspace``) that reads as a regular file."""
    for path in paths:
        try:
            return Candidate.read(Place(workspace, PurePosixPath(path.relative_to(
                workspace))))
        except (OSError, ValueError):  # changed since it was listed, or not inside
            continue
    return None


@contextlib.contextmanager
def graded_copy(candidate: Candidate) -> Iterator[Path]:
    """The candidate's bytes in a file of the harness's own, under the candidate's
    name, for as long as the grader needs it."""
    with tempfile.TemporaryDirectory(prefix="hp-graded-") as directory:
        path = Path(directory) / candidate.path.name
        path.write_bytes(candidate.data)
        yield path


# ---- path rules ------------------------------------------------------------------------
# ``workspace`` is the run directory; ``data`` the problem's read-only data directory
# (None: the problem has none).
def display(path: Path) -> str:
    """``path`` as the agent is shown it: relative to the project root when inside it."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(
        path)


def _in_data_dir(data: Path | None, given: Path) -> bool:
    return data is not None and given.parts[:1] == (data.name,)


def _candidates(workspace: Path, data: Path | None, raw: str) -> list[Path]:
    if not raw or "\x00" in raw:
        raise ToolError("the path is empty or contains a NUL byte")
    given = Path(raw)
    if given.is_absolute():
        return [given]
    if _in_data_dir(data, given):  # the project's data, never a shadow copy
        return [data.parent / given, workspace / given]
    return [workspace / given, PROJECT_ROOT / given]


def _place(path: Path, roots: tuple[Path, ...]) -> Place | None:
    """``path`` (``..`` taken lexically: no link is ever followed below a root, so the
    result is the same) as a place inside one of ``roots``, or None."""
    normal = Path(os.path.normpath(path))
    for root in roots:
        for spelling in dict.fromkeys((root, root.resolve())):
            if normal.is_relative_to(spelling):
                return Place(root, PurePosixPath(normal.relative_to(spelling)))
    return None


def resolve_readable(workspace: Path, data: Path | None, raw: str) -> Place:
    """A file the agent may read: inside the problem's data directory or its own run
    directory, reached without following a link."""
    roots = (workspace, *((data,) if data is not None else ()))
    for candidate in _candidates(workspace, data, raw):
        place = _place(candidate, roots)
        if place is None:
            continue
        try:
            mode = safe_files.lstat(place.root, place.rel).st_mode
        except OSError:  # missing, a link on the way, a name too long, ...
            continue
        if stat.S_ISDIR(mode):
            raise ToolError(f"{raw} is a directory, not a file")
        if stat.S_ISLNK(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ToolError(f"{raw} is not a regular file")
        return place
    where = f"{display(data)}/ and " if data is not None else ""
    raise ToolError(f"cannot read {raw!r}: only files inside {where}"
                    f"your run directory {display(workspace)}/ can be read (no such "
                    "file there, or the path leads elsewhere: links are not followed)")


def resolve_writable(workspace: Path, data: Path | None, raw: str) -> Place:
    """A path the agent may write: inside its own run directory only."""
    given = Path(raw) if raw and "\x00" not in raw else None
    if given is None:
        raise ToolError("the path is empty or contains a NUL byte")
    rel_ws = workspace.relative_to(PROJECT_ROOT) if workspace.is_relative_to(
        PROJECT_ROOT) else None
    if given.is_absolute():
        target = given
    elif _in_data_dir(data, given):
        raise ToolError(f"cannot write {raw!r}: {given.parts[0]}/ is read-only; write your "
                        f"files inside your run directory {display(workspace)}/")
    elif rel_ws is not None and given.is_relative_to(rel_ws):
        target = PROJECT_ROOT / given
    else:
        target = workspace / given
    place = _place(target, (workspace,))
    denied = f"files can only be written inside your run directory {display(workspace)}/"
    if place is None or not place.rel.parts:
        raise ToolError(f"cannot write {raw!r}: {denied}")
    with contextlib.suppress(OSError):  # what cannot be looked at is refused when written
        if stat.S_ISLNK(safe_files.lstat(place.root, place.rel).st_mode):
            raise ToolError(f"cannot write {raw!r}: it is a symbolic link, and links are not "
                            f"followed; {denied}")
    return place


def read_text(place: Place, limit: int) -> str:
    """The UTF-8 text at ``place``, cut to ``limit`` characters with a notice."""
    shown = display(place.path)
    try:
        data = safe_files.read_bytes(place.root, place.rel, MAX_READ_BYTES)
    except OSError as exc:
        raise ToolError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    if b"\x00" in data[:8192]:
        raise ToolError(f"{shown} is a binary file; only text files can be read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"{shown} is not UTF-8 text") from exc
    if len(text) > limit:
        return text[:limit] + f"\n[... truncated: showing {limit} of {len(text)} characters]"
    return text


def write_text(place: Place, content: str) -> int:
    """Write ``content`` at ``place`` (a fresh file renamed over the name: nothing there
    is written through).  Only a regular file is replaced: a link, FIFO or directory
    the agent's code left at the name is refused (``resolve_writable`` names a link)."""
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content is {len(data)} bytes; the limit is {MAX_WRITE_BYTES}")
    shown = display(place.path)
    try:
        mode = safe_files.lstat(place.root, place.rel).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    except OSError as exc:
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise ToolError(f"{shown} is a directory")
    if not stat.S_ISREG(mode):
        raise ToolError(f"cannot write {shown}: it is not a regular file")
    try:
        safe_files.write_bytes(place.root, place.rel, data)
    except OSError as exc:
        if exc.errno in safe_files.DISK_FAULTS:  # the harness's disk: the run's error
            raise
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from exc
    return len(data)
