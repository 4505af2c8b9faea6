"""The measurement cache is checked, not believed: every entry that is malformed,
contradicts itself, is keyed otherwise or is not a plain regular file is refused with its
reason (and measured again by the grader, saying so in one line), never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from conftest import REFERENCE, SLOW_PIPELINE

from problems.ml_training.calibration import in_anchor_units
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import (
    MAX_CACHE_BYTES,
    MAX_CACHED_VALUES,
    BaselineCache,
    CachedMeasurement,
    Lookup,
)

TIMES = [50.0, 52.0, 49.0]
# two anchor executions before each time and two after the last (as SideBySide stores them)
ANCHOR_TIMES = [0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.50]


def key(cache: BaselineCache) -> dict[str, Any]:
    return cache.key(SLOW_PIPELINE, threads=1, label="baseline", anchor=REFERENCE)


def valid(cache: BaselineCache) -> CachedMeasurement:
    groups = [ANCHOR_TIMES[i:i + 2] for i in range(0, len(ANCHOR_TIMES), 2)]
    return CachedMeasurement(times=list(TIMES), accuracy=0.31, key=key(cache),
                             oracle_agreement=[1.0, 1.0, 0.99],
                             units=in_anchor_units(TIMES, groups),
                             anchor_times=list(ANCHOR_TIMES))


def entry_path(cache: BaselineCache) -> Path:
    """Where the entry for ``key(cache)`` lives (store one to learn the name)."""
    cache.store(valid(cache))
    (path,) = cache.directory.glob("*.json")
    return path


@pytest.fixture
def cache(tmp_path) -> BaselineCache:
    return BaselineCache(tmp_path / "cache")


def test_a_consistent_entry_is_used(cache):
    cache.store(valid(cache))
    assert cache.load(key(cache), min_runs=3) == Lookup(valid(cache), None)


def test_no_entry_is_no_refusal(cache):
    assert cache.load(key(cache)) == Lookup(None, None)


def test_too_few_runs_is_no_refusal(cache):
    # as before: the caller wants more runs than were stored, so it measures, silently
    cache.store(valid(cache))
    assert cache.load(key(cache), min_runs=4) == Lookup(None, None)


# ---- the entry's content ------------------------------------------------------------------
def edit(**changes: Any) -> Callable[[dict], dict]:
    return lambda entry: entry | changes


def scaled(name: str, factor: float) -> Callable[[dict], dict]:
    return lambda entry: entry | {name: [v * factor for v in entry[name]]}


def at(name: str, index: int, value: Any) -> Callable[[dict], dict]:
    def change(entry: dict) -> dict:
        values = list(entry[name])
        values[index] = value
        return entry | {name: values}
    return change


def without(name: str) -> Callable[[dict], dict]:
    return lambda entry: {k: v for k, v in entry.items() if k != name}


def keyed(**changes: Any) -> Callable[[dict], dict]:
    return lambda entry: entry | {"key": entry["key"] | changes}


CONTENT = {
    # the planted entry that reported 710x instead of ~70x: units ten times the times'
    "units_scaled_by_10": (scaled("units", 10.0), "units[0] disagrees with times/anchor_times"),
    "anchor_times_scaled": (scaled("anchor_times", 0.1), "units[0] disagrees"),
    "times_scaled": (scaled("times", 10.0), "units[0] disagrees"),
    "one_unit_off": (lambda e: at("units", 2, e["units"][2] * 1.001)(e),
                     "units[2] disagrees with times/anchor_times"),
    "units_short": (lambda e: e | {"units": e["units"][:-1]}, "2 units for 3 times"),
    "anchor_times_uneven": (lambda e: e | {"anchor_times": e["anchor_times"][:-1]},
                            "7 anchor times are not 4 equal groups"),
    "anchor_times_without_closing_group": (lambda e: e | {"anchor_times": ANCHOR_TIMES[:6]},
                                           "6 anchor times are not 4 equal groups"),
    "agreements_miscounted": (edit(oracle_agreement=[1.0, 1.0]),
                              "2 oracle agreements for 3 times"),
    "no_times": (edit(times=[], units=[], anchor_times=[1.0]), "it has no times"),
    "time_nan": (at("times", 1, float("nan")), "times[1] is not finite"),
    "time_negative": (at("times", 0, -50.0), "times[0] = -50.0 is not positive"),
    "time_zero": (at("times", 0, 0.0), "times[0] = 0.0 is not positive"),
    "time_text": (at("times", 2, "49.0"), "times[2] is str, not a number"),
    "time_bool": (at("times", 2, True), "times[2] is bool, not a number"),
    "times_not_a_list": (edit(times="50.0"), "times is str, not a list"),
    "times_too_many": (edit(times=[1.0] * (MAX_CACHED_VALUES + 1)),
                       f"times has more than {MAX_CACHED_VALUES} values"),
    "anchor_time_infinite": (at("anchor_times", 3, float("inf")), "anchor_times[3] is not finite"),
    "unit_null": (at("units", 0, None), "units[0] is NoneType, not a number"),
    "accuracy_above_one": (edit(accuracy=1.5), "accuracy = 1.5 is not in [0, 1]"),
    "accuracy_text": (edit(accuracy="0.3"), "accuracy is str, not a number"),
    "agreement_above_one": (at("oracle_agreement", 0, 1.2),
                            "oracle_agreement[0] = 1.2 is not in [0, 1]"),
    "key_of_another_file": (keyed(sha256="0" * 64), "its key differs from the one asked for "
                            "(sha256)"),
    "key_with_extra_field": (keyed(extra=1), "its key differs from the one asked for "
                             "(extra fields)"),
    "key_not_an_object": (edit(key=["baseline"]), "key is list, not an object"),
    "field_missing": (without("units"), "the entry has no units"),
    "field_unexpected": (edit(speedup=710.0), "the entry has an unexpected field 'speedup'"),
    "not_an_object": (lambda e: [e], "the entry is list, not an object"),
    # the CPU-time clock's figures, kept beside the wall clock's, are held to the same
    "cpu_units_scaled": (lambda e: scaled("cpu_units", 10.0)(on_cpu_clock(e)),
                         "cpu_units[0] disagrees with cpu_times/anchor_cpu_times"),
    "cpu_times_short": (lambda e: on_cpu_clock(e) | {"cpu_times": TIMES[:2]},
                        "its CPU-time figures do not match its times"),
    "cpu_time_nan": (lambda e: at("cpu_times", 0, float("nan"))(on_cpu_clock(e)),
                     "cpu_times[0] is not finite"),
}


def on_cpu_clock(entry: dict) -> dict:
    """The entry with CPU times a little below its wall times, consistent."""
    cpu, anchors = [t * 0.99 for t in TIMES], [t * 0.98 for t in ANCHOR_TIMES]
    groups = [anchors[i:i + 2] for i in range(0, len(anchors), 2)]
    return entry | {"cpu_times": cpu, "anchor_cpu_times": anchors,
                    "cpu_units": in_anchor_units(cpu, groups)}


def test_an_entry_with_both_clocks_is_used_whole(cache):
    path = entry_path(cache)
    path.write_text(json.dumps(on_cpu_clock(asdict(valid(cache)))))
    found, refused = cache.load(key(cache))
    assert refused is None and found.cpu_times == [t * 0.99 for t in TIMES]
    assert len(found.cpu_units) == 3 and len(found.anchor_cpu_times) == 8


@pytest.mark.parametrize("case", CONTENT)
def test_a_corrupt_entry_is_refused_with_its_reason(cache, case):
    change, reason = CONTENT[case]
    path = entry_path(cache)
    path.write_text(json.dumps(change(asdict(valid(cache)))))
    found, refused = cache.load(key(cache))
    assert found is None
    assert refused is not None and reason in refused, refused


# ---- the entry's bytes and the file itself -------------------------------------------------
def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def not_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe" + path.read_bytes())


def deeply_nested(path: Path) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def symlink_to_a_valid_entry(path: Path) -> None:
    elsewhere = path.parent.parent / "planted.json"
    path.rename(elsewhere)  # a valid entry: only the link is wrong
    path.symlink_to(elsewhere)


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # opened without O_NONBLOCK, reading it would hang the grader


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def fifty_megabytes(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: no 50 MB written


FILES = {
    "truncated_json": (truncated, "the entry is not valid JSON"),
    "not_utf8": (not_utf8, "the entry is not valid JSON"),
    "deeply_nested": (deeply_nested, "the entry is not valid JSON"),
    "symlink": (symlink_to_a_valid_entry, "the entry is a symbolic link"),
    "fifo": (fifo, "the entry is not a regular file"),
    "directory": (directory, "the entry is not a regular file"),
    "fifty_megabytes": (fifty_megabytes, f"the entry is larger than {MAX_CACHE_BYTES} bytes"),
}


@pytest.mark.parametrize("case", FILES)
def test_a_bad_file_is_refused_with_its_reason(cache, case):
    plant, reason = FILES[case]
    plant(entry_path(cache))
    assert cache.load(key(cache)) == Lookup(None, reason)


def test_an_unreadable_cache_directory_is_a_refusal(tmp_path):
    (tmp_path / "file").write_text("")
    cache = BaselineCache(tmp_path / "file")  # the directory is a regular file
    found, refused = cache.load(key(cache))
    assert found is None and "the cache directory cannot be opened" in refused


# ---- writing --------------------------------------------------------------------------
def test_store_replaces_a_planted_link_without_writing_through_it(cache, tmp_path):
    path = entry_path(cache)
    target = tmp_path / "not-the-cache.txt"
    target.write_text("untouched")
    path.unlink()
    path.symlink_to(target)
    cache.store(valid(cache))
    assert target.read_text() == "untouched"
    assert not path.is_symlink() and cache.load(key(cache)).found == valid(cache)


def test_store_leaves_only_the_entry_readable_by_its_owner(cache):
    path = entry_path(cache)
    cache.store(valid(cache))
    assert [p.name for p in cache.directory.iterdir()] == [path.name]  # no temporary file
    assert path.stat().st_mode & 0o077 == 0


# ---- end to end: the grader measures again --------------------------------------------
def test_the_grader_measures_again_past_a_contradicting_baseline(tmp_path, small_pipelines):
    """A 100-sample baseline entry whose units are ten times what its times and anchor
    times give: the grader refuses it in one line, measures the baseline beside the
    strict tier, and its figures are the new measurement's."""
    spec = complex_spec(small_pipelines["baseline"], 100,
                        reference=small_pipelines["reference"])
    opts = GradingOptions(repeats=2, baseline_repeats=1, accuracy_tolerance=0.5, target=2.0,
                          min_timed_seconds=0)
    cache = BaselineCache(tmp_path / "cache")
    planted_key = cache.key(spec.baseline, threads=opts.threads, label="baseline",
                            anchor=spec.reference)
    honest_units = in_anchor_units([50.0], [[0.5] * 4, [0.5] * 4])  # 100 strict-tier times
    planted = CachedMeasurement(times=[50.0], accuracy=0.3, key=planted_key,
                                oracle_agreement=[1.0], units=[10 * honest_units[0]],
                                anchor_times=[0.5] * 8)
    cache.store(planted)
    progress: list[str] = []
    problem = MLTrainingTask(spec, opts, cache=cache, progress=progress.append)
    figures = asyncio.run(problem.figures())
    refusals = [line for line in progress if "refused" in line]
    assert refusals == ["baseline: the cached measurement was refused (units[0] disagrees "
                        "with times/anchor_times); measuring again"]
    assert problem.baseline_executions == 1
    assert figures.baseline.times != planted.times
    assert figures.reference_speedup == statistics.median(
        figures.baseline.units_on(figures.clock)) != 1000.0
    assert cache.load(planted_key) == Lookup(figures.baseline, None)  # stored in its place
    # ...and the stored measurement passes its own checks, so it is used from now on
    again = MLTrainingTask(spec, opts, cache=cache)
    assert asyncio.run(again.figures()).baseline == figures.baseline
    assert again.baseline_executions == 0

