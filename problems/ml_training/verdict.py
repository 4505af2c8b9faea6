"""The verdict of an ML-training grading, as one pure function of what was observed.

:func:`judge` takes the static stage's checks, the machine's figures (``ladder``) and
what the grading session observed (``session.Session``: the executions, their data
sets, the oracle's answers and the training evidence) and returns the
:class:`problem.GradeResult`: every named check in order, the figures, and the
operator's details.  It measures nothing; the checks themselves are
``runtime_checks``, ``model_checks`` and ``probes``.
"""

from __future__ import annotations

import statistics

from problem import Check, GradeResult
from problems.ml_training import model_checks, probes, runtime_checks, training_checks
from problems.ml_training.evidence import TrainingBasis
from problems.ml_training.execution_report import ExecutionReport
from problems.ml_training.ladder import Figures
from problems.ml_training.session import Session
from problems.ml_training.spec import GradingOptions, TaskSpec

# report fields left out of the operator's record (arrays: the run's files keep them)
BULKY_REPORT_KEYS = ("eval_predictions", "eval_inputs", "eval_weights", "features",
                     "eval_logits", "model_probe_votes")


def first_failure(checks: list[Check]) -> Check:
    """One check over every execution: the first that failed, else the first."""
    return next((c for c in checks if not c.passed), checks[0])


def judge(spec: TaskSpec, opts: GradingOptions, fig: Figures, checks: list[Check],
          session: Session) -> GradeResult:
    """The verdict on what a grading session observed: the static stage's ``checks``,
    then every runtime check, in order.  Pure: it measures nothing."""
    result, datasets, answers = session.result, session.datasets, session.answers
    training, tampered = session.training, session.tampered
    execs = result.executions
    first = execs[0]
    times = result.times
    median = result.median
    speedup, ci = fig.speedup(times, session.units)
    s = spec
    feat, model, predictor = s.features, s.model, s.predictor
    if model is not None:
        # The model's predictions as the grader computes them from its weights and
        # inputs: what is scored, whatever the execution reported.
        computed = [model_checks.model_outputs(
            e.report, model.forward, model.cls, shapes=model.weights or None,
            width=model.inputs or None, max_rows=model.eval_rows or None)
            for e in execs]
    else:
        # A fitted forest is not the grader's to recompute: what its predict returned
        # is scored, and its inputs must be the test images' features (model_inputs).
        computed = [(Check("model_outputs", True, f"{predictor}.predict's output is "
                           "scored (the grader cannot recompute this estimator)",
                           skipped=True),
                     list(e.report.eval_predictions) if e.report else None)
                    for e in execs]
    pairs = [(ds.accuracy(mine), answers[ds.key].accuracy)
             for (_, mine), ds in zip(computed, datasets, strict=False)]
    measured = [a for a, _ in pairs if a is not None]
    out = GradeResult(passed=False, checks=checks, speedup=speedup,
                      baseline_time=fig.baseline.median, candidate_time=median,
                      candidate_times=times,
                      accuracy=statistics.mean(measured) if measured else None,
                      baseline_accuracy=statistics.mean(o for _, o in pairs),
                      target=fig.target, target_rule=fig.rule, speedup_ci95=ci)
    out.details = {
        "executed": True, "semantics": opts.semantics, "executions": len(execs),
        "repeats_requested": opts.repeats, "baseline_times": fig.baseline.times,
        "reference_speedup": fig.reference_speedup, "speedup_ceiling": fig.ceiling,
        "time_min": min(times) if times else None,
        "time_max": max(times) if times else None, "tampered_files": tampered,
        "per_execution": [
            {"seed": ds.seed, "labelling": ds.labelling, "time": e.time,
             "observed_time": e.observed_time, "cpu_time": e.cpu_time,
             "wall_time": round(e.wall_time, 3), "accuracy": acc,
             "original_accuracy": orig, **e.timing_record()}
            for e, ds, (acc, orig) in zip(execs, datasets, pairs, strict=False)],
        "isolation": first.isolation, "cpu_limit": first.cpu_limit,
        "report": first.report.to_json(omit=BULKY_REPORT_KEYS) if first.report else None,
        "stdout_tail": first.stdout[-4000:], "stderr_tail": first.stderr_tail,
    }
    crashed = any(not e.ok for e in execs)
    checks += [runtime_checks.runs_cleanly(execs), runtime_checks.baseline_integrity(tampered)]
    if crashed:
        out.details["skipped_after_crash"] = True
        out.score = 0.0
        return out
    visible = datasets[0].visible_accuracy(list(first.report.eval_predictions)
                                           if first.report else None)
    setup = model.setup if model is not None else s.estimator.setup
    checks += [
        runtime_checks.output_patterns(first.stdout, s.output_patterns),
        probes.components_exercised(first.report, s.probes),
        setup(first.report),
        runtime_checks.fresh_inputs(execs, s.data_function),
        first_failure([check for check, _ in computed]),
        first_failure([model_checks.inputs_are_features(
            e.report, ds.test_rows, feat.label, predictor)
            for e, ds in zip(execs, datasets, strict=False)]),
        model_checks.features_from_images(
            [(ds.seed, ds.labelling, e.report) for e, ds in zip(execs, datasets,
                                                                 strict=False)],
            feat.label),
        runtime_checks.accuracy_measured(first.stdout, visible),
        runtime_checks.determinism(execs, opts.repeats),
        runtime_checks.accuracy(pairs, opts.accuracy_tolerance, opts.accuracy_upper_margin),
    ]
    if model is not None:
        checks.append(training_checks.decided([
            trained_weights(spec, e.report, training.get(ds.key), opts)
            for e, ds in zip(execs, datasets, strict=False)]))
    else:
        checks.append(training_checks.decided([
            fitted_model(spec, e.report, training.get(ds.key))
            for e, ds in zip(execs, datasets, strict=False)]))
    if opts.strict:
        want = answers[datasets[0].key].probes
        components = [("features", feat.label)]
        if model is not None:
            components += [(name, f"{model.cls}.{name}") for name in model.submodules]
            components.append(("logits", f"{model.cls}.forward (same weights)"))
        for name, label in components:
            checks.append(runtime_checks.strict_component(
                name, label, first.probes, want, opts.strict_rtol, opts.strict_atol))
        # and on what the pipeline itself computed in the timed run
        checks.append(first_failure([model_checks.pipeline_features(
            e.report, answers[ds.key].report, feat.label, opts.strict_rtol,
            opts.strict_atol) for e, ds in zip(execs, datasets, strict=False)]))
        if model is not None:
            checks.append(first_failure([model_checks.pipeline_logits(
                e.report, model.forward, model.cls, opts.strict_rtol, opts.strict_atol,
                shapes=model.weights or None, width=model.inputs or None,
                max_rows=model.eval_rows or None) for e in execs]))
    checks += [
        runtime_checks.self_reported_time(first.stdout, first.time),
        runtime_checks.speedup_plausible(speedup, fig.ceiling, fig.reference_speedup),
        runtime_checks.speedup_target(speedup, fig.target, len(times), fig.rule, ci),
    ]
    if len(execs) < min(opts.repeats, len(datasets)) and checks[-1].passed:
        # stopped early for running far below the target, then judged above it (the
        # closing strict-tier run moved its ratio): fewer executions than requested
        # never pass
        checks[-1] = Check("speedup_target", False,
                           f"{checks[-1].message}, but only {len(execs)} of "
                           f"{opts.repeats} requested executions ran: the grader "
                           "stopped when the first ran far below the target")
    out.passed = not any(c.decisive_failure for c in checks)
    out.score = fig.ladder.score(speedup, out.passed) if fig.ladder else None
    return out


def fitted_model(spec: TaskSpec, report: ExecutionReport | None,
                 basis: TrainingBasis | None) -> Check:
    est = spec.estimator.cls
    if basis is None or basis.report is None:
        why = basis.why if basis else "no run of the original to compare with"
        return Check("fitted_model", False, f"{est}'s predictions could not be checked: "
                                            f"{why}")
    return training_checks.same_predictions(report, basis.report, est,
                                         replayed=basis.replayed)

def trained_weights(spec: TaskSpec, report: ExecutionReport | None,
                    basis: TrainingBasis | None, opts: GradingOptions) -> Check:
    model = spec.model.cls
    if basis is None or basis.report is None:
        why = basis.why if basis else "no run of the original to compare with"
        return Check("trained_weights", False, f"{model}'s trained weights could not be "
                                               f"checked: {why}")
    return training_checks.same_training(report, basis.report, model,
                                      opts.weights_tolerance, replayed=basis.replayed,
                                      replays=basis.replays, shortcut=basis.shortcut)
