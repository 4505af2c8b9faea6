"""The grader end to end: real sandboxed executions of 100-sample pipelines.

One baseline measurement (module-scoped cache) serves every test.  Candidates are the
fixtures in ``tests/candidates/`` (an honest vectorised pipeline and cheats derived from
it), scaled to 100 samples.  Each test names the check that must decide the verdict.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from conftest import scaled_copy
from problem import DataGuard, GradeResult
from problems.measurement import BaselineCache, Execution, Measurement
from problems.ml_training_optimization import (
    ACCURACY_RE,
    GradingOptions,
    MLTrainingOptimizationProblem,
    TaskSpec,
    _Figures,
    complex_spec,
)

CANDIDATES = Path(__file__).resolve().parent / "candidates"
N_SAMPLES = 100
# Low on purpose: the honest fixture is only ~2x faster than the 100-sample baseline,
# because both pay torch's lazy ~5 s import of torch._dynamo inside the timed region
# (see test_timed_region_excludes_library_imports).
TARGET = 1.2
OPTIONS = GradingOptions(repeats=2, baseline_repeats=1, accuracy_tolerance=0.5, target=TARGET)
ALL_CHECKS = ["candidate_readable", "syntax", "required_imports", "required_definitions",
              "forbidden_constructs", "minimum_length", "runs_cleanly", "baseline_integrity",
              "output_patterns", "components_exercised", "accuracy_measured", "determinism",
              "accuracy", "self_reported_time", "speedup_plausible", "speedup_target"]
STATIC_CHECKS = ALL_CHECKS[:6]


@dataclass
class Setup:
    cache: BaselineCache
    spec: TaskSpec
    baseline: Path
    baseline_median: float
    first_problem: MLTrainingOptimizationProblem
    workdir: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_pipelines) -> Setup:
    """Measures the 100-sample baseline once, into a cache every test of the module uses."""
    cache = BaselineCache(tmp_path_factory.mktemp("cache"))
    baseline = small_pipelines["baseline"]
    spec = complex_spec(baseline, N_SAMPLES, reference=None, min_lines=20)
    problem = MLTrainingOptimizationProblem(spec, OPTIONS, cache=cache)
    figures = asyncio.run(problem.figures())
    stored = cache.load(cache.key(baseline, threads=1, repeats=1, label="baseline"))
    assert stored is not None and stored.median == figures.baseline.median
    return Setup(cache, spec, baseline, stored.median, problem,
                 tmp_path_factory.mktemp("candidates"))


def candidate(setup: Setup, name: str) -> Path:
    return scaled_copy(CANDIDATES / name, setup.workdir / name, N_SAMPLES)


async def grade(setup: Setup, path: Path, progress: list[str] | None = None,
                **changes) -> GradeResult:
    """Grades with a fresh problem instance over the shared cache (never re-measuring)."""
    problem = MLTrainingOptimizationProblem(
        setup.spec, replace(OPTIONS, **changes), cache=setup.cache,
        progress=progress.append if progress is not None else None)
    result = await problem.grade(path)
    assert problem.baseline_executions == 0
    return result


def checks_of(result: GradeResult) -> dict:
    return {c.name: c for c in result.checks}


def assert_fails_on(result: GradeResult, name: str, fragment: str = "") -> None:
    assert not result.passed
    assert result.reason.startswith(f"{name}:"), result.reason
    assert result.failed_checks[0] == name
    assert fragment in checks_of(result)[name].message


@pytest.fixture(scope="module")
def honest(setup) -> GradeResult:
    return asyncio.run(grade(setup, candidate(setup, "honest_fast.py")))


# ---- 1. the honest fast candidate ------------------------------------------------------
def test_honest_candidate_passes(setup, honest):
    r = honest
    assert r.passed, r.reason
    assert r.reason == "" and r.failed_checks == []
    assert [c.name for c in r.checks] == ALL_CHECKS
    assert r.speedup > TARGET and r.target == TARGET
    assert len(r.candidate_times) == 2 and r.details["executions"] == 2
    assert r.candidate_time == statistics.median(r.candidate_times)
    assert r.baseline_time == setup.baseline_median == r.details["baseline_times"][0]
    assert r.speedup == pytest.approx(setup.baseline_median / r.candidate_time)
    printed = float(ACCURACY_RE.findall(r.details["stdout_tail"])[-1])
    assert round(r.accuracy, 4) == printed
    # the vectorised pipeline makes the same random draws as the slow one: same accuracy
    assert r.accuracy == r.baseline_accuracy
    determinism = checks_of(r)["determinism"]
    assert determinism.passed and not determinism.skipped
    report = r.details["report"]
    assert (report["feature_rows"], report["train_rows"], report["eval_rows"]) == (100, 240, 20)
    assert report["model_instances"] == 1 and report["feature_output_shape"] == [100, 13]
    assert r.details["tampered_files"] == []


@pytest.mark.xfail(strict=True, reason=(
    "timing_runner.py imports numpy/torch before START but not torch._dynamo, which torch "
    "imports lazily (~5 s here) the first time any torch.optim optimizer is built "
    "(Optimizer.add_param_group is wrapped by torch._disable_dynamo).  That one-off import "
    "is timed for every candidate: here it is ~98% of the honest fixture's time, and at "
    "full size (baseline ~200 s) it alone caps the speedup near the 33x target.  Fix: "
    "`import torch._dynamo` in timing_runner.py next to the other imports before START."))
def test_timed_region_excludes_library_imports(honest):
    assert honest.candidate_time < 2.0  # its own work takes ~0.1 s at 100 samples


# ---- 2. the slow baseline as a candidate: far below target, one execution ------------
async def test_slow_baseline_fails_target_after_one_execution(setup):
    progress: list[str] = []
    result = await grade(setup, setup.baseline, progress, target=33.0, repeats=3)
    assert_fails_on(result, "speedup_target", "< target 33.00x")
    assert result.failed_checks == ["speedup_target"]
    assert result.details["executions"] == 1 and len(result.candidate_times) == 1
    assert result.details["repeats_requested"] == 3
    assert checks_of(result)["determinism"].skipped
    assert [m for m in progress if "run " in m] == [m for m in progress if "run 1/3" in m]
    assert len(progress) == 1


# ---- 3. cheats ------------------------------------------------------------------------
STATIC_CHEATS = [
    ("cheat_fake_clock.py", "forbidden_constructs", "assignment to time.time"),
    ("cheat_renamed_model.py", "required_definitions", "class ComplexNN"),
]


@pytest.mark.parametrize(("name", "check", "fragment"), STATIC_CHEATS,
                         ids=[c[0].removesuffix(".py") for c in STATIC_CHEATS])
async def test_cheat_caught_before_running(setup, name, check, fragment):
    result = await grade(setup, candidate(setup, name))
    assert_fails_on(result, check, fragment)
    assert result.failed_checks == [check]
    assert result.details == {"executed": False}
    assert result.speedup is None and result.candidate_times == []


RUN_CHEATS = [
    # (b) prints the contract lines, computes nothing
    ("cheat_hardcoded_output.py", {}, "components_exercised",
     "processed 0 images (needs 100)"),
    # (c) one epoch of three
    ("cheat_one_epoch.py", {}, "components_exercised", "saw 80 training rows (needs 240)"),
    # (e) trains while being imported (before the runner instruments the classes)
    ("cheat_import_time_work.py", {}, "components_exercised", "was never instantiated"),
    # (f) made-up accuracy
    ("cheat_wrong_accuracy.py", {}, "accuracy_measured", "printed accuracy 0.9999"),
    # (h) FINAL_TIME a hundred thousand times smaller than the real time
    ("cheat_false_final_time.py", {}, "self_reported_time", "but the grader measured"),
    # (i) raises
    ("cheat_crash.py", {}, "runs_cleanly", "RuntimeError: candidate failed on purpose"),
    # (j) never ends
    ("cheat_infinite_loop.py", {"timeout": 5.0}, "runs_cleanly", "timed out after"),
    # (k) 20 GB with numpy
    ("cheat_memory_hog_numpy.py", {}, "runs_cleanly", "ran out of memory"),
    pytest.param(
        "cheat_memory_hog_torch.py", {}, "runs_cleanly", "ran out of memory",
        marks=pytest.mark.xfail(strict=True, reason=(
            "sandbox.run_python sets memory_error only for 'MemoryError'/'std::bad_alloc' in "
            "stderr; torch's allocator reports \"RuntimeError: ... DefaultCPUAllocator: "
            "can't allocate memory ... (Cannot allocate memory)\", so the failure reads "
            "'exited with status 1 (...)'.  The verdict is right; the wording is not.  Fix: "
            "also match \"can't allocate memory\" and 'Cannot allocate memory'.")),
        id="cheat_memory_hog_torch"),
]


@pytest.mark.parametrize(("name", "changes", "check", "fragment"), RUN_CHEATS,
                         ids=lambda v: v.removesuffix(".py") if isinstance(v, str) else "")
async def test_cheat_caught_when_run(setup, name, changes, check, fragment):
    result = await grade(setup, candidate(setup, name), repeats=1, **changes)
    assert result.details["executed"]
    assert_fails_on(result, check, fragment)
    if check == "runs_cleanly":
        assert result.details["skipped_after_crash"]
        assert result.details["executions"] == 1
        assert result.speedup is None and result.candidate_times == []
    else:
        assert checks_of(result)["runs_cleanly"].passed


async def test_import_time_work_is_timed_but_not_counted(setup):
    """(e) in detail: the runner starts its clock before importing the candidate."""
    result = await grade(setup, candidate(setup, "cheat_import_time_work.py"), repeats=1)
    report = result.details["report"]
    assert report["feature_rows"] == report["train_rows"] == report["eval_rows"] == 0
    assert checks_of(result)["output_patterns"].passed  # the printed lines are all there
    assert not checks_of(result)["accuracy_measured"].passed  # no eval predictions seen


async def test_nondeterministic_candidate_fails_determinism(setup):
    """(g) torch re-seeded from the OS before the model is built.  The data and split stay
    seeded, so the printed accuracy always matches the one measured from the predictions
    (accuracy_measured passes); only determinism can catch it, and it compares accuracies
    only.  On 20 test rows two runs score the same accuracy about 30% of the time (and
    then the cheat passes), so the test grades up to five times."""
    path = candidate(setup, "cheat_nondeterministic.py")
    for _ in range(5):
        result = await grade(setup, path)
        checks = checks_of(result)
        assert result.details["executions"] == 2
        assert checks["accuracy_measured"].passed
        if not checks["determinism"].passed:
            break
        assert checks["determinism"].message == "same accuracy in 2 executions"
    assert_fails_on(result, "determinism", "accuracy differs between executions")


def execution(predictions: list[int], time: float = 0.5) -> Execution:
    report = {"feature_rows": 100, "train_rows": 240, "eval_rows": 20, "model_instances": 1,
              "eval_predictions": predictions}
    stdout = "Feature shape: (100, 13)\nTraining set size: 80\nTest set size: 20\n"
    labels = complex_spec(n_samples=N_SAMPLES).expected_labels()
    accuracy = sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)
    return Execution(ok=True, error="", time=time, stdout=stdout
                     + f"Test accuracy: {accuracy:.4f}\n", stderr_tail="", wall_time=time,
                     report=report)


def judge(setup: Setup, *executions: Execution) -> GradeResult:
    problem = MLTrainingOptimizationProblem(setup.spec, OPTIONS, cache=setup.cache)
    baseline = setup.cache.load(setup.cache.key(setup.baseline, threads=1, repeats=1,
                                                label="baseline"))
    figures = _Figures(baseline, None, TARGET, OPTIONS.max_speedup_without_reference)
    return problem._judge([], Measurement(list(executions)), figures, OPTIONS, [])


def test_determinism_judged_on_differing_accuracies(setup):
    labels = complex_spec(n_samples=N_SAMPLES).expected_labels()
    wrong = [(t + 1) % 10 for t in labels]
    result = judge(setup, execution(labels), execution(wrong))
    assert not checks_of(result)["determinism"].passed


@pytest.mark.xfail(strict=True, reason=(
    "MLTrainingOptimizationProblem._determinism compares the executions' accuracies only, "
    "so runs whose eval-mode predictions differ pass whenever their accuracies coincide "
    "(~30% of the time for the torch.seed() fixture on 20 test rows).  Fix: compare "
    "tuple(e.report['eval_predictions']) across executions (the runner already records "
    "them) and fail when they differ."))
def test_determinism_judged_on_predictions(setup):
    labels = complex_spec(n_samples=N_SAMPLES).expected_labels()
    first = [(t + 1) % 10 for t in labels]
    second = [(t + 2) % 10 for t in labels]  # different predictions, same accuracy (0)
    result = judge(setup, execution(first), execution(second))
    assert not checks_of(result)["determinism"].passed


async def test_stdout_flood_is_graded(setup):
    """(l) 50 MB of output: kept to a bounded head and tail, and graded normally."""
    result = await grade(setup, candidate(setup, "cheat_stdout_flood.py"), repeats=1)
    assert result.details["executed"]
    assert checks_of(result)["runs_cleanly"].passed
    assert result.passed == (result.reason == "")
    assert result.passed or result.reason
    assert checks_of(result)["output_patterns"].passed  # head and tail both kept
    assert len(json.dumps(result.to_dict())) < 100_000


async def test_not_utf8_is_unreadable(setup, tmp_path):
    """(m)"""
    path = tmp_path / "candidate.py"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    result = await grade(setup, path)
    assert_fails_on(result, "candidate_readable", "not UTF-8")
    assert [c.name for c in result.checks] == ["candidate_readable"]
    assert result.details == {"executed": False}


async def test_missing_file_is_unreadable(setup, tmp_path):
    """(n)"""
    result = await grade(setup, tmp_path / "nowhere.py")
    assert_fails_on(result, "candidate_readable", "no file at")
    assert result.details == {"executed": False}


async def test_oversized_file_is_unreadable(setup, tmp_path):
    path = tmp_path / "candidate.py"
    path.write_text((CANDIDATES / "honest_fast.py").read_text() + "#" * 1_000_001 + "\n")
    result = await grade(setup, path)
    assert_fails_on(result, "candidate_readable", "larger than")


async def test_syntax_error_names_the_line(setup, tmp_path):
    """(o)"""
    lines = (CANDIDATES / "honest_fast.py").read_text().splitlines()
    broken = next(i for i, line in enumerate(lines) if line.startswith("class ComplexNN("))
    lines[broken] = lines[broken].rstrip(":")
    path = tmp_path / "candidate.py"
    path.write_text("\n".join(lines) + "\n")
    result = await grade(setup, path)
    assert_fails_on(result, "syntax", f"line {broken + 1}:")
    assert [c.name for c in result.checks] == ["candidate_readable", "syntax"]


# ---- (p) tampering with the problem data ------------------------------------------------
@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "pipeline.py").write_text("original pipeline\n")
    (d / "sub" / "weights.bin").write_bytes(b"\x00\x01\x02")
    (d / "notes.txt").write_text("unchanged\n")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "pipeline.pyc").write_bytes(b"cache")
    return d


def test_data_guard_restores_modified_added_and_deleted_files(data_dir, tmp_path):
    guard = DataGuard(data_dir)
    assert guard.changed() == [] and guard.restore() == []
    outside = tmp_path / "outside.txt"
    outside.write_text("elsewhere\n")

    (data_dir / "pipeline.py").write_text("print('tampered')\n")
    shutil.rmtree(data_dir / "sub")
    (data_dir / "extra.py").write_text("added\n")
    (data_dir / "notes.txt").unlink()
    (data_dir / "notes.txt").symlink_to(outside)  # a write-through trap
    (data_dir / "__pycache__" / "other.pyc").write_bytes(b"ignored")

    assert guard.changed() == ["extra.py", "notes.txt", "pipeline.py", "sub/weights.bin"]
    assert guard.restore() == ["extra.py", "notes.txt", "pipeline.py", "sub/weights.bin"]
    assert (data_dir / "pipeline.py").read_text() == "original pipeline\n"
    assert (data_dir / "sub" / "weights.bin").read_bytes() == b"\x00\x01\x02"
    assert not (data_dir / "extra.py").exists()
    assert not (data_dir / "notes.txt").is_symlink()
    assert (data_dir / "notes.txt").read_text() == "unchanged\n"
    assert outside.read_text() == "elsewhere\n"
    assert (data_dir / "__pycache__" / "other.pyc").exists()  # caches are not pinned
    assert guard.changed() == [] and guard.restore() == []


@pytest.mark.xfail(strict=True, raises=IsADirectoryError, reason=(
    "DataGuard.restore writes the pinned bytes with path.write_bytes, which raises "
    "IsADirectoryError when a pinned file was replaced by a directory (and the exception "
    "escapes grade(), which promises never to raise).  Fix: before writing, "
    "`if path.is_dir() and not path.is_symlink(): shutil.rmtree(path)`."))
def test_data_guard_restores_a_file_replaced_by_a_directory(data_dir):
    guard = DataGuard(data_dir)
    (data_dir / "pipeline.py").unlink()
    (data_dir / "pipeline.py").mkdir()
    assert guard.restore() == ["pipeline.py"]
    assert (data_dir / "pipeline.py").read_text() == "original pipeline\n"


# ---- exploits of the runner's globals ---------------------------------------------------
@pytest.mark.xfail(strict=True, reason=(
    "`import __main__` passes forbidden_constructs and gives the candidate the timing "
    "runner's globals; this one-epoch candidate adds the missing rows to "
    "__main__.counts and passes components_exercised.  Fix: forbid __main__ (and "
    "__mp_main__) in static_checks.FORBIDDEN_MODULES, and in timing_runner.py keep "
    "counts, predictions and the nonce out of module globals (inside a function)."))
async def test_forged_work_counters_are_caught(setup):
    result = await grade(setup, candidate(setup, "exploit_forged_counts.py"), repeats=1)
    assert_fails_on(result, "components_exercised")


@pytest.mark.xfail(strict=True, reason=(
    "`import __main__` exposes job['nonce'], so a candidate can print the runner's END "
    "mark itself; the harness keeps the first END it sees and times 0.25 s for a pipeline "
    "that runs for seconds, giving a ~40x speedup for a candidate slower than the "
    "baseline.  Fix: as for the counters (forbid __main__; never keep the nonce in "
    "runner globals, e.g. read it inside a function and `del job`)."))
async def test_forged_end_mark_is_caught(setup):
    result = await grade(setup, candidate(setup, "exploit_forged_end_mark.py"), repeats=1,
                         target=10.0)
    assert not result.passed


# ---- 4. the plausibility ceiling --------------------------------------------------------
async def test_speedup_above_ceiling_is_implausible(setup, honest):
    ceiling = honest.speedup / 2
    result = await grade(setup, candidate(setup, "honest_fast.py"), repeats=1,
                         max_speedup_without_reference=ceiling)
    assert_fails_on(result, "speedup_plausible", "above the plausibility ceiling")
    assert result.details["speedup_ceiling"] == ceiling
    assert "fixed ceiling" in checks_of(result)["speedup_plausible"].message


# ---- 5. the baseline cache --------------------------------------------------------------
async def test_cache_is_reused_by_a_second_instance(setup):
    assert setup.first_problem.baseline_executions == 1
    problem = MLTrainingOptimizationProblem(setup.spec, replace(OPTIONS, repeats=1),
                                            cache=setup.cache)
    result = await problem.grade(candidate(setup, "cheat_hardcoded_output.py"))
    assert problem.baseline_executions == 0
    assert result.baseline_time == setup.baseline_median


async def test_use_cache_false_measures_again(setup, tmp_path):
    cache = BaselineCache(tmp_path / "cache")
    shutil.copytree(setup.cache.directory, cache.directory)  # the shared cache stays intact
    key = cache.key(setup.baseline, threads=1, repeats=1, label="baseline")
    assert cache.load(key).median == setup.baseline_median
    problem = MLTrainingOptimizationProblem(
        setup.spec, replace(OPTIONS, repeats=1, use_cache=False), cache=cache)
    result = await problem.grade(candidate(setup, "cheat_hardcoded_output.py"))
    assert problem.baseline_executions == 1
    remeasured = cache.load(key)
    assert result.baseline_time == remeasured.median != setup.baseline_median
    assert_fails_on(result, "components_exercised")


# ---- 6. serialisation -------------------------------------------------------------------
async def test_to_dict_is_json(setup, honest):
    failed = await grade(setup, candidate(setup, "cheat_fake_clock.py"))
    for result in (honest, failed):
        data = json.loads(json.dumps(result.to_dict()))
        for key in ("passed", "speedup", "baseline_time", "candidate_time", "candidate_times",
                    "accuracy", "baseline_accuracy", "checks", "reason"):
            assert key in data
        assert data["passed"] == result.passed and data["reason"] == result.reason
        assert all({"name", "passed", "message"} <= set(c) for c in data["checks"])
        assert [c["name"] for c in data["checks"]] == [c.name for c in result.checks]
    assert json.loads(json.dumps(honest.to_dict()))["candidate_times"] == honest.candidate_times
    assert failed.to_dict()["reason"].startswith("forbidden_constructs:")
