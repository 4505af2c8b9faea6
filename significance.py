"""The statistics of hello-py's figures, over plain numbers: intervals, pass@k, speedup
means, differences between two groups of runs, their tests, and the runs a test needs.

Every interval is 95 %; every resampling is seeded, so the same numbers give the same
figures batch after batch.  scipy does the work (``binomtest``'s Wilson interval,
``fisher_exact``, ``bootstrap``, ``permutation_test``); pass@k is the unbiased estimator
of Chen et al. (2021).  Which runs count, and what a failed run contributes (a score of
0, a speedup of 1x), is the caller's to decide (``summary``, ``comparison``): nothing
here knows what a run is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval for a binomial proportion ((0, 0) when n == 0);
    ValueError when ``successes`` is outside 0..n."""
    if n == 0:
        return (0.0, 0.0)
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE,
                                                     method="wilson")
    return (float(ci.low), float(ci.high))


def _bootstrap(values: Sequence[float], statistic: Callable[..., Any], seed: int = 0
               ) -> tuple[float, float] | None:
    """A 95 % percentile bootstrap interval of ``statistic`` (vectorised, ``axis``);
    None for fewer than two values, the value itself when they are all equal."""
    if len(values) < 2:
        return None
    v = np.asarray(values, dtype=float)
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    result = stats.bootstrap((v,), statistic, confidence_level=CONFIDENCE,
                             n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """A 95 % percentile bootstrap interval of the mean (2000 resamples, seeded: the same
    values give the same interval); None for fewer than two values."""
    return _bootstrap(values, np.mean)


def geometric_mean(values: Sequence[float | None]) -> float | None:
    """The geometric mean of the positive values (None and 0 are skipped); None when
    there is none."""
    positive = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, positive)) / len(positive)) if positive else None


def harmonic_mean(values: Sequence[float]) -> float | None:
    """The harmonic mean of positive values; None for none."""
    return len(values) / sum(1.0 / v for v in values) if values else None


# ---- pass@k and pass^k ------------------------------------------------------------------
def _check(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n:
        raise ValueError(f"{c} successes out of {n} attempts")
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} is outside 1..{n} (the attempts made)")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of the chance that at least one of k attempts passes, from
    n attempts of which c passed: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), as a
    product of ratios so that no binomial coefficient is formed.  ValueError unless
    1 <= k <= n and 0 <= c <= n."""
    _check(n, c, k)
    if n - c < k:  # every choice of k attempts holds a pass
        return 1.0
    all_fail = 1.0
    for j in range(k):
        all_fail *= (n - c - j) / (n - j)
    return 1.0 - all_fail


def pass_hat_k(n: int, c: int, k: int) -> float:
    """"pass^k": the unbiased estimate of the chance that all of k attempts pass,
    C(c, k) / C(n, k) (0 when c < k).  ValueError as :func:`pass_at_k`."""
    _check(n, c, k)
    if c < k:
        return 0.0
    all_pass = 1.0
    for j in range(k):
        all_pass *= (c - j) / (n - j)
    return all_pass


def attempt_table(n: int, c: int) -> list[dict[str, float]]:
    """``[{"k", "pass_at_k", "pass_hat_k"}, ...]`` for k = 1..n (empty when n == 0)."""
    return [{"k": k, "pass_at_k": pass_at_k(n, c, k), "pass_hat_k": pass_hat_k(n, c, k)}
            for k in range(1, n + 1)]


def suite_attempt_table(counts: Sequence[tuple[int, int]]) -> list[dict[str, float]]:
    """A suite's attempt table: from each problem's (n, c), the mean over the problems
    (each weighing the same) of pass@k and pass^k, for k up to the fewest attempts any
    problem made.  Empty when there is no problem, or one made no attempt."""
    if not counts:
        return []
    tables = [attempt_table(n, c) for n, c in counts]
    return [{"k": k, "pass_at_k": float(np.mean([t[k - 1]["pass_at_k"] for t in tables])),
             "pass_hat_k": float(np.mean([t[k - 1]["pass_hat_k"] for t in tables]))}
            for k in range(1, min(n for n, _ in counts) + 1)]


# ---- speedups as the peers report them ----------------------------------------------------
def _harmonic(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.shape[axis] / np.sum(1.0 / x, axis=axis)


def speedup_means(values: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """The geometric and the harmonic mean of per-run speedups, each with a 95 % seeded
    bootstrap interval (None for fewer than two runs), as GSO, SWE-fficiency and
    AlgoTune report them: the caller gives a run that did not pass as 1.0 (no speedup).
    Every value must be positive (ValueError); no value gives None throughout."""
    if any(not v > 0 for v in values):
        raise ValueError("a speedup must be positive")
    logs = _bootstrap([math.log(v) for v in values], np.mean, seed)
    return {"geometric_mean": geometric_mean(values),
            "geometric_mean_ci95": [math.exp(x) for x in logs] if logs else None,
            "harmonic_mean": harmonic_mean(values),
            "harmonic_mean_ci95": list(h) if (h := _bootstrap(values, _harmonic, seed))
            else None}


# ---- two groups: differences and their tests -----------------------------------------------
def newcombe_difference(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """The difference of two proportions, p1 - p2, with its 95 % interval by Newcombe's
    hybrid score method (method 10 of Newcombe 1998), built from each proportion's
    Wilson interval.  ValueError when either n is 0."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("each group needs at least one attempt")
    p1, p2 = s1 / n1, s2 / n2
    (l1, u1), (l2, u2) = wilson_interval(s1, n1), wilson_interval(s2, n2)
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def fisher_p(s1: int, n1: int, s2: int, n2: int) -> float:
    """The two-sided p-value of Fisher's exact test that s1/n1 and s2/n2 come from the
    same proportion."""
    return float(stats.fisher_exact([[s1, n1 - s1], [s2, n2 - s2]]).pvalue)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_difference(a: Sequence[float], b: Sequence[float], seed: int = 0
                         ) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its 95 % percentile bootstrap interval, each group
    resampled on its own (2000 resamples, seeded).  ValueError for a group of fewer than
    two values."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each group needs at least two values to resample")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(np.mean(x) - np.mean(y))
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return d, d, d
    result = stats.bootstrap((x, y), _mean_difference, confidence_level=CONFIDENCE,
                             n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return d, float(low), float(high)


def permutation_p(a: Sequence[float], b: Sequence[float], seed: int = 0,
                  n_resamples: int = 9999) -> float:
    """The two-sided p-value of a permutation test of the difference in means (the
    runs' labels shuffled between the groups; exact when there are fewer arrangements
    than ``n_resamples``; two-sided as scipy defines it, twice the smaller tail, at most
    1).  ValueError for a group of fewer than two values."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each group needs at least two values")
    result = stats.permutation_test(
        (np.asarray(a, dtype=float), np.asarray(b, dtype=float)), _mean_difference,
        permutation_type="independent", alternative="two-sided", vectorized=True,
        n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return float(min(1.0, result.pvalue))


# ---- power -------------------------------------------------------------------------------
def _z(alpha: float, power: float) -> tuple[float, float]:
    return float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))


def _runs(n: float) -> int:
    return max(2, math.ceil(n - 1e-9))  # fewer than two runs an arm has no spread


def runs_per_arm_for_proportions(p1: float, p2: float, alpha: float = 0.05,
                                 power: float = 0.8) -> int | None:
    """Runs per arm for a two-sided test at ``alpha`` to detect p1 against p2 with
    ``power``, by the normal approximation (pooled variance under the null, unpooled
    under the alternative) with Fleiss's continuity correction, which brings it close to
    what Fisher's exact test (the one the report makes) needs: 1.0 against 0.0 needs 4
    per arm, as Fisher's does, where the uncorrected formula says 2.  Rounded up, at
    least 2; None when p1 == p2: there is no difference to detect."""
    if p1 == p2:
        return None
    za, zb = _z(alpha, power)
    mean, d = (p1 + p2) / 2, abs(p1 - p2)
    n = (za * math.sqrt(2 * mean * (1 - mean))
         + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / d ** 2
    return _runs(n / 4 * (1 + math.sqrt(1 + 4 / (n * d))) ** 2)


def runs_per_arm_for_means(a: Sequence[float], b: Sequence[float], alpha: float = 0.05,
                           power: float = 0.8) -> int | None:
    """Runs per arm for a two-sided test at ``alpha`` to detect the observed difference
    in means with ``power``: 2 (z_a + z_b)^2 s^2 / d^2, s the pooled standard deviation,
    rounded up, at least 2.  None when the difference is 0 or undefined (an empty
    group, or too few values for a standard deviation)."""
    if not len(a) or not len(b) or len(a) + len(b) < 3:
        return None
    d = float(np.mean(a) - np.mean(b))
    if d == 0 or not math.isfinite(d):
        return None
    ss = sum(float(np.sum((np.asarray(v, dtype=float) - np.mean(v)) ** 2)) for v in (a, b))
    za, zb = _z(alpha, power)
    return _runs(2 * (za + zb) ** 2 * (ss / (len(a) + len(b) - 2)) / d ** 2)


def _percent(x: float) -> str:
    return f"{x * 100:g} %"


def p_text(p: float) -> str:
    """A p-value as read: ``p = 0.07``, ``p = 0.003``, ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def significance_sentence(p_value: float | None, runs_needed: int | None,
                          alpha: float = 0.05, power: float = 0.8) -> str:
    """A test's outcome as a plain sentence: ``significant at 5 % (p = 0.003)``, or
    ``not significant at 5 % (p = 0.07); about 24 runs per arm would detect a
    difference this large with 80 % power``."""
    if p_value is None:
        return "no test: too few runs"
    if p_value < alpha:
        return f"significant at {_percent(alpha)} ({p_text(p_value)})"
    text = f"not significant at {_percent(alpha)} ({p_text(p_value)})"
    if runs_needed is None:
        return text + "; the arms show no difference to detect"
    return (text + f"; about {runs_needed} runs per arm would detect a difference this "
            f"large with {_percent(power)} power")
