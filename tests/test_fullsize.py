"""End to end at full size: the real 2-minute baseline, a scripted batch, the grade CLI.

The suite's full-size tests (about 8 minutes here): left out of `uv run pytest`, which
stays near 15 minutes, and run by CI as its second step (`uv run pytest -m ci_extra`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REFERENCE, ROOT

pytestmark = pytest.mark.fullsize


def _main(*args, timeout=1800):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


@pytest.mark.ci_extra
def test_scripted_batch_then_cached_grade_at_full_size(tmp_path):
    out = tmp_path / "batch"
    batch = _main("--agent", "scripted", "--runs", "2", "--concurrent",
                  "--baseline-repeats", "1", "--output", str(out))
    assert batch.returncode == 0, batch.stderr[-4000:]
    assert "baseline: timed execution 1/1" in batch.stderr  # progress was shown while measuring

    results = json.loads((out / "results.json").read_text())
    baseline = results["baseline"]
    assert baseline["time_median_s"] > 30  # really the full-size slow pipeline
    # fresh data with learnable labels: well above chance (0.10), on the baseline's seed
    assert 0.2 < baseline["accuracy"] < 0.6
    # The oracle predicts what the original predicted on the same fresh data: exactly on
    # most data sets; on some, three epochs amplify the last bits in which the two
    # arithmetics differ and a few test rows change (0.992 once; issue 25's chaotic
    # training).  Another model agrees far less.
    assert min(baseline["oracle_agreement"]) >= 0.98
    assert [r["status"] for r in results["runs"]] == ["pass", "pass"], results["runs"]
    for run in results["runs"]:
        assert run["speedup"] >= baseline["target"] and run["submitted"]
        assert run["found_by"] == "submitted" and run["score"] > 0
        assert len(run["intermediate"]) == 1 and run["intermediate"][0]["passed"]
        assert set(run["tool_calls"]) == {"read_file", "write_file", "profile_tool",
                                          "submit_intermediate_answer", "submit_answer"}
        grade = json.loads((out / f"run_{run['run_id']}" / "grade.json").read_text())
        adaptive = grade["details"]["adaptive"]
        # 3 requested, more for a short run (the reference takes well under a second)
        assert grade["passed"] and adaptive["short_run_executions"] > 0
        assert len(grade["candidate_times"]) == (3 + adaptive["short_run_executions"]
                                                 + adaptive["added_executions"])
        side = grade["details"]["side_by_side"]
        assert len(side["anchor_times"]) == len(grade["candidate_times"]) + 1
    assert results["totals"]["pass_rate"] == 1.0
    assert "Pass rate: 2/2 (100.0%, 95 % Wilson interval" in (out / "run_summary.md").read_text()

    graded = _main("grade", str(REFERENCE), "--json", "--baseline-repeats", "1")
    assert graded.returncode == 0, graded.stderr[-4000:]
    assert "baseline: cached" in graded.stderr  # no baseline execution the second time
    data = json.loads(graded.stdout)
    assert data["passed"] and data["speedup"] >= data["target"]
    assert data["target_rule"] == "vectorized" and 0.5 < data["score"] < 2.0
    assert data["speedup_ci95"][0] <= data["speedup"] <= data["speedup_ci95"][1]
    assert data["baseline_time"] == pytest.approx(baseline["time_median_s"], abs=1e-3)
    assert {c["name"] for c in data["checks"] if not c["passed"]} == set()
    assert data["details"]["semantics"] == "seed"

    strict = _main("grade", str(REFERENCE), "--json", "--semantics", "strict",
                   "--baseline-repeats", "1")
    assert strict.returncode == 0, strict.stderr[-4000:]
    data = json.loads(strict.stdout)
    assert data["passed"] and data["details"]["semantics"] == "strict"
    assert {"strict_features", "strict_activation", "strict_logits"} <= {
        c["name"] for c in data["checks"] if c["passed"]}

    calibrated = _main("calibrate", "--json", "--baseline-repeats", "1")
    assert calibrated.returncode == 0, calibrated.stderr[-4000:]
    ladder = json.loads(calibrated.stdout)
    assert ladder["baseline_time"] == pytest.approx(baseline["time_median_s"], abs=1e-3)
    tiers = {t["name"]: t for t in ladder["tiers"]}
    assert list(tiers) == ["vectorized", "strict"]
    assert 1 < tiers["vectorized"]["speedup"] < tiers["strict"]["speedup"]
    assert ladder["default_target_rule"] == "vectorized"
    assert ladder["default_target"] == pytest.approx(tiers["vectorized"]["speedup"])
    assert ladder["scores"]["strict"] == pytest.approx(1.0)


@pytest.mark.ci_extra
@pytest.mark.parametrize("name", ["numpy", "pytorch"])
def test_each_seed_problem_at_full_size(name, tmp_path):
    """Each seed problem at full size through the CLI on a cold cache: a scripted batch
    (its real baseline, seconds rather than minutes; the oracle agreeing with it; the
    problem's own reference passing its own target), then `grade --json` on the cached
    baseline, with the problem's own checks and tolerance."""
    out = tmp_path / "batch"
    batch = _main("--agent", "scripted", "--problem", name, "--runs", "1",
                  "--baseline-repeats", "1", "--output", str(out))
    assert batch.returncode == 0, batch.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    baseline = results["baseline"]
    assert baseline["time_median_s"] > 5  # really the full-size slow pipeline
    assert baseline["oracle_agreement"] == [1.0]
    assert baseline["accuracy"] > 0.8  # learnable labels (chance: 0.5)
    assert baseline["target_rule"] == "0.7*strict" and baseline["target"] > 1
    assert [r["status"] for r in results["runs"]] == ["pass"], results["runs"]
    assert results["config"]["problem"] == name

    reference = ROOT / "problems" / "ml_training" / "reference" / f"{name}_reference.py"
    graded = _main("grade", str(reference), "--problem", name, "--json",
                   "--baseline-repeats", "1")
    assert graded.returncode == 0, graded.stderr[-4000:]
    assert "baseline: cached" in graded.stderr
    data = json.loads(graded.stdout)
    assert data["passed"] and data["speedup"] >= data["target"], data
    names = {c["name"] for c in data["checks"]}
    assert ("trained_weights" in names) == (name == "pytorch")
    assert ("estimator_setup" in names) == (name == "numpy")
    accuracy = next(c for c in data["checks"] if c["name"] == "accuracy")
    assert f"within {0.01 if name == 'numpy' else 0.02:g}" in accuracy["message"]


# Image seed 900023 at full size (benchmarks/README.md, "False refusals"): the flagship's
# training there turns on a discrete event, and the honest file with float64 features
# takes the other branch, 0.062 of a tensor's scale from the original's training replayed
# on its own features.  Replays with only their features perturbed never visited that
# branch (refused: the miss the benchmark showed); replays with the training's outputs
# perturbed do, about one in five.
CHAOTIC_FULL_SIZE_SEED = 900023


@pytest.mark.ci_extra
async def test_honest_training_passes_on_a_chaotic_full_size_data_set(tmp_path):
    from candidates.variants import write_candidate

    import sandbox
    from problems.ml_training import evidence, oracle, verdict
    from problems.ml_training.declarations.complex_pipeline import complex_spec
    from problems.ml_training.fresh_inputs import make_dataset
    from problems.ml_training.spec import PROBLEM_DATA, GradingOptions
    from problems.ml_training.task import MLTrainingTask
    from problems.ml_training.timing.executor import Measurement, execute

    problem = MLTrainingTask(complex_spec(), GradingOptions())
    opts = problem.options
    inst = problem.spec.instrumentation()
    ds = make_dataset(CHAOTIC_FULL_SIZE_SEED, 3000)
    run = dict(threads=1, limits=sandbox.Limits(timeout=900), read_only=(PROBLEM_DATA,),
               data=ds.job(), timed=False)
    path = write_candidate("honest_float64_features.py", tmp_path / "float64.py", 3000)
    candidate = await execute(path, inst, **run)
    original = await execute(problem.spec.reference, inst, **run)
    assert candidate.ok and original.ok, candidate.error + original.error
    said: list[str] = []
    basis = await evidence.training_basis(problem.spec, Measurement([candidate]), [ds],
                                          {ds.key: oracle.answer(ds, original)}, opts,
                                          said.append, "float64.py")
    b = basis[ds.key]
    assert b.replayed and b.replays  # beyond the floor: the perturbed replays ran
    check = verdict.trained_weights(problem.spec, candidate.report, b, opts)
    assert check.passed, (check.message, said)
    assert "0.062 of each tensor's scale" in check.message  # the other branch, passed
