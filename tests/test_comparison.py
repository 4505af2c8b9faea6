"""The figures and the report of a group of batches (``comparison``): an arm's figures,
the suite row, the comparison of two arms, what differs beyond what was varied, the
markdown report and its JSON, and the tables shared with ``run_summary.md``."""

from __future__ import annotations

import json
import math

import pytest

import comparison
from comparison import Part
from records import BatchResults, RunRecord


def runs(statuses: str, score: float = 0.8, speedup: float = 90.0, cost=0.01) -> list[RunRecord]:
    """A run per letter: p passes, f fails (graded, too slow), a an API error, h a
    harness error."""
    kinds = {"p": dict(status="pass", speedup=speedup, score=score),
             "f": dict(status="fail", speedup=20.0, score=0.0, failed_checks=["speedup_target"]),
             "a": dict(status="error", error_cause="api"),
             "h": dict(status="error", error_cause="harness")}
    return [RunRecord(i, found_by="submitted", steps=10, cost_usd=cost, **kinds[s])
            for i, s in enumerate(statuses, 1)]


def batch(statuses: str, config=None, baseline=None, prov=None, **kw) -> BatchResults:
    return BatchResults(config or {"model": "m"}, baseline or {}, runs(statuses, **kw), {},
                        False, prov or {})


def test_arm_figures_count_a_run_not_passed_as_1x_and_score_0():
    f = comparison.arm_figures(runs("ppfa", speedup=16.0))
    assert (f["runs"], f["counted"], f["passed"], f["graded"]) == (4, 3, 2, 3)
    assert f["pass_rate"] == pytest.approx(2 / 3)
    assert f["mean_score"] == pytest.approx(1.6 / 3)
    assert f["geomean_speedup"] == pytest.approx((16 * 16 * 1) ** (1 / 3))
    assert f["harmonic_mean_speedup"] == pytest.approx(3 / (1 / 16 + 1 / 16 + 1))
    assert f["mean_steps"] == 10 and f["cost_usd"] == pytest.approx(0.04)
    assert [row["k"] for row in f["attempts"]] == [1, 2, 3]
    assert f["attempts"][0]["pass_at_k"] == pytest.approx(2 / 3)


def test_arm_figures_cost_is_unknown_when_any_run_is():
    assert comparison.arm_figures(runs("pf", cost=None))["cost_usd"] is None


def test_group_figures_have_a_suite_row_per_arm():
    parts = [Part("on", "complex", "on/complex", batch("ppppf")),
             Part("on", "numpy", "on/numpy", batch("pff"))]
    [group] = comparison.group_figures(parts)
    assert group["arm"] == "on" and [r["problem"] for r in group["problems"]] == [
        "complex", "numpy"]
    suite = group["suite"]
    assert (suite["counted"], suite["passed"]) == (8, 5)  # the pass rate pooled
    assert suite["problems"] == 2 and suite["attempt_runs"] == 3
    assert [row["k"] for row in suite["attempts"]] == [1, 2, 3]
    assert suite["attempts"][0]["pass_at_k"] == pytest.approx((4 / 5 + 1 / 3) / 2)


def test_compare_arms_for_7_of_10_against_2_of_10():
    c = comparison.compare_arms(runs("ppppppp" + "fff"), runs("pp" + "ffffffff"))
    assert c["pass_rate_difference"] == pytest.approx(0.5)
    assert c["pass_rate_difference_ci95"] == pytest.approx([0.0665, 0.7398], abs=1e-4)
    assert c["fisher_p"] == pytest.approx(0.0698, abs=1e-3)
    assert c["runs_per_arm_pass_rate"] == 19
    assert c["mean_score_difference"] == pytest.approx(0.8 * 0.5)
    low, high = c["mean_score_difference_ci95"]
    assert low < 0.4 < high
    assert 0 < c["permutation_p"] <= 1
    assert c["pass_rate_sentence"] == (
        "The pass rate differs by +50.0 points (7/10 against 2/10; 95 % Newcombe interval "
        "+6.6 to +74.0): not significant at 5 % (p = 0.07); about 19 runs per arm would "
        "detect a difference this large with 80 % power.")
    assert c["score_sentence"].startswith("The mean score differs by +0.400 (0.560 against "
                                          "0.160; 95 % bootstrap interval ")
    assert comparison.compare_arms(runs("ppppppp" + "fff"), runs("pp" + "ffffffff")) == c


def test_compare_arms_with_an_arm_without_counted_runs():
    c = comparison.compare_arms(runs("pf"), runs("aa"))
    assert c["fisher_p"] is None and c["permutation_p"] is None
    assert c["pass_rate_sentence"] == "No pass rate to compare: an arm has no run counted."


def test_compare_arms_of_one_run_each_has_no_score_interval():
    c = comparison.compare_arms(runs("p"), runs("f"))
    assert c["mean_score_difference"] == pytest.approx(0.8)
    assert c["mean_score_difference_ci95"] is None and c["permutation_p"] is None
    assert c["score_sentence"].endswith(": no test: too few runs.")


# ---- fairness ----------------------------------------------------------------------------
def test_fairness_names_a_model_that_differs_when_it_was_not_varied():
    a = batch("p", config={"model": "claude-haiku-4-5", "include_profiler": True})
    b = batch("p", config={"model": "claude-sonnet-4-5", "include_profiler": False})
    warnings = comparison.fairness_warnings(a, b, {"include_profiler"})
    assert warnings == ["`model` differs although it was not varied: `claude-haiku-4-5` in "
                        "the first batch, `claude-sonnet-4-5` in the second."]


def test_fairness_says_nothing_of_the_varied_key_or_keys_that_never_matter():
    a = batch("p", config={"model": "m", "output": "x", "stream": True, "runs": 5})
    b = batch("p", config={"model": "n", "output": "y", "stream": False, "runs": 9})
    assert comparison.fairness_warnings(a, b, {"model"}) == []


def test_fairness_names_the_baseline_the_calibration_and_the_setup():
    prov = {"git": {"commit": "a" * 40}, "host": {"cpu_model": "EPYC"},
            "versions": {"numpy": "2.1.3"},
            "calibration": {"source": "cache", "measured_at": "2026-12-06T08:00:00Z"}}
    other = {"git": {"commit": "b" * 40}, "host": {"cpu_model": "EPYC"},
             "versions": {"numpy": "2.2.0"},
             "calibration": {"source": "measured", "measured_at": "2026-12-07T08:00:00Z"}}
    a = batch("p", baseline={"target": 85.0, "time_median_s": 100.0}, prov=prov)
    b = batch("p", baseline={"target": 80.0, "time_median_s": 115.0}, prov=other)
    text = " ".join(comparison.fairness_warnings(a, b, set()))
    assert "The targets differ: 85x in the first batch, 80x in the second" in text
    assert "The baseline times differ by more than 10 %" in text
    assert "measured at different times" in text and "from cache" in text
    assert f"The commit differs: {'a' * 40} in the first batch, {'b' * 40}" in text
    assert "The numpy version differs: 2.1.3 in the first batch, 2.2.0 in the second." in text
    close = batch("p", baseline={"target": 85.0, "time_median_s": 105.0}, prov=prov)
    assert comparison.fairness_warnings(a, close, set()) == []


# ---- the report --------------------------------------------------------------------------
def two_arms() -> list[Part]:
    return [Part("include_intermediate_answer=on", "complex", "on", batch("ppppppp" + "fff")),
            Part("include_intermediate_answer=off", "complex", "off",
                 batch("pp" + "ffffffff"))]


def test_a_two_arm_report_compares_them_in_sentences():
    text = comparison.render_report(two_arms(), "Intermediate answer",
                                    "include_intermediate_answer", [], "experiment.png")
    assert text.startswith("# Intermediate answer\n\n- Varied: `include_intermediate_answer`")
    assert "Warnings" not in text and "![the arms](experiment.png)" in text
    assert "| include_intermediate_answer=on | 10 | 7 | 70.0% (39.7%–89.2%) |" in text
    assert "### include_intermediate_answer=off against include_intermediate_answer=on" in text
    assert ("not significant at 5 % (p = 0.07); about 19 runs per arm would detect a "
            "difference this large with 80 % power.") in text
    assert "| pass rate | -50.0 points | -74.0 to -6.6 points (Newcombe) | Fisher exact | " \
           "0.07 | 19 |" in text
    assert "## Problems" not in text


def test_the_report_lists_warnings_at_the_top():
    text = comparison.render_report(two_arms(), "T", None, ["`model` differs."], None)
    assert text.split("## Arms")[0].count("- `model` differs.") == 1


def test_the_report_of_a_suite_has_rows_per_problem_and_marks_missing_k():
    parts = [Part("a", "complex", "a/complex", batch("pppf")),
             Part("a", "numpy", "a/numpy", batch("pf")),
             Part("b", "complex", "b/complex", batch("pfff")),
             Part("b", "numpy", "b/numpy", batch("ffff")),
             Part("c", "complex", "c/complex", batch("ffff"))]
    text = comparison.render_report(parts, "Suite", None, [], None)
    problems = text.split("## Problems")[1].split("##")[0]
    assert problems.count("| a | complex |") == 1 and problems.count("| b | numpy |") == 1
    attempts = text.split("## Attempts")[1].split("##")[0]
    assert "| a | numpy | 0.50 / 0.50 | 1.00 / 0.00 | not available | not available |" in attempts
    assert "| a | mean over problems | 0.62 / 0.62 | 1.00 / 0.25 | not available" in attempts
    assert text.count("### ") == 2  # b and c, each against a
    assert "### c against a" in text


def test_report_json_is_plain_json():
    data = comparison.report_json(two_arms(), "include_intermediate_answer", ["w"])
    again = json.loads(json.dumps(data))
    assert again["warnings"] == ["w"] and len(again["arms"]) == 2
    [c] = again["comparisons"]
    assert c["against"] == "include_intermediate_answer=on"
    assert c["pass_rate_difference"] == pytest.approx(-0.5)


# ---- the shared tables ---------------------------------------------------------------------
@pytest.mark.parametrize(("n", "ks"), [
    (0, []), (3, [1, 2, 3]), (10, list(range(1, 11))),
    (12, [*range(1, 11), 12]), (120, [*range(1, 11), 20, 50, 100, 120])])
def test_attempt_ks(n, ks):
    assert comparison.attempt_ks(n) == ks


def test_strategy_lines_a_row_per_analysed_run_a_column_per_component():
    def comp(name, ratio, function, approach=None):
        return {"name": name, "candidate_s": 1.0, "original_s": ratio, "ratio": ratio,
                "function": function, "approach": approach}
    records = [
        RunRecord(1, "pass", strategy={"components": [comp("scaler", 12.3, "same"),
                                                      comp("fit", 40.1, "different", "z-score")]}),
        RunRecord(2, "fail"),  # not analysed: no row
        RunRecord(3, "pass", strategy={"components": [comp("fit", 2.0, "error"),
                                                      comp("predict", 1.5, "same")]}),
        RunRecord(4, "fail", strategy={"error": "timed out"})]
    assert comparison.strategy_lines(records) == [
        "| run | verdict | in short | scaler | fit | predict |", "|---|---|---|---|---|---|",
        "| 1 | pass | – | 12.3x, same | 40.1x, different: z-score | – |",
        "| 3 | pass | – | – | error | 1.50x, same |",
        "| 4 | fail | analysis failed: timed out | – | – | – |", "", comparison.ADVISORY]
    assert "never changes a verdict" in comparison.ADVISORY


def test_speedup_text():
    assert comparison.speedup_text({"geomean_speedup": None}) == "none measured"
    assert comparison.speedup_text({
        "geomean_speedup": 5.2, "geomean_speedup_ci95": [1.0, 20.1],
        "harmonic_mean_speedup": 1.9, "harmonic_mean_speedup_ci95": None}) == (
        "geometric mean 5.20x (1.00–20.1x), harmonic mean 1.90x")
    assert not math.isnan(comparison.arm_figures(runs("f"))["geomean_speedup"])
