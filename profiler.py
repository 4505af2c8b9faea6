"""Profile a Python script in the sandbox, and share the profile of an unchanged task file.

:func:`profile` runs the script under py-spy (sampling from outside the interpreter,
native frames included; cProfile when py-spy is not installed), reads the stacks it
wrote as untrusted data (:func:`read_stacks`), and turns them into text for the model
(:func:`stacks_report`) and a flame graph (:func:`flame_graph_svg`).
:func:`shared_profile` measures a task file once per machine, in a clean room, keeps
it in the harness's cache (``problem.cache_dir``) and gives every run its own copies.

What the agent may profile, where the files go in its run directory and what the
sandbox sees are left to ``tools`` (``profile_tool`` hands each profiling over as a
:class:`Job`); the isolating itself is ``sandbox``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import logging
import os
import shutil
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anthropic.lib.tools import ToolError

import problem
import safe_files
import sandbox

log = logging.getLogger(__name__)

_PROFILER = r"""
import cProfile, pstats, io, runpy, sys
script, out_file = sys.argv[1], sys.argv[2]
sys.argv = [script]
profiler = cProfile.Profile()
status = 0
try:
    profiler.runcall(runpy.run_path, script, run_name="__main__")
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else 1
except BaseException:
    import traceback; traceback.print_exc(); status = 1
profiler.dump_stats(out_file)
for key, title in (("cumulative", "cumulative time"), ("tottime", "own time")):
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats(key).print_stats(15)
    text = buf.getvalue()
    start = text.find("   ncalls")
    print(f"\n=== top 15 functions by {title} ===\n" + (text[start:] if start >= 0 else text))
sys.exit(status)
"""


# py-spy runs the script as its own child (inside the same sandbox) and samples it from
# outside the interpreter, native frames included; the harness reads its stacks.
_PY_SPY_LAUNCHER = r'''
import os, subprocess, sys, tempfile
spy, rate, out_file, script = sys.argv[1:5]
fd, status_file = tempfile.mkstemp()  # py-spy exits 0 whatever the script did
os.close(fd)
runner = """
import runpy, sys
script, status_file = sys.argv[1:3]
sys.argv = [script]
status = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
except BaseException:
    import traceback; traceback.print_exc(); status = 1
with open(status_file, "w") as f:
    f.write(str(status))
sys.exit(status)
"""
subprocess.run([spy, "record", "--native", "--format", "raw", "--rate", rate, "-o", out_file,
                "--", sys.executable, "-X", "utf8", "-c", runner, script, status_file])
try:
    with open(status_file) as f:
        status = int(f.read().strip() or 1)
except (OSError, ValueError):
    status = 1
sys.exit(status)
'''
PY_SPY_RATE = 100  # samples a second
MAX_STACKS_BYTES = 20_000_000  # what the harness reads of a profile the sandbox wrote
TOP_FRAMES = 15


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter (the project's environment), or
    on PATH; None when the package is not installed."""
    here = Path(sys.executable).parent / "py-spy"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("py-spy")


def parse_stacks(text: str) -> Counter[tuple[str, ...]]:
    """Collapsed stacks ('frame;frame;frame COUNT' per line) as counts; malformed lines
    are skipped (the file was written inside the sandbox)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(f.strip() for f in stack.split(";") if f.strip())] += int(count)
    return stacks


def stacks_report(stacks: Counter[tuple[str, ...]], top: int = TOP_FRAMES) -> str:
    """The hottest frames by own samples (the stack's leaf) and by total samples (any
    place in the stack, once per stack), as text for the model."""
    total = sum(stacks.values())
    if not total:
        return "(no samples: the program ended before the first one)"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        if stack:
            own[stack[-1]] += count
        for frame in set(stack):
            inclusive[frame] += count
    lines = [f"{total} samples at {PY_SPY_RATE} per second (py-spy, native frames included)"]
    for title, table in (("own samples (where the time is spent)", own),
                         ("total samples (including what they call)", inclusive)):
        lines.append(f"\n=== top {top} frames by {title} ===")
        lines += [f"{100 * n / total:6.1f}%  {frame[:200]}" for frame, n in
                  table.most_common(top)]
    return "\n".join(lines)


def flame_graph_svg(stacks: Counter[tuple[str, ...]], width: int = 1200) -> str:
    """A static icicle-style flame graph (root at the top), every name XML-escaped."""
    total = sum(stacks.values()) or 1
    tree: dict = {}
    for stack, count in stacks.items():
        node = tree
        for frame in stack:
            entry = node.setdefault(frame, [0, {}])
            entry[0] += count
            node = entry[1]
    rows: list[str] = []
    depth_max = 0

    def draw(node: dict, x: float, depth: int) -> None:
        nonlocal depth_max
        for frame, (count, children) in sorted(node.items()):
            w = width * count / total
            if w >= 0.5:
                depth_max = max(depth_max, depth)
                name = html.escape(frame, quote=True)
                label = html.escape(frame[: int(w / 7)], quote=True) if w > 30 else ""
                hue = 20 + zlib.crc32(frame.encode()) % 40
                rows.append(f'<g><title>{name} ({count} samples, {100 * count / total:.1f}%)'
                            f'</title><rect x="{x:.1f}" y="{depth * 17}" width="{w:.1f}" '
                            f'height="16" fill="hsl({hue},90%,60%)"/><text x="{x + 2:.1f}" '
                            f'y="{depth * 17 + 12}" font-size="11">{label}</text></g>')
                draw(children, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    height = (depth_max + 1) * 17
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace">\n' + "\n".join(rows) + "\n</svg>\n")


def read_stacks(root: Path, rel: PurePosixPath) -> Counter[tuple[str, ...]]:
    """The stacks py-spy wrote in the run directory (a link, FIFO or oversized file
    planted there gives none)."""
    try:
        data = safe_files.read_bytes(root, rel, MAX_STACKS_BYTES)
    except OSError:
        return Counter()
    return parse_stacks(data.decode("utf-8", errors="replace"))


def beside(stem: PurePosixPath, suffix: str) -> PurePosixPath:
    """``stem`` with ``suffix`` added (``with_suffix`` would cut a dotted name)."""
    return stem.with_name(stem.name + suffix)


# ---- one profiling --------------------------------------------------------------------
# Runs ``python ARGS`` in the run's sandbox with the given directory as its read-write
# working directory: the result, and its output as text for the model.
Runner = Callable[[list[str], Path], Awaitable[tuple[sandbox.ProcessResult, str]]]


@dataclass(frozen=True)
class Job:
    """One profiling a run asked for, as ``tools`` resolved it."""

    path: str  # the script as the agent named it, for messages
    root: Path  # the script is root/rel, read without following a link below root
    rel: PurePosixPath
    workspace: Path  # the run directory: the profile's files end up there, as stem.*
    stem: PurePosixPath
    run: Runner
    display: Callable[[Path], str]  # a path as the agent is shown it

    @property
    def script(self) -> Path:
        return self.root / self.rel


async def profile(job: Job, workdir: Path | None = None) -> str:
    """Profile the job's script in ``workdir`` (the run directory unless given); the
    text names the files as they will be in the run directory."""
    spy = py_spy()
    workdir = workdir or job.workspace
    raw_rel = beside(job.stem, ".txt" if spy is not None else ".prof")
    raw = workdir / raw_rel  # written by the profiler, inside the sandbox
    if spy is not None:
        args = ["-c", _PY_SPY_LAUNCHER, spy, str(PY_SPY_RATE), str(raw), str(job.script)]
    else:
        args = ["-c", _PROFILER, str(job.script), str(raw)]
    result, output = await job.run(args, workdir)
    shown = job.display(job.workspace / raw_rel)
    if not result.ok:
        raise ToolError(f"profiling {job.path}: the program {result.failure()}.\n{output}")
    if spy is None:
        return (f"(py-spy is not installed: a cProfile profile)\n"
                f"profile saved to {shown}\n{output}")
    stacks = await asyncio.to_thread(read_stacks, workdir, raw_rel)
    svg = beside(job.stem, ".svg")
    try:
        await asyncio.to_thread(safe_files.write_bytes, workdir, svg,
                                flame_graph_svg(stacks).encode())
        graph = f"flame graph: {job.display(job.workspace / svg)}"
    except OSError as exc:
        graph = f"no flame graph: {exc.strerror or exc}"
    return (f"profile saved to {shown} ({graph})\n"
            f"{stacks_report(stacks)}\n\nprogram output:\n{output}")


# ---- the shared profile of an unchanged task file -------------------------------------
PROFILE_CACHE_VERSION = 1
MAX_SCRIPT_BYTES = 8 * 1024**2  # what a profiled task file's hash reads at most
_profile_locks: dict[str, asyncio.Lock] = {}


def profile_cache_dir() -> Path:
    return problem.cache_dir() / "profiles"  # no sandbox sees it (sandbox.plan)


async def shared_profile(job: Job) -> str:
    """The profile of an unchanged task file: from the machine's cache when there, else
    measured (once, however many runs ask at the same time) and stored.  The run gets
    its own copies of the raw profile and the flame graph.

    What is shared is measured in a clean room: a fresh directory of the harness's,
    never the run directory, so nothing an agent planted (a module the task file would
    import from its working directory, a file at a profile's name) can reach the cache
    and, through it, another run.  Every copy goes through ``safe_files``."""
    kind = f"py-spy-{PY_SPY_RATE}" if py_spy() is not None else "cprofile"
    try:
        entry = await asyncio.to_thread(_profile_entry, job, kind)
    except OSError as exc:  # the task file itself is unreadable: measured, not shared
        log.warning("the task file's profile is not shared: %s", exc.strerror or exc)
        return await profile(job)
    stem = job.stem
    shown = job.display(job.workspace / stem)
    lock = _profile_locks.setdefault(entry.name, asyncio.Lock())
    async with lock:
        found = await asyncio.to_thread(_load_profile, entry, job.workspace, stem)
        if found is not None:
            return ("(the shared profile of this unchanged file, measured once on this "
                    f"machine)\n{found.replace(_STEM, shown)}")
        room = Path(tempfile.mkdtemp(prefix="hp-profile-"))
        try:
            (room / stem.parent).mkdir()
            result = await profile(job, workdir=room)
            await asyncio.to_thread(_store_profile, entry, room, stem,
                                    result.replace(shown, _STEM))
            for suffix in _PROFILE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(
                        safe_files.copy_file, room, beside(stem, suffix), job.workspace,
                        beside(stem, suffix), MAX_STACKS_BYTES)
        finally:
            await asyncio.to_thread(safe_files.remove_tree, room)
        return result


_STEM = "\0stem\0"  # where a stored profile names the run's own files
_PROFILE_FILES = (".txt", ".svg", ".prof")
MAX_PROFILE_RECORD_BYTES = 1_000_000


def _profile_entry(job: Job, kind: str) -> Path:
    source = safe_files.read_bytes(job.root, job.rel, MAX_SCRIPT_BYTES)
    digest = hashlib.sha256(source + f"\0{kind}\0{sys.version}\0"
                            f"{PROFILE_CACHE_VERSION}".encode()).hexdigest()[:32]
    return profile_cache_dir() / digest


def _load_profile(entry: Path, workspace: Path, stem: PurePosixPath) -> str | None:
    """The stored profile's text, its files copied into the run directory (a name the
    agent's code took there is replaced); None when nothing usable is stored."""
    try:
        found = json.loads(safe_files.read_bytes(entry, "record.json",
                                                 MAX_PROFILE_RECORD_BYTES))
        files = {name: safe_files.read_bytes(entry, name, MAX_STACKS_BYTES)
                 for name in found["files"] if Path(name).suffix in _PROFILE_FILES}
        result = str(found["result"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        safe_files.remove_tree(entry)  # unreadable: measured again
        return None
    for name, data in files.items():
        try:
            safe_files.write_bytes(workspace, beside(stem, Path(name).suffix), data)
        except OSError as exc:
            raise ToolError(f"cannot write the profile into your run directory: "
                            f"{exc.strerror or exc}") from exc
    return result


def _store_profile(entry: Path, workspace: Path, stem: PurePosixPath, result: str) -> None:
    """Store the run's profile for the others, unless what is at its names in the run
    directory is not what the profiler wrote (a link, a FIFO: then nothing is stored)."""
    files = {}
    for suffix in _PROFILE_FILES:
        try:
            files[f"profile{suffix}"] = safe_files.read_bytes(workspace, beside(stem, suffix),
                                                              MAX_STACKS_BYTES)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("the profile is not shared: %s", exc.strerror or exc)
            return
    if not files.keys() & {"profile.txt", "profile.prof"}:
        log.warning("the profile is not shared: the profiler wrote no raw profile")
        return
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        safe_files.remove_tree(tmp)
        for name, data in files.items():
            safe_files.write_bytes(entry.parent, f"{tmp.name}/{name}", data)
        safe_files.write_bytes(entry.parent, f"{tmp.name}/record.json", json.dumps(
            {"result": result, "files": sorted(files)}).encode())
        safe_files.remove_tree(entry)
        tmp.rename(entry)
    except OSError as exc:
        log.warning("the shared profile could not be stored: %s", exc)
        safe_files.remove_tree(tmp)
