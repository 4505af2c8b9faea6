"""Timing slots across the machine (``problems.ml_training.timing.slots``): one timed
execution per timing CPU whatever process asks, the waiting said, the lock directory
refused when it is not safe, and what else ran on the timing CPU recorded per execution.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sandbox
from problems.ml_training.timing import slots
from problems.ml_training.timing.executor import Execution, Executor, Instrumentation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _own_lock_directory(tmp_path, monkeypatch):
    """Each test its own lock directory (a subprocess inherits it): the machine's own
    slots stay free for the rest of the suite."""
    where = tmp_path / "timing"
    monkeypatch.setenv("HELLO_PY_TIMING_DIR", str(where))
    return where


def overlapping(intervals: list[dict]) -> list[tuple[dict, dict]]:
    by_cpu: dict[tuple[str, int], list[dict]] = {}
    for i in intervals:
        by_cpu.setdefault((i["host"], i["cpu"]), []).append(i)
    found = []
    for group in by_cpu.values():
        group.sort(key=lambda i: i["start"])
        found += [(a, b) for a, b in zip(group, group[1:], strict=False) if b["start"] < a["end"]]
    return found


HOLDER = textwrap.dedent("""
    import asyncio, json, sys, time
    from problems.ml_training.timing import slots

    async def main():
        said = []
        with slots.recording() as held:
            for _ in range(3):
                async with slots.timing_slot("test holder", notify=said.append):
                    time.sleep(0.3)  # blocks the loop, as a timed execution's CPU would
        print(json.dumps({"held": held, "said": said}))

    asyncio.run(main())
""")


def test_two_processes_never_time_at_once_and_the_waiting_one_says_so():
    env = {**os.environ, "HELLO_PY_TIMING_CPUS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    held = [i for out in outs for i in out["held"]]
    assert len(held) == 6 and not overlapping(held), held
    said = [m for out in outs for m in out["said"]]
    assert said and all(m.startswith("waiting for a timing slot (CPU ") for m in said)
    assert any("test holder" in m and "process " in m for m in said), said


async def test_tasks_of_one_process_take_turns_and_are_recorded():
    async def hold():
        async with slots.timing_slot("task"):
            assert sandbox.timed_cpu() in sandbox.timing_cpus()
            async with slots.timing_slot("nested"):  # the same slot, not a deadlock
                pass
            await asyncio.sleep(0.1)

    with slots.recording() as outer:
        with slots.recording() as inner:
            await asyncio.wait_for(asyncio.gather(*(hold() for _ in range(4))), 20)
    assert sandbox.timed_cpu() is None
    assert len(inner) == 4 and outer == inner
    assert not overlapping(inner) or len(sandbox.timing_cpus()) > 1


def test_a_killed_holder_leaves_no_stale_slot():
    env = {**os.environ, "HELLO_PY_TIMING_CPUS": "1"}
    code = ("import asyncio, time\nfrom problems.ml_training.timing import slots\n"
            "async def main():\n    async with slots.timing_slot('killed'):\n"
            "        print('held', flush=True); time.sleep(60)\nasyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()

    async def take():
        async with slots.timing_slot("after"):
            return True
    started = time.monotonic()
    assert asyncio.run(asyncio.wait_for(take(), 5))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("kind", ["link", "writable", "not ours"])
def test_an_unsafe_lock_directory_is_refused_in_one_line(tmp_path, monkeypatch, kind):
    where = tmp_path / "locks"
    if kind == "link":
        (tmp_path / "elsewhere").mkdir()
        where.symlink_to(tmp_path / "elsewhere")
    elif kind == "writable":
        where.mkdir()
        where.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory away")
        where.mkdir(mode=0o755)
        os.chown(where, 12345, 12345)
    monkeypatch.setenv("HELLO_PY_TIMING_DIR", str(where))

    async def take():
        async with slots.timing_slot():
            pass
    with pytest.raises(slots.SlotError, match="HELLO_PY_TIMING_DIR"):
        asyncio.run(take())
    if kind == "link":
        assert not list((tmp_path / "elsewhere").iterdir())  # nothing made through it


def test_a_lock_file_that_is_not_a_regular_file_is_refused(_own_lock_directory,
                                                           monkeypatch):
    monkeypatch.setenv("HELLO_PY_TIMING_CPUS", "1")
    _own_lock_directory.mkdir()
    os.mkfifo(_own_lock_directory / f"cpu{sandbox.timing_cpus()[0]}.lock")

    async def take():
        async with slots.timing_slot():
            pass
    with pytest.raises(slots.SlotError, match="not a regular file"):
        asyncio.run(asyncio.wait_for(take(), 5))


@pytest.mark.parametrize(("cpus", "wanted", "timing"), [
    ([0], "", [0]), ([0, 1], "", [1]), (list(range(7)), "", [6]),
    (list(range(8)), "", [6, 7]), (list(range(16)), "", [12, 13, 14, 15]),
    ([0, 1], "2", [0, 1]), ([0, 1], "5", [0, 1]), ([0, 1, 2, 3], "x", [3]),
])
def test_how_many_cpus_are_kept_for_timings(monkeypatch, cpus, wanted, timing):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(cpus))
    monkeypatch.setenv("HELLO_PY_TIMING_CPUS", wanted)
    assert sandbox.timing_cpus() == timing
    untimed = {sandbox.default_cpu(False) for _ in range(20)}
    assert untimed == (set(cpus) - set(timing) or set(cpus))


def test_contention_is_what_else_ran_on_the_timing_cpu():
    quiet = Execution(ok=True, error="", time=1.0, stdout="", stderr_tail="",
                      wall_time=1.0, observed_time=1.0, cpu_time=0.99, others_on_cpu=0.01)
    busy = Execution(ok=True, error="", time=2.0, stdout="", stderr_tail="",
                     wall_time=2.0, observed_time=2.0, cpu_time=1.0, others_on_cpu=1.0)
    assert not quiet.contended and busy.contended
    assert busy.timing_record()["on_cpu"] == 0.5


@pytest.mark.skipif(not sandbox.has_cgroups(), reason="needs cgroups (root)")
async def test_a_hog_on_the_timing_cpu_is_seen_from_outside(tmp_path):
    """A CPU hog pinned to the timing CPU: the execution's share of the CPU drops and
    the time others took there is recorded, so the step can be set aside."""
    path = tmp_path / "candidate.py"
    path.write_text("def run():\n    s = 0\n    for i in range(6_000_000):\n"
                    "        s += i\n    return s\n")
    cpu = sandbox.timing_cpus()[0]
    async with Executor(path, Instrumentation(entry="run"), threads=1,
                        limits=sandbox.Limits(timeout=60)) as ex:
        alone = await ex.run()
        hog = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "while True: pass",
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        try:
            await asyncio.sleep(0.5)
            shared = await ex.run()
        finally:
            hog.kill()
            await hog.wait()
    assert alone.ok and shared.ok, (alone.error, shared.error)
    assert alone.timing_cpu == cpu == shared.timing_cpu
    assert shared.contended and shared.timing_record()["on_cpu"] < 0.8, shared.timing_record()
    assert shared.others_on_cpu > 0.2 * shared.observed_time
    # (alone, nothing is asserted of its share: other work on a busy machine may run on
    # the timing CPU too, which is what the record is for)
    assert alone.timing_record()["on_cpu"] is not None


def test_grade_with_an_unsafe_lock_directory_stops_in_one_line(tmp_path, monkeypatch, capsys):
    import main

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "locks").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("HELLO_PY_TIMING_DIR", str(tmp_path / "locks"))
    candidate = tmp_path / "candidate.py"
    candidate.write_text("x = 1\n")
    assert main.main(["grade", str(ROOT / "problems/ml_training/reference/"
                                        "ml_training_reference.py")]) == 3
    err = capsys.readouterr().err
    assert "could not grade" in err and "HELLO_PY_TIMING_DIR" in err
    assert "Traceback" not in err


def test_the_grade_report_shows_the_timing_cpu_and_the_ladder():
    import console
    from problem import Check, GradeResult
    from problems.ml_training.calibration import Ladder

    lad = Ladder([100.0] * 6, [300.0, 330.0, 270.0, 310.0, 290.0, 320.0])
    lad.add("strict", [0.3] * 6, [1.0] * 6)
    result = GradeResult(passed=True, checks=[Check("syntax", True, "ok")], speedup=300.0,
                         details={
        "side_by_side": {"candidate_units": [1.0, 1.1], "baseline_units": [300.0],
                         "contention": {"on_cpu": [0.97, 0.99], "load": [1.5, 2.5],
                                        "set_aside": [{}, {}], "contended_kept": 1}},
        "calibration": {"measured_at": "2026-12-07T06:00:00Z", "source": "cache",
                        "quality": lad.quality()}})
    report = console.format_report(result)
    assert ("Timing CPU: the candidate was on it 98 % of its wall time (median), load "
            "average 2.5; 2 execution(s) set aside and repeated because something else "
            "ran there, 1 kept although it did") in report
    assert "calibration: measured 2026-12-07 06:00 UTC, " in report
    assert "ladder POOR: wider than ±3 % (strict ±" in report


class _Stub:
    """An executor whose executions look contended when ``busy`` says so."""

    def __init__(self, name, log, busy):
        self.name, self.log, self.busy, self.path = name, log, busy, None

    async def ready(self):
        return ""

    async def run(self, *, data=None, probes=None, **_):
        self.log.append(self.name)
        busy = self.busy(len(self.log))
        return Execution(ok=True, error="", time=0.5, stdout="", stderr_tail="",
                         wall_time=0.5, observed_time=0.5, cpu_time=0.5,
                         others_on_cpu=0.3 if busy else 0.0, seed=data["seed"])


def _busy_on(n: int):
    """A ``busy`` for _Stub: only its n-th execution shared its CPU."""
    calls = {"n": 0}

    def busy(_):
        calls["n"] += 1
        return calls["n"] == n
    return busy


async def test_the_candidate_never_chooses_which_of_its_executions_count():
    """A candidate that makes its own runs look contended (red team: running only across
    the clock ticks /proc/stat samples) gets nothing set aside: only the strict tier's
    runs before it decide, before it has run."""
    from problems.ml_training.timing.side_by_side import SideBySide

    log: list[str] = []
    pairs = SideBySide(_Stub("cand", log, lambda _: True), _Stub("strict", log,
                                                                 lambda _: False))
    for seed in (1, 2, 3):
        await pairs.step({"seed": seed})
    await pairs.close({"seed": 3})
    assert log == ["strict", "cand"] * 3 + ["strict"]
    assert pairs.set_aside == [] and pairs.contention()["contended_kept"] == 3


async def test_a_contended_anchor_is_run_again_before_the_candidate_runs():
    from problems.ml_training.timing.side_by_side import MAX_SET_ASIDE, SideBySide

    log: list[str] = []
    # the first anchor run shared its CPU
    pairs = SideBySide(_Stub("cand", log, lambda _: False), _Stub("strict", log, _busy_on(1)))
    await pairs.step({"seed": 1})
    assert log == ["strict", "strict", "cand"]  # the candidate ran once, after a clean anchor
    assert len(pairs.set_aside) == 1 and len(pairs.anchors) == 1
    # a CPU that stays busy: anchors are set aside up to the cap, then kept
    log.clear()
    always = SideBySide(_Stub("cand", log, lambda _: False), _Stub("strict", log,
                                                                   lambda _: True))
    await always.step({"seed": 1})
    assert log.count("cand") == 1 and len(always.set_aside) == MAX_SET_ASIDE


def test_the_default_lock_directory_is_one_no_other_user_can_make_or_enter(monkeypatch,
                                                                          _own_lock_directory):
    monkeypatch.delenv("HELLO_PY_TIMING_DIR")
    expected = ("/run/hello-py-timing" if os.geteuid() == 0
                else f"/tmp/hello-py-timing-{os.geteuid()}")
    assert str(slots.lock_directory()) == expected
    monkeypatch.setenv("HELLO_PY_TIMING_DIR", str(_own_lock_directory))

    async def take():
        async with slots.timing_slot():
            pass
    asyncio.run(take())
    assert _own_lock_directory.stat().st_mode & 0o777 == 0o700
    for lock in _own_lock_directory.iterdir():  # no other user can open one to hold it
        assert lock.stat().st_mode & 0o777 == 0o600


def test_a_lock_directory_whose_parent_is_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HELLO_PY_TIMING_DIR", str(tmp_path / "no" / "such" / "dir"))

    async def take():
        async with slots.timing_slot():
            pass
    with pytest.raises(slots.SlotError, match="cannot be used"):
        asyncio.run(take())


async def test_a_contended_group_after_reopen_is_run_again_on_its_own_data_set():
    """After reopen() the closing group (on the last subject execution's data set) is the
    group before the next one; set aside, it is run again on that same data set, so
    every subject execution keeps a strict-tier run on its data (the oracle's answers:
    a calibration that reached its cap under load crashed on the missing one)."""
    from problems.ml_training.timing.side_by_side import SideBySide

    log: list[str] = []
    # the closing group after the second execution shared its CPU
    pairs = SideBySide(_Stub("cand", log, lambda _: False), _Stub("strict", log, _busy_on(3)))
    await pairs.step({"seed": 1})
    for seed in (1, 2):  # measured to a width: one more execution at a time
        await pairs.close({"seed": seed})
        pairs.reopen()
        await pairs.step({"seed": seed + 1})
    await pairs.close({"seed": 3})
    assert len(pairs.set_aside) == 1 and [e.seed for e in pairs.subject] == [1, 2, 3]
    assert {e.seed for e in pairs.anchor_runs()} == {1, 2, 3}
