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
from collections.abc import Iterable
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
    width: float = calibration.LADDER_WIDTH  # the ladder's goal (GradingOptions.ladder_width)
    wall: Figures | None = None  # the same measurements on the wall clock (a CPU ladder's)

    def calibration(self) -> dict[str, Any]:
        """The calibration used, for the records: the figures, where each measurement came
        from, and ``measured_at``, the oldest of their times (None if any is unknown).
        ``source`` is "cache" or "measured" when all agree, else "mixed"."""
        sources = {o.source for o in self.origins.values()}
        times = [o.measured_at for o in self.origins.values()]
        quality = self.ladder.quality(self.width) if self.ladder else None
        return {"source": sources.pop() if len(sources) == 1 else "mixed" if sources else None,
                "measured_at": min(times) if times and None not in times else None,
                "quality": quality, "clock": self.clock,
                "baseline_time_s": round(self.baseline.median, 3),
                "target": self.target, "target_rule": self.rule,
                "tiers": {t.name: t.speedup for t in self.ladder.tiers} if self.ladder else {},
                "measurements": {label: o._asdict() for label, o in self.origins.items()}}

    @property
    def clock(self) -> str:
        """The clock of the ladder's units, on which a candidate's must be measured."""
        return self.ladder.clock if self.ladder is not None else "wall"

    def speedup(self, times: list[float], units: list[float] | None = None
                ) -> tuple[float | None, tuple[float, float] | None]:
        """A candidate's speedup and its 95 % interval: chained through the ladder
        (baseline to strict, strict to the candidate, side by side, ``units`` on
        :attr:`clock`) where there is one, else the ratio of medians of seconds
        (``calibration.speedup`` either way)."""
        if self.ladder is not None:
            return self.ladder.candidate_speedup(times, units or [])
        return calibration.speedup(self.baseline.times, times)

    def judged_on(self, clocks: Iterable[str]) -> Figures:
        """What a grading whose executions all have times on ``clocks`` is judged against:
        these figures, or the same measurements on the wall clock when the grading lacks
        their clock (a sandbox without a cgroup): the two clocks are never mixed."""
        if self.clock in clocks or self.wall is None:
            return self
        return self.wall

    def speedup_on(self, clock: str, units: list[float]
                   ) -> tuple[float | None, tuple[float, float] | None]:
        """The baseline-to-candidate speedup on ``clock`` alone (the baseline's units on
        it at calibration, the candidate's now), for the records beside the verdict's;
        (None, None) when either has none."""
        base = self.baseline.units_on(clock)
        if not units or not base:
            return None, None
        return calibration.speedup(base, units)

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


# a ladder asked for with at least this many executions is measured to its width
MIN_ASKED = 3


@dataclass
class Precision:
    """When a ladder measurement has enough executions: its own part of the ladder's
    interval within ``width`` either side, or ``cap`` executions.  The baseline's part
    is the strict tier's whole interval (median(baseline units) / 1); a tier's is the
    spread of its own median (its speedup's interval also carries the baseline's, which
    more tier executions cannot narrow; the ladder's quality reports the whole)."""

    width: float
    cap: int
    tier: bool = False

    @classmethod
    def of(cls, opts: GradingOptions, repeats: int, cap: int, *, tier: bool = False
           ) -> Precision | None:
        """None when fewer than 3 executions were asked for (a quick, unchecked ladder)
        or there is no width to reach."""
        if repeats < MIN_ASKED or opts.ladder_width <= 0:
            return None
        return cls(opts.ladder_width, max(cap, repeats), tier)

    def half_width(self, units: list[float]) -> float | None:
        ones = [1.0] * calibration.MIN_PRECISE_RUNS
        return calibration.half_width(ones, units) if self.tier else calibration.half_width(
            units, ones)

    def wanted(self, pairs: SideBySide, wanted: int, label: str, progress: Progress) -> int:
        """How many executions now: one more while the interval is too wide, unless at
        the cap (then why, once)."""
        width = self.half_width(pairs.units(pairs.clock()))
        if width is not None and width <= self.width:
            return wanted
        shown = f"±{width * 100:.1f} %" if width is not None else "not known yet"
        n = len(pairs.subject)
        if n < self.cap:
            progress(f"{label}: the interval is {shown} after {n} executions (goal "
                     f"±{self.width * 100:.0f} %): one more")
            return n + 1
        runs = pairs.subject + pairs.anchor_runs()
        loads = [e.load for e in runs if e.load is not None]
        cv = calibration.spread(pairs.units(pairs.clock()))
        progress(f"warning: {label}: the interval is still {shown} after {n} executions "
                 f"(goal ±{self.width * 100:.0f} %, the cap): its ratios to the strict tier varied "
                 f"by {(cv or 0) * 100:.1f} % (CV), the load average was up to "
                 f"{max(loads or [0]):.1f}, {sum(e.contended for e in runs)} of {len(runs)} "
                 "executions ran beside something else on the timing CPU. The ladder is "
                 "kept, marked poor: every summary shows it (`main.py calibrate --no-cache` "
                 "on a quieter machine measures it again)")
        return wanted


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
                             short_runs: bool = False, precision: Precision | None = None,
                             store: bool = True) -> CachedMeasurement:
        """``path``'s executions side by side with the strict tier's (the anchor: A P A P
        ... A, ``around`` anchor executions in each gap), on fresh data sets, cached.
        With ``short_runs``, a fast file gets more executions, up to
        ``opts.min_timed_seconds`` of timed work (at most ``opts.max_repeats``).  With
        ``precision``, executions are added until the ladder's interval it gives is
        within ``opts.ladder_width`` either side, or its cap is reached (then it says
        why it could not get there)."""
        anchor = self.spec.reference
        key = self.cache_key(path, label, opts)
        found, refused = (self.cache.load(key, min_runs=repeats) if opts.use_cache and store
                          else Lookup())
        if refused:
            self.progress(f"{label}: the cached measurement was refused ({refused}); "
                          "measuring again")
        if found is not None:
            self.progress(f"{label}: cached, median {found.median:.2f} s "
                          f"({len(found.times)} runs beside the strict tier)")
            return found
        self.progress(f"{label}: measuring {path.name} ({repeats} timed runs, each between "
                      f"runs of the strict tier)...")
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
            e = None
            while e is None or e.ok:
                while len(pairs.subject) < wanted:
                    datasets.append(fresh_inputs.make_dataset(
                        fresh_inputs.draw_seed(), self.spec.n_samples,
                        recipe=self.spec.recipe))
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
                # the interval on the final units (the last with the anchors after it)
                more = (precision.wanted(pairs, wanted, label, self.progress)
                        if precision is not None and e.ok else wanted)
                if more == wanted:
                    break
                wanted = more
                pairs.reopen()
        executions = pairs.subject
        if label == "baseline":
            self.baseline_executions += len(executions)
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
        on_cpu = pairs.complete_on("cpu")
        found = CachedMeasurement(
            times=[e.time for e in executions], accuracy=statistics.mean(accuracies),
            key=key, oracle_agreement=agreement, units=pairs.units(),
            anchor_times=[t for group in pairs.anchor_times() for t in group],
            measured_at=utc_now(),
            cpu_times=[e.cpu_time for e in executions] if on_cpu else [],
            cpu_units=pairs.units("cpu") if on_cpu else [],
            anchor_cpu_times=[t for group in pairs.anchor_times("cpu") for t in group]
            if on_cpu else [])
        if store:
            self.cache.store(found)
            self.measured_keys.append(key)
        return found

    async def check(self, opts: GradingOptions) -> dict[str, Any]:
        """Whether the cached ladder still holds here now: ``baseline_repeats`` baseline
        executions and a few of each tier, side by side with the strict tier as at
        calibration (nothing stored), each median ratio against the cached one within
        twice the ladder's width; and the cached ladder's own quality, since a ladder
        that was never within its width cannot be vouched for by a re-measurement."""
        check_isolation(opts)
        cached = self.cache.load(self.cache_key(self.spec.baseline, "baseline", opts)).found
        tiers = {name: self.cache.load(self.cache_key(path, f"tier-{name}", opts)).found
                 for name, path in self.spec.tiers.items() if name != calibration.STRICT_TIER}
        if cached is None or None in tiers.values():
            raise GraderError("there is no cached calibration to check on this machine: "
                              "run `main.py calibrate` first")
        links, tolerance = [], 2 * opts.ladder_width
        now = await self.measure_beside(self.spec.baseline, "check: baseline",
                                        opts.baseline_repeats, opts,
                                        around=BASELINE_ANCHORS, store=False)
        measured = [("baseline / strict", cached, now)]
        for name, path in self.spec.tiers.items():
            if name != calibration.STRICT_TIER:
                measured.append((f"{name} / strict", tiers[name], await self.measure_beside(
                    path, f"check: tier-{name}", opts.repeats, opts, around=1, store=False)))
        clock = _clock([cached, *tiers.values()])
        for link, before, after in measured:
            on = clock if after.units_on(clock) else "wall"  # both on one clock
            then, here = (statistics.median(m.units_on(on)) for m in (before, after))
            links.append({"link": link, "clock": on, "cached": round(then, 4),
                          "now": round(here, 4),
                          "deviation": round(here / then - 1, 4),
                          "holds": abs(here / then - 1) <= tolerance})
        speed = statistics.median(now.anchor_times) / statistics.median(cached.anchor_times)
        quality = (await self.ladder(opts, cached, tiers)).quality(opts.ladder_width)
        return {"problem": self.spec.name, "measured_at": cached.measured_at,
                "tolerance": tolerance, "clock": clock, "links": links, "quality": quality,
                "holds": all(x["holds"] for x in links) and quality["holds"],
                "strict_tier_seconds_now_vs_then": round(speed, 4)}

    async def baseline(self, opts: GradingOptions) -> CachedMeasurement:
        return await self.measure_beside(
            self.spec.baseline, "baseline", opts.baseline_repeats, opts,
            around=BASELINE_ANCHORS,
            precision=Precision.of(opts, opts.baseline_repeats, opts.ladder_max_repeats))

    async def tiers(self, opts: GradingOptions) -> dict[str, CachedMeasurement]:
        """Every tier but the strict one (the anchor), measured beside it (cached), until
        its own median is known within the ladder's width."""
        return {name: await self.measure_beside(
                    path, f"tier-{name}", opts.repeats, opts, around=1, short_runs=True,
                    precision=Precision.of(opts, opts.repeats, opts.max_repeats, tier=True))
                for name, path in self.spec.tiers.items() if name != calibration.STRICT_TIER}

    async def ladder(self, opts: GradingOptions, baseline: CachedMeasurement | None = None,
                     tiers: dict[str, CachedMeasurement] | None = None,
                     clock: str | None = None) -> calibration.Ladder:
        """The baseline and every tier, each measured side by side with the strict tier
        on first need (cached): speedups are chained ratios (``calibration.Ladder``), on
        ``clock`` (default: the CPU clock where every measurement has it)."""
        check_isolation(opts)
        if baseline is None:
            baseline = await self.baseline(opts)
        if tiers is None:
            tiers = await self.tiers(opts)
        clock = clock or _clock([baseline, *tiers.values()])
        ladder = calibration.Ladder(baseline.times, baseline.units_on(clock), clock=clock)
        for name in self.spec.tiers:
            if name == calibration.STRICT_TIER:
                # the anchor itself: one unit by definition; its seconds as measured
                # beside the baseline
                ladder.add(name, baseline.anchor_times, [1.0] * len(baseline.anchor_times))
            else:
                ladder.add(name, tiers[name].times, tiers[name].units_on(clock))
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
        used = {"baseline": baseline} | {f"tier-{name}": m for name, m in tiers.items()}
        origins = {label: self.origin(m) for label, m in used.items()}

        async def on(clock: str | None) -> Figures:
            ladder = await self.ladder(opts, baseline, tiers, clock)
            strict = ladder.speedup(calibration.STRICT_TIER)
            return Figures(baseline, strict, rule.resolve(ladder),
                           opts.plausibility_factor * strict, ladder, rule.text, origins,
                           opts.ladder_width)

        figures = await on(None)
        if figures.clock != "wall":
            figures.wall = await on("wall")
        return figures


def _clock(measurements: list[CachedMeasurement]) -> str:
    """The ladder's clock: the CPU clock when every measurement has its units on it (the
    sandboxes had cgroups), else the wall clock (``calibration.CLOCKS``)."""
    return "cpu" if all(m.cpu_units for m in measurements) else "wall"
