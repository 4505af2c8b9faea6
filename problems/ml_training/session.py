"""A grading session: the candidate timed side by side with the strict tier on fresh
data, as many executions as the verdict needs, and the evidence gathered around them.

:func:`run` opens one warm sandbox for the strict tier and one for the candidate, and
alternates them (strict, candidate, strict, ..., strict): the strict tier's runs are
the oracle's answers and the anchor the candidate's speed is measured against.  It
stops early for a candidate far below the target, adds executions while the speedup's
interval straddles it (:func:`decide`), restores the problem's data after each
execution and gathers the training evidence (``evidence``), with a heartbeat on the
console while each of these runs.  It returns a :class:`Session`: what was observed,
judged by ``verdict``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from problem import DataGuard
from problems.ml_training import calibration, evidence, oracle
from problems.ml_training.evidence import TrainingBasis
from problems.ml_training.fresh_inputs import DataSet, draw_seed
from problems.ml_training.ladder import Figures, answers_from, short_run_count
from problems.ml_training.spec import PROBLEM_DATA, GradingOptions, Progress, TaskSpec
from problems.ml_training.timing.executor import Execution, Executor, Measurement
from problems.ml_training.timing.side_by_side import SideBySide
from sandbox import heartbeat


@dataclass
class Session:
    """What one grading session observed."""

    result: Measurement  # the candidate's executions
    datasets: list[DataSet]  # the data set of each, in order
    answers: dict[tuple[int, int], oracle.OracleAnswer]  # the original's, by data set
    training: dict[tuple[int, int], TrainingBasis] = field(default_factory=dict)
    figures: Figures | None = None  # what it is judged against (on the clock it has)
    units: list[float] = field(default_factory=list)  # in strict units, on that clock
    units_by_clock: dict[str, list[float]] = field(default_factory=dict)  # on each clock
    tampered: list[str] = field(default_factory=list)  # problem files changed and restored
    adaptive: dict[str, Any] = field(default_factory=dict)  # why this many executions
    side_by_side: dict[str, Any] = field(default_factory=dict)  # the anchor's figures


async def run(spec: TaskSpec, opts: GradingOptions, candidate: Path, fig: Figures,
              datasets: list[DataSet], say: Progress) -> Session:
    """Time ``candidate`` on ``datasets`` beside the strict tier and gather the
    evidence."""
    guard = DataGuard(PROBLEM_DATA)
    tampered: list[str] = []
    name = candidate.name

    def keep_going(e: Execution, units: list[float]) -> bool:
        """Not when it crashed or runs far below the target."""
        if not e.ok or e.time is None:
            return False
        return fig.execution_speedup(e.time, units[-1] if units else None) >= fig.target / 2

    strict_probes = spec.probe_job(draw_seed()) if opts.strict else None
    say(f"grading {name}: {len(datasets)} timed execution(s) on "
        f"{len({d.key for d in datasets})} fresh data set(s), each beside the strict "
        "tier (which gives the original's results too)")
    timeout = min(opts.timeout, max(60.0, 2 * fig.baseline.median))
    inst = spec.instrumentation()
    async with (Executor(spec.reference, inst, threads=opts.threads,
                         limits=opts.oracle_limits(), read_only=(PROBLEM_DATA,)) as reference,
                Executor(candidate, inst, threads=opts.threads, limits=opts.limits(timeout),
                         read_only=(PROBLEM_DATA,)) as own):
        pairs = SideBySide(own, reference, around=1, anchor_probes=strict_probes)
        started = time.monotonic()

        def on_clock() -> list[float]:
            """The candidate's units on the ladder's clock; none (seconds are compared)
            when an execution lacks a time on it."""
            return pairs.units(fig.clock) if pairs.complete_on(fig.clock) else []

        async def one_more(ds: DataSet) -> Measurement:
            which = (f"timed execution {len(pairs.subject) + 1}/"
                     f"{max(len(datasets), len(pairs.subject) + 1)}")
            async with heartbeat(say, f"grading {name}: {which} running"):
                e = await pairs.step(ds.job(), probes=strict_probes)
            tampered.extend(guard.restore())
            shown = f"{e.time:.3f} s" if e.ok else e.error
            say(f"grading {name}: {which}: {shown}")
            return Measurement([e])

        result = Measurement([])
        for ds in datasets:
            result.executions.extend((await one_more(ds)).executions)
            if not keep_going(result.executions[-1], on_clock()):
                break
        adaptive = await decide(result, fig, opts, datasets, one_more, units=on_clock,
                                stopped_early=len(result.executions) < len(datasets))
        await pairs.close(datasets[len(pairs.subject) - 1].job())
        side_wall = time.monotonic() - started
        answers = answers_from(pairs, datasets)
        async with heartbeat(say, f"grading {name}: checking the training"):
            training = await evidence.training_basis(spec, result, datasets, answers, opts,
                                                     say, name, reference)
    by_clock = {c: pairs.units(c) for c in calibration.CLOCKS if pairs.complete_on(c)}
    judged = fig.judged_on(by_clock)
    units = by_clock.get(judged.clock, [])
    return Session(
        result, datasets, answers, training, figures=judged, units=units,
        units_by_clock=by_clock, tampered=tampered, adaptive=adaptive,
        side_by_side={"anchor": calibration.STRICT_TIER, "clock": judged.clock,
                      "anchor_times": pairs.anchor_times(),
                      "anchor_cpu_times": pairs.anchor_times("cpu"),
                      "candidate_units": units,
                      "baseline_units": judged.ladder.baseline_units if judged.ladder else [],
                      "wall_time": round(side_wall, 3), "contention": pairs.contention()})


async def decide(result: Measurement, fig: Figures, opts: GradingOptions,
                 datasets: list[DataSet],
                 one_more: Callable[[DataSet], Awaitable[Measurement]],
                 units: Callable[[], list[float]] | None = None,
                 stopped_early: bool = False) -> dict[str, Any]:
    """More executions, in two steps.  Short runs first: a fast candidate gets
    executions until its timed work reaches ``opts.min_timed_seconds`` (single runs
    of a fraction of a second vary by about 10 % here).  Then, up to
    ``max_repeats``, while the speedup's 95 % interval straddles the target.  The
    extra executions reuse the grading's data sets in turn (their oracle answers are
    known); ``datasets`` grows to match.  ``units`` gives the candidate's times in
    the anchor's units (side by side), else seconds are used."""
    added, short, reason = 0, 0, "decided with the requested executions"
    own = list(datasets)

    def interval() -> tuple[float, float] | None:
        return fig.speedup(result.times, units() if units else [])[1]

    async def add() -> None:
        ds = own[len(result.executions) % len(own)]
        result.executions.extend((await one_more(ds)).executions)
        datasets.append(ds)

    def complete() -> bool:
        return (not stopped_early and bool(result.times)
                and len(result.times) == len(result.executions))

    if complete():
        wanted = short_run_count(statistics.median(result.times),
                                  len(result.executions), opts)
        while complete() and len(result.executions) < wanted:
            await add()
            short += 1
    while True:
        if not complete():
            reason = "not adaptive: an execution failed or stopped early"
            break
        ci = interval()
        if ci is None:
            reason = "not adaptive: too few executions for an interval"
            break
        if not ci[0] < fig.target < ci[1]:
            if added:
                reason = (f"the 95 % interval [{ci[0]:.1f}x, {ci[1]:.1f}x] no longer "
                          f"contains the target {fig.target:.1f}x")
            break
        if len(result.executions) >= opts.max_repeats:
            reason = (f"the interval [{ci[0]:.1f}x, {ci[1]:.1f}x] still contains the "
                      f"target {fig.target:.1f}x at the cap of {opts.max_repeats} "
                      "executions: decided on the median")
            break
        await add()
        added += 1
    return {"added_executions": added, "short_run_executions": short,
            "min_timed_seconds": opts.min_timed_seconds, "reason": reason}
