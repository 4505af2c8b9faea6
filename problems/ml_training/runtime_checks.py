"""Checks on what a candidate did when it ran, each returning one :class:`problem.Check`.

They judge figures the harness measured itself (``timing``): exit status,
the runner's counts of rows through the required components, the model's eval-mode
predictions, the grader's own clock.  Printed output is only compared against those
figures, never believed.  The static stage is ``problems.ml_training.static_checks``.
"""

from __future__ import annotations

import re
from typing import Any

from problem import Check
from problems.ml_training.execution_report import ExecutionReport, ProbeOutputs
from problems.ml_training.timing.executor import Execution

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


def accuracy_measured(stdout: str, visible: float | None) -> Check:
    """The printed accuracy is what the model's predictions score against the labels the
    pipeline was handed (a cross-check of the output contract; quality is judged by
    :func:`accuracy` on labels the pipeline never saw)."""
    name = "accuracy_measured"
    if visible is None:
        return Check(name, False, "the model's eval-mode predictions do not cover the test "
                                  "rows (same split and test order?)")
    printed = ACCURACY_RE.findall(stdout)
    if not printed:
        return Check(name, False, "no 'Test accuracy:' line printed")
    if abs(float(printed[-1]) - visible) > 1e-3:
        return Check(name, False, f"printed accuracy {float(printed[-1]):.4f} differs from the "
                                  f"{visible:.4f} the model's predictions score on the test "
                                  "rows it was given")
    return Check(name, True, f"printed accuracy matches the predictions ({visible:.4f})")


def fresh_inputs(execs: list[Execution], function: str) -> Check:
    """Each execution took its data from the data function the grader supplies."""
    missing = [i + 1 for i, e in enumerate(execs) if not (e.report and e.report.data_calls)]
    if missing:
        return Check("fresh_inputs", False,
                     f"execution(s) {missing} never called {function}(): the grader hands "
                     "each execution a fresh data set through it")
    return Check("fresh_inputs", True, f"every execution used the fresh data from {function}()")


def determinism(execs: list[Execution], requested: int) -> Check:
    """Executions on the same data set give the same model output: the same prediction on
    every test row and the same sum of eval-mode logits.  Equal accuracies prove nothing,
    and neither do equal predictions alone (a barely trained model predicts one class
    whatever its weights)."""
    by_seed: dict[Any, list[ExecutionReport]] = {}
    for e in execs:
        by_seed.setdefault((e.seed, e.labelling), []).append(e.report or ExecutionReport())
    pairs = [reports for reports in by_seed.values() if len(reports) > 1]
    if not pairs:
        return Check("determinism", True, f"no two of the {len(execs)} execution(s) shared a "
                     f"data set ({requested} requested)", skipped=True)
    for reports in pairs:
        if len({r.eval_predictions for r in reports}) > 1:
            return Check("determinism", False, "the model's test predictions differ between "
                         "executions on the same data")
        if len({r.eval_checksum for r in reports}) > 1:
            return Check("determinism", False, "the model's test outputs (logits) differ "
                         "between executions on the same data")
    return Check("determinism", True, f"identical test outputs on the same data "
                 f"({sum(len(r) for r in pairs)} executions)")


def accuracy(pairs: list[tuple[float | None, float]], tolerance: float, upper: float) -> Check:
    """Every execution's accuracy on the hidden test labels against the original's on the
    same data (from the oracle): no more than ``tolerance`` below it, and not
    implausibly far above it (``upper``: a model that learned what the original could
    not is more likely reading the answers than learning)."""
    if not pairs or any(a is None for a, _ in pairs):
        return Check("accuracy", False, "no accuracy could be measured on the hidden test "
                                        "labels (the eval-mode predictions do not cover the "
                                        "test rows)")
    shown = ", ".join(f"{a:.4f} vs {o:.4f}" for a, o in pairs)
    worst = min(a - o for a, o in pairs)
    if worst < -tolerance:
        return Check("accuracy", False,
                     f"accuracy on fresh data below the original's on the same data by "
                     f"{-worst:.4f} (tolerance {tolerance:g}; candidate vs original: {shown})")
    if max(a - o for a, o in pairs) > upper:
        return Check("accuracy", False,
                     f"accuracy implausibly far above the original's on the same data "
                     f"(more than {upper:g}; candidate vs original: {shown})")
    return Check("accuracy", True, f"accuracy on fresh data within {tolerance:g} of the "
                                   f"original's on the same data (candidate vs original: {shown})")


def strict_component(name: str, label: str, candidate: ProbeOutputs | None,
                     oracle: ProbeOutputs, rtol: float, atol: float) -> Check:
    """A component's output on the grader's probe inputs, against the original's."""
    import numpy as np

    check = f"strict_{name}"
    candidate = candidate or ProbeOutputs()
    have = candidate.outputs.get(name)
    if have is None:
        error = candidate.errors.get(name, "no output")
        return Check(check, False, f"{label} could not be run on the grader's inputs: {error}")
    want = oracle.outputs[name]
    if have.shape != want.shape:
        return Check(check, False, f"{label} gave shape {list(have.shape)} on the grader's "
                                   f"inputs; the original gives {list(want.shape)}")
    if not np.allclose(have, want, rtol=rtol, atol=atol):
        err = float(np.max(np.abs(have - want) / (atol + rtol * np.abs(want))))
        return Check(check, False, f"{label} computes a different function from the "
                                   f"original's on the grader's inputs (worst element "
                                   f"{err:.1f}x the tolerance rtol={rtol:g}, atol={atol:g})")
    return Check(check, True, f"{label} matches the original on the grader's inputs "
                              f"(rtol={rtol:g}, atol={atol:g})")


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


def speedup_target(speedup: float, target: float, executions: int, rule: str = "",
                   ci: tuple[float, float] | None = None) -> Check:
    ok = speedup >= target
    basis = f" ({rule})" if rule and rule != f"{target:g}" else ""
    interval = f", 95 % interval {ci[0]:.2f}-{ci[1]:.2f}x" if ci else ""
    return Check("speedup_target", ok, f"speedup {speedup:.2f}x {'>=' if ok else '<'} target "
                 f"{target:.2f}x{basis} (median of {executions}{interval})")
