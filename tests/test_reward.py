"""The reward function (``reward.grade_source``) on this machine: the warm-up graded
exactly, and the complex problem at 100 samples (its calibration measured once for the
module, in a cache of its own).  Its use on a Ray cluster is in test_cluster.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from candidates.variants import scaled_text, variant_source
from conftest import REFERENCE, SLOW_PIPELINE, scaled_copy

import reward
from problem import GraderError
from problems import registry
from problems.math_calculation import MathCalculationProblem

N = 100
TARGET = 2.0


def small_problem(paths: dict[str, Path], settings: registry.Settings):
    from problems.ml_training.declarations.complex_pipeline import complex_spec
    from problems.ml_training.spec import GradingOptions
    from problems.ml_training.task import MLTrainingTask
    from problems.ml_training.timing.cache import BaselineCache

    options = replace(GradingOptions.of(settings.grading), repeats=3, baseline_repeats=1,
                      accuracy_tolerance=0.5, min_timed_seconds=0,
                      target=settings.grading.target or TARGET)
    spec = complex_spec(paths["baseline"], N, reference=paths["reference"])
    return MLTrainingTask(spec, options, cache=BaselineCache(paths["cache"]))


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reward")
    return {"baseline": scaled_copy(SLOW_PIPELINE, d / "slow.py", N),
            "reference": scaled_copy(REFERENCE, d / "ref.py", N), "cache": d / "cache"}


@pytest.fixture
def small(monkeypatch, paths) -> str:
    """The registry's name of the complex problem at 100 samples."""
    monkeypatch.setitem(registry.BUILDERS, "small", functools.partial(small_problem, paths))
    return "small"


# ---- the warm-up: graded exactly ------------------------------------------------------
def test_the_right_answer_is_a_full_reward():
    got = reward.grade_source_sync(str(MathCalculationProblem().answer()), "math")
    assert (got.passed, got.score, got.error, got.node) == (True, 1.0, None, "local")
    assert got.checks == {"answer_format": (True, "an integer"),
                          "exact_answer": (True, "matches")}


@pytest.mark.parametrize("source, check", [("12", "exact_answer"),
                                           ("twelve", "answer_format"),
                                           (b"\xff\xfe", "answer_format")])
def test_a_wrong_answer_is_no_reward_and_no_error(source, check):
    got = reward.grade_source_sync(source, "math")
    assert (got.passed, got.score, got.error) == (False, 0.0, None)
    assert got.checks[check][0] is False


# ---- what the caller got wrong: ValueError, before anything runs ----------------------
@pytest.mark.parametrize("problem, choices, fragment", [
    ("nope", {}, "unknown problem 'nope'; valid: complex"),
    ("complex", {"speed": 3}, "unknown grading choice 'speed'"),
    ("complex", {"repeats": 1}, "repeats must be a whole number from 3"),
    ("complex", {"threads": "2"}, "threads must be a whole number"),
    ("complex", {"semantics": "loose"}, "semantics must be seed or strict"),
    ("complex", {"relative_target": 0}, "relative_target must be a fraction"),
    ("complex", {"target": "fast!"}, "target: not a target rule"),
    ("complex", {"target": "turbo"}, "target: unknown tier 'turbo'"),
    ("complex", {"target": "-3"}, "target: a speedup must be a positive number"),
    ("complex", {"allow_unsandboxed": "no"}, "allow_unsandboxed must be True or False"),
    ("complex", {"use_cache": [1]}, "use_cache must be True or False"),
])
def test_a_bad_problem_or_choice_raises_a_clear_value_error(problem, choices, fragment):
    with pytest.raises(ValueError) as caught:
        reward.grade_source_sync("x = 1\n", problem, **choices)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("source", [None, 12, ["x = 1"], Path("candidate.py")])
def test_a_source_that_is_not_text_raises_a_clear_value_error(source):
    with pytest.raises(ValueError, match="source must be the candidate's text"):
        reward.grade_source_sync(source, "math")


def test_a_harness_failure_is_a_reward_with_an_error(monkeypatch):
    async def broken(self, candidate, **kwargs):
        raise GraderError("the baseline itself failed")

    monkeypatch.setattr(MathCalculationProblem, "grade", broken)
    got = reward.grade_source_sync("12", "math")
    assert (got.passed, got.score) == (False, 0.0)
    assert got.error == "GraderError: the baseline itself failed"


# ---- the complex problem at 100 samples ----------------------------------------------
async def test_the_reference_earns_a_reward_and_concurrent_calls_share_one_problem(
        small, paths):
    source = paths["reference"].read_text()
    rewards = await asyncio.gather(*(reward.grade_source(source, small) for _ in range(2)))
    for got in rewards:
        assert got.error is None and got.passed, got
        assert got.speedup >= TARGET and got.target == TARGET and got.score > 0
        assert all(got.checks[n][0] for n in ("speedup_target", "accuracy", "determinism"))
        assert got.verdict["details"]["timed_intervals"]  # the operator's full record
    [_] = [p for (name, *_), p in reward._built[asyncio.get_running_loop()].items()
           if name == small]  # one problem for both calls: one calibration
    assert len({json.dumps(r.verdict["details"]["calibration"], sort_keys=True, default=str)
                for r in rewards}) == 1


def test_a_crashing_candidate_fails_without_an_error(small):
    source = scaled_text(variant_source("cheat_crash.py"), N, "cheat_crash.py")
    got = reward.grade_source_sync(source, small)
    assert (got.passed, got.score, got.error) == (False, 0.0, None)
    assert got.checks["runs_cleanly"][0] is False


def test_the_reward_function_takes_the_path_main_py_grade_takes(small, paths, capsys):
    import main

    status = main.main(["grade", str(paths["reference"]), "--problem", small, "--target",
                        str(TARGET), "--json"])
    graded = json.loads(capsys.readouterr().out)
    got = reward.grade_source_sync(paths["reference"].read_text(), small)
    assert status == 0 and graded["passed"] is got.passed is True and got.node == "local"
    assert list(got.checks) == [c["name"] for c in graded["checks"]]
    assert {name: passed for name, (passed, _) in got.checks.items()} == {
        c["name"]: c["passed"] for c in graded["checks"]}
