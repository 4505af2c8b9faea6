"""Target rules, the normalised score, speedup intervals and adaptive repeats (no timing)."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import pytest

import main
from problem import GradingChoices, RuleError, TargetRule
from problems.ml_training import calibration, session
from problems.ml_training.calibration import Ladder
from problems.ml_training.fresh_inputs import make_dataset
from problems.ml_training.ladder import Figures
from problems.ml_training.spec import GradingOptions
from problems.ml_training.timing.executor import Execution, Measurement

TIERS = ["vectorized", "strict"]


def ladder() -> Ladder:
    lad = Ladder([100.0, 101.0, 99.0])
    lad.add("vectorized", [2.0, 2.1, 1.9])  # 50x
    lad.add("strict", [0.25, 0.26, 0.24])  # 400x
    return lad


# ---- rules ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "factor", "tier", "resolved"), [
    ("33", 33.0, None, 33.0),
    ("vectorized", 1.0, "vectorized", 50.0),
    ("0.9*strict", 0.9, "strict", 360.0),
    (" 2 * vectorized ", 2.0, "vectorized", 100.0),
])
def test_rules_parse_and_resolve(text, factor, tier, resolved):
    rule = TargetRule.parse(text, TIERS)
    assert (rule.factor, rule.tier) == (factor, tier)
    assert rule.resolve(ladder()) == pytest.approx(resolved)


@pytest.mark.parametrize(("text", "fragment"), [
    ("0", "positive"), ("-3", "positive"), ("inf", "positive"), ("nan", "positive"),
    ("0*strict", "greater than 0"), ("fast", "unknown tier 'fast'"),
    ("0.9*", "not a target rule"), ("strict*0.9", "not a target rule"),
    ("", "not a target rule"), ("0.9 strict", "not a target rule"),
])
def test_bad_rules_are_refused_with_a_reason(text, fragment):
    with pytest.raises(RuleError, match=fragment):
        TargetRule.parse(text, TIERS)


@pytest.mark.parametrize("argv", [["grade", "x.py", "--target", "0*strict"],
                                  ["grade", "x.py", "--target", "fast"],
                                  ["--agent", "scripted", "--target", "nonsense rule"],
                                  ["calibrate", "--target", "-1"]])
def test_cli_refuses_a_bad_rule_with_status_2(argv, capsys):
    try:
        status = main.main(argv)
    except SystemExit as exc:  # argparse's own usage error
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert "target" in err and ("tier" in err or "rule" in err or "positive" in err
                                or "greater than 0" in err)


def test_default_rule_is_a_tier_of_the_flagship():
    assert TargetRule.parse(calibration.DEFAULT_TARGET_RULE).tier == "vectorized"
    assert main.build_problem(main.CONFIG, print).target_rule().tier == "vectorized"


# ---- score -----------------------------------------------------------------------------
def test_score_is_zero_at_the_baseline_one_at_strict_and_more_above():
    lad = ladder()
    assert lad.score(1.0, True) == 0.0
    assert lad.score(400.0, True) == pytest.approx(1.0)
    assert lad.score(50.0, True) == pytest.approx(math.log(50) / math.log(400))
    assert lad.score(800.0, True) > 1.0
    assert lad.score(0.5, True) == 0.0  # slower than the baseline


def test_score_is_zero_on_a_failed_check():
    assert ladder().score(400.0, False) == 0.0


# ---- intervals -------------------------------------------------------------------------
def test_speedup_interval_contains_the_ratio_of_medians():
    low, high = calibration.speedup_interval([100, 102, 98, 101], [1.0, 1.1, 0.9, 1.05])
    assert low <= 100 / 1.025 <= high and high / low < 1.5


def test_speedup_interval_needs_two_candidate_times():
    assert calibration.speedup_interval([100, 101], [1.0]) is None


def test_a_baseline_measured_once_is_taken_as_fixed():
    low, high = calibration.speedup_interval([100], [1.0, 1.1, 0.9, 1.05])
    assert low <= 100 / 1.025 <= high and high <= 100 / 0.9 + 1e-9


def test_ladder_tiers_carry_intervals():
    lad = ladder()
    (vec, strict) = lad.tiers
    assert vec.speedup == pytest.approx(50.0) and vec.speedup_ci95[0] <= 50 <= vec.speedup_ci95[1]
    assert json.loads(json.dumps(lad.to_json()))["tiers"][1]["name"] == "strict"


# ---- adaptive repeats (stubbed measurement) --------------------------------------------
def run(time: float) -> Execution:
    return Execution(ok=True, error="", time=time, stdout="", stderr_tail="", wall_time=time)


def figures(target: float) -> Figures:
    from problems.ml_training.timing.cache import CachedMeasurement

    base = CachedMeasurement(times=[100.0, 100.5, 99.5], accuracy=0.3)
    return Figures(base, 400.0, target, 1200.0, ladder(), str(target))


async def decide(times: list[float], target: float, more: list[float], cap: int = 9):
    result = Measurement([run(t) for t in times])
    queue = list(more)
    calls = []

    async def one_more(ds):
        calls.append(ds.seed)
        return Measurement([run(queue.pop(0))])

    datasets = [make_dataset(1, 50), make_dataset(2, 50), make_dataset(1, 50)]
    opts = GradingOptions(max_repeats=cap, min_timed_seconds=0)
    verdict = await session.decide(result, figures(target), opts, datasets, one_more)
    return verdict, result, calls, datasets


async def test_clear_verdicts_take_no_extra_executions():
    verdict, result, calls, _ = await decide([1.0, 1.01, 0.99], target=50.0, more=[])
    assert verdict["added_executions"] == 0 and calls == []


async def test_a_straddling_interval_adds_executions_until_decided():
    # 100x, 50x, 100x: the interval spans the 70x target; two more fast runs settle it.
    verdict, result, calls, datasets = await decide([1.0, 2.0, 1.0], target=70.0,
                                                    more=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert 1 <= verdict["added_executions"] <= 6
    assert "no longer contains the target" in verdict["reason"]
    assert len(result.executions) == 3 + verdict["added_executions"] == len(datasets)
    assert calls[0] in (1, 2)  # the grading's own data sets are reused


async def test_adaptive_repeats_stop_at_the_cap():
    verdict, result, _, _ = await decide([1.0, 2.0, 1.0], target=70.0,
                                         more=[2.0, 1.0, 2.0, 1.0], cap=5)
    assert len(result.executions) == 5 and verdict["added_executions"] == 2
    assert "at the cap of 5" in verdict["reason"]


# ---- side by side ------------------------------------------------------------------------
def test_anchor_units_divide_by_the_anchors_on_both_sides():
    # anchors 1.0 before and 3.0 after the first execution: median 2.0
    units = calibration.in_anchor_units([4.0, 9.0], [[1.0], [3.0], [3.0]])
    assert units == [pytest.approx(2.0), pytest.approx(3.0)]
    # the closing group is missing: the group before is used alone; no time, no unit
    assert calibration.in_anchor_units([4.0, None, 6.0], [[2.0], [2.0], [3.0]]) == [2.0, 2.0]


def test_a_slow_spell_of_the_machine_cancels_out_of_chained_speedups():
    # At calibration the machine is normal: the baseline is 400 strict-tier times.  At
    # grading it is twice as slow: the candidate (truly 100x) and the strict tier beside
    # it take twice as long; seconds against the cached baseline would say 50x.
    lad = Ladder([100.0, 100.0, 100.0], baseline_units=[400.0, 400.0, 400.0])
    lad.add("strict", [0.25] * 3, [1.0] * 3)
    slow_candidate, slow_strict = [2.0, 2.0, 2.0], [[0.5], [0.5], [0.5], [0.5]]
    speedup, ci = lad.candidate_speedup(
        slow_candidate, calibration.in_anchor_units(slow_candidate, slow_strict))
    assert speedup == pytest.approx(100.0) and ci == (pytest.approx(100.0),) * 2
    assert lad.speedup("strict") == pytest.approx(400.0)
    assert lad.score(speedup, True) == pytest.approx(math.log(100) / math.log(400))


def test_a_ladder_without_units_compares_seconds():
    speedup, _ = ladder().candidate_speedup([1.0, 1.0], [])
    assert speedup == pytest.approx(100.0)


class _StubExecutor:
    """Records the order of executions: what ran, on which data, with which probes."""

    def __init__(self, name, log, seconds):
        self.name, self.log, self.seconds = name, log, seconds

    async def ready(self):
        return ""

    async def run(self, *, data=None, probes=None, **_):
        self.log.append((self.name, data["seed"], probes is not None))
        return Execution(ok=True, error="", time=self.seconds, stdout="", stderr_tail="",
                         wall_time=self.seconds, seed=data["seed"])


async def test_side_by_side_alternates_and_closes_with_an_anchor():
    from problems.ml_training.timing.side_by_side import SideBySide

    log: list = []
    pairs = SideBySide(_StubExecutor("cand", log, 0.5), _StubExecutor("strict", log, 0.25),
                       around=2, anchor_probes={"p": 1})
    for seed in (1, 2):
        await pairs.step({"seed": seed})
    await pairs.close({"seed": 2})
    assert [(n, s) for n, s, _ in log] == [("strict", 1), ("strict", 1), ("cand", 1),
                                           ("strict", 2), ("strict", 2), ("cand", 2),
                                           ("strict", 2), ("strict", 2)]
    assert [p for n, _, p in log if n == "strict"] == [True] + [False] * 5
    assert pairs.units() == [2.0, 2.0]
    with pytest.raises(RuntimeError):
        await pairs.step({"seed": 3})


async def test_short_runs_get_executions_up_to_the_timed_budget():
    result = Measurement([run(0.5), run(0.5)])
    calls = []

    async def one_more(ds):
        calls.append(ds.seed)
        return Measurement([run(0.5)])

    opts = GradingOptions(min_timed_seconds=3.0, max_repeats=20)
    verdict = await session.decide(
        result, figures(10.0), opts, [make_dataset(1, 50), make_dataset(2, 50)], one_more)
    assert len(result.executions) == 6 and verdict["short_run_executions"] == 4
    assert calls == [1, 2, 1, 2]
    capped = Measurement([run(0.01)])
    await session.decide(
        capped, figures(10.0), GradingOptions(min_timed_seconds=3.0, max_repeats=7),
        [make_dataset(1, 50)], one_more)
    assert len(capped.executions) == 7


async def test_a_long_execution_says_it_is_still_running():
    import asyncio

    from sandbox import heartbeat

    said: list[str] = []
    async with heartbeat(said.append, "baseline: timed execution 1/3 running", every=0.05):
        await asyncio.sleep(0.18)
    await asyncio.sleep(0.1)  # nothing after the block ends
    assert 2 <= len(said) <= 4
    assert all(m.startswith("baseline: timed execution 1/3 running (") and
               m.endswith(" s so far)") for m in said)


# ---- the user's choices, resolved in one place -------------------------------------------
def test_the_tasks_own_defaults_fill_only_what_the_user_left_open():
    from problems.ml_training.declarations.numpy_pipeline import NUMPY_SPEC

    mine = GradingOptions.of(GradingChoices(repeats=5, semantics="strict")).resolved(NUMPY_SPEC)
    assert (mine.target, mine.accuracy_tolerance) == ("0.7*strict", 0.01)
    assert (mine.repeats, mine.semantics) == (5, "strict")
    chosen = GradingOptions(target="33", accuracy_tolerance=0.2).resolved(NUMPY_SPEC)
    assert (chosen.target, chosen.accuracy_tolerance) == ("33", 0.2)
    assert chosen.resolved(NUMPY_SPEC) == chosen  # resolving twice changes nothing
    # every choice the user can make reaches the grader's options unchanged
    every = GradingChoices(target="0.5*strict", relative_target=0.8, semantics="strict",
                           repeats=7, baseline_repeats=4, threads=2, use_cache=False,
                           allow_unsandboxed=True)
    opts = GradingOptions.of(every)
    assert all(getattr(opts, f.name) == getattr(every, f.name)
               for f in fields(GradingChoices))
    assert opts.rule_text() == "0.8*strict"  # the fraction is another spelling of F*strict


# ---- one speedup formula -----------------------------------------------------------------
def test_every_speedup_is_the_ratio_of_medians():
    assert calibration.speedup([10.0, 12.0, 11.0], [1.0, 1.1, 0.9])[0] == pytest.approx(11.0)
    assert calibration.speedup([], [1.0]) == (None, None)
    lad = Ladder([10.0, 12.0, 11.0], [20.0, 22.0, 21.0])
    lad.add("strict", [0.5, 0.5, 0.5], [1.0, 1.0, 1.0])
    # side by side: the baseline's units over the candidate's
    assert lad.candidate_speedup([0.1] * 3, [0.5, 0.5, 0.5])[0] == pytest.approx(42.0)
    # without units: seconds
    assert lad.candidate_speedup([0.5, 0.5], [])[0] == pytest.approx(22.0)
    fig = figures(10.0)
    assert fig.execution_speedup(2.0, None) == pytest.approx(fig.speedup([2.0])[0])
