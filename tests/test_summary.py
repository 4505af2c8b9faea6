"""Every figure the run summary prints, checked against hand-computed values, and the
summary read back from results.json: the same figures, the same text."""

from __future__ import annotations

import json
import math
import re

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
    assert "- runs: `2`\n" in text and "| 119.0 s | – | – | – |\n" in text
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


# ---- a realistic batch: the figures and the text read back from results.json -------------
LADDER = {"baseline_time": 119.2134567, "baseline_times": [118.4012345, 119.2134567, 121.0398765],
          "baseline_units": [85.123456, 85.3456789, 86.01234],
          "tiers": [{"name": "vectorized", "times": [1.4023456, 1.39876, 1.41234],
                     "time": 1.4023456, "speedup": 85.345678912,
                     "speedup_ci95": [80.123456789, 90.2345678], "units": [1.0, 1.01, 0.99]},
                    {"name": "strict", "times": [0.951234, 0.9487654, 0.9601234],
                     "time": 0.951234, "speedup": 125.41234567,
                     "speedup_ci95": [120.0123456, 131.0987654], "units": []}]}
# what MLTrainingTask.prepare() returns, with unrounded floats as measured
ML_BASELINE = {"time_median_s": 119.213, "times_s": [118.401, 119.213, 121.04],
               "accuracy": 0.91234567, "oracle_agreement": [1.0, 1.0, 0.99812345],
               "reference_speedup": 125.41234567, "target": 85.345678912,
               "target_rule": "vectorized", "speedup_ceiling": 376.23703701, "ladder": LADDER,
               "calibration": {"source": "cache", "measured_at": "2026-12-06T08:00:00Z",
                               "baseline_time_s": 119.213, "tiers": {"strict": 125.41234567}}}
PROVENANCE = {"started": "2026-12-07T10:00:00Z", "ended": "2026-12-07T10:42:13Z",
              "git": {"commit": "ae1855e0123456789abcdef", "dirty": True},
              "versions": {"python": "3.12.7", "torch": "2.5.1", "numpy": "2.1.3",
                           "scikit-learn": "1.5.2", "anthropic": "0.75.0"},
              "host": {"cpu_model": "AMD EPYC 7B13", "cpu_count": 2, "cpus_usable": 2},
              "isolation": "bwrap",
              "load_average": {"start": [0.12, 0.3, 0.25], "end": [1.98, 1.75, 1.02]},
              "calibration": {"source": "measured", "measured_at": "2026-12-07T10:01:00Z"},
              "resumed": ["2026-12-07T10:30:00Z"]}
NO_ANSWER = ("no answer: the agent ended (max_steps) without submitting, and its run "
             "directory holds no .py file")


def realistic_runs() -> list[RunRecord]:
    """A pass and a graded fail (each with its interval), an API error, a harness error
    and a run that gave no answer."""
    return [
        RunRecord(1, "pass", found_by="submitted", speedup=97.123456,
                  speedup_ci95=(92.0123, 101.98765), score=0.945678, accuracy=0.9134,
                  baseline_accuracy=0.91234567, steps=9, cost_usd=0.0123,
                  tool_calls={"read_file": 2, "submit_answer": 1}),
        RunRecord(2, "fail", found_by="fallback", speedup=40.5, speedup_ci95=(38.1, 42.7),
                  score=0.0, accuracy=0.9, baseline_accuracy=0.91234567, steps=15,
                  reason="speedup_target: speedup 40.50x < target 85.35x",
                  failed_checks=["speedup_target"], cost_usd=0.02),
        RunRecord(3, "error", error_cause="api", steps=3, cost_usd=0.01,
                  reason="API error after retries: InternalServerError"),
        RunRecord(4, "error", error_cause="harness", steps=6, cost_usd=0.01,
                  reason="harness error: OSError: [Errno 28] No space left on device"),
        RunRecord(5, "fail", reason=NO_ANSWER, steps=15, cost_usd=0.03)]


def realistic_results(runs=None, config=None) -> BatchResults:
    runs = realistic_runs() if runs is None else runs
    config = config or {"problem": "complex", "runs": len(runs),
                        "model": "claude-haiku-4-5", "target": None}
    return BatchResults(config, ML_BASELINE, runs, summary.batch_figures(runs), False,
                        PROVENANCE)


def reread(results: BatchResults, tmp_path) -> BatchResults:
    """``results`` through results.json as the batch writes it (``batch.json_text``)."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results.to_json(), indent=2, default=str) + "\n")
    return BatchResults.from_json(json.loads(path.read_text()))


def _section(text: str, title: str) -> list[str]:
    return text.split(f"## {title}\n\n", 1)[1].split("\n\n## ", 1)[0].splitlines()


def test_the_figures_recomputed_from_results_json_are_its_totals(tmp_path):
    original = realistic_results()
    again = reread(original, tmp_path)
    assert again.runs == original.runs
    assert summary.batch_figures(again.runs) == again.totals == original.totals
    for plot in (None, summary.PLOT_NAME):
        assert summary.render_markdown(again, plot) == summary.render_markdown(original, plot)


def test_a_file_older_than_a_figure_gets_it_from_its_runs():
    results = realistic_results()
    older = {k: v for k, v in results.totals.items()
             if k not in ("graded", "no_answer", "mean_score", "mean_score_ci95")}
    assert (summary.render_markdown(BatchResults(results.config, results.baseline,
                                                 results.runs, older, False,
                                                 results.provenance))
            == summary.render_markdown(results))


def test_graded_runs_and_runs_without_an_answer_are_counted():
    t = realistic_results().totals
    assert (t["runs"], t["passed"], t["failed"], t["errors"]) == (5, 1, 2, 2)
    assert (t["graded"], t["no_answer"]) == (2, 1)
    assert [summary.was_graded(r) for r in realistic_runs()] == [True, True, False, False,
                                                                 False]


def test_the_pass_rate_names_a_run_without_an_answer():
    assert summary.pass_rate_line(realistic_results().totals) == (
        "Pass rate: 1/4 (25.0%, 95 % Wilson interval 4.6%–69.9%): 2 graded, 1 without an "
        "answer, 1 harness error counted as not passed; 1 run left out: 1 API error")


def test_the_baseline_and_the_ladder_are_rounded_tables():
    text = summary.render_markdown(realistic_results())
    assert _section(text, "Baseline") == [
        "| median time | repeats | accuracy | oracle agreement |", "|---|---|---|---|",
        "| 119.2 s | 3 (118.4, 119.2, 121.0 s) | 0.9123 | 99.8% (lowest of 3) |", "",
        "- Reference speedup (the strict tier): 125.4x",
        "- Plausibility ceiling: 376.2x (a faster candidate fails as implausible)", "",
        "| tier | median time | executions | speedup | 95 % interval |", "|---|---|---|---|---|",
        "| baseline | 119.2 s | 3 | 1x | – |",
        "| vectorized | 1.40 s | 3 | 85.3x | 80.1–90.2x |",
        "| strict | 0.951 s | 3 | 125.4x | 120.0–131.1x |", "",
        "- calibration: measured 2026-12-06 08:00 UTC (cached)"]
    # no float anywhere in the summary with more than four decimals (the issue: a raw dict)
    assert not re.findall(r"\d\.\d{5,}", text)


@pytest.mark.parametrize(("baseline", "lines"), [
    # the math problem measures no time: its facts are listed as they are
    ({"graded": "exactly, against the harness's own computation", "n": 2718, "digits": 12},
     ["- graded: exactly, against the harness's own computation", "- n: 2718",
      "- digits: 12"]),
    ({}, ["- none: this problem measures no baseline"]),
    ({"extra": 0.123456789, "listed": [1.23456789, None]}, ["- extra: 0.1235",
                                                           "- listed: 1.235, –"]),
], ids=["math", "none", "rounded"])
def test_a_baseline_without_a_time_is_listed(baseline, lines):
    assert summary.baseline_lines(baseline) == lines


@pytest.mark.parametrize(("target", "line"), [
    (None, "- target: 85.3x, the problem's rule `vectorized` (none set for this batch)"),
    ("0.9*strict", "- target: `0.9*strict` = 85.3x"),
])
def test_the_resolved_target_is_shown_with_its_rule(target, line):
    results = realistic_results(config={"problem": "complex", "target": target})
    text = summary.render_markdown(results)
    top = text.split("## Configuration")[0]
    assert "- Target: 85.3x (rule `vectorized`)\n" in top
    assert line in _section(text, "Configuration")
    assert "`None`" not in text  # the issue: `target: None` beside a resolved 85.3x


def test_each_run_shows_its_speedup_interval():
    rows = _section(summary.render_markdown(realistic_results()), "Runs")
    assert rows[0].startswith("| run | verdict | speedup (95 % interval) | score |")
    assert rows[2].startswith("| 1 | pass | 97.12x (92.0–102.0x) | 0.946 | +0.0011 |")
    assert rows[3].startswith("| 2 | fail | 40.50x (38.1–42.7x) | 0.000 | -0.0123 |")
    assert rows[6].startswith("| 5 | fail | – | – | – | no answer: ")


GRADED_FAIL = RunRecord(2, "fail", found_by="submitted", speedup=20.0,
                        failed_checks=["speedup_target"])


@pytest.mark.parametrize(("runs", "lines"), [
    ([PASS], ["- none"]),
    ([], ["- none: no run finished"]),
    # the issue: "none" when no run was graded at all
    ([_run(1, "error", cause="api"), _run(2, "error", cause="harness"),
      RunRecord(3, "fail", reason=NO_ANSWER)],
     ["- 3 runs were not graded (1 API error, 1 harness error, 1 without an answer)"]),
    ([PASS, _run(2, "error", cause="api")],
     ["- none in the 1 graded run", "- 1 run was not graded (1 API error)"]),
    ([PASS, GRADED_FAIL, RunRecord(3, "fail", reason=NO_ANSWER)],
     ["- `speedup_target`: 1", "- 1 run was not graded (1 without an answer)"]),
], ids=["all-graded", "no-runs", "none-graded", "some-graded", "failures-and-ungraded"])
def test_failed_checks_say_none_only_when_every_run_was_graded(runs, lines):
    text = _markdown(runs)
    assert _section(text, "Failed checks") == lines


def test_the_totals_name_the_runs_without_an_answer():
    text = summary.render_markdown(realistic_results())
    assert ("- Runs: 5 (passed 1, failed 2, 1 of them without an answer, errors 2)"
            in _section(text, "Totals"))


def test_the_plot_is_linked_only_when_given():
    results = realistic_results()
    assert "![speedup per run](summary.png)\n" in summary.render_markdown(results, "summary.png")
    assert "![" not in summary.render_markdown(results)


def test_provenance_in_a_few_lines():
    assert _section(summary.render_markdown(realistic_results()), "Provenance") == [
        "- ran 2026-12-07 10:00–10:42 UTC", "- commit ae1855e (dirty)",
        "- Python 3.12.7, torch 2.5.1, numpy 2.1.3, scikit-learn 1.5.2, anthropic 0.75.0",
        "- host: AMD EPYC 7B13, 2 CPUs; sandbox bwrap; load 0.12 → 1.98",
        "- calibration: measured 2026-12-07 10:01 UTC (measured for this record)",
        "- resumed 2026-12-07T10:30:00Z"]


@pytest.mark.parametrize(("provenance", "lines"), [
    ({}, ["- not recorded (a batch older than its provenance)"]),
    # keys missing, a git without a commit, an unknown source: never a KeyError
    ({"started": "2026-12-07T10:00:00Z", "git": {"commit": None, "dirty": None},
      "calibration": {"source": "elsewhere"}},
     ["- started 2026-12-07 10:00 UTC", "- commit unknown",
      "- calibration: measured at an unknown time"]),
], ids=["absent", "partial"])
def test_provenance_tolerates_missing_keys(provenance, lines):
    assert summary.provenance_lines(provenance) == lines


# ---- pass@k, the peers' speedup means, the strategy table ---------------------------------
def test_speedup_means_count_counted_runs_not_passed_as_1x():
    runs = [_run(1, "pass", 16.0), _run(2, "pass", 4.0), _run(3, "fail", 20.0),
            _run(4, "error", cause="api"),  # left out
            _run(5, "error", cause="harness")]  # counted, not passed: 1x
    t = summary.batch_figures(runs)
    assert t["geomean_speedup"] == pytest.approx(64 ** 0.25)  # 16, 4, 1, 1
    assert t["harmonic_mean_speedup"] == pytest.approx(4 / (1 / 16 + 1 / 4 + 2))
    assert 1.0 <= t["geomean_speedup_ci95"][0] <= t["geomean_speedup_ci95"][1] <= 16.0
    assert t["geomean_speedup_passing"] == pytest.approx(8.0)  # kept as it was
    assert summary.batch_figures([_run(1, "fail"), _run(2, "fail")])["geomean_speedup"] is None


def test_the_attempt_table_is_over_the_runs_the_pass_rate_counts():
    runs = [_run(1, "pass", 40.0), _run(2, "pass", 40.0), _run(3, "fail", 20.0),
            _run(4, "fail", 20.0), _run(5, "fail", 20.0), _run(6, "error", cause="api")]
    t = summary.batch_figures(runs)
    assert t["attempt_runs"] == 5
    assert [row["k"] for row in t["attempts"]] == [1, 2, 3, 4, 5]
    assert t["attempts"][0]["pass_at_k"] == pytest.approx(t["pass_rate"])
    assert (t["attempts"][1]["pass_at_k"], t["attempts"][1]["pass_hat_k"]) == pytest.approx(
        (0.7, 0.1))
    assert _section(_markdown(runs), "Attempts")[2:6] == [
        "| k | pass@k | pass^k |", "|---|---|---|", "| 1 | 0.400 | 0.400 |",
        "| 2 | 0.700 | 0.100 |"]
    assert _section(_markdown([]), "Attempts") == ["- none: no run to count"]


def test_the_totals_show_both_speedup_means_with_intervals():
    text = _markdown([_run(1, "pass", 16.0), _run(2, "fail", 20.0)])
    assert ("- Speedup over the runs the pass rate counts, a run not passed as 1x (95 % "
            "bootstrap interval): geometric mean 4.00x (1.00–16.0x), harmonic mean 1.88x "
            "(1.00–16.0x)") in _section(text, "Totals")


def test_the_strategy_table_shows_each_analysed_run_and_says_it_is_advisory():
    component = {"name": "fit", "candidate_s": 0.5, "original_s": 20.05, "ratio": 40.1,
                 "function": "different", "approach": "z-score"}
    runs = [_run(1, "pass", 40.0, strategy={"components": [component],
                                            "note": "replaced the fit: z-score"}),
            _run(2, "fail", 20.0, strategy={"error": "timed out"}), _run(3, "fail")]
    assert _section(_markdown(runs), "Strategy") == [
        "| run | verdict | in short | fit |", "|---|---|---|---|",
        "| 1 | pass | replaced the fit: z-score | 40.1x, different: z-score |",
        "| 2 | fail | analysis failed: timed out | – |", "",
        "The strategy analysis is advisory: it describes how each graded candidate got its "
        "speed, and never changes a verdict."]
    assert "## Strategy" not in _markdown(runs[2:])
