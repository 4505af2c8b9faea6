"""The verdict's clock: the CPU time of the execution's sandbox (its cgroup, read by the
harness while the sandbox is idle), wherever every figure of the ladder has it; the wall
clock otherwise, never the two mixed; both recorded."""

from __future__ import annotations

import asyncio
import time

import pytest

import sandbox
from problems.ml_training import calibration
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.ladder import Bench, Figures
from problems.ml_training.spec import GradingOptions
from problems.ml_training.timing.cache import BaselineCache, CachedMeasurement
from problems.ml_training.timing.executor import Executor, Instrumentation

FORKS = ("import os, time\n\ndef run():\n    parent = os.getpid()\n"
         "    if os.fork() == 0:  # a helper that lives as long as its parent\n"
         "        while os.getppid() == parent:\n            time.sleep(0.05)\n"
         "        os._exit(0)\n"
         "    end = time.process_time() + 0.1\n"
         "    while time.process_time() < end:\n        pass\n    return 1\n")
BUSY = ("import time\n\ndef run():\n    end = time.process_time() + {seconds}\n"
        "    while time.process_time() < end:\n        pass\n    return 1\n")


@pytest.mark.skipif(not sandbox.has_cgroups(), reason="the CPU clock needs cgroups (root)")
async def test_the_cpu_clock_is_read_while_the_sandbox_is_idle(tmp_path, monkeypatch):
    """The harness reads the cgroup when START and END reach it, however late: the timer
    starts the execution only after the first read, and lets it go on (to the probes)
    only after the second. A harness 0.4 s late at both would otherwise see none of a
    0.3 s execution's CPU time."""
    path = tmp_path / "candidate.py"
    path.write_text(BUSY.format(seconds=0.3))
    read = sandbox.Child.cpu_seconds

    def late(self):
        time.sleep(0.4)  # the event loop busy elsewhere
        return read(self)

    monkeypatch.setattr(sandbox.Child, "cpu_seconds", late)
    async with Executor(path, Instrumentation(entry="run"), threads=1,
                        limits=sandbox.Limits(timeout=60)) as ex:
        runs = [await ex.run() for _ in range(2)]
    for e in runs:
        assert e.ok, e.error
        assert 0.3 <= e.time < 0.39 + 0.5, e.time  # the timer's interval: not the delay
        assert 0.28 <= e.cpu_time <= e.time + 0.05, (e.cpu_time, e.time)


def _measurement(units: list[float], cpu_units: list[float]) -> CachedMeasurement:
    return CachedMeasurement(times=[u * 0.1 for u in units], accuracy=0.9, units=units,
                             anchor_times=[0.1] * (len(units) + 1),
                             cpu_times=[u * 0.1 for u in cpu_units] if cpu_units else [],
                             cpu_units=cpu_units,
                             anchor_cpu_times=[0.1] * (len(units) + 1) if cpu_units else [])


def _figures(baseline: CachedMeasurement, tier: CachedMeasurement,
             clock: str | None = None) -> Figures:
    bench = Bench(COMPLEX_SPEC, BaselineCache(None), progress=lambda m: None)
    ladder = asyncio.run(bench.ladder(GradingOptions(allow_unsandboxed=True), baseline,
                                      {"vectorized": tier}, clock))
    return Figures(baseline, ladder.speedup(calibration.STRICT_TIER), 1.0, 1e9, ladder)


def test_the_ladder_is_on_the_cpu_clock_when_every_measurement_has_it():
    # the wall clock saw the baseline's executions slowed by something else on the CPU
    # (360-440 strict units), its CPU time did not (400)
    baseline = _measurement([360.0, 440.0, 420.0, 380.0, 400.0, 450.0], [400.0] * 6)
    tier = _measurement([4.4, 4.0, 3.6, 4.0, 4.2, 3.8], [4.0] * 6)
    fig = _figures(baseline, tier)
    assert fig.clock == "cpu" and fig.ladder.clock == "cpu"
    assert fig.reference_speedup == 400.0 and fig.ladder.speedup("vectorized") == 100.0
    assert fig.ladder.quality()["holds"]  # on the CPU clock: no spread at all
    assert fig.calibration()["clock"] == "cpu" and fig.ladder.to_json()["clock"] == "cpu"
    # a candidate's units on that clock are chained through the CPU ladder; its wall
    # units are recorded beside, through the wall ladder
    assert fig.speedup([0.001] * 3, [2.0, 2.0, 2.0])[0] == 200.0
    assert fig.speedup_on("wall", [2.0, 2.1, 1.9])[0] == pytest.approx(205.0)
    assert fig.speedup_on("cpu", [])[0] is None


def test_one_measurement_without_the_cpu_clock_puts_the_whole_ladder_on_the_wall_clock():
    baseline = _measurement([360.0, 440.0, 420.0, 380.0, 400.0, 450.0], [400.0] * 6)
    tier = _measurement([4.4, 4.0, 3.6, 4.0, 4.2, 3.8], [])  # no cgroup when measured
    fig = _figures(baseline, tier)
    assert fig.clock == "wall"
    assert fig.reference_speedup == pytest.approx(410.0)
    assert fig.ladder.baseline_units == baseline.units
    assert fig.speedup_on("cpu", [4.0])[0] == 100.0  # still recorded where it exists


def test_a_grading_without_the_ladders_clock_is_judged_wholly_on_the_wall_clock():
    """Red team: a CPU ladder with a grading whose executions have no CPU time (a sandbox
    without a cgroup) compared seconds now with seconds at calibration. The grading is
    judged on the same measurements' wall ladder instead: units, target and scale."""
    baseline = _measurement([360.0, 440.0, 420.0, 380.0, 400.0, 450.0], [400.0] * 6)
    tier = _measurement([4.4, 4.0, 3.6, 4.0, 4.2, 3.8], [4.0] * 6)
    fig = _figures(baseline, tier)
    fig.wall = _figures(baseline, tier, clock="wall")
    assert fig.judged_on({"cpu": [1.0], "wall": [1.0]}) is fig
    wall = fig.judged_on({"wall": [1.0]})
    assert wall.clock == "wall" and wall.reference_speedup == pytest.approx(410.0)
    assert wall.speedup([0.01], [2.0])[0] == pytest.approx(205.0)
    assert fig.wall.judged_on({}) is fig.wall


async def test_a_child_the_candidate_forks_never_holds_back_the_end(tmp_path):
    """Red team: a child that lives until its parent exits (as DataLoader and pool workers
    do) kept the report pipe open, so END waited for the parent, which waited for the
    timer's word after END: every such execution ran into the timeout. Forked children
    now close the runner's pipes."""
    path = tmp_path / "candidate.py"
    path.write_text(FORKS)
    async with Executor(path, Instrumentation(entry="run"), threads=1,
                        limits=sandbox.Limits(timeout=30)) as ex:
        runs = [await ex.run(timed=False) for _ in range(2)]
    for e in runs:
        assert e.ok, e.error
        assert e.time < 1.5, e.time  # the child is still alive when END comes
        assert e.cpu_time is None or e.cpu_time < e.time + 0.05


async def test_no_sandbox_starts_while_an_execution_is_timed(tmp_path, monkeypatch):
    """Both sandboxes are up before the anchor group is timed (a torch import beside a
    timed run shares its caches; a subject could restart its sandbox every time)."""
    monkeypatch.setenv("HELLO_PY_TIMING_DIR", str(tmp_path / "timing"))  # no wait for a slot
    from problems.ml_training.timing.executor import Execution
    from problems.ml_training.timing.side_by_side import SideBySide

    events: list[str] = []

    class Slow:
        path = None

        def __init__(self, name, start):
            self.name, self.start = name, start

        async def ready(self):
            events.append(f"{self.name} starting")
            await asyncio.sleep(self.start)
            events.append(f"{self.name} up")
            return ""

        async def run(self, *, data=None, probes=None, **_):
            events.append(f"{self.name} timed")
            return Execution(ok=True, error="", time=0.5, stdout="", stderr_tail="",
                             wall_time=0.5, observed_time=0.5, cpu_time=0.5,
                             others_on_cpu=0.0, seed=data["seed"])

    pairs = SideBySide(Slow("cand", 0.3), Slow("strict", 0.01))
    await pairs.step({"seed": 1})
    first_timed = events.index("strict timed")
    assert {"cand up", "strict up"} <= set(events[:first_timed]), events
