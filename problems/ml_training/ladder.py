"""How the machine's figures are measured: the baseline and every tier, side by side
with the strict tier, cached, and the target they resolve.

A :class:`Bench` measures one task's files on this machine (:meth:`Bench.figures`: the
baseline, the calibration ladder, the target and the plausibility ceiling, and where
each measurement came from: :meth:`Figures.calibration`).  What a target rule means
and how ratios chain is ``calibration``'s (pure); the executions are ``timing``'s;
grading a candidate against the figures is ``grading``'s.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from problem import GraderError, TargetRule
from problems.ml_training import calibration, fresh_inputs, oracle
from problems.ml_training.fresh_inputs import DataSet
from problems.ml_training.spec import (
    PROBLEM_DATA,
    GradingOptions,
    Progress,
    TaskSpec,
    check_isolation,
)
from problems.ml_training.timing.cache import BaselineCache, CachedMeasurement, Lookup
from problems.ml_training.timing.executor import Executor
from problems.ml_training.timing.side_by_side import SideBySide
from provenance import utc_now
from sandbox import heartbeat

# strict-tier executions before and after each baseline execution (they are short, it is
# long: several spread the snapshot of the machine's speed they take)
BASELINE_ANCHORS = 4
# a tier is measured once per machine and cached: it gets this many times a grading's
# timed work (the vectorized tier: about 10 executions instead of 3)
TIER_TIMED_FACTOR = 4


class Origin(NamedTuple):
    """Where a measurement the figures use came from, and when it was taken."""

    source: str  # "cache": read back; "measured": by this process
    measured_at: str | None  # ISO 8601 UTC; None: unknown (a cache entry older than that)


@dataclass
class Figures:
    """What a grading is judged against on this machine."""

    baseline: CachedMeasurement
    reference_speedup: float  # the strict tier's
    target: float
    ceiling: float
    ladder: calibration.Ladder | None = None
    rule: str = ""
    origins: dict[str, Origin] = field(default_factory=dict)  # by label: baseline, tier-NAME

    def calibration(self) -> dict[str, Any]:
        """The calibration used, for the records: the figures, where each measurement came
        from, and ``measured_at``, the oldest of their times (None if any is unknown).
        ``source`` is "cache" or "measured" when all agree, else "mixed"."""
        sources = {o.source for o in self.origins.values()}
        times = [o.measured_at for o in self.origins.values()]
        return {"source": sources.pop() if len(sources) == 1 else "mixed" if sources else None,
                "measured_at": min(times) if times and None not in times else None,
                "baseline_time_s": round(self.baseline.median, 3),
                "target": self.target, "target_rule": self.rule,
                "tiers": {t.name: t.speedup for t in self.ladder.tiers} if self.ladder else {},
                "measurements": {label: o._asdict() for label, o in self.origins.items()}}

    def speedup(self, times: list[float], units: list[float] | None = None
                ) -> tuple[float | None, tuple[float, float] | None]:
        """A candidate's speedup and its 95 % interval: chained through the ladder
        (baseline to strict, strict to the candidate, side by side) where there is one,
        else the ratio of medians of seconds (``calibration.speedup`` either way)."""
        if self.ladder is not None:
            return self.ladder.candidate_speedup(times, units or [])
        return calibration.speedup(self.baseline.times, times)

    def execution_speedup(self, seconds: float, unit: float | None) -> float:
        """One execution's speedup, for stopping early: side by side where the ladder has
        units (a slow spell of the machine is not the candidate's), else seconds."""
        ratio, _ = self.speedup([seconds], [unit] if unit is not None else [])
        return ratio or 0.0


def short_run_count(seconds: float, repeats: int, opts: GradingOptions,
                    budget: float | None = None) -> int:
    """How many executions a file whose runs take ``seconds`` gets: at least ``repeats``,
    more until about ``budget`` (default ``opts.min_timed_seconds``) of timed work, at
    most ``max_repeats``."""
    budget = opts.min_timed_seconds if budget is None else budget
    if seconds <= 0 or budget <= 0:
        return repeats
    return max(repeats, min(opts.max_repeats, math.ceil(budget / seconds)))


def answers_from(pairs: SideBySide, datasets: list[DataSet]
                 ) -> dict[tuple[int, int], oracle.OracleAnswer]:
    """The oracle's answers, from the anchor runs (each ran on a data set of
    ``datasets``; the first on each is kept, and the very first carries strict
    mode's probes).  An anchor that failed is the harness's fault: a GraderError."""
    by_key = {ds.key: ds for ds in datasets}
    answers: dict[tuple[int, int], oracle.OracleAnswer] = {}
    try:
        for run in pairs.anchor_runs():
            ds = by_key[(run.seed, run.labelling)]
            answers.setdefault(ds.key, oracle.answer(ds, run))
    except oracle.OracleError as exc:
        raise GraderError(str(exc)) from exc
    return answers


class Bench:
    """One task's measurements on this machine, on first need, cached in ``cache``."""

    def __init__(self, spec: TaskSpec, cache: BaselineCache, progress: Progress):
        self.spec, self.cache, self.progress = spec, cache, progress
        self.baseline_executions = 0  # how many times this bench ran the baseline
        self.measured_keys: list[dict[str, Any]] = []  # of what it measured (not read back)

    def cache_key(self, path: Path, label: str, opts: GradingOptions) -> dict[str, Any]:
        """Where ``path``'s measurement beside the strict tier is cached."""
        return self.cache.key(path, threads=opts.threads, label=label,
                              anchor=self.spec.reference)

    async def measure_beside(self, path: Path, label: str, repeats: int,
                             opts: GradingOptions, *, around: int,
                             short_runs: bool = False) -> CachedMeasurement:
        """``path``'s executions side by side with the strict tier's (the anchor: A P A P
        ... A, ``around`` anchor executions in each gap), on fresh data sets, cached.
        With ``short_runs``, a fast file gets more executions, up to
        ``opts.min_timed_seconds`` of timed work (at most ``opts.max_repeats``)."""
        anchor = self.spec.reference
        key = self.cache_key(path, label, opts)
        found, refused = self.cache.load(key, min_runs=repeats) if opts.use_cache else Lookup()
        if refused:
            self.progress(f"{label}: the cached measurement was refused ({refused}); "
                          "measuring again")
        if found is not None:
            self.progress(f"{label}: cached, median {found.median:.2f} s "
                          f"({len(found.times)} runs beside the strict tier)")
            return found
        self.progress(f"{label}: measuring {path.name} ({repeats} timed runs, each between "
                      f"runs of the strict tier)...")
        if label == "baseline":
            self.baseline_executions += repeats
        inst = self.spec.instrumentation()
        datasets: list[DataSet] = []
        wanted = repeats
        async with (Executor(anchor, inst, threads=opts.threads,
                             limits=opts.oracle_limits(),
                             read_only=(PROBLEM_DATA,)) as strict,
                    Executor(path, inst, threads=opts.threads,
                             limits=opts.limits(),
                             read_only=(PROBLEM_DATA,)) as own):
            pairs = SideBySide(own, strict, around=around)
            while len(pairs.subject) < wanted:
                datasets.append(fresh_inputs.make_dataset(
                    fresh_inputs.draw_seed(), self.spec.n_samples, recipe=self.spec.recipe))
                async with heartbeat(self.progress, f"{label}: timed execution "
                                      f"{len(pairs.subject) + 1}/{wanted} running"):
                    e = await pairs.step(datasets[-1].job())
                shown = f"{e.time:.2f} s" if e.ok else e.error
                self.progress(f"{label}: timed execution {len(pairs.subject)}/{wanted}: "
                              f"{shown}")
                if not e.ok:
                    break
                if short_runs and len(pairs.subject) == 1 and e.time:
                    wanted = short_run_count(e.time, repeats, opts,
                                              TIER_TIMED_FACTOR * opts.min_timed_seconds)
            await pairs.close(datasets[-1].job())
        executions = pairs.subject
        failed = [e for e in executions + pairs.anchor_runs() if not e.ok]
        predictions = [list(e.report.eval_predictions) if e.report else None
                       for e in executions]
        accuracies = [ds.accuracy(p) for ds, p in zip(datasets, predictions, strict=True)]
        if failed or None in accuracies:
            detail = failed[0].error + "\n" + failed[0].stderr_tail if failed else (
                "its predictions do not cover the test rows")
            raise GraderError(f"the {label} ({path}) could not be measured beside the "
                              f"strict tier: {detail}")
        agreement: list[float] = []
        if label == "baseline":
            # Every baseline measurement checks the oracle: on the baseline's own data sets
            # the reference (the anchor runs just before each) must predict exactly what
            # the original predicted.
            answers = answers_from(pairs, datasets)
            agreement = [oracle.agreement(answers[ds.key].predictions, p)
                         for ds, p in zip(datasets, predictions, strict=True)]
            if min(agreement) < 1.0:
                self.progress(f"warning: the oracle agrees with the original "
                              f"on only {min(agreement):.1%} of test predictions")
        found = CachedMeasurement(
            times=[e.time for e in executions], accuracy=statistics.mean(accuracies),
            key=key, oracle_agreement=agreement, units=pairs.units(),
            anchor_times=[t for group in pairs.anchor_times() for t in group],
            measured_at=utc_now())
        self.cache.store(found)
        self.measured_keys.append(key)
        return found

    async def baseline(self, opts: GradingOptions) -> CachedMeasurement:
        return await self.measure_beside(self.spec.baseline, "baseline",
                                         opts.baseline_repeats, opts,
                                         around=BASELINE_ANCHORS)

    async def tiers(self, opts: GradingOptions) -> dict[str, CachedMeasurement]:
        """Every tier but the strict one (the anchor), measured beside it (cached)."""
        return {name: await self.measure_beside(path, f"tier-{name}", opts.repeats, opts,
                                                around=1, short_runs=True)
                for name, path in self.spec.tiers.items() if name != calibration.STRICT_TIER}

    async def ladder(self, opts: GradingOptions, baseline: CachedMeasurement | None = None,
                     tiers: dict[str, CachedMeasurement] | None = None) -> calibration.Ladder:
        """The baseline and every tier, each measured side by side with the strict tier
        on first need (cached): speedups are chained ratios (``calibration.Ladder``)."""
        check_isolation(opts)
        if baseline is None:
            baseline = await self.baseline(opts)
        if tiers is None:
            tiers = await self.tiers(opts)
        ladder = calibration.Ladder(baseline.times, baseline.units)
        for name in self.spec.tiers:
            if name == calibration.STRICT_TIER:
                # the anchor itself: one unit by definition; its seconds as measured
                # beside the baseline
                ladder.add(name, baseline.anchor_times, [1.0] * len(baseline.anchor_times))
            else:
                ladder.add(name, tiers[name].times, tiers[name].units)
        return ladder

    def origin(self, found: CachedMeasurement) -> Origin:
        """Whether this bench measured ``found`` or read it back, and when it was taken."""
        return Origin("measured" if found.key in self.measured_keys else "cache",
                      found.measured_at)

    async def figures(self, opts: GradingOptions, rule: TargetRule) -> Figures:
        """Baseline, tiers and ``rule`` resolved, measured on first need (cached on
        disk; the task keeps its own options' figures in memory)."""
        check_isolation(opts)
        baseline = await self.baseline(opts)
        tiers = await self.tiers(opts)
        ladder = await self.ladder(opts, baseline, tiers)
        reference_speedup = ladder.speedup(calibration.STRICT_TIER)
        used = {"baseline": baseline} | {f"tier-{name}": m for name, m in tiers.items()}
        return Figures(baseline, reference_speedup, rule.resolve(ladder),
                       opts.plausibility_factor * reference_speedup, ladder, rule.text,
                       {label: self.origin(m) for label, m in used.items()})
