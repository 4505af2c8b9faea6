"""A ladder that proves its quality before it is trusted: each tier's interval against a
stated width, executions added until it is reached or a cap (and why not, said), the
quality and age in every record, and ``calibrate --check`` against the cached ladder."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest
from conftest import scaled_copy

import main
import provenance
import sandbox
from problems.ml_training import calibration
from problems.ml_training.calibration import Ladder
from problems.ml_training.declarations.complex_pipeline import REFERENCE_DIR, complex_spec
from problems.ml_training.ladder import Precision
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache
from problems.ml_training.timing.executor import Execution


def ladder(baseline_units: list[float], tier_units: list[float]) -> Ladder:
    lad = Ladder([100.0] * len(baseline_units), baseline_units)
    lad.add("vectorized", [1.0] * len(tier_units), tier_units)
    lad.add("strict", [0.3] * 6, [1.0] * 6)
    return lad


def test_a_tight_ladder_holds_and_a_spread_one_is_poor_and_says_why():
    tight = ladder([300.0, 300.6, 299.4, 300.3, 299.8, 300.1],
                   [4.0, 4.01, 3.99, 4.0, 4.0, 4.01]).quality(0.03)
    assert tight["holds"] and tight["poor"] is None
    assert all(w is not None and w < 0.03 for w in tight["half_widths"].values())
    spread = ladder([250.0, 300.0, 350.0, 320.0, 280.0, 310.0],
                    [4.0, 4.01, 3.99, 4.0, 4.0, 4.01]).quality(0.03)
    assert not spread["holds"]
    assert "strict ±" in spread["poor"] and "varied by" in spread["poor"]
    assert spread["half_widths"]["strict"] > 0.03


@pytest.mark.parametrize("runs", [1, 3, 5])
def test_fewer_than_six_executions_are_not_a_known_interval(runs):
    # one execution has no spread, and up to five the bootstrap of a median is about
    # [min, max], which misses the true median too often (25 % of the time at three)
    few = ladder([300.0 + i * 0.1 for i in range(runs)], [4.0] * 6).quality(0.03)
    assert not few["holds"] and few["half_widths"]["strict"] is None
    assert "fewer than 6 executions" in few["poor"]


class _Pairs:
    """What Precision reads of a side-by-side measurement."""

    def __init__(self, units: list[float]):
        self._units = units
        self.subject = [Execution(ok=True, error="", time=1.0, stdout="", stderr_tail="",
                                  wall_time=1.0, load=2.5) for _ in units]

    def units(self, clock: str = "wall") -> list[float]:
        return self._units

    def clock(self) -> str:
        return "cpu"

    def anchor_runs(self) -> list[Execution]:
        return []


def test_executions_are_added_until_the_width_or_the_cap_and_the_cap_says_why():
    said: list[str] = []
    precision = Precision.of(GradingOptions(ladder_width=0.03), 3, 8)
    tight = [300.0, 300.3, 299.8, 300.1, 299.9, 300.2]
    assert precision.wanted(_Pairs(tight[:3]), 3, "baseline", said.append) == 4
    assert said[-1] == ("baseline: the interval is not known yet after 3 executions "
                        "(goal ±3 %): one more")
    assert precision.wanted(_Pairs(tight), 6, "baseline", said.append) == 6
    wide = [250.0, 300.0, 350.0, 280.0, 330.0, 310.0]
    assert precision.wanted(_Pairs(wide), 6, "baseline", said.append) == 7
    assert said[-1].startswith("baseline: the interval is ±") and "one more" in said[-1]
    assert precision.wanted(_Pairs([*wide, 260.0, 340.0]), 8, "baseline",
                            said.append) == 8
    assert said[-1].startswith("warning: baseline: the interval is still ±")
    assert "(CV)" in said[-1] and "load average was up to 2.5" in said[-1]
    assert "marked poor" in said[-1]
    # fewer than three executions asked for: a quick ladder, not extended
    assert Precision.of(GradingOptions(), 1, 9) is None
    # a tier is measured until its own median is known (the baseline's spread is the
    # baseline's: more tier executions cannot narrow it)
    tier = Precision.of(GradingOptions(ladder_width=0.03), 3, 20, tier=True)
    assert tier.wanted(_Pairs([4.0, 4.02, 3.98, 4.01, 3.99, 4.0]), 6, "tier-vectorized",
                       said.append) == 6
    assert tier.wanted(_Pairs([3.0, 4.0, 5.0, 3.5, 4.5, 4.2]), 6, "tier-vectorized",
                       said.append) == 7


def test_every_record_shows_the_ladders_interval_and_age():
    quality = ladder([250.0, 300.0, 350.0, 280.0, 330.0, 310.0], [4.0] * 6).quality(0.03)
    record = {"measured_at": "2026-12-07T06:00:00Z", "source": "cache", "quality": quality}
    line = provenance.calibration_line(record, dt.datetime(2026, 12, 7, 9, 30))
    assert line.startswith("calibration: measured 2026-12-07 06:00 UTC, 3.5 h before this "
                           "(cached); ladder POOR: wider than ±3 % (")
    good = {**record, "quality": ladder([300.0, 300.6, 299.4, 300.2, 299.9, 300.1],
                                        [4.0, 4.01, 3.99, 4.0, 4.0, 4.01]).quality()}
    assert "; ladder within ±3 % (vectorized ±" in provenance.calibration_line(good)


def test_calibrate_check_without_a_cached_ladder_is_one_line(capsys):
    assert main.main(["calibrate", "--check"]) == 3
    err = capsys.readouterr().err
    assert "no cached calibration to check" in err and "Traceback" not in err


@pytest.mark.skipif(not sandbox.has_cgroups(), reason="the CPU clock needs cgroups (root)")
def test_a_small_ladder_measures_to_its_cap_is_marked_poor_and_can_be_checked(
        tmp_path, small_pipelines):
    vectorized = scaled_copy(REFERENCE_DIR / "ml_training_vectorized.py",
                             tmp_path / "vectorized_small.py", 100)
    spec = complex_spec(small_pipelines["baseline"], 100,
                        reference=small_pipelines["reference"], vectorized=vectorized)
    # a width no machine reaches: the baseline goes to its cap of 4, the tier to 5
    opts = GradingOptions(repeats=3, baseline_repeats=3, ladder_width=1e-9,
                          ladder_max_repeats=4, max_repeats=5, min_timed_seconds=0)
    said: list[str] = []
    cache = BaselineCache(tmp_path / "cache")
    task = MLTrainingTask(spec, opts, cache=cache, progress=said.append)
    data = asyncio.run(task.calibrate())
    assert len(data["baseline_times"]) == 4 and task.baseline_executions == 4
    assert [len(t["times"]) for t in data["tiers"] if t["name"] == "vectorized"] == [5]
    quality = data["calibration"]["quality"]
    assert quality["holds"] is False and "wider than" in quality["poor"]
    assert sum(line.startswith("warning: baseline: the interval is still") for line in said) == 1
    stored = cache.load(task.bench.cache_key(spec.baseline, "baseline", task.options)).found
    # both clocks are kept, the CPU one as the cgroup counted it
    assert len(stored.cpu_units) == 4 and len(stored.anchor_cpu_times) == len(stored.anchor_times)
    # and the ladder is on the CPU clock (the verdict's wherever every figure has it)
    assert data["clock"] == "cpu" and data["baseline_units"] == stored.cpu_units
    assert "ladder POOR" in provenance.calibration_line(data["calibration"])
    # the check re-measures and compares, storing nothing; the links hold within the
    # wide width asked for, but the cached ladder itself is poor (4 baseline executions
    # are too few to know its interval), so it is not vouched for
    check = asyncio.run(MLTrainingTask(spec, replace(opts, ladder_width=0.5),
                                       cache=cache).check_calibration())
    assert [link["link"] for link in check["links"]] == ["baseline / strict",
                                                          "vectorized / strict"]
    assert check["tolerance"] == 1.0 and all(link["holds"] for link in check["links"])
    assert check["holds"] is False and "fewer than 6" in check["quality"]["poor"]
    assert cache.load(task.bench.cache_key(spec.baseline, "baseline", task.options)
                      ).found == stored
    assert calibration.MIN_PRECISE_RUNS == 6


async def test_a_side_by_side_measurement_goes_on_after_its_close():
    """The closing anchor group serves as the next execution's group before it, so the
    groups still alternate with the subject's executions (one more than them)."""
    from test_calibration import _StubExecutor

    from problems.ml_training.timing.side_by_side import SideBySide

    log: list = []
    pairs = SideBySide(_StubExecutor("cand", log, 0.5), _StubExecutor("strict", log, 0.25))
    for seed in (1, 2):
        await pairs.step({"seed": seed})
    await pairs.close({"seed": 2})
    pairs.reopen()
    await pairs.step({"seed": 3})
    await pairs.close({"seed": 3})
    assert [(n, s) for n, s, _ in log] == [("strict", 1), ("cand", 1), ("strict", 2),
                                           ("cand", 2), ("strict", 2), ("cand", 3),
                                           ("strict", 3)]
    assert len(pairs.anchors) == len(pairs.subject) + 1 == 4
    assert pairs.units() == [2.0, 2.0, 2.0]
