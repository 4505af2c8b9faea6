"""Timing slots: one timed execution per timing CPU on the whole machine, whichever
hello-py process asks (batches, ``grade``, ``calibrate``, tests, Ray workers).

Each timing CPU (``sandbox.timing_cpus``) has a lock file in :func:`lock_directory`; a
timed execution runs while its task holds an ``flock`` on one of them.  The kernel drops
the lock with the descriptor, so a killed grading leaves nothing stale, and every
acquisition opens its own descriptor, so two tasks of one process exclude each other
exactly as two processes do.  A task that finds every slot taken says so once, naming
the holder, and waits.  While a slot is held, ``sandbox.timed_cpu()`` is its CPU: a child
started or moved "timed" goes there and nowhere else.

Every interval a slot was held is recorded (:func:`recording`), so a grading can show
that no two timed executions overlapped on one CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import logging
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sandbox
from problem import GraderError

log = logging.getLogger(__name__)
DEFAULT_DIRECTORY = Path("/tmp/hello-py-timing")
POLL_SECONDS = 0.05
_recordings: contextvars.ContextVar[tuple[list[dict], ...]] = contextvars.ContextVar(
    "hello_py_slot_recordings", default=())


_ANNOUNCED: set[str] = set()  # other processes already named while waiting


def _me() -> str:
    """How this process names itself in a lock file it holds."""
    return f"process {os.getpid()} on {socket.gethostname()}"


class SlotError(GraderError):
    """The lock directory cannot be used safely (a link, someone else's, writable by
    others): one line for the user, naming it and the variable that moves it (the
    commands print a GraderError as one line)."""


@dataclass
class Slot:
    cpu: int
    acquired: float  # epoch seconds
    waited: float  # seconds spent waiting for it


def lock_directory() -> Path:
    """``HELLO_PY_TIMING_DIR``, else one directory per host and user that every hello-py
    process of that user agrees on, never inside a checkout (two clones share the
    machine's CPUs too): ``/run/hello-py-timing`` for root (a place no other user can
    make first), else ``/tmp/hello-py-timing-UID``."""
    if given := os.environ.get("HELLO_PY_TIMING_DIR"):
        return Path(given)
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return Path("/run/hello-py-timing")
    return Path(f"{DEFAULT_DIRECTORY}-{os.geteuid()}")


def _open_directory() -> int:
    """The lock directory, made if missing (mode 0700), opened without following a link;
    refused when it is not ours or others may write it (they could swap the lock files)."""
    where = lock_directory()
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(where, 0o700)
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SlotError(f"the timing lock directory {where} cannot be used "
                        f"({exc.strerror}); set HELLO_PY_TIMING_DIR to another place") from exc
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise SlotError(f"the timing lock directory {where} belongs to another user or "
                        "can be written by others; set HELLO_PY_TIMING_DIR to a directory "
                        "of your own")
    return fd


def _open_lock(directory: int, cpu: int) -> int:
    """Mode 0600: no other user can open a lock file, so none can hold a slot."""
    try:
        fd = os.open(f"cpu{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600, dir_fd=directory)
    except OSError as exc:
        raise SlotError(f"the timing lock {lock_directory() / f'cpu{cpu}.lock'} cannot be "
                        f"opened ({exc.strerror})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SlotError(f"{lock_directory() / f'cpu{cpu}.lock'} is not a regular file")
    return fd


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
    return ""


def _try_slots(what: str) -> tuple[int, int] | list[str]:
    """A free slot as (descriptor, cpu), locked and labelled; else who holds them."""
    directory = _open_directory()
    holders: list[str] = []
    try:
        for cpu in sandbox.timing_cpus():
            fd = _open_lock(directory, cpu)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if holder := _holder(fd):  # (empty for the moment its holder writes it)
                    holders.append(f"CPU {cpu}: {holder}")
                os.close(fd)
                continue
            try:  # the label: a failure to write it never leaves the slot held
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{_me()}, {what or 'timing'}\n".encode(), 0)
            except OSError as exc:
                os.close(fd)
                raise SlotError(f"the timing lock for CPU {cpu} cannot be written "
                                f"({exc.strerror})") from exc
            return fd, cpu
    finally:
        os.close(directory)
    return holders


@contextlib.asynccontextmanager
async def timing_slot(what: str = "", notify: Callable[[str], None] | None = None
                      ) -> AsyncIterator[Slot]:
    """Hold a timing CPU for the duration: wait (saying so once, through ``notify`` or
    the log's warning) while every one is taken.  Re-entrant within a task: an inner
    request shares the slot its task already holds."""
    if (held := sandbox.timed_cpu()) is not None:
        yield Slot(held, time.time(), 0.0)
        return
    asked = time.monotonic()
    while isinstance(got := _try_slots(what), list):
        others = [h for h in got if not h.split(": ", 1)[1].startswith(_me())]
        new = {h.split(": ", 1)[-1].split(",")[0] for h in others} - _ANNOUNCED
        if new:  # once per other process: its turns and ours alternate from now on
            (notify or log.warning)(f"waiting for a timing slot ({'; '.join(others)}); "
                                    "timed executions take turns with it")
            _ANNOUNCED.update(new)
        await asyncio.sleep(POLL_SECONDS)
    fd, cpu = got
    slot = Slot(cpu, time.time(), time.monotonic() - asked)
    token = sandbox.TIMED_CPU.set(cpu)
    try:
        yield slot
    finally:
        sandbox.TIMED_CPU.reset(token)
        ended = time.time()
        os.close(fd)  # drops the lock
        for into in _recordings.get():
            into.append({"start": round(slot.acquired, 6), "end": round(ended, 6),
                         "cpu": cpu, "host": socket.gethostname(), "pid": os.getpid(),
                         "what": what})


@contextlib.contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect every slot interval held in this context (and the tasks it starts) into
    the list yielded: start and end (epoch seconds), CPU, host, process."""
    intervals: list[dict] = []
    token = _recordings.set((*_recordings.get(), intervals))
    try:
        yield intervals
    finally:
        _recordings.reset(token)
