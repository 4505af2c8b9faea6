"""The figures of a batch and the ``run_summary.md`` that shows them.

Pure functions over run entries (the dicts stored in ``results.json``): counts by
status, the pass rate with its 95 % Wilson interval, average steps, the geometric-mean
speedup of passing runs and how often each check failed.  Nothing here runs anything
or touches the network; the batch collects the entries and writes the files.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pricing
from problems import calibration

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion ((0, 0) when n == 0)."""
    if n == 0:
        return (0.0, 0.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def geometric_mean(values: list[float]) -> float | None:
    positive = [v for v in values if v and v > 0]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


def score_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean normalised score of the graded runs (a failed run scores 0), with a 95 %
    bootstrap interval."""
    scores = [r.get("score") or 0.0 for r in runs if r["status"] in ("pass", "fail")]
    interval = calibration.mean_interval(scores)
    return {"mean_score": sum(scores) / len(scores) if scores else None,
            "mean_score_ci95": list(interval) if interval else None}


def batch_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the runs that finished.  Errors are not failures: they are counted
    apart and left out of the pass rate's denominator, which counts graded runs."""
    statuses = Counter(r["status"] for r in runs)
    passed, failed, errors = statuses["pass"], statuses["fail"], statuses["error"]
    graded = passed + failed
    low, high = wilson_interval(passed, graded)
    check_failures = Counter(c for r in runs for c in r.get("failed_checks") or [])
    return {
        "runs": len(runs),
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "pass_rate": passed / graded if graded else None,
        "pass_rate_ci95": [low, high] if graded else None,
        "average_steps": sum(r["steps"] for r in runs) / len(runs) if runs else None,
        "geomean_speedup_passing": geometric_mean(
            [r["speedup"] for r in runs if r["status"] == "pass" and r.get("speedup")]),
        "check_failures": dict(check_failures.most_common()),
        **score_figures(runs),
        "input_tokens": sum(r.get("input_tokens") or 0 for r in runs),
        "output_tokens": sum(r.get("output_tokens") or 0 for r in runs),
        "cache_creation_input_tokens": sum(r.get("cache_creation_input_tokens") or 0
                                           for r in runs),
        "cache_read_input_tokens": sum(r.get("cache_read_input_tokens") or 0 for r in runs),
        # unknown (None) when any run's cost is: a partial sum would read as the total
        "cost_usd": (round(sum(r["cost_usd"] for r in runs), 6)
                     if all(r.get("cost_usd") is not None for r in runs) else None),
        "stream_retries": sum(r.get("stream_retries") or 0 for r in runs),
    }


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def render_markdown(config: dict[str, Any], baseline: dict[str, Any],
                    runs: list[dict[str, Any]], totals: dict[str, Any],
                    interrupted: bool = False) -> str:
    lines = ["# Run summary", ""]
    if interrupted:
        lines += ["**Interrupted**: only the runs that finished are included.", ""]
    lines += ["## Configuration", ""]
    lines += [f"- {k}: `{v}`" for k, v in config.items()]
    lines += ["", "## Baseline", ""]
    lines += [f"- {k}: {v}" for k, v in baseline.items()]
    lines += ["", "## Runs", "",
              "| run | verdict | speedup | score | accuracy diff | reason | steps | tools used | "
              "intermediate | tokens in/out | cache write/read | cost |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        diff = (None if r.get("accuracy") is None or r.get("baseline_accuracy") is None
                else r["accuracy"] - r["baseline_accuracy"])
        used = ", ".join(f"{k}×{v}" for k, v in sorted((r.get("tool_calls") or {}).items()))
        inter = ", ".join(_fmt(i.get("speedup"), ".1f", "x") + ("✓" if i.get("passed") else "✗")
                          for i in r.get("intermediate") or [])
        reason = (r.get("reason") or "").replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(
            f"| {r['run_id']} | {r['status']} | {_fmt(r.get('speedup'), '.2f', 'x')} | "
            f"{_fmt(r.get('score'), '.3f')} | {_fmt(diff, '+.4f')} | {reason} | "
            f"{r['steps']} | {used} | {inter or '–'} | "
            f"{r.get('input_tokens', 0)}/{r.get('output_tokens', 0)} | "
            f"{r.get('cache_creation_input_tokens') or 0}/"
            f"{r.get('cache_read_input_tokens') or 0} | {_cost(r.get('cost_usd'))} |")
    t = totals
    ci = t["pass_rate_ci95"]
    lines += [
        "", "## Totals", "",
        f"- Runs: {t['runs']} (passed {t['passed']}, failed {t['failed']}, "
        f"errors {t['errors']})",
        f"- Pass rate (of {t['passed'] + t['failed']} graded runs): "
        + (f"{t['pass_rate']:.1%} (95 % Wilson interval {ci[0]:.1%}–{ci[1]:.1%})"
           if t["pass_rate"] is not None else "–"),
        f"- Average steps: {_fmt(t['average_steps'], '.1f')}",
        f"- Mean score (0 at the baseline, 1 at the strict tier, 0 when failed): "
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
        "", "## Failed checks", "",
    ]
    if t["check_failures"]:
        lines += [f"- `{name}`: {count}" for name, count in t["check_failures"].items()]
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"
