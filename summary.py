"""The figures of a batch and the ``run_summary.md`` that shows them.

Pure functions over run records (``records.RunRecord``): counts by status and by error
cause, the pass rate with its 95 % Wilson interval and the runs it leaves out, average
steps, the mean score with its bootstrap interval, the geometric-mean speedup of passing
runs, tokens and cost, and how often each check failed.  The intervals are scipy's.
Nothing here runs anything or touches the network; the batch makes the records and
writes the files.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

import pricing
from records import BatchResults, RunRecord

# A run's ``error_cause`` (set by ``batch``), as the summary names it.
ERROR_CAUSES = {"api": "API error", "budget": "budget stop", "grader": "grader error",
                "harness": "harness error", "unknown": "error of unknown cause"}
# API errors and budget stops are outside the agent's reach: those runs are left out of
# the pass rate and the mean score, and the pass-rate line says how many and why.
# A grader or harness error counts AGAINST the agent, as a run that did not pass (score
# 0): the harness was handling the agent's tool calls or its candidate when it raised, and
# nothing tells a bug the agent stumbled on from one it provoked, so leaving such runs out
# would let an agent about to fail make its run not count.  They are named in the pass-rate
# line, so a genuine harness bug lowers the rate visibly, never silently.
LEFT_OUT_CAUSES = frozenset({"api", "budget"})


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval for a binomial proportion ((0, 0) when n == 0);
    ValueError when ``successes`` is outside 0..n."""
    if n == 0:
        return (0.0, 0.0)
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """A 95 % percentile bootstrap interval of the mean (2000 resamples, seeded: the same
    values give the same interval); None for fewer than two values."""
    if len(values) < 2:
        return None
    v = np.asarray(values, dtype=float)
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    result = stats.bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=2000,
                             method="percentile", rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return float(low), float(high)


def geometric_mean(values: list[float]) -> float | None:
    positive = [v for v in values if v and v > 0]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


def error_cause(run: RunRecord) -> str | None:
    """Why ``run`` is an error (None: it is not); records older than ``error_cause`` have
    "unknown", which counts against the agent like a harness error."""
    if run.status != "error":
        return None
    return run.error_cause if run.error_cause in ERROR_CAUSES else "unknown"


def counts_in_pass_rate(run: RunRecord) -> bool:
    return error_cause(run) not in LEFT_OUT_CAUSES


def score_figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The mean normalised score of the runs the pass rate counts (a run that did not
    pass scores 0), with a 95 % bootstrap interval."""
    scores = [(r.score or 0.0) if r.status != "error" else 0.0
              for r in runs if counts_in_pass_rate(r)]
    interval = mean_interval(scores)
    return {"mean_score": sum(scores) / len(scores) if scores else None,
            "mean_score_ci95": list(interval) if interval else None}


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
    return {
        "runs": len(runs),
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "errors_by_cause": {c: causes[c] for c in ERROR_CAUSES if causes[c]},
        "pass_rate_runs": counted,  # the denominator: graded runs and counted errors
        "left_out": left_out,
        "pass_rate": passed / counted if counted else None,
        "pass_rate_ci95": [low, high] if counted else None,
        "average_steps": sum(r.steps for r in runs) / len(runs) if runs else None,
        "geomean_speedup_passing": geometric_mean(
            [r.speedup for r in runs if r.status == "pass" and r.speedup]),
        "check_failures": dict(check_failures.most_common()),
        **score_figures(runs),
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
    counted = f"{t['passed'] + t['failed']} graded"
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


def render_markdown(results: BatchResults) -> str:
    """``run_summary.md``: the configuration, the baseline, a row per run, the totals,
    the errors and the failed checks."""
    lines = ["# Run summary", ""]
    if results.interrupted:
        lines += ["**Interrupted**: only the runs that finished are included.", ""]
    lines += ["## Configuration", ""]
    lines += [f"- {k}: `{v}`" for k, v in results.config.items()]
    lines += ["", "## Baseline", ""]
    lines += [f"- {k}: {v}" for k, v in results.baseline.items()]
    lines += ["", "## Runs", "",
              "| run | verdict | speedup | score | accuracy diff | reason | steps | tools used | "
              "intermediate | tokens in/out | cache write/read | cost |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results.runs:
        diff = (None if r.accuracy is None or r.baseline_accuracy is None
                else r.accuracy - r.baseline_accuracy)
        used = ", ".join(f"{k}×{v}" for k, v in sorted(r.tool_calls.items()))
        inter = ", ".join("grader error" if i.get("error") else
                          _fmt(i.get("speedup"), ".1f", "x") + ("✓" if i.get("passed") else "✗")
                          for i in r.intermediate)
        lines.append(
            f"| {r.run_id} | {r.status} | {_fmt(r.speedup, '.2f', 'x')} | "
            f"{_fmt(r.score, '.3f')} | {_fmt(diff, '+.4f')} | {_cell(r.reason)} | "
            f"{r.steps} | {used} | {inter or '–'} | {r.input_tokens}/{r.output_tokens} | "
            f"{r.cache_creation_input_tokens}/{r.cache_read_input_tokens} | "
            f"{_cost(r.cost_usd)} |")
    t = results.totals
    lines += [
        "", "## Totals", "",
        f"- Runs: {t['runs']} (passed {t['passed']}, failed {t['failed']}, "
        f"errors {t['errors']})",
        f"- {pass_rate_line(t)}",
        f"- Average steps: {_fmt(t['average_steps'], '.1f')}",
        f"- Mean score over the runs the pass rate counts (0 at the baseline, 1 at the "
        f"strict tier, 0 when not passed): "
        f"{_fmt(t.get('mean_score'), '.3f')}"
        + (f" (95 % bootstrap interval {t['mean_score_ci95'][0]:.3f}–"
           f"{t['mean_score_ci95'][1]:.3f})" if t.get("mean_score_ci95") else ""),
        f"- Geometric-mean speedup of passing runs: "
        f"{_fmt(t['geomean_speedup_passing'], '.2f', 'x')}",
        f"- Tokens: {t['input_tokens']} in at the full price, {t['output_tokens']} out; "
        f"prompt cache: {t.get('cache_creation_input_tokens', 0)} written, "
        f"{t.get('cache_read_input_tokens', 0)} read",
        f"- Cost: {_cost(t.get('cost_usd'))} (prices of {pricing.PRICES_AS_OF}, "
        "`pricing.py`)",
        "", "## Errors", "",
    ]
    errors = [r for r in results.runs if r.status == "error"]
    if errors:
        lines += ["| run | cause | pass rate | reason |", "|---|---|---|---|"]
        lines += [f"| {r.run_id} | {ERROR_CAUSES[error_cause(r)]} | "
                  f"{'counted as not passed' if counts_in_pass_rate(r) else 'left out'} | "
                  f"{_cell(r.reason)} |" for r in errors]
    else:
        lines.append("- none")
    lines += ["", "## Failed checks", ""]
    if t["check_failures"]:
        lines += [f"- `{name}`: {count}" for name, count in t["check_failures"].items()]
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"
