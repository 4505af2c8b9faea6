"""The figures and the markdown report of a group of batches: an experiment's arms, a
suite of problems, or two saved batches set side by side.

Each :class:`Part` is one batch's results under its arm's label and its problem's name.
:func:`group_figures` gives each arm's figures per problem and over its problems (a
suite row: pass@k averaged over the problems, each weighing the same; the pass rate
pooled); :func:`compare_arms` tests the difference between two arms (pass rate: Newcombe
interval and Fisher's exact test; mean score: bootstrap interval and a permutation test;
the runs per arm a test at 80 % power would need); :func:`fairness_warnings` says what
differs between two batches beyond what was varied.  :func:`render_report` and
:func:`report_json` show them.  The tables of attempts (pass@k, pass^k) and of
strategies are here too, and ``run_summary.md`` (``summary``) shows them for one batch.

Which runs count, and how a run scores, is ``summary``'s; the statistics are
``significance``'s; finding the batches, running them and writing the files is the
caller's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import provenance
import significance as sig
import summary
from records import BatchResults, RunRecord

# Configuration keys that never change what an agent sees or how it is judged: where
# the records go, how the API is called, and the number of runs (unequal arms are not
# unfair: the tests allow for their sizes).
NEVER_MATTER = frozenset({"output", "save", "api_retries", "max_api_calls", "stream",
                          "model_limits", "runs"})
BASELINE_TIME_TOLERANCE = 0.10  # a baseline time this much slower or faster is a warning
ADVISORY = ("The strategy analysis is advisory: it describes how each graded candidate "
            "got its speed, and never changes a verdict.")


@dataclass(frozen=True)
class Part:
    """One batch of a group: its arm, its problem, where it is, and its results."""

    arm: str | None  # the arm's label, e.g. "include_intermediate_answer=off"; None: no arms
    problem: str  # the problem's name
    directory: str  # the part's batch directory, relative to the experiment's directory
    results: BatchResults


# ---- figures -----------------------------------------------------------------------------
def arm_figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """An arm's figures over ``runs``: the runs counted (``summary.counts_in_pass_rate``)
    and passed, the pass rate with its Wilson interval, the mean score with its
    bootstrap interval (a counted run not passed scores 0), the geometric and harmonic
    mean speedups with theirs (a counted run not passed as 1x), the mean steps of the
    counted runs, the total cost (None when any run's is unknown) and the attempt table
    (pass@k and pass^k for k up to the runs counted)."""
    n, c = summary.attempt_counts(runs)
    counted = [r for r in runs if summary.counts_in_pass_rate(r)]
    return {
        "runs": len(runs), "counted": n, "passed": c,
        "graded": sum(summary.was_graded(r) for r in runs),
        "pass_rate": c / n if n else None,
        "pass_rate_ci95": list(sig.wilson_interval(c, n)) if n else None,
        **summary.score_figures(runs), **summary.speedup_figures(runs),
        "mean_steps": sum(r.steps for r in counted) / n if n else None,
        "cost_usd": (round(sum(r.cost_usd for r in runs), 6)
                     if all(r.cost_usd is not None for r in runs) else None),
        "attempt_runs": n, "attempts": sig.attempt_table(n, c)}


def _arms(parts: Sequence[Part]) -> dict[str | None, dict[str, list[Part]]]:
    """The parts by arm, then by problem, each in the order first seen."""
    arms: dict[str | None, dict[str, list[Part]]] = {}
    for part in parts:
        arms.setdefault(part.arm, {}).setdefault(part.problem, []).append(part)
    return arms


def _runs(parts: Sequence[Part]) -> list[RunRecord]:
    return [r for part in parts for r in part.results.runs]


def group_figures(parts: Sequence[Part]) -> list[dict[str, Any]]:
    """Per arm (in the order first seen): ``{"arm", "problems": [{"problem",
    "directories", **arm_figures}], "suite": {...}}``; the suite row pools the arm's
    runs over its problems, except its attempt table, the mean over the problems (each
    weighing the same) for k up to the fewest runs any problem counted."""
    groups = []
    for arm, problems in _arms(parts).items():
        rows = [{"problem": name, "directories": [p.directory for p in ps],
                 **arm_figures(_runs(ps))} for name, ps in problems.items()]
        suite = arm_figures(_runs([p for ps in problems.values() for p in ps]))
        counts = [(row["attempt_runs"], row["passed"]) for row in rows]
        suite |= {"problems": len(rows), "attempts": sig.suite_attempt_table(counts),
                  "attempt_runs": min(n for n, _ in counts)}
        groups.append({"arm": arm, "problems": rows, "suite": suite})
    return groups


def _scores(runs: Sequence[RunRecord]) -> list[float]:
    """The counted runs' scores as ``summary.score_figures`` averages them."""
    return [(r.score or 0.0) if r.status != "error" else 0.0
            for r in runs if summary.counts_in_pass_rate(r)]


def compare_arms(runs_a: Sequence[RunRecord], runs_b: Sequence[RunRecord],
                 seed: int = 0) -> dict[str, Any]:
    """Arm a against arm b (each difference is a's figure less b's): the pass rates'
    difference with its Newcombe interval and Fisher's exact p, the mean scores'
    difference with its bootstrap interval and a permutation test's p, the runs per arm
    a test at 5 % would need for 80 % power to detect each difference, and a sentence
    for each.  A figure too few runs allow is None."""
    (na, ca), (nb, cb) = summary.attempt_counts(runs_a), summary.attempt_counts(runs_b)
    out: dict[str, Any] = dict.fromkeys(
        ("pass_rate_difference", "pass_rate_difference_ci95", "fisher_p",
         "runs_per_arm_pass_rate", "mean_score_difference", "mean_score_difference_ci95",
         "permutation_p", "runs_per_arm_score"))
    if na and nb:
        d, low, high = sig.newcombe_difference(ca, na, cb, nb)
        out |= {"pass_rate_difference": d, "pass_rate_difference_ci95": [low, high],
                "fisher_p": sig.fisher_p(ca, na, cb, nb),
                "runs_per_arm_pass_rate": sig.runs_per_arm_for_proportions(ca / na, cb / nb)}
        out["pass_rate_sentence"] = (
            f"The pass rate differs by {d * 100:+.1f} points ({ca}/{na} against {cb}/{nb}; "
            f"95 % Newcombe interval {low * 100:+.1f} to {high * 100:+.1f}): "
            + sig.significance_sentence(out["fisher_p"], out["runs_per_arm_pass_rate"]) + ".")
    else:
        out["pass_rate_sentence"] = "No pass rate to compare: an arm has no run counted."
    a, b = _scores(runs_a), _scores(runs_b)
    if a and b:
        d = sum(a) / len(a) - sum(b) / len(b)
        enough = min(len(a), len(b)) > 1
        interval = sig.bootstrap_difference(a, b, seed)[1:] if enough else None
        out |= {"mean_score_difference": d,
                "mean_score_difference_ci95": list(interval) if interval else None,
                "permutation_p": sig.permutation_p(a, b, seed) if enough else None,
                "runs_per_arm_score": sig.runs_per_arm_for_means(a, b)}
        shown = (f"; 95 % bootstrap interval {interval[0]:+.3f} to {interval[1]:+.3f}"
                 if interval else "")
        out["score_sentence"] = (
            f"The mean score differs by {d:+.3f} ({sum(a) / len(a):.3f} against "
            f"{sum(b) / len(b):.3f}{shown}): "
            + sig.significance_sentence(out["permutation_p"], out["runs_per_arm_score"]) + ".")
    else:
        out["score_sentence"] = "No mean score to compare: an arm has no run counted."
    return out


# ---- what differs between two batches ------------------------------------------------------
def _shown(value: Any) -> str:
    return f"`{str(value)[:80]}`"


def _config_warnings(a: dict[str, Any], b: dict[str, Any], varied: set[str]) -> list[str]:
    skip = varied | NEVER_MATTER
    return [f"`{key}` differs although it was not varied: {_shown(a.get(key))} in the "
            f"first batch, {_shown(b.get(key))} in the second."
            for key in sorted(set(a) | set(b), key=str)
            if key not in skip and a.get(key) != b.get(key)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _baseline_warnings(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    found = []
    ta, tb = a.get("target"), b.get("target")
    if _number(ta) and _number(tb) and abs(ta - tb) > 1e-9 * max(abs(ta), abs(tb)):
        found.append(f"The targets differ: {ta:.4g}x in the first batch, {tb:.4g}x in the "
                     "second, so a pass means something different in each.")
    elif _number(ta) != _number(tb):
        found.append("Only one batch has a resolved target.")
    ba, bb = a.get("time_median_s"), b.get("time_median_s")
    if _number(ba) and _number(bb) and ba > 0 and bb > 0 and (
            max(ba, bb) / min(ba, bb) - 1 > BASELINE_TIME_TOLERANCE):
        found.append(f"The baseline times differ by more than "
                     f"{BASELINE_TIME_TOLERANCE * 100:g} %: {ba:.4g} s in the first batch, "
                     f"{bb:.4g} s in the second; the machine's speed was not the same.")
    return found


def _calibration_warnings(a: BatchResults, b: BatchResults) -> list[str]:
    ca = a.provenance.get("calibration") or a.baseline.get("calibration")
    cb = b.provenance.get("calibration") or b.baseline.get("calibration")
    if not isinstance(ca, dict) or not isinstance(cb, dict):
        return [] if ca is None and cb is None else [
            "Only one batch records its calibration."]
    found = []
    if ca.get("measured_at") != cb.get("measured_at"):
        found.append(f"The calibrations were measured at different times "
                     f"({ca.get('measured_at')} and {cb.get('measured_at')}): the speedups "
                     "are judged against different measurements of the baseline and tiers.")
    if ca.get("source") != cb.get("source"):
        found.append(f"One calibration came from {ca.get('source')}, the other from "
                     f"{cb.get('source')}.")
    return found


def _setup_sentence(difference: str) -> str:
    """``provenance.differences``' ``commit: 1a2b then, 3c4d now`` as a sentence."""
    if m := re.fullmatch(r"(.+?): (.*) then, (.*) now", difference):
        key, first, second = m.groups()
        what = {"commit": "The commit", "CPU": "The CPU", "sandbox": "The sandbox",
                "CPUs": "The number of usable CPUs"}.get(key, f"The {key} version")
        return f"{what} differs: {first} in the first batch, {second} in the second."
    return f"The setups differ: {difference}."


def fairness_warnings(a: BatchResults, b: BatchResults, varied: set[str]) -> list[str]:
    """What differs between batches ``a`` and ``b`` beyond the ``varied`` configuration
    keys, as plain sentences: other configuration keys (less ``NEVER_MATTER``), the
    target and the baseline time (by more than 10 %), the calibration (when and where it
    was measured) and the setup (``provenance.differences``: the commit, the CPU, the
    sandbox, the versions).  Empty when nothing does."""
    found = _config_warnings(a.config, b.config, varied | {"isolation"})
    found += _baseline_warnings(a.baseline, b.baseline)
    found += _calibration_warnings(a, b)
    if a.provenance and b.provenance:
        found += [_setup_sentence(d) for d in provenance.differences(a.provenance,
                                                                       b.provenance)]
    elif a.config.get("isolation") != b.config.get("isolation"):
        found.append(f"The sandbox differs: {_shown(a.config.get('isolation'))} in the first "
                     f"batch, {_shown(b.config.get('isolation'))} in the second.")
    return found


# ---- tables --------------------------------------------------------------------------------
def _times(value: Any) -> str:
    """A speedup, to three or four significant figures: 85.3x, 1.19x."""
    return "–" if not _number(value) else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def _with_interval(value: Any, ci: Any, shown: Any) -> str:
    ok = isinstance(ci, list | tuple) and len(ci) == 2 and all(map(_number, ci))
    return shown(value) + (f" ({shown(ci[0])}–{shown(ci[1])})" if ok else "")


def _speedup(value: Any, ci: Any) -> str:
    text = _with_interval(value, ci, _times)
    return re.sub(r"x–", "–", text)  # 1.00–20.1x, not 1.00x–20.1x


def speedup_text(t: dict[str, Any]) -> str:
    """``geometric mean 5.20x (1.00–20.1x), harmonic mean 1.90x (1.00–5.00x)`` from
    figures with ``summary.speedup_figures``' keys; ``none measured`` without one."""
    if not _number(t.get("geomean_speedup")):
        return "none measured"
    geometric = _speedup(t["geomean_speedup"], t.get("geomean_speedup_ci95"))
    harmonic = _speedup(t.get("harmonic_mean_speedup"), t.get("harmonic_mean_speedup_ci95"))
    return f"geometric mean {geometric}, harmonic mean {harmonic}"


def attempt_ks(n: int) -> list[int]:
    """The k a table shows out of 1..n: each up to 10, then 20, 50, 100, 200, 500... and n."""
    ks = list(range(1, min(n, 10) + 1))
    step = 20
    while step < n:
        ks.append(step)
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return ks + ([n] if n > 10 else [])


def attempt_lines(table: Sequence[dict[str, Any]], n: int) -> list[str]:
    """One batch's attempt table (``significance.attempt_table``) in markdown."""
    if not table:
        return ["- none: no run to count"]
    ks = set(attempt_ks(len(table)))
    return [f"Unbiased estimates (Chen et al.) from the {n} runs the pass rate counts: "
            "pass@k, the chance that at least one of k runs passes; pass^k, that all k "
            "pass.", "", "| k | pass@k | pass^k |", "|---|---|---|",
            *(f"| {row['k']} | {row['pass_at_k']:.3f} | {row['pass_hat_k']:.3f} |"
              for row in table if row["k"] in ks)]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:160]


def _component(c: dict[str, Any]) -> str:
    if c.get("function") == "error":
        return "error"
    approach = f": {c['approach']}" if c.get("approach") else ""
    return _cell(f"{_times(c.get('ratio'))}, {c.get('function')}{approach}")


def strategy_lines(runs: Sequence[RunRecord]) -> list[str]:
    """A row per run with a strategy analysis (``RunRecord.strategy``), a column per
    component (in the order first seen): ``12.3x, same``, ``40.1x, different:
    z-score`` or ``error``; a run whose analysis failed says why.  Then a line saying
    the analysis is advisory."""
    def components(r: RunRecord) -> list[dict[str, Any]]:
        found = r.strategy.get("components") if isinstance(r.strategy, dict) else None
        return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []
    analysed = [r for r in runs if isinstance(r.strategy, dict) and r.strategy]
    names = list(dict.fromkeys(str(c.get("name")) for r in analysed for c in components(r)))
    columns = names or ["analysis"]
    lines = ["| run | verdict | in short | " + " | ".join(map(_cell, columns)) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for r in analysed:
        by_name = {str(c.get("name")): _component(c) for c in components(r)}
        cells = [by_name.get(name, "–") for name in columns]
        short = _cell(str(r.strategy.get("note") or "–"))
        if "components" not in r.strategy:
            short = _cell(f"analysis failed: {r.strategy.get('error') or 'unknown'}")
            cells = ["–"] * len(columns)
        lines.append(f"| {r.run_id} | {r.status} | {short} | " + " | ".join(cells) + " |")
    return [*lines, "", ADVISORY]


# ---- the report ----------------------------------------------------------------------------
def _label(arm: str | None) -> str:
    return "all runs" if arm is None else _cell(arm)


def _figure_cells(f: dict[str, Any]) -> str:
    def percent(v: Any) -> str:
        return f"{v:.1%}"

    def score(v: Any) -> str:
        return f"{v:.3f}"
    rate = (_with_interval(f["pass_rate"], f["pass_rate_ci95"], percent)
            if f["pass_rate"] is not None else "–")
    mean = (_with_interval(f["mean_score"], f["mean_score_ci95"], score)
            if f["mean_score"] is not None else "–")
    steps = "–" if f["mean_steps"] is None else f"{f['mean_steps']:.1f}"
    cost = "unknown" if f["cost_usd"] is None else f"${f['cost_usd']:.4f}"
    return (f"{f['counted']} | {f['passed']} | {rate} | {mean} | "
            f"{_speedup(f['geomean_speedup'], f['geomean_speedup_ci95'])} | "
            f"{_speedup(f['harmonic_mean_speedup'], f['harmonic_mean_speedup_ci95'])} | "
            f"{steps} | {cost}")


_HEADER = ("runs counted | passed | pass rate (95 % Wilson) | mean score (95 % bootstrap) | "
           "geometric mean speedup (95 %) | harmonic mean speedup (95 %) | mean steps | cost")


def _attempt_table(rows: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    ks = attempt_ks(max((len(f["attempts"]) for _, _, f in rows), default=0))
    if not ks:
        return ["- none: no run to count"]
    lines = ["| arm | problem | " + " | ".join(f"k={k}" for k in ks) + " |",
             "|---|---|" + "---|" * len(ks)]
    for arm, problem, f in rows:
        cells = [f"{f['attempts'][k - 1]['pass_at_k']:.2f} / "
                 f"{f['attempts'][k - 1]['pass_hat_k']:.2f}"
                 if k <= len(f["attempts"]) else "not available" for k in ks]
        lines.append(f"| {arm} | {problem} | " + " | ".join(cells) + " |")
    return lines


def _comparisons(parts: Sequence[Part], seed: int = 0) -> list[dict[str, Any]]:
    """Each arm after the first against the first, over all its problems' runs."""
    arms = [(arm, _runs([p for ps in problems.values() for p in ps]))
            for arm, problems in _arms(parts).items()]
    return [{"arm": arm, "against": arms[0][0], **compare_arms(runs, arms[0][1], seed)}
            for arm, runs in arms[1:]]


def _p(value: Any) -> str:
    return "–" if value is None else sig.p_text(value).removeprefix("p = ")


def _comparison_lines(c: dict[str, Any]) -> list[str]:
    def points(v: Any) -> str:
        return f"{v * 100:+.1f}"

    def plain(v: Any) -> str:
        return f"{v:+.3f}"

    def interval(ci: Any, shown: Any, unit: str = "") -> str:
        return "–" if not ci else f"{shown(ci[0])} to {shown(ci[1])}{unit}"
    rate, score = c["pass_rate_difference"], c["mean_score_difference"]
    return [f"### {_label(c['arm'])} against {_label(c['against'])}", "",
            f"- {c['pass_rate_sentence']}", f"- {c['score_sentence']}", "",
            "| figure | difference | 95 % interval | test | p | runs per arm for 80 % power |",
            "|---|---|---|---|---|---|",
            f"| pass rate | {'–' if rate is None else points(rate) + ' points'} | "
            f"{interval(c['pass_rate_difference_ci95'], points, ' points')} (Newcombe) | "
            f"Fisher exact | "
            f"{_p(c['fisher_p'])} | {c['runs_per_arm_pass_rate'] or '–'} |",
            f"| mean score | {'–' if score is None else plain(score)} | "
            f"{interval(c['mean_score_difference_ci95'], plain)} (bootstrap) | permutation | "
            f"{_p(c['permutation_p'])} | {c['runs_per_arm_score'] or '–'} |", ""]


def render_report(parts: Sequence[Part], title: str, varied: str | None,
                  warnings: Sequence[str], plot: str | None) -> str:
    """The group's report in markdown: the warnings (when any), what was varied, the
    picture (``plot``, relative to the report), a row per arm, a row per arm and problem
    when there are several problems, the attempt table, and each arm after the first
    compared with the first (each difference is the later arm's figure less the
    first's)."""
    groups = group_figures(parts)
    several = any(len(g["problems"]) > 1 for g in groups)
    lines = [f"# {title}", ""]
    if warnings:
        lines += ["**Warnings**: these batches differ in more than what was varied.", "",
                  *(f"- {w}" for w in warnings), ""]
    if varied:
        lines += [f"- Varied: `{varied}`"]
    lines += [f"- Problems: {', '.join(dict.fromkeys(p.problem for p in parts))}"]
    if plot:
        lines += ["", f"![the arms]({plot})"]
    lines += ["", "## Arms", "", f"| arm | {_HEADER} |", "|---|" + "---|" * 8,
              *(f"| {_label(g['arm'])} | {_figure_cells(g['suite'])} |" for g in groups)]
    if several:
        lines += ["", "Pooled over the problems; pass@k below is averaged over them.",
                  "", "## Problems", "", f"| arm | problem | {_HEADER} |",
                  "|---|---|" + "---|" * 8,
                  *(f"| {_label(g['arm'])} | {_cell(row['problem'])} | {_figure_cells(row)} |"
                    for g in groups for row in g["problems"])]
    rows = [(_label(g["arm"]), _cell(row["problem"]), row)
            for g in groups for row in g["problems"]]
    if several:
        rows += [(_label(g["arm"]), "mean over problems", g["suite"]) for g in groups]
    lines += ["", "## Attempts", "",
              "pass@k / pass^k: unbiased estimates (Chen et al.) of the chance that at least "
              "one, and that all, of k runs pass, from the runs the pass rate counts.", "",
              *_attempt_table(rows)]
    if comparisons := _comparisons(parts):
        lines += ["", "## Comparison", "",
                  "Each difference is the later arm's figure less the first arm's; a run "
                  "not passed scores 0. The intervals and the tests are separate methods: "
                  "near the 5 % line an interval can just exclude 0 while p is just above "
                  "0.05. Significance is the test's verdict.", ""]
        for c in comparisons:
            lines += _comparison_lines(c)
    return "\n".join(lines).rstrip("\n") + "\n"


def report_json(parts: Sequence[Part], varied: str | None,
                warnings: Sequence[str]) -> dict[str, Any]:
    """The report's figures for ``experiment.json``: ``{"varied", "warnings", "arms":
    group_figures(parts), "comparisons": [{"arm", "against", **compare_arms}]}``."""
    return {"varied": varied, "warnings": list(warnings), "arms": group_figures(parts),
            "comparisons": _comparisons(parts)}
