"""Difficulty that travels: the calibration ladder, target rules, intervals and the score.

A fixed speedup means different things on different machines, so a problem declares
reference solutions at named **tiers** (``vectorized``: what every seed run achieved;
``strict``: the strict reference), each timed on this machine like the baseline and
cached under the same key.  A **target rule** (``problem.TargetRule``) says where the
bar is: an absolute speedup as in the seed (``33``), a tier (``vectorized``) or a
fraction of one (``0.9*strict``); it resolves to a number on each machine.  The
**score** users feed to RL puts a verdict on a log scale, 0 at the baseline and 1 at
the ``strict`` tier.
Speedups are chained ratios measured side by side (:func:`in_anchor_units`): baseline
to ``strict`` when calibrating, ``strict`` to the candidate when grading.  Intervals are
bootstrap intervals (``scipy.stats.bootstrap``) of the ratio of medians.

This module only computes; measuring is ``ladder``'s.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from problem import RuleError

STRICT_TIER = "strict"
# The seed's 33x sat at the speed of its "vectorised pairwise distances" runs (33-34x on
# the author's laptop): passing meant doing at least what vectorising the loops gives.
DEFAULT_TARGET_RULE = "vectorized"
def speedup_interval(baseline_times: Sequence[float], candidate_times: Sequence[float],
                     confidence: float = 0.95) -> tuple[float, float] | None:
    """A bootstrap interval of median(baseline) / median(candidate), resampling both.
    A baseline measured once is taken as fixed (only the candidate's spread counts);
    None with fewer than two candidate times: no spread to resample.  The times may be
    in any one unit (the ladder's are in units of the strict tier's time beside them)."""
    if len(candidate_times) < 2 or not baseline_times:
        return None
    b = np.asarray(baseline_times, dtype=float)
    c = np.asarray(candidate_times, dtype=float)
    if np.ptp(c) == 0 and (len(b) < 2 or np.ptp(b) == 0):
        point = float(np.median(b) / np.median(c))
        return point, point
    if len(b) < 2 or np.ptp(b) == 0:  # the baseline fixed: only the candidate resampled
        fixed = float(np.median(b))
        return _bootstrap((c,), lambda y, axis=-1: fixed / np.median(y, axis=axis),
                          confidence)
    if np.ptp(c) == 0:  # the candidate fixed (the strict tier's own units)
        fixed = float(c[0])
        return _bootstrap((b,), lambda x, axis=-1: np.median(x, axis=axis) / fixed,
                          confidence)
    return _bootstrap((b, c), lambda x, y, axis=-1: (np.median(x, axis=axis)
                                                     / np.median(y, axis=axis)), confidence)


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray],
               confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval every figure here uses (2000 resamples, seeded)."""
    result = stats.bootstrap(samples, statistic, confidence_level=confidence,
                             n_resamples=2000, method="percentile", vectorized=True,
                             rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return float(low), float(high)


def in_anchor_units(times: Sequence[float | None],
                    anchors: Sequence[Sequence[float]]) -> list[float]:
    """Each time divided by the median time of the anchor executions run next to it:
    ``anchors[j]`` are those just before execution j and ``anchors[j + 1]`` those just
    after it (the closing group may be missing).  Drift of the machine's speed between
    then and now cancels out of such ratios.  Executions without a time, or without an
    anchor time around them, are left out."""
    units = []
    for j, t in enumerate(times):
        around = [a for group in anchors[j:j + 2] for a in group]
        if t is not None and around:
            units.append(t / statistics.median(around))
    return units


# The clocks a ratio can be measured on: "cpu", the CPU time of the execution's sandbox
# (its cgroup) from START to END, which time the timing CPU spent on anything else does
# not move (the verdict's wherever every figure has it; caches and memory bandwidth
# shared with other CPUs still do, on both clocks); "wall", the timer's interval.
CLOCKS = ("cpu", "wall")


# A ladder is trusted when each tier's 95 % interval is within this fraction of its
# speedup either side, measured on at least MIN_PRECISE_RUNS executions of each side:
# below six, the percentile bootstrap of a median is about [min, max], which holds the
# true median only 1 - 2 * 0.5**n of the time (75 % at 3, 94 % at 5, 97 % at 6).
LADDER_WIDTH = 0.03
MIN_PRECISE_RUNS = 6


def half_width(base: Sequence[float], mine: Sequence[float]) -> float | None:
    """Half the 95 % interval of median(base)/median(mine), as a fraction of it; None
    when either side has fewer than ``MIN_PRECISE_RUNS`` figures (no honest interval)."""
    if len(base) < MIN_PRECISE_RUNS or len(mine) < MIN_PRECISE_RUNS:
        return None
    ratio, ci = speedup(base, mine)
    if not ratio or ci is None:
        return None
    return (ci[1] - ci[0]) / 2 / ratio


def spread(values: Sequence[float]) -> float | None:
    """The coefficient of variation of ``values`` (None for fewer than two)."""
    if len(values) < 2 or not statistics.mean(values):
        return None
    return statistics.stdev(values) / statistics.mean(values)


def speedup(base: Sequence[float], mine: Sequence[float]
            ) -> tuple[float | None, tuple[float, float] | None]:
    """median(base) / median(mine) and its 95 % interval: the one formula every speedup
    here is (both in seconds, or both in units of the strict tier beside them)."""
    if not base or not mine:
        return None, None
    return statistics.median(base) / statistics.median(mine), speedup_interval(base, mine)


@dataclass
class TierFigures:
    name: str
    times: list[float]  # seconds
    time: float
    speedup: float
    speedup_ci95: tuple[float, float] | None
    units: list[float] = field(default_factory=list)  # in strict-tier times (side by side)


@dataclass
class Ladder:
    """The baseline and every tier, as measured on this machine.

    Speedups are ratios measured side by side: every execution of the baseline or a tier
    ran next to executions of the ``strict`` tier (the anchor), and its ``units`` are its
    times divided by theirs.  A tier's speedup is median(baseline units) / median(its
    units), the strict tier's is median(baseline units) (its own unit is 1 by definition).
    Without units (``baseline_units`` empty) the seconds are compared directly.
    ``clock`` is what the units were measured on (``CLOCKS``); the seconds are always
    the timer's (wall) interval."""

    baseline_times: list[float]
    baseline_units: list[float] = field(default_factory=list)
    tiers: list[TierFigures] = field(default_factory=list)
    clock: str = "wall"

    @property
    def baseline_time(self) -> float:
        return statistics.median(self.baseline_times)

    def _pair(self, times: Sequence[float], units: Sequence[float] | None
              ) -> tuple[Sequence[float], Sequence[float]]:
        """The baseline's figures and these, in anchor units where both have them."""
        if self.baseline_units and units:
            return self.baseline_units, units
        return self.baseline_times, times

    def add(self, name: str, times: list[float], units: list[float] | None = None) -> None:
        """A tier's figures: its times in seconds and, side by side, in anchor units."""
        ratio, ci = speedup(*self._pair(times, units))
        self.tiers.append(TierFigures(name, times, statistics.median(times), ratio, ci,
                                      list(units or [])))

    def candidate_speedup(self, times: Sequence[float], units: Sequence[float]
                          ) -> tuple[float | None, tuple[float, float] | None]:
        """A candidate's speedup and its 95 % interval: from its anchor units when the
        ladder has them (chained: baseline to strict at calibration, strict to the
        candidate now), else from seconds."""
        return speedup(*self._pair(times, units))

    def speedup(self, tier: str) -> float:
        for t in self.tiers:
            if t.name == tier:
                return t.speedup
        raise RuleError(f"unknown tier {tier!r}; tiers: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def quality(self, width: float = LADDER_WIDTH) -> dict:
        """Whether each tier's speedup is known within ``width`` either side (its 95 %
        interval's half-width as a fraction, None: too few executions to tell), and if
        not, ``poor`` says which and why (how much the executions varied)."""
        base = self.baseline_units or self.baseline_times
        widths: dict[str, float | None] = {}
        for t in self.tiers:
            widths[t.name] = half_width(base, t.units if self.baseline_units else t.times)
        wide = {n: w for n, w in widths.items() if w is None or w > width}
        poor = None
        if wide:
            worst = ", ".join(f"{n} ±{w * 100:.1f} %" if w is not None else
                              f"{n}: fewer than {MIN_PRECISE_RUNS} executions"
                              for n, w in wide.items())
            cv = spread(base)
            poor = (f"wider than ±{width * 100:.0f} % ({worst}); the baseline's executions varied "
                    f"by {cv * 100:.1f} % (CV)" if cv is not None else
                    f"wider than ±{width * 100:.0f} % ({worst})")
        return {"width_goal": width,
                "half_widths": {n: None if w is None else round(w, 4)
                                for n, w in widths.items()},
                "holds": not wide, "poor": poor}

    def score(self, speedup: float | None, passed: bool) -> float:
        """0 at the baseline, 1 at the strict tier, on a log scale; 0 if any check failed."""
        if not passed or not speedup or speedup <= 1:
            return 0.0
        return math.log(speedup) / math.log(self.speedup(STRICT_TIER))

    def to_json(self) -> dict:
        return {"baseline_time": self.baseline_time, "baseline_times": self.baseline_times,
                "baseline_units": self.baseline_units, "clock": self.clock,
                "quality": self.quality(),
                "tiers": [dict(asdict(t), speedup_ci95=list(t.speedup_ci95)
                               if t.speedup_ci95 else None) for t in self.tiers]}
