"""The figures of a batch and the ``run_summary.md`` that shows them.

Pure functions over run records (``records.RunRecord``): counts by status and by error
cause, the pass rate with its 95 % Wilson interval and the runs it leaves out, average
steps, the mean score with its bootstrap interval, the geometric-mean speedup of passing
runs and the geometric and harmonic means with a run not passed as 1x, pass@k and pass^k,
tokens and cost, how often each check failed and which runs were never graded.  The
statistics are ``significance``'s; the tables of attempts and strategies, shared with an
experiment's report, ``comparison``'s.  :func:`render_markdown` shows the figures with
the baseline, the ladder, the resolved target and the provenance, rounded;
``plots.write_summary`` writes it with the picture (``plots``) beside it, and
``python -m summary output/results.json`` redraws both from the records alone.  The
batch makes the records; nothing here runs an agent.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import stat
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pricing
import provenance
import significance
from records import BatchResults, RunRecord

# the statistics moved to ``significance``; read here under their old names too
from significance import geometric_mean, mean_interval, wilson_interval

log = logging.getLogger(__name__)

SUMMARY_NAME = "run_summary.md"  # one of records.BATCH_RECORDS
PLOT_NAME = "summary.png"  # beside it (``plots``)

# A run's ``error_cause`` (set by ``batch``), as the summary names it.
ERROR_CAUSES = {"api": "API error", "budget": "budget stop", "disk": "disk fault",
                "setup": "run that could not start", "request": "refused API request",
                "grader": "grader error", "harness": "harness error",
                "unknown": "error of unknown cause"}
# API errors (the API unavailable: connections, 429, 5xx, overloaded), stops by the
# batch's cost limit (a run's own limit is its doing: it is graded like a step limit) and
# faults before the agent started (disk, setup) are outside the agent's reach: those runs
# are left out of the pass rate and the mean score, and the pass-rate line says so.
# A request the API refused (400 "prompt is too long"...) is the conversation's, so it
# counts against the agent, as does a disk fault once its code runs (it can fill a disk).
# A grader or harness error counts AGAINST the agent, as a run that did not pass (score
# 0): the harness was handling the agent's tool calls or its candidate when it raised, and
# nothing tells a bug the agent stumbled on from one it provoked, so leaving such runs out
# would let an agent about to fail make its run not count.  They are named in the pass-rate
# line, so a genuine harness bug lowers the rate visibly, never silently.
LEFT_OUT_CAUSES = frozenset({"api", "budget", "disk", "setup"})


def error_cause(run: RunRecord) -> str | None:
    """Why ``run`` is an error (None: it is not); records older than ``error_cause`` have
    "unknown", which counts against the agent like a harness error."""
    if run.status == "error":
        return run.error_cause if run.error_cause in ERROR_CAUSES else "unknown"
    return None


def counts_in_pass_rate(run: RunRecord) -> bool:
    return error_cause(run) not in LEFT_OUT_CAUSES


def was_graded(run: RunRecord) -> bool:
    """Whether a grader gave ``run`` its verdict: every pass, and a fail whose record
    holds a graded file or a grader's figures.  An error never was; a fail without
    either is a run that gave no answer (nothing to grade)."""
    return run.status == "pass" or run.status == "fail" and (
        run.found_by is not None or bool(run.failed_checks) or run.speedup is not None
        or run.score is not None)


def score_figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The mean normalised score of the runs the pass rate counts (a run that did not
    pass scores 0), with a 95 % bootstrap interval."""
    scores = [(r.score or 0.0) if r.status != "error" else 0.0
              for r in runs if counts_in_pass_rate(r)]
    interval = mean_interval(scores)
    return {"mean_score": sum(scores) / len(scores) if scores else None,
            "mean_score_ci95": list(interval) if interval else None}


def attempt_counts(runs: Sequence[RunRecord]) -> tuple[int, int]:
    """The attempts pass@k and pass^k are estimated from: the runs the pass rate counts
    (so that pass@1 is the pass rate) and the passes among them."""
    counted = [r for r in runs if counts_in_pass_rate(r)]
    return len(counted), sum(r.status == "pass" for r in counted)


def speedup_values(runs: Sequence[RunRecord]) -> list[float]:
    """Each counted run's speedup as the peers average it: a passing run's own, 1.0 for
    a run that did not pass (even one measured, too slow); none at all when no run
    measured a speedup (a problem graded exactly)."""
    counted = [r for r in runs if counts_in_pass_rate(r)]
    if not any(r.speedup for r in counted):
        return []
    return [1.0 if r.status != "pass" else r.speedup for r in counted
            if r.status != "pass" or (r.speedup or 0) > 0]


def speedup_figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The geometric and harmonic mean speedups over :func:`speedup_values`, each with
    its 95 % bootstrap interval."""
    means = significance.speedup_means(speedup_values(runs))
    return {"geomean_speedup": means["geometric_mean"],
            "geomean_speedup_ci95": means["geometric_mean_ci95"],
            "harmonic_mean_speedup": means["harmonic_mean"],
            "harmonic_mean_speedup_ci95": means["harmonic_mean_ci95"]}


def batch_figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Totals over the runs that finished.  Errors are not failures: they are counted
    apart, by cause; the pass rate counts the graded runs and the errors that count
    against the agent (``LEFT_OUT_CAUSES``), and says how many it leaves out."""
    statuses = Counter(r.status for r in runs)
    passed, failed, errors = statuses["pass"], statuses["fail"], statuses["error"]
    causes = Counter(c for r in runs if (c := error_cause(r)))
    left_out = sum(n for c, n in causes.items() if c in LEFT_OUT_CAUSES)
    counted = len(runs) - left_out
    low, high = wilson_interval(passed, counted)
    check_failures = Counter(c for r in runs for c in r.failed_checks)
    graded = sum(1 for r in runs if was_graded(r))
    return {
        "runs": len(runs),
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "graded": graded,  # passed, and failed with a verdict: the runs checks ran on
        "no_answer": passed + failed - graded,  # failed: nothing to grade
        "errors_by_cause": {c: causes[c] for c in ERROR_CAUSES if causes[c]},
        "pass_rate_runs": counted,  # the denominator: graded runs and counted errors
        "left_out": left_out,
        "pass_rate": passed / counted if counted else None,
        "pass_rate_ci95": [low, high] if counted else None,
        "average_steps": sum(r.steps for r in runs) / len(runs) if runs else None,
        "geomean_speedup_passing": geometric_mean(
            [r.speedup for r in runs if r.status == "pass" and r.speedup]),
        **speedup_figures(runs),  # a run not passed as 1x
        "check_failures": dict(check_failures.most_common()),
        **score_figures(runs),
        "attempt_runs": (attempts := attempt_counts(runs))[0],
        "attempts": significance.attempt_table(*attempts),  # pass@k and pass^k
        "input_tokens": sum(r.input_tokens for r in runs),
        "output_tokens": sum(r.output_tokens for r in runs),
        "cache_creation_input_tokens": sum(r.cache_creation_input_tokens for r in runs),
        "cache_read_input_tokens": sum(r.cache_read_input_tokens for r in runs),
        # unknown (None) when any run's cost is: a partial sum would read as the total
        "cost_usd": (round(sum(r.cost_usd for r in runs), 6)
                     if all(r.cost_usd is not None for r in runs) else None),
        "stream_retries": sum(r.stream_retries for r in runs),
    }


def _cause_counts(causes: dict[str, int], wanted: Any) -> str:
    return ", ".join(f"{n} {ERROR_CAUSES[c]}{'s' if n != 1 else ''}"
                     for c, n in causes.items() if c in wanted)


def pass_rate_line(t: dict[str, Any]) -> str:
    """The headline: the pass rate, what it counts and what it leaves out, e.g.
    ``Pass rate: 3/9 (33.3%, 95 % Wilson interval 12.1%–64.6%): 8 graded, 1 harness
    error counted as not passed; 2 runs left out: 1 API error, 1 budget stop``."""
    causes = t["errors_by_cause"]
    rate = ("no run to count" if t["pass_rate"] is None else
            f"{t['pass_rate']:.1%}, 95 % Wilson interval {t['pass_rate_ci95'][0]:.1%}–"
            f"{t['pass_rate_ci95'][1]:.1%}")
    no_answer = t.get("no_answer", 0)
    counted = f"{t['passed'] + t['failed'] - no_answer} graded"
    if no_answer:
        counted += f", {no_answer} without an answer"
    if against := _cause_counts(causes, set(ERROR_CAUSES) - LEFT_OUT_CAUSES):
        counted += f", {against} counted as not passed"
    n = t["left_out"]
    left = (f"{n} run{'s' if n != 1 else ''} left out: {_cause_counts(causes, LEFT_OUT_CAUSES)}"
            if n else "no run left out")
    return f"Pass rate: {t['passed']}/{t['pass_rate_runs']} ({rate}): {counted}; {left}"


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def _cell(text: str | None) -> str:
    """A reason as one table cell: no pipe or newline can break the table."""
    return (text or "").replace("|", "\\|").replace("\n", " ")[:160]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _x(value: Any) -> str:
    """A speedup, to three or four significant figures: 85.3x, 1.19x."""
    return "–" if not _number(value) else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def _interval(ci: Any) -> str:
    """A speedup's 95 % interval: 80.1–90.2x."""
    ok = isinstance(ci, list | tuple) and len(ci) == 2 and all(map(_number, ci))
    return f"{_x(ci[0])[:-1]}–{_x(ci[1])}" if ok else "–"


def _seconds(value: Any) -> str:
    return "–" if not _number(value) else f"{value:.1f}" if value >= 10 else f"{value:#.3g}"


def _value(value: Any) -> str:
    """Any recorded value as one table-safe line, its floats to four significant figures."""
    def plain(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list | tuple):
            return ", ".join(map(plain, v[:8])) + (", …" if len(v) > 8 else "")
        if isinstance(v, dict):
            return ", ".join(f"{k} {plain(x)}" for k, x in v.items())
        return "–" if v is None else str(v)
    return _cell(plain(value))


def _agreement(value: Any) -> str:
    """The oracle's agreement with the original: per data set, shown by the lowest."""
    values = [v for v in (value if isinstance(value, list) else [value]) if _number(v)]
    return (f"{min(values):.1%}" + (f" (lowest of {len(values)})" if len(values) > 1 else "")
            if values else "–")


def target_line(baseline: dict[str, Any]) -> str | None:
    """``Target: 85.3x (rule `vectorized`)``: the target as resolved on this machine."""
    rule = f" (rule `{r}`)" if (r := baseline.get("target_rule")) else ""
    return f"Target: {_x(baseline['target'])}{rule}" if _number(baseline.get("target")) else None


def config_lines(config: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """The configuration as given, its target shown with what it resolved to."""
    target, rule = baseline.get("target"), baseline.get("target_rule")

    def shown(key: str, value: Any) -> str:
        if key != "target" or not _number(target):
            return f"`{value}`"
        return (f"{_x(target)}, the problem's rule `{rule}` (none set for this batch)"
                if value is None else f"`{value}` = {_x(target)}")
    return [f"- {key}: {shown(key, value)}" for key, value in config.items()]


# The keys of an ML problem's baseline shown in its tables (``prepare``); any other key
# (the math problem's, the calibration's) is listed as it is, rounded.
_TABLED = ("time_median_s", "times_s", "accuracy", "oracle_agreement", "reference_speedup",
           "target", "target_rule", "speedup_ceiling", "ladder", "calibration")


def baseline_lines(baseline: dict[str, Any]) -> list[str]:
    """The baseline and its calibration ladder as rounded tables, then the rest."""
    blocks: list[list[str]] = [[], [], [], []]  # the baseline, facts, the ladder, the rest
    if "time_median_s" in baseline:
        times = baseline.get("times_s") or []
        repeats = f"{len(times)} ({', '.join(map(_seconds, times))} s)" if times else "–"
        blocks[0] = ["| median time | repeats | accuracy | oracle agreement |",
                     "|---|---|---|---|",
                     f"| {_seconds(baseline['time_median_s'])} s | {repeats} | "
                     f"{_fmt(baseline.get('accuracy'), '.4f')} | "
                     f"{_agreement(baseline.get('oracle_agreement'))} |"]
    if _number(baseline.get("reference_speedup")):
        blocks[1].append(f"- Reference speedup (the strict tier): "
                         f"{_x(baseline['reference_speedup'])}")
    if _number(baseline.get("speedup_ceiling")):
        blocks[1].append(f"- Plausibility ceiling: {_x(baseline['speedup_ceiling'])} (a "
                         "faster candidate fails as implausible)")
    ladder = baseline.get("ladder")
    if isinstance(ladder, dict) and isinstance(ladder.get("tiers"), list):
        blocks[2] = ["| tier | median time | executions | speedup | 95 % interval |",
                     "|---|---|---|---|---|",
                     f"| baseline | {_seconds(ladder.get('baseline_time'))} s | "
                     f"{len(ladder.get('baseline_times') or [])} | 1x | – |"]
        blocks[2] += [f"| {_cell(str(t.get('name')))} | {_seconds(t.get('time'))} s | "
                      f"{len(t.get('times') or [])} | {_x(t.get('speedup'))} | "
                      f"{_interval(t.get('speedup_ci95'))} |"
                      for t in ladder["tiers"] if isinstance(t, dict)]
    if calibration := provenance.calibration_line(baseline.get("calibration")):
        blocks[3].append(f"- {calibration}")
    blocks[3] += [f"- {k}: {_value(v)}" for k, v in baseline.items() if k not in _TABLED]
    lines = [line for block in blocks if block for line in ["", *block]][1:]
    return lines or ["- none: this problem measures no baseline"]


def provenance_lines(p: dict[str, Any]) -> list[str]:
    """Where and when the batch ran, in a few lines (``provenance.short_form``), and
    when it was resumed."""
    if not p:
        return ["- not recorded (a batch older than its provenance)"]
    lines = provenance.short_form(p)
    if isinstance(p.get("resumed"), list) and p["resumed"]:
        lines.append("resumed " + ", ".join(map(str, p["resumed"])))
    return [f"- {line}" for line in lines] or ["- not recorded"]


def failed_check_lines(t: dict[str, Any]) -> list[str]:
    """How often each check failed, and the runs no check ran on: "none" only when
    every run was graded and none failed a check."""
    no_answer = t.get("no_answer", 0)
    ungraded = t["errors"] + no_answer
    graded = t["runs"] - ungraded
    lines = [f"- `{name}`: {count}" for name, count in t["check_failures"].items()]
    if not lines and graded:
        lines = ["- none" + (f" in the {graded} graded run{'s' * (graded != 1)}"
                             if ungraded else "")]
    if ungraded:
        why = ", ".join(filter(None, [_cause_counts(t["errors_by_cause"], ERROR_CAUSES),
                                      no_answer and f"{no_answer} without an answer"]))
        lines.append(f"- {ungraded} run{' was' if ungraded == 1 else 's were'} not graded "
                     f"({why})")
    return lines or ["- none: no run finished"]


def run_lines(runs: Sequence[RunRecord]) -> list[str]:
    """The table of runs, each speedup with its 95 % interval."""
    lines = ["| run | verdict | speedup (95 % interval) | score | accuracy diff | reason | "
             "steps | tools used | intermediate | tokens in/out | cache write/read | cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        diff = (None if r.accuracy is None or r.baseline_accuracy is None
                else r.accuracy - r.baseline_accuracy)
        used = ", ".join(f"{k}×{v}" for k, v in sorted(r.tool_calls.items()))
        inter = ", ".join("grader error" if i.get("error") else
                          _fmt(i.get("speedup"), ".1f", "x") + ("✓" if i.get("passed") else "✗")
                          for i in r.intermediate)
        ci = f" ({_interval(r.speedup_ci95)})" if r.speedup_ci95 else ""
        lines.append(
            f"| {r.run_id} | {r.status} | {_fmt(r.speedup, '.2f', 'x')}{ci} | "
            f"{_fmt(r.score, '.3f')} | {_fmt(diff, '+.4f')} | {_cell(r.reason)} | "
            f"{r.steps} | {used} | {inter or '–'} | {r.input_tokens}/{r.output_tokens} | "
            f"{r.cache_creation_input_tokens}/{r.cache_read_input_tokens} | "
            f"{_cost(r.cost_usd)} |")
    return lines


def render_markdown(results: BatchResults, plot: str | None = None) -> str:
    """``run_summary.md``: the target and the pass rate, the picture (``plot``, a path
    relative to the summary, when there is one), the configuration, the baseline, a row
    per run, the totals, the attempts (pass@k), the errors, the failed checks, the
    strategies (when analysed) and the provenance.  Figures the
    records lack (a file older than them) are computed from its runs."""
    import comparison  # which imports this module: the tables both reports show

    t = batch_figures(results.runs) | results.totals
    lines = ["# Run summary", ""]
    if results.interrupted:
        lines += ["**Interrupted**: only the runs that finished are included.", ""]
    if target := target_line(results.baseline):
        lines.append(f"- {target}")
    lines.append(f"- {pass_rate_line(t)}")
    if plot:
        lines += ["", f"![speedup per run]({plot})"]
    lines += ["", "## Configuration", "", *config_lines(results.config, results.baseline),
              "", "## Baseline", "", *baseline_lines(results.baseline),
              "", "## Runs", "", *run_lines(results.runs)]
    no_answer = f", {t['no_answer']} of them without an answer" if t.get("no_answer") else ""
    lines += [
        "", "## Totals", "",
        f"- Runs: {t['runs']} (passed {t['passed']}, failed {t['failed']}{no_answer}, "
        f"errors {t['errors']})",
        f"- Average steps: {_fmt(t['average_steps'], '.1f')}",
        f"- Mean score over the runs the pass rate counts (0 at the baseline, 1 at the "
        f"strict tier, 0 when not passed): "
        f"{_fmt(t.get('mean_score'), '.3f')}"
        + (f" (95 % bootstrap interval {t['mean_score_ci95'][0]:.3f}–"
           f"{t['mean_score_ci95'][1]:.3f})" if t.get("mean_score_ci95") else ""),
        f"- Geometric-mean speedup of passing runs: "
        f"{_fmt(t['geomean_speedup_passing'], '.2f', 'x')}",
        f"- Speedup over the runs the pass rate counts, a run not passed as 1x (95 % "
        f"bootstrap interval): {comparison.speedup_text(t)}",
        f"- Tokens: {t['input_tokens']} in at the full price, {t['output_tokens']} out; "
        f"prompt cache: {t.get('cache_creation_input_tokens', 0)} written, "
        f"{t.get('cache_read_input_tokens', 0)} read",
        f"- Cost: {_cost(t.get('cost_usd'))} (prices of {pricing.PRICES_AS_OF}, "
        "`pricing.py`)",
        "", "## Attempts", "", *comparison.attempt_lines(t.get("attempts") or [],
                                                         t.get("attempt_runs", 0)),
        "", "## Errors", "",
    ]
    errors = [f"| {r.run_id} | {ERROR_CAUSES[cause]} | "
              f"{'left out' if cause in LEFT_OUT_CAUSES else 'counted as not passed'} | "
              f"{_cell(r.reason)} |" for r in results.runs if (cause := error_cause(r))]
    lines += (["| run | cause | pass rate | reason |", "|---|---|---|---|", *errors]
              if errors else ["- none"])
    lines += ["", "## Failed checks", "", *failed_check_lines(t)]
    if any(r.strategy for r in results.runs):
        lines += ["", "## Strategy", "", *comparison.strategy_lines(results.runs)]
    lines += ["", "## Provenance", "", *provenance_lines(results.provenance)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw run_summary.md and summary.png beside a results.json, from its records
    alone.  Status 2 for a file that cannot be read as results, 4 when the summary
    cannot be written."""
    parser = argparse.ArgumentParser(prog="python -m summary", description=main.__doc__)
    parser.add_argument("results", type=Path, help="a batch's results.json")
    path = parser.parse_args(argv).results
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would never end
            raise OSError(errno.EINVAL, "not a regular file")
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
            raise ValueError("not the results of a batch (no list of runs)")
        results = BatchResults.from_json(data)
        render_markdown(results)  # a malformed figure is found before anything is written
    except OSError as exc:
        print(f"summary: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        print(f"summary: {path} is not a batch's results.json: {exc}", file=sys.stderr)
        return 2
    import plots  # matplotlib: imported when a picture is drawn, not with the batch

    if why := plots.not_ours(path.parent):
        print(f"summary: {why}; nothing was written", file=sys.stderr)
        return 2
    try:
        names = plots.write_summary(path.parent, results)
    except OSError as exc:
        print(f"summary: cannot write in {path.parent}: {exc.strerror}", file=sys.stderr)
        return 4
    print(f"wrote {' and '.join(names)} in {path.parent}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("summary: interrupted", file=sys.stderr)
        sys.exit(130)
