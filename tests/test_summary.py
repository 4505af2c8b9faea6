"""Every figure the run summary prints, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

import summary
from records import BatchResults, RunRecord


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (4, 10, 0.1682, 0.6873),   # the seed's batch: 40 %
    (7, 10, 0.3968, 0.8922),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (1, 1, 0.2065, 1.0),
])
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = summary.wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_empty_and_invalid():
    assert summary.wilson_interval(0, 0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        summary.wilson_interval(3, 2)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 40, 200])
def test_wilson_interval_is_the_textbook_formula(n):
    # scipy's interval against the formula summary.py wrote by hand before it used
    # scipy: equal up to rounding in the last bits (results.json's values may differ in
    # their 16th or 17th significant digit; every printed figure is the same).
    z = 1.959963984540054
    for k in range(n + 1):
        p, denom = k / n, 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        assert summary.wilson_interval(k, n) == pytest.approx(
            (max(0.0, centre - half), min(1.0, centre + half)), abs=1e-15)


@pytest.mark.parametrize(("values", "interval"), [
    ([0.8], None),                 # one value: no spread to resample
    ([0.7, 0.7, 0.7], (0.7, 0.7)),  # no spread: the value itself
    ([0.8, 0.0], (0.0, 0.8)),
    # seeded: the same values give the same interval, batch after batch
    ([0.8, 0.0, 0.5, 0.9, 0.1, 0.3], (0.16666666666666666, 0.7000000000000001)),
    ([0.2, 0.4, 0.6, 0.8, 1.0, 0.0, 0.0], (0.17142857142857146, 0.7142857142857143)),
])
def test_mean_interval_is_a_seeded_bootstrap(values, interval):
    assert summary.mean_interval(values) == (pytest.approx(interval) if interval else None)


def test_geometric_mean():
    assert summary.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert summary.geometric_mean([]) is None
    assert summary.geometric_mean([None, 0.0]) is None  # nothing positive to average


def _run(i, status, speedup=None, steps=5, failed=(), cause=None, **more):
    return RunRecord(run_id=i, status=status, speedup=speedup, steps=steps,
                     failed_checks=list(failed), input_tokens=100 * i, output_tokens=10 * i,
                     accuracy=0.1, baseline_accuracy=0.09, error_cause=cause, **more)


def _markdown(runs, config=None, baseline=None, interrupted=False):
    return summary.render_markdown(BatchResults(config or {}, baseline or {}, runs,
                                                summary.batch_figures(runs), interrupted))


def test_pass_rate_counts_only_passes():
    # The original hello-py summed every result and reported 100 %: never again.
    runs = [_run(1, "pass", 40.0), _run(2, "fail", 20.0, failed=["speedup_target"]),
            _run(3, "fail", failed=["required_definitions"]), _run(4, "pass", 90.0)]
    t = summary.batch_figures(runs)
    assert (t["passed"], t["failed"], t["errors"], t["runs"]) == (2, 2, 0, 4)
    assert t["pass_rate"] == pytest.approx(0.5)
    assert t["pass_rate_ci95"] == pytest.approx(list(summary.wilson_interval(2, 4)))


@pytest.mark.parametrize(("cause", "shown", "left_out"), [
    ("api", "api", True),          # outside the agent's reach: not counted
    ("budget", "budget", True),
    ("harness", "harness", False),  # could be provoked by the agent: counts against it
    ("grader", "grader", False),
    (None, "unknown", False),       # a record older than error_cause: counted, to be safe
    ("made-up", "unknown", False),
])
def test_errors_are_not_failures_and_each_cause_is_counted_as_documented(cause, shown,
                                                                         left_out):
    t = summary.batch_figures([_run(1, "pass", 50.0), _run(2, "error", steps=1, cause=cause)])
    assert (t["passed"], t["failed"], t["errors"]) == (1, 0, 1)
    assert t["errors_by_cause"] == {shown: 1}
    assert (t["left_out"], t["pass_rate_runs"]) == ((1, 1) if left_out else (0, 2))
    assert t["pass_rate"] == (1.0 if left_out else 0.5)
    assert t["pass_rate_ci95"] == pytest.approx(list(summary.wilson_interval(1, 2 - left_out)))


def test_only_errors_left_out_leaves_no_pass_rate():
    t = summary.batch_figures([_run(1, "error", cause="api"), _run(2, "error", cause="api")])
    assert (t["pass_rate"], t["pass_rate_ci95"], t["pass_rate_runs"], t["left_out"]) == (
        None, None, 0, 2)
    assert summary.pass_rate_line(t) == ("Pass rate: 0/0 (no run to count): 0 graded; "
                                         "2 runs left out: 2 API errors")


PASS, FAIL = _run(1, "pass", 40.0), _run(2, "fail", 20.0)


@pytest.mark.parametrize(("runs", "line"), [
    ([PASS, FAIL],
     "Pass rate: 1/2 (50.0%, 95 % Wilson interval 9.5%–90.5%): 2 graded; no run left out"),
    ([PASS, FAIL, _run(3, "error", cause="api")],
     "Pass rate: 1/2 (50.0%, 95 % Wilson interval 9.5%–90.5%): 2 graded; "
     "1 run left out: 1 API error"),
    ([PASS, FAIL, _run(3, "error", cause="harness"), _run(4, "error", cause="budget"),
      _run(5, "error", cause="api"), _run(6, "error", cause="budget")],
     "Pass rate: 1/3 (33.3%, 95 % Wilson interval 6.1%–79.2%): 2 graded, 1 harness error "
     "counted as not passed; 3 runs left out: 1 API error, 2 budget stops"),
    ([PASS, _run(3, "error", cause="grader"), _run(4, "error", cause="grader"),
      _run(5, "error")],
     "Pass rate: 1/4 (25.0%, 95 % Wilson interval 4.6%–69.9%): 1 graded, 2 grader errors, "
     "1 error of unknown cause counted as not passed; no run left out"),
], ids=["no-errors", "api-left-out", "mixed", "counted-errors"])
def test_pass_rate_line_says_what_it_counts_and_what_it_leaves_out(runs, line):
    assert summary.pass_rate_line(summary.batch_figures(runs)) == line


def test_average_steps_geomean_and_tokens():
    runs = [_run(1, "pass", 40.0, steps=10), _run(2, "pass", 90.0, steps=14),
            _run(3, "fail", 200.0, steps=6)]
    t = summary.batch_figures(runs)
    assert t["average_steps"] == pytest.approx(10.0)
    assert t["geomean_speedup_passing"] == pytest.approx(math.sqrt(40 * 90))  # fail excluded
    assert (t["input_tokens"], t["output_tokens"]) == (600, 60)


def test_check_failure_counts():
    runs = [_run(1, "fail", failed=["speedup_target"]),
            _run(2, "fail", failed=["speedup_target", "accuracy"]), _run(3, "pass", 40.0)]
    assert summary.batch_figures(runs)["check_failures"] == {"speedup_target": 2, "accuracy": 1}


def test_mean_score_counts_failed_runs_as_zero_and_leaves_api_errors_out():
    runs = [_run(1, "pass", 40.0, score=0.8), _run(2, "fail", 20.0),
            _run(3, "error", cause="api")]
    t = summary.batch_figures(runs)
    assert t["mean_score"] == pytest.approx(0.4)
    low, high = t["mean_score_ci95"]
    assert low == pytest.approx(0.0) and high == pytest.approx(0.8)
    assert summary.batch_figures(runs[:1])["mean_score_ci95"] is None  # one run: no interval


def test_mean_score_counts_a_harness_error_as_zero():
    # an error's stray score is not used
    runs = [_run(1, "pass", 40.0, score=0.8), _run(2, "error", cause="harness", score=0.9)]
    assert summary.batch_figures(runs)["mean_score"] == pytest.approx(0.4)


def test_no_runs():
    t = summary.batch_figures([])
    assert t["pass_rate"] is None and t["average_steps"] is None and t["runs"] == 0


def test_markdown_shows_every_figure():
    runs = [_run(1, "pass", 40.0, score=0.75, tool_calls={"read_file": 2, "submit_answer": 1},
                 intermediate=[{"speedup": 35.5, "passed": True}]),
            _run(2, "fail", 20.0, failed=["speedup_target"], score=0.0,
                 reason="speedup_target: speedup 20.00x < target 33.00x | x")]
    text = _markdown(runs, {"runs": 2}, {"time_median_s": 119.0})
    assert "- runs: `2`\n" in text and "- time_median_s: 119.0\n" in text
    assert "| 1 | pass | 40.00x | 0.750 | +0.0100 |" in text
    assert ("Mean score over the runs the pass rate counts (0 at the baseline, 1 at the "
            "strict tier, 0 when not passed): 0.375") in text
    assert "(95 % bootstrap interval 0.000–0.750)" in text
    assert "read_file×2, submit_answer×1" in text and "35.5x✓" in text
    assert "\\|" in text  # a pipe in a reason cannot break the table
    assert ("- Pass rate: 1/2 (50.0%, 95 % Wilson interval 9.5%–90.5%): 2 graded; "
            "no run left out\n") in text
    assert "## Errors\n\n- none\n" in text
    assert "Geometric-mean speedup of passing runs: 40.00x" in text
    assert "`speedup_target`: 1" in text
    assert "Interrupted" not in text
    assert "Interrupted" in _markdown(runs, interrupted=True)


def test_markdown_lists_each_error_with_its_cause_and_how_it_counts():
    runs = [_run(1, "pass", 40.0),
            _run(2, "error", cause="api", reason="API error after retries: InternalServerError"),
            _run(3, "error", cause="grader", reason="grader error: RuntimeError: a | b\nc"),
            _run(4, "error")]
    text = _markdown(runs)
    errors = text.split("## Errors\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert errors == [
        "| run | cause | pass rate | reason |", "|---|---|---|---|",
        "| 2 | API error | left out | API error after retries: InternalServerError |",
        "| 3 | grader error | counted as not passed | grader error: RuntimeError: a \\| b c |",
        "| 4 | error of unknown cause | counted as not passed |  |"]
    assert ("- Pass rate: 1/3 (33.3%, 95 % Wilson interval 6.1%–79.2%): 1 graded, "
            "1 grader error, 1 error of unknown cause counted as not passed; "
            "1 run left out: 1 API error\n") in text


def test_markdown_marks_an_intermediate_submission_the_grader_failed_on():
    runs = [_run(1, "pass", 40.0, intermediate=[
        {"speedup": None, "passed": False, "error": "RuntimeError: x",
         "traceback": "Traceback ..."},
        {"speedup": 35.5, "passed": True}])]
    text = _markdown(runs)
    assert "| grader error, 35.5x✓ |" in text and "Traceback" not in text
