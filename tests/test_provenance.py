"""Every record says when it ran, on which code, software and machine, and with which
calibration (``provenance``): the section's schema, git's answers and its failures, the
cache's ``measured_at``, and what an ML problem reports of the figures it used."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REFERENCE, ROOT, SLOW_PIPELINE, VECTORIZED

import provenance
import sandbox
from problems.math_calculation import MathCalculationProblem
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache, CachedMeasurement

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def finished(calibration: dict | None = None) -> dict:
    return provenance.start("bwrap").finish(calibration)


# ---- the section ------------------------------------------------------------------------
def test_the_section_has_exactly_the_schemas_keys_and_types():
    p = finished({"source": "cache"})
    assert list(p) == ["started", "ended", "git", "versions", "host", "isolation",
                       "load_average", "calibration"]
    assert ISO.fullmatch(p["started"]) and ISO.fullmatch(p["ended"])
    assert p["started"] <= p["ended"]
    assert set(p["git"]) == {"commit", "dirty"}
    assert list(p["versions"]) == ["python", "torch", "numpy", "scikit-learn", "anthropic"]
    assert all(v is None or isinstance(v, str) for v in p["versions"].values())
    assert set(p["host"]) == {"cpu_model", "cpu_count", "cpus_usable"}
    assert isinstance(p["host"]["cpu_count"], int) and isinstance(p["host"]["cpus_usable"], int)
    assert p["isolation"] == "bwrap"
    for moment in ("start", "end"):
        load = p["load_average"][moment]
        assert len(load) == 3 and all(isinstance(v, float) for v in load)
        assert load == [round(v, 2) for v in load]
    assert p["calibration"] == {"source": "cache"}
    assert json.loads(json.dumps(p)) == p  # plain JSON


def test_importing_it_imports_no_heavy_library():
    code = ("import sys, provenance; provenance.start('none').finish(None); "
            "print(sorted({'torch', 'numpy', 'sklearn', 'anthropic'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_versions_are_the_installed_distributions():
    found = provenance.versions()
    assert found["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in provenance.DISTRIBUTIONS:
        assert found[name] == importlib.metadata.version(name)


def test_a_distribution_not_installed_is_none(monkeypatch):
    monkeypatch.setattr(provenance, "DISTRIBUTIONS", ("no-such-distribution-hello-py",))
    assert provenance.versions()["no-such-distribution-hello-py"] is None


def test_host_counts_the_cpus_and_those_usable():
    host = finished()["host"]
    assert host["cpu_count"] == os.cpu_count()
    assert host["cpus_usable"] == len(os.sched_getaffinity(0))
    assert host["cpu_model"] is None or host["cpu_model"].strip() == host["cpu_model"] != ""


# ---- git --------------------------------------------------------------------------------
def test_the_commit_is_the_checkouts_head_and_dirty_a_bool():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    git = finished()["git"]
    assert git["commit"] == head
    assert isinstance(git["dirty"], bool)


def fake_git(directory: Path, script: str) -> str:
    """A PATH holding only a `git` that runs ``script`` (sh)."""
    directory.mkdir()
    git = directory / "git"
    git.write_text(f"#!/bin/sh\n{script}\n")
    git.chmod(0o755)
    return str(directory)


GIT_FAILURES = {
    "not_a_checkout": lambda tmp, mp: mp.setattr(sandbox, "PROJECT_ROOT", tmp),
    "no_git_on_path": lambda tmp, mp: mp.setenv("PATH", str(tmp)),
    "git_fails": lambda tmp, mp: mp.setenv("PATH", fake_git(
        tmp / "bin", "echo 'fatal: detected dubious ownership' >&2; exit 128")),
    "git_says_nonsense": lambda tmp, mp: mp.setenv("PATH", fake_git(tmp / "bin", "echo HEAD")),
    "git_hangs": lambda tmp, mp: (mp.setattr(provenance, "GIT_TIMEOUT_S", 0.2),
                                  mp.setenv("PATH", fake_git(tmp / "bin", "exec sleep 30"))),
}


@pytest.mark.parametrize("case", GIT_FAILURES)
def test_a_git_failure_is_none_never_an_exception(case, tmp_path, monkeypatch):
    GIT_FAILURES[case](tmp_path, monkeypatch)
    assert finished()["git"] == {"commit": None, "dirty": None}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout


def test_batch_records_do_not_make_the_tree_dirty_but_anything_else_does(tmp_path,
                                                                         monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "main.py").write_text("print()\n")
    git(repo, "add", "main.py")
    git(repo, "commit", "-q", "-m", "one")
    monkeypatch.setattr(sandbox, "PROJECT_ROOT", repo)
    for records in ("output/run_1/grade.json", "saved_outputs/kept/results.json"):
        (repo / records).parent.mkdir(parents=True)
        (repo / records).write_text("{}")
    assert provenance.git_state() == provenance.GitState(git(repo, "rev-parse", "HEAD").strip(),
                                                         False)
    (repo / "extra.py").write_text("")  # untracked code counts
    assert provenance.git_state().dirty is True
    (repo / "extra.py").unlink()
    (repo / "main.py").write_text("print(1)\n")
    assert provenance.git_state().dirty is True


def test_the_checkout_ignores_its_output_directory():
    # a batch writes there while it runs: git must not even list it
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q",
                              "output/run_1/grade.json"], check=False)
    assert ignored.returncode == 0


# ---- the summary's lines ----------------------------------------------------------------
FULL = {"started": "2026-12-07T07:10:00Z", "ended": "2026-12-07T07:31:59Z",
        "git": {"commit": "1a2b3c4d" + "0" * 32, "dirty": True},
        "versions": {"python": "3.12.3", "torch": "2.5.1", "numpy": "2.1.0",
                     "scikit-learn": "1.5.2", "anthropic": None},
        "host": {"cpu_model": "AMD EPYC", "cpu_count": 4, "cpus_usable": 2},
        "isolation": "bwrap", "load_average": {"start": [0.51, 0.4, 0.3], "end": [1.8, 1, 1]},
        "calibration": {"source": "cache", "measured_at": "2026-12-07T06:59:30Z"}}


@pytest.mark.parametrize(("record", "lines"), [
    ({}, []),
    (FULL, ["ran 2026-12-07 07:10–07:31 UTC", "commit 1a2b3c4 (dirty)",
            "Python 3.12.3, torch 2.5.1, numpy 2.1.0, scikit-learn 1.5.2, anthropic not installed",
            "host: AMD EPYC, 4 CPUs (2 usable); sandbox bwrap; load 0.51 → 1.80",
            "calibration: measured 2026-12-07 06:59 UTC, 0.2 h before this (cached)"]),
    # across midnight, and a run that never ended
    ({"started": "2026-12-07T23:50:00Z", "ended": "2026-12-08T00:10:00Z"},
     ["ran 2026-12-07 23:50–2026-12-08 00:10 UTC"]),
    ({"started": "2026-12-07T23:50:00Z"}, ["started 2026-12-07 23:50 UTC"]),
    ({"git": {"commit": None, "dirty": None}}, ["commit unknown"]),
    ({"git": {"commit": "f" * 40, "dirty": False}}, ["commit fffffff"]),
    ({"calibration": {"source": "measured", "measured_at": None}},
     ["calibration: measured at an unknown time (measured for this record)"]),
    ({"calibration": None, "isolation": "none"}, ["sandbox none"]),
    # malformed or from another version: what cannot be read is left out
    ({"started": 5, "git": "abc", "versions": [], "host": {"cpu_count": "2"},
      "load_average": {"start": "high"}, "calibration": "yes"},
     ["host: unknown CPU, CPUs unknown"]),
    ([], []),
])
def test_short_form(record, lines):
    assert provenance.short_form(record) == lines


# ---- measured_at in the cache -----------------------------------------------------------
def seeded(directory: Path, measured_at: dict[str, str | None]) -> BaselineCache:
    """The flagship's baseline and vectorized tier, made up and keyed as the grader keys
    them (as tests/test_cli_signals.py seeds them), measured when ``measured_at`` says."""
    cache = BaselineCache(directory)
    for path, label, seconds in ((SLOW_PIPELINE, "baseline", 100.0),
                                 (VECTORIZED, "tier-vectorized", 3.0)):
        key = cache.key(path, threads=1, label=label, anchor=REFERENCE)
        entry = CachedMeasurement(times=[seconds] * 3, accuracy=0.1, key=key,
                                  units=[seconds] * 3, anchor_times=[1.0] * 4,
                                  measured_at=measured_at[label])
        cache.store(entry)
    return cache


def baseline_key(cache: BaselineCache) -> dict:
    return cache.key(SLOW_PIPELINE, threads=1, label="baseline", anchor=REFERENCE)


def test_an_entry_stored_before_measured_at_was_kept_still_loads(tmp_path):
    cache = seeded(tmp_path, {"baseline": None, "tier-vectorized": None})
    (path,) = [p for p in tmp_path.glob("baseline-*.json")]
    entry = json.loads(path.read_text())
    del entry["measured_at"]  # as written before the field existed
    path.write_text(json.dumps(entry))
    found, refused = cache.load(baseline_key(cache), min_runs=3)
    assert refused is None and found is not None and found.measured_at is None


def test_measured_at_is_stored_and_read_back(tmp_path):
    cache = seeded(tmp_path, {"baseline": "2026-12-07T06:59:30Z", "tier-vectorized": None})
    assert cache.load(baseline_key(cache)).found.measured_at == "2026-12-07T06:59:30Z"


@pytest.mark.parametrize("bad", [5, "yesterday", "2026-12-07 06:59:30", ["2026"]])
def test_a_malformed_measured_at_is_refused(tmp_path, bad):
    cache = seeded(tmp_path, {"baseline": None, "tier-vectorized": None})
    (path,) = [p for p in tmp_path.glob("baseline-*.json")]
    path.write_text(json.dumps(json.loads(path.read_text()) | {"measured_at": bad}))
    found, refused = cache.load(baseline_key(cache))
    assert found is None and "measured_at is not a time" in refused


# ---- the calibration a problem used ----------------------------------------------------
def flagship(cache: BaselineCache) -> MLTrainingTask:
    return MLTrainingTask(complex_spec(), GradingOptions(allow_unsandboxed=True), cache=cache)


def test_a_problem_graded_exactly_has_no_calibration():
    assert MathCalculationProblem().calibration_used() is None


def test_no_calibration_before_any_figures(tmp_path):
    assert flagship(BaselineCache(tmp_path)).calibration_used() is None


def test_cached_figures_say_so_with_the_oldest_time(tmp_path):
    cache = seeded(tmp_path, {"baseline": "2026-12-07T06:59:30Z",
                              "tier-vectorized": "2026-12-01T10:00:00Z"})
    task = flagship(cache)
    prepared = asyncio.run(task.prepare())
    used = task.calibration_used()
    assert prepared["calibration"] == used
    assert used["source"] == "cache" and used["measured_at"] == "2026-12-01T10:00:00Z"
    assert used["measurements"] == {
        "baseline": {"source": "cache", "measured_at": "2026-12-07T06:59:30Z"},
        "tier-vectorized": {"source": "cache", "measured_at": "2026-12-01T10:00:00Z"}}
    assert used["baseline_time_s"] == 100.0 and used["target_rule"] == "vectorized"
    assert used["tiers"] == pytest.approx({"vectorized": 100 / 3, "strict": 100.0})
    assert used["target"] == pytest.approx(100 / 3)
    assert task.baseline_executions == 0  # nothing was measured
    assert provenance.start("bwrap").finish(used)["calibration"] == used


def test_a_part_of_unknown_age_makes_the_time_unknown(tmp_path):
    # an unknown time may be the oldest: no time is given rather than a wrong one
    cache = seeded(tmp_path, {"baseline": "2026-12-07T06:59:30Z", "tier-vectorized": None})
    task = flagship(cache)
    asyncio.run(task.figures())
    assert task.calibration_used()["measured_at"] is None


def test_a_new_measurement_is_stamped_and_reported_as_measured(tmp_path, small_pipelines):
    spec = complex_spec(small_pipelines["baseline"], 100,
                        reference=small_pipelines["reference"])
    opts = GradingOptions(repeats=2, baseline_repeats=1, accuracy_tolerance=0.5, target=2.0,
                          min_timed_seconds=0)
    cache = BaselineCache(tmp_path / "cache")
    task = MLTrainingTask(spec, opts, cache=cache)
    before = provenance.utc_now()
    asyncio.run(task.figures())
    after = provenance.utc_now()
    used = task.calibration_used()
    assert used["source"] == "measured" and before <= used["measured_at"] <= after
    assert list(used["measurements"]) == ["baseline"]  # at this scale: no tier but strict
    key = cache.key(spec.baseline, threads=1, label="baseline", anchor=spec.reference)
    assert cache.load(key).found.measured_at == used["measured_at"]  # stored with it
    # read back by another task, the same figures are the cache's
    again = MLTrainingTask(spec, opts, cache=cache)
    asyncio.run(again.figures())
    assert again.calibration_used()["source"] == "cache"
    assert again.calibration_used()["measured_at"] == used["measured_at"]


def test_figures_partly_measured_now_are_mixed():
    from problems.ml_training.ladder import Figures, Origin

    base = CachedMeasurement(times=[100.0], accuracy=0.3)
    figures = Figures(base, 400.0, 50.0, 1200.0, None, "50",
                      {"baseline": Origin("cache", "2026-12-01T10:00:00Z"),
                       "tier-vectorized": Origin("measured", "2026-12-07T07:00:00Z")})
    used = figures.calibration()
    assert (used["source"], used["measured_at"]) == ("mixed", "2026-12-01T10:00:00Z")
    assert provenance.short_form({"calibration": used}) == [
        "calibration: measured 2026-12-01 10:00 UTC (partly cached)"]
