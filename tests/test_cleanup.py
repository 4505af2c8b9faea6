"""Nothing a harness process started outlives it: sandboxes and their cgroups are gone
on every exit the process sees, and what a killed one left is removed at the next start.

Each exit path runs a real harness process (a few lines of Python over ``sandbox``'s
API) and looks at the machine afterwards: the cgroups named after its pid, and the
sandboxed child's process.  Cgroups need root and a writable cgroup file system; where
there are none, the tests say so and skip.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT

import sandbox

needs_cgroups = pytest.mark.skipif(
    not sandbox.has_cgroups(), reason="no writable cgroups here (needs root and a cgroup "
    "file system): children run without one, so none can be left behind")
DEAD = 4_194_304 + 1  # above any pid_max: no such process, ever


def cgroups_of(pid: int) -> list[Path]:
    """The cgroups process ``pid`` made, in every hierarchy."""
    return sorted(p for parent in sandbox._cgroup_parents() for p in parent.glob(f"{pid}-*"))


def has_tasks(cgroup: Path) -> bool:
    try:
        return bool((cgroup / "cgroup.procs").read_text().split())
    except FileNotFoundError:
        return False


def processes_with(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (a sandboxed child's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def eventually(condition, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_harness(tmp_path: Path, main: str) -> tuple[subprocess.Popen, str]:
    """A harness process whose ``main()`` coroutine is ``main`` (it may use ``start``
    and ``run``: a sandboxed child that sleeps, under a marker of its own, which the
    harness's own command line holds only in two parts)."""
    marker = f"hello-py-test-{uuid.uuid4().hex}"
    source = f"""
import asyncio, signal, sys
from pathlib import Path
import sandbox

# Ctrl-C as at a terminal, even when the suite itself was started in the background by
# a shell without job control (which starts it with SIGINT ignored, inherited here)
signal.signal(signal.SIGINT, signal.default_int_handler)

CODE = ("import os, time; os.write(3, b'up\\\\n'); time.sleep(120)  # "
        + {marker[:12]!r} + {marker[12:]!r})
WORKDIR = sandbox.Visibility(Path({str(tmp_path)!r}))

def up(arrived, line):
    print("running", flush=True)  # the sandboxed child itself runs

def start():
    return sandbox.start_python(["-c", CODE], visibility=WORKDIR, on_control=up)

def run():
    return sandbox.run_python(["-c", CODE], visibility=WORKDIR, on_control=up,
                              limits=sandbox.Limits(timeout=120))

{main}

asyncio.run(main())
"""
    env = dict(os.environ, HELLO_PY_ISOLATION="bwrap")  # it dies with its harness
    proc = subprocess.Popen([sys.executable, "-c", source], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def wait_until_running(proc: subprocess.Popen, marker: str) -> list[Path]:
    """The harness's cgroups, once its sandboxed child says it runs."""
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready or proc.stdout.readline().strip() != "running":
        proc.kill()
        pytest.fail(f"the sandboxed child never ran:\n{proc.communicate()[1]}")
    assert processes_with(marker)
    return cgroups_of(proc.pid)


needs_bwrap = pytest.mark.skipif("bwrap" not in sandbox.available_backends(),
                                 reason="needs bubblewrap (its child dies with the harness)")


@needs_cgroups
@needs_bwrap
def test_a_harness_killed_with_sigkill_leaves_cgroups_the_next_start_removes(tmp_path):
    proc, marker = start_harness(tmp_path, "async def main():\n"
                                           "    await start()\n"
                                           "    await asyncio.sleep(120)\n")
    try:
        made = wait_until_running(proc, marker)
        proc.kill()  # kill -9: no clean-up of its own can run
        proc.wait()
    finally:
        proc.kill()
    # its sandbox dies with it (bwrap --die-with-parent) and leaves its cgroups empty
    assert eventually(lambda: not processes_with(marker))
    assert eventually(lambda: not any(has_tasks(c) for c in made))
    assert cgroups_of(proc.pid) == made  # what a kill -9 leaves behind
    removed = sandbox.clean_leftovers()  # what main.py does as every command starts
    assert set(made) <= set(removed)
    assert cgroups_of(proc.pid) == []


EXIT_PATHS = {
    # a Child the code never stopped, at a normal end of the program
    "normal end, a child never stopped": (
        "async def main():\n"
        "    await start()\n"
        "    await asyncio.sleep(1)\n", None),
    # asyncio.run's shutdown cancels the task that still runs the child
    "an exception while a child runs": (
        "async def main():\n"
        "    asyncio.ensure_future(run())\n"
        "    await asyncio.sleep(1)\n"
        "    raise RuntimeError('boom')\n", None),
    # asyncio.run's own SIGINT handler cancels the main task
    "Ctrl-C": ("async def main():\n"
               "    await run()\n", [signal.SIGINT]),
    # main.py's handlers cancel the main task on every signal: an impatient operator's
    # second and third SIGTERM arrive while the first one's clean-up runs
    "SIGTERM three times": (
        "async def main():\n"
        "    loop, task = asyncio.get_running_loop(), asyncio.current_task()\n"
        "    loop.add_signal_handler(signal.SIGTERM, task.cancel)\n"
        "    try:\n"
        "        await run()\n"
        "    except asyncio.CancelledError:\n"
        "        sys.exit(130)\n", [signal.SIGTERM] * 3),
}


@needs_cgroups
@needs_bwrap
@pytest.mark.parametrize("path", list(EXIT_PATHS))
def test_every_exit_the_harness_sees_removes_its_sandboxes_and_cgroups(path, tmp_path):
    main, signals = EXIT_PATHS[path]
    proc, marker = start_harness(tmp_path, main)
    try:
        wait_until_running(proc, marker)
        for sig in signals or ():
            proc.send_signal(sig)
            time.sleep(0.01)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode != -signal.SIGKILL
    assert "never retrieved" not in stderr, stderr
    assert cgroups_of(proc.pid) == [], stderr
    assert eventually(lambda: not processes_with(marker), 5), "the sandbox outlived it"


# ---- what the clean-up removes, and what it never does -----------------------------------
def _ours() -> tuple[str, str]:
    return sandbox._start_time(os.getpid()), sandbox._pid_namespace()


CASES = {  # name (made from this process's start and namespace) -> removed?
    "of a process that is gone": (lambda start, ns: f"{DEAD}-1-{ns}-0-feedface", True),
    "of a process that is gone, named as before start times": (
        lambda start, ns: f"{DEAD}-0-feedface", True),
    "of a process that is gone, with cgroups below it": (
        lambda start, ns: f"{DEAD}-1-{ns}-0-feedface/inner/deeper", True),
    # the pid is alive again, but started later: another process took it
    "of a pid now reused": (lambda start, ns: f"{os.getpid()}-1-{ns}-0-feedface", True),
    "of this live process": (lambda start, ns: f"{os.getpid()}-{start}-{ns}-0-cafe", False),
    "of this live process, named as before start times": (
        lambda start, ns: f"{os.getpid()}-0-cafe", False),
    # a process of another pid namespace (another container) cannot be seen from here
    "of another pid namespace": (lambda start, ns: f"{DEAD}-1-1-0-feedface", False),
    "not a sandbox's": (lambda start, ns: "someone-else", False),
}


@needs_cgroups
@pytest.mark.parametrize("case", list(CASES))
def test_the_clean_up_removes_only_the_cgroups_of_ended_processes(case):
    name, removed = CASES[case]
    relative = Path(name(*_ours()))
    made = [parent / relative for parent in sandbox._cgroup_parents()]
    for path in made:
        path.mkdir(parents=True)
    try:
        sandbox.clean_leftovers()
        top = [parent / relative.parts[0] for parent in sandbox._cgroup_parents()]
        assert [p.exists() for p in top] == [not removed] * len(top)
    finally:
        for path in made:
            for below in [path, *path.parents][:len(relative.parts)]:
                if below.exists():
                    below.rmdir()


@needs_cgroups
@pytest.mark.parametrize("owner", ["gone", "alive"])
def test_a_sandbox_left_running_is_killed_only_when_its_owner_is_gone(tmp_path, owner):
    # A harness killed while bwrap was starting can leave a sandbox running in its
    # cgroup: the next start kills it and removes the cgroup.  A live harness's sandbox
    # is never touched.
    parent = next((p for p in sandbox._cgroup_parents()
                   if p.parent.name in ("pids", "unified") or p.parent == sandbox._CGROUP_ROOT),
                  None)
    if parent is None:
        pytest.skip("no pids or unified cgroup hierarchy to move a process into")
    start, ns = _ours()
    name = f"{DEAD}-1-{ns}-0-busy" if owner == "gone" else f"{os.getpid()}-{start}-{ns}-0-busy"
    cgroup = parent / name
    cgroup.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (cgroup / "cgroup.procs").write_text(str(sleeper.pid))
        sandbox.clean_leftovers()
        if owner == "gone":
            assert eventually(lambda: sleeper.poll() is not None)
            assert not cgroup.exists()
        else:
            assert cgroup.exists() and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
        if cgroup.exists():
            eventually(lambda: not has_tasks(cgroup))
            cgroup.rmdir()


def test_the_clean_up_is_harmless_without_cgroups(monkeypatch, tmp_path):
    # What main.py calls at every start: on a machine without cgroups (or not root), it
    # finds nothing and says nothing.
    monkeypatch.setattr(sandbox, "_CGROUP_ROOT", tmp_path / "no-cgroups")
    assert sandbox.clean_leftovers() == []
