"""Difficulty that travels: the calibration ladder, target rules, intervals and the score.

A fixed speedup means different things on different machines, so a problem declares
reference solutions at named **tiers** (``vectorized``: what every seed run achieved;
``strict``: the strict reference), each timed on this machine like the baseline and
cached under the same key.  A **target rule** says where the bar is: an absolute
speedup as in the seed (``33``), a tier (``vectorized``) or a fraction of one
(``0.9*strict``); it resolves to a number on each machine.  The **score** users feed to
RL puts a verdict on a log scale, 0 at the baseline and 1 at the ``strict`` tier.
Intervals are bootstrap intervals (``scipy.stats.bootstrap``) of the ratio of medians.

This module only computes; measuring is the problem's (``problems.ml_training_optimization``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

STRICT_TIER = "strict"
# The seed's 33x sat at the speed of its "vectorised pairwise distances" runs (33-34x on
# the author's laptop): passing meant doing at least what vectorising the loops gives.
DEFAULT_TARGET_RULE = "vectorized"
_RULE = re.compile(r"^\s*(?:(?P<factor>\d+(?:\.\d+)?)\s*\*\s*)?(?P<tier>[a-z_][a-z0-9_]*)\s*$")


class RuleError(ValueError):
    """A target rule that does not parse or names no tier of the problem."""


@dataclass(frozen=True)
class TargetRule:
    """``factor`` x the speedup of ``tier`` on this machine, or ``factor`` itself."""

    text: str
    factor: float
    tier: str | None = None

    @classmethod
    def parse(cls, text: str, tiers: Sequence[str] | None = None) -> TargetRule:
        """Parse ``33``, ``vectorized`` or ``0.9*strict``; with ``tiers``, the tier must be
        one of them."""
        raw = str(text).strip()
        try:
            value = float(raw)
        except ValueError:
            value = None
        if value is not None:
            if not math.isfinite(value) or value <= 0:
                raise RuleError(f"a speedup must be a positive number, got {raw!r}")
            return cls(raw, value)
        match = _RULE.match(raw)
        if not match:
            raise RuleError(f"not a target rule: {raw!r} (a speedup such as 33, a tier such "
                            "as vectorized, or a fraction of one such as 0.9*strict)")
        factor = float(match["factor"] or 1.0)
        if factor <= 0:
            raise RuleError(f"the factor of {raw!r} must be greater than 0")
        tier = match["tier"]
        if tiers is not None and tier not in tiers:
            raise RuleError(f"unknown tier {tier!r} in {raw!r}; tiers: {', '.join(tiers)}")
        return cls(raw, factor, tier)

    def resolve(self, ladder: Ladder) -> float:
        if self.tier is None:
            return self.factor
        return self.factor * ladder.speedup(self.tier)


def speedup_interval(baseline_times: Sequence[float], candidate_times: Sequence[float],
                     confidence: float = 0.95) -> tuple[float, float] | None:
    """A bootstrap interval of median(baseline) / median(candidate), resampling both.
    A baseline measured once is taken as fixed (only the candidate's spread counts);
    None with fewer than two candidate times: no spread to resample."""
    if len(candidate_times) < 2 or not baseline_times:
        return None
    b = np.asarray(baseline_times, dtype=float)
    c = np.asarray(candidate_times, dtype=float)
    if np.ptp(b) == 0 and np.ptp(c) == 0:
        point = float(np.median(b) / np.median(c))
        return point, point
    if len(b) < 2:
        fixed = float(b[0])
        result = stats.bootstrap((c,), lambda y, axis=-1: fixed / np.median(y, axis=axis),
                                 confidence_level=confidence, n_resamples=2000,
                                 method="percentile", vectorized=True,
                                 rng=np.random.default_rng(0))
        low, high = result.confidence_interval
        return float(low), float(high)

    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    result = stats.bootstrap((b, c), ratio, confidence_level=confidence, n_resamples=2000,
                             method="percentile", vectorized=True,
                             rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return float(low), float(high)


def mean_interval(values: Sequence[float], confidence: float = 0.95
                  ) -> tuple[float, float] | None:
    """A bootstrap interval of the mean (None for fewer than two values)."""
    if len(values) < 2:
        return None
    v = np.asarray(values, dtype=float)
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    result = stats.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=2000,
                             method="percentile", rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return float(low), float(high)


@dataclass
class TierFigures:
    name: str
    times: list[float]
    time: float
    speedup: float
    speedup_ci95: tuple[float, float] | None


@dataclass
class Ladder:
    """The baseline and every tier, as measured on this machine."""

    baseline_times: list[float]
    tiers: list[TierFigures] = field(default_factory=list)

    @property
    def baseline_time(self) -> float:
        return statistics.median(self.baseline_times)

    def add(self, name: str, times: list[float]) -> None:
        median = statistics.median(times)
        self.tiers.append(TierFigures(name, times, median, self.baseline_time / median,
                                      speedup_interval(self.baseline_times, times)))

    def speedup(self, tier: str) -> float:
        for t in self.tiers:
            if t.name == tier:
                return t.speedup
        raise RuleError(f"unknown tier {tier!r}; tiers: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def score(self, speedup: float | None, passed: bool) -> float:
        """0 at the baseline, 1 at the strict tier, on a log scale; 0 if any check failed."""
        if not passed or not speedup or speedup <= 1:
            return 0.0
        return math.log(speedup) / math.log(self.speedup(STRICT_TIER))

    def to_json(self) -> dict:
        return {"baseline_time": self.baseline_time, "baseline_times": self.baseline_times,
                "tiers": [asdict(t) for t in self.tiers]}
