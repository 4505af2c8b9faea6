"""Grading one candidate file of an ML-training task, as a pipeline of phases.

:func:`grade` reads as the grading does: the static gate (:func:`static_gate`, nothing
runs), the machine's figures (``ladder``), the session on fresh data side by side with
the strict tier (``session``), then the verdict (``verdict.judge``, pure).  The fresh
data sets each grading draws are :func:`fresh_datasets`.  Nothing here prints;
progress goes to a callback.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import safe_files
from problem import Check, GradeResult
from problems.ml_training import (
    calibration,
    evidence,
    fresh_inputs,
    session,
    static_checks,
    verdict,
)
from problems.ml_training.fresh_inputs import DataSet
from problems.ml_training.ladder import Figures
from problems.ml_training.spec import GradingOptions, Progress, TaskSpec, check_isolation

MAX_CANDIDATE_BYTES = 1_000_000


def static_gate(spec: TaskSpec, candidate: Path) -> tuple[list[Check], bool]:
    """The checks on the file's text (readable, parses, keeps the required names), and
    whether it may run."""
    try:  # the file itself is not followed if it is a link, nor waited on if a FIFO
        data = safe_files.read_bytes(candidate.parent, candidate.name, MAX_CANDIDATE_BYTES)
    except FileNotFoundError:
        return [Check("candidate_readable", False, f"no file at {candidate}")], False
    except OSError as exc:
        why = (f"the file is larger than {MAX_CANDIDATE_BYTES} bytes"
               if exc.errno == errno.EFBIG else f"cannot read it: {exc.strerror or exc}")
        return [Check("candidate_readable", False, why)], False
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Check("candidate_readable", False,
                      f"the file is not UTF-8 text ({type(exc).__name__})")], False
    checks = [Check("candidate_readable", True, "the file is readable text")]
    tree, parsed = static_checks.parse(source, candidate.name)
    checks.append(parsed)
    if tree is None:
        return checks, False
    checks += [
        static_checks.required_imports(tree, spec.required_imports),
        static_checks.required_definitions(tree, spec.required_classes,
                                           [spec.entry, spec.data_function]),
        static_checks.advisories(tree),
    ]
    return checks, not any(c.decisive_failure for c in checks)


def fresh_datasets(spec: TaskSpec, count: int) -> list[DataSet]:
    """Fresh data sets for ``count`` executions, in a random order.  With two or more,
    one data set is used twice, so that determinism can be judged; with three or more,
    its images are used once more under other labels, so that the features can be
    shown to depend on the images alone.  Every further execution gets fresh images.
    No execution can tell which one it is."""
    n, recipe = spec.n_samples, spec.recipe
    first = fresh_inputs.make_dataset(fresh_inputs.draw_seed(), n, recipe=recipe)
    datasets = [first, first, fresh_inputs.make_dataset(first.seed, n, labelling=1,
                                                        recipe=recipe)]
    datasets += [fresh_inputs.make_dataset(fresh_inputs.draw_seed(), n, recipe=recipe)
                 for _ in range(count - len(datasets))]
    datasets = datasets[:max(0, count)]
    random.SystemRandom().shuffle(datasets)
    return datasets


async def grade(spec: TaskSpec, opts: GradingOptions, candidate: Path, *,
                figures: Callable[[GradingOptions], Awaitable[Figures]],
                datasets: Callable[[int], list[DataSet]], say: Progress) -> GradeResult:
    """Grade ``candidate``: static gate, figures, session, verdict."""
    check_isolation(opts)
    checks, runnable = static_gate(spec, candidate)
    if not runnable:
        return GradeResult(passed=False, checks=checks, details={"executed": False})
    fig = await figures(opts)
    observed = await session.run(spec, opts, candidate, fig, datasets(opts.repeats), say)
    fig = observed.figures or fig  # on the clock every execution of the grading has
    graded = verdict.judge(spec, opts, fig, checks, observed)
    graded.details["side_by_side"] = observed.side_by_side
    # the clock the verdict used, and the speedup on each clock (benchmarks/README.md)
    graded.details["clock"] = fig.clock
    graded.details["calibration"] = fig.calibration()  # the figures it was judged on
    for clock in calibration.CLOCKS:
        ratio, ci = fig.speedup_on(clock, observed.units_by_clock.get(clock, []))
        graded.details[f"speedup_{clock}_clock"] = ratio
        graded.details[f"speedup_{clock}_clock_ci95"] = list(ci) if ci else None
    graded.details["adaptive"] = observed.adaptive
    # the data sets on which the original's training was rerun on the candidate's features
    graded.details["training_replays"] = sum(
        b.replayed and b.report is not None for b in observed.training.values())
    graded.details["training_spread"] = evidence.training_spread(observed.training)
    return graded
