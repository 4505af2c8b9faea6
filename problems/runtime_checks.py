"""Checks on what a candidate did when it ran, each returning one :class:`problem.Check`.

They judge figures the harness measured itself (``problems.measurement``): exit status,
the runner's counts of rows through the required components, the model's eval-mode
predictions, the grader's own clock.  Printed output is only compared against those
figures, never believed.  The static stage is ``problems.static_checks``.
"""

from __future__ import annotations

import re
from typing import Any

from problem import Check
from problems.measurement import Execution

ACCURACY_RE = re.compile(r"Test accuracy:\s*([0-9]*\.?[0-9]+)")
FINAL_TIME_RE = re.compile(r"FINAL_TIME:\s*([0-9]*\.?[0-9]+)")


def runs_cleanly(execs: list[Execution]) -> Check:
    crashed = next((e for e in execs if not e.ok), None)
    if crashed is None:
        return Check("runs_cleanly", True, f"{len(execs)} execution(s) completed")
    lines = [line for line in crashed.stderr_tail.strip().splitlines() if line.strip()]
    last = f" ({lines[-1][:300]})" if lines else ""
    return Check("runs_cleanly", False, crashed.error + last)


def baseline_integrity(tampered: list[str]) -> Check:
    if tampered:
        return Check("baseline_integrity", False,
                     f"the candidate changed {', '.join(tampered)} (restored)")
    return Check("baseline_integrity", True, "problem data unchanged")


def output_patterns(stdout: str, patterns: tuple[str, ...]) -> Check:
    missing = [p for p in patterns if not re.search(p, stdout)]
    if missing:
        return Check("output_patterns", False, "expected output not found: " + "; ".join(missing))
    return Check("output_patterns", True, "all expected output lines present")


def components_exercised(report: dict[str, Any] | None, *, feature_rows: int, train_rows: int,
                         eval_rows: int, feature: str, model: str) -> Check:
    """The work was done: rows through the feature extractor, rows the model was trained
    on (gradients flowed back through its output) and rows it saw in eval mode."""
    r = report or {}
    problems = []
    if r.get("feature_rows", 0) < feature_rows:
        problems.append(f"{feature} processed {r.get('feature_rows', 0)} images "
                        f"(needs {feature_rows})")
    if not r.get("model_instances"):
        problems.append(f"{model} was never instantiated")
    if r.get("train_rows", 0) < train_rows:
        problems.append(f"{model} was trained on {r.get('train_rows', 0)} rows with "
                        f"gradients flowing back (needs {train_rows})")
    if r.get("eval_rows", 0) < eval_rows:
        problems.append(f"{model} saw {r.get('eval_rows', 0)} rows in eval mode "
                        f"(needs {eval_rows})")
    if problems:
        return Check("components_exercised", False, "; ".join(problems))
    return Check("components_exercised", True,
                 f"features for {r['feature_rows']} images, {r['train_rows']} training rows, "
                 f"{r['eval_rows']} eval rows")


def accuracy_measured(stdout: str, measured: float | None, have_labels: bool) -> Check:
    name = "accuracy_measured"
    if not have_labels:
        return Check(name, True, "no labels to measure against", skipped=True)
    if measured is None:
        return Check(name, False, "the model's eval-mode predictions could not be matched to "
                                  "the test labels")
    printed = ACCURACY_RE.findall(stdout)
    if not printed:
        return Check(name, False, "no 'Test accuracy:' line printed")
    if abs(float(printed[-1]) - measured) > 1e-3:
        return Check(name, False, f"printed accuracy {float(printed[-1]):.4f} differs from the "
                                  f"{measured:.4f} measured from the model's predictions "
                                  "(same split and test order?)")
    return Check(name, True, f"printed accuracy matches the measured {measured:.4f}")


def determinism(execs: list[Execution], requested: int) -> Check:
    """The same model output in every execution: the same prediction on every test row
    and the same sum of eval-mode logits.  Equal accuracies prove nothing (differing
    predictions share them by chance), and neither do equal predictions alone (a barely
    trained model predicts one class whatever its weights)."""
    if len(execs) < 2:
        return Check("determinism", True, f"only {len(execs)} of {requested} executions made "
                     "(stopped early)", skipped=True)
    reports = [e.report or {} for e in execs]
    if len({tuple(r.get("eval_predictions") or ()) for r in reports}) > 1:
        return Check("determinism", False,
                     f"the model's test predictions differ between {len(execs)} executions")
    if len({r.get("eval_checksum") for r in reports}) > 1:
        return Check("determinism", False, f"the model's test outputs (logits) differ between "
                     f"{len(execs)} executions")
    return Check("determinism", True, f"identical test outputs in {len(execs)} executions")


def accuracy(measured: float | None, baseline: float, tolerance: float) -> Check:
    if measured is None:
        return Check("accuracy", False, "no measured accuracy")
    diff = abs(measured - baseline)
    return Check("accuracy", diff <= tolerance,
                 f"accuracy {measured:.4f} vs baseline {baseline:.4f} (difference {diff:.4f}, "
                 f"tolerance {tolerance:g})")


def self_reported_time(stdout: str, measured: float | None) -> Check:
    """The printed FINAL_TIME beside the grader's own figure (advisory: the grader's
    clock decides, and honest code that imports a library at top level prints less)."""
    reported = FINAL_TIME_RE.findall(stdout)
    if not reported:
        return Check("self_reported_time", True,
                     "no FINAL_TIME printed; the grader's own time is used", advisory=True)
    value = float(reported[-1])
    return Check("self_reported_time", True,
                 f"printed {value:.3f} s; the grader measured {measured:.3f} s and uses that",
                 advisory=True)


def speedup_plausible(speedup: float, ceiling: float, reference_speedup: float | None) -> Check:
    basis = f"{reference_speedup:.1f}x reference" if reference_speedup else "fixed ceiling"
    ok = speedup <= ceiling
    return Check("speedup_plausible", ok,
                 f"speedup {speedup:.1f}x {'within' if ok else 'above'} the plausibility "
                 f"ceiling {ceiling:.1f}x ({basis})")


def speedup_target(speedup: float, target: float, executions: int) -> Check:
    ok = speedup >= target
    return Check("speedup_target", ok, f"speedup {speedup:.2f}x {'>=' if ok else '<'} target "
                 f"{target:.2f}x (median of {executions})")
