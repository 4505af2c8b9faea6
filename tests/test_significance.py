"""The statistics of ``significance``, each against a value worked out by hand (or from
the textbook formula, written out here) and each resampling twice with the same seed."""

from __future__ import annotations

import math

import pytest

import significance as sig

Z = 1.959963984540054  # the 97.5 % point of the standard normal


def textbook_wilson(k: int, n: int) -> tuple[float, float]:
    p, denom = k / n, 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return centre - half, centre + half


def test_wilson_interval_for_7_of_10():
    assert sig.wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-3)


def test_fisher_p_for_7_of_10_against_2_of_10():
    assert sig.fisher_p(7, 10, 2, 10) == pytest.approx(0.0698, abs=1e-3)


def test_fisher_p_is_1_for_equal_proportions():
    assert sig.fisher_p(5, 10, 5, 10) == pytest.approx(1.0)


def test_newcombe_difference_is_the_hybrid_score_formula():
    # Newcombe (1998), method 10: from each arm's Wilson interval (l, u),
    # low = d - sqrt((p1 - l1)^2 + (u2 - p2)^2), high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)
    (l1, u1), (l2, u2) = textbook_wilson(7, 10), textbook_wilson(2, 10)
    low = 0.5 - math.sqrt((0.7 - l1) ** 2 + (u2 - 0.2) ** 2)
    high = 0.5 + math.sqrt((u1 - 0.7) ** 2 + (0.2 - l2) ** 2)
    d, lo, hi = sig.newcombe_difference(7, 10, 2, 10)
    assert (d, lo, hi) == pytest.approx((0.5, low, high), abs=1e-9)
    assert (lo, hi) == pytest.approx((0.0665, 0.7398), abs=1e-4)  # worked out once


def test_newcombe_difference_is_antisymmetric_and_needs_runs():
    d, lo, hi = sig.newcombe_difference(2, 10, 7, 10)
    assert (d, lo, hi) == pytest.approx((-0.5, -0.7398, -0.0665), abs=1e-4)
    with pytest.raises(ValueError):
        sig.newcombe_difference(0, 0, 1, 2)


# ---- pass@k and pass^k -------------------------------------------------------------------
@pytest.mark.parametrize(("n", "c", "k", "at", "hat"), [
    (5, 2, 1, 0.4, 0.4),
    (5, 2, 2, 0.7, 0.1),   # 1 - C(3,2)/C(5,2) = 1 - 3/10; C(2,2)/C(5,2) = 1/10
    (5, 2, 5, 1.0, 0.0),
    (10, 7, 3, 1 - 1 / 120, 35 / 120),  # C(3,3)/C(10,3); C(7,3)/C(10,3)
])
def test_pass_at_k_and_pass_hat_k_on_small_tables(n, c, k, at, hat):
    assert sig.pass_at_k(n, c, k) == pytest.approx(at)
    assert sig.pass_hat_k(n, c, k) == pytest.approx(hat)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_is_the_binomial_formula(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert sig.pass_at_k(n, c, k) == pytest.approx(
                1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
            assert sig.pass_hat_k(n, c, k) == pytest.approx(
                math.comb(c, k) / math.comb(n, k), abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k", "at", "hat"), [
    (4, 0, 2, 0.0, 0.0),  # nothing passed
    (4, 4, 3, 1.0, 1.0),  # everything passed
    (4, 3, 2, 1.0, 0.5),  # any two runs hold a pass: exactly 1
    (4, 1, 2, 0.5, 0.0),  # fewer passes than k: pass^k exactly 0
])
def test_pass_at_k_edges_are_exact(n, c, k, at, hat):
    assert sig.pass_at_k(n, c, k) == at
    assert sig.pass_hat_k(n, c, k) == hat


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 0), (5, 2, 6), (5, 6, 1), (5, -1, 1),
                                           (0, 0, 1)])
def test_pass_at_k_refuses_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        sig.pass_at_k(n, c, k)
    with pytest.raises(ValueError):
        sig.pass_hat_k(n, c, k)


def test_attempt_table():
    table = sig.attempt_table(5, 2)
    assert [row["k"] for row in table] == [1, 2, 3, 4, 5]
    assert table[1] == {"k": 2, "pass_at_k": pytest.approx(0.7),
                        "pass_hat_k": pytest.approx(0.1)}
    assert sig.attempt_table(0, 0) == []


def test_suite_attempt_table_averages_problems_up_to_the_fewest_runs():
    table = sig.suite_attempt_table([(5, 2), (3, 3)])
    assert [row["k"] for row in table] == [1, 2, 3]
    assert table[0]["pass_at_k"] == pytest.approx((0.4 + 1.0) / 2)
    assert table[1]["pass_at_k"] == pytest.approx((0.7 + 1.0) / 2)
    assert table[1]["pass_hat_k"] == pytest.approx((0.1 + 1.0) / 2)
    assert sig.suite_attempt_table([]) == []
    assert sig.suite_attempt_table([(5, 2), (0, 0)]) == []  # a problem without a run


# ---- speedups ----------------------------------------------------------------------------
def test_speedup_means_count_a_failure_as_1x():
    # two passes at 4x and 16x, two runs not passed given as 1.0 by the caller
    m = sig.speedup_means([4.0, 1.0, 1.0, 16.0])
    assert m["geometric_mean"] == pytest.approx(64 ** 0.25)
    assert m["harmonic_mean"] == pytest.approx(4 / (1 / 4 + 1 + 1 + 1 / 16))
    for key in ("geometric_mean", "harmonic_mean"):
        low, high = m[f"{key}_ci95"]
        assert 1.0 <= low <= m[key] <= high <= 16.0
    assert sig.speedup_means([4.0, 1.0, 1.0, 16.0]) == m  # seeded


def test_speedup_means_of_one_run_or_none():
    assert sig.speedup_means([3.0]) == {"geometric_mean": pytest.approx(3.0),
                                        "geometric_mean_ci95": None,
                                        "harmonic_mean": pytest.approx(3.0),
                                        "harmonic_mean_ci95": None}
    assert set(sig.speedup_means([]).values()) == {None}
    with pytest.raises(ValueError):
        sig.speedup_means([2.0, 0.0])


def test_geometric_and_harmonic_mean():
    assert sig.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert sig.geometric_mean([None, 0.0]) is None
    assert sig.harmonic_mean([1.0, 3.0]) == pytest.approx(1.5)
    assert sig.harmonic_mean([]) is None


# ---- two groups --------------------------------------------------------------------------
A, B = [0.9, 0.8, 0.7, 0.95, 0.6, 0.85], [0.1, 0.3, 0.0, 0.2, 0.4, 0.0]


def test_bootstrap_difference_is_deterministic_and_brackets_the_difference():
    d, low, high = sig.bootstrap_difference(A, B)
    assert d == pytest.approx(sum(A) / 6 - sum(B) / 6)
    assert low < d < high
    assert sig.bootstrap_difference(A, B) == (d, low, high)
    assert sig.bootstrap_difference(A, B, seed=1) != (d, low, high)


def test_bootstrap_difference_edges():
    assert sig.bootstrap_difference([1.0, 1.0], [0.0, 0.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        sig.bootstrap_difference([1.0], [0.0, 1.0])


def test_permutation_p_is_deterministic_for_a_seed():
    assert sig.permutation_p(A, B) == sig.permutation_p(A, B)
    with pytest.raises(ValueError):  # scipy resamples groups of two or more
        sig.permutation_p([1.0], [0.0, 1.0])


def test_permutation_p_is_exact_for_few_arrangements():
    # C(6, 3) = 20 splits; only the observed one and its mirror reach |difference| 3
    assert sig.permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    # scipy's two-sided p is twice the smaller tail: C(10, 4) = 210 splits, 15 of them
    # give the four runs of the second group only zeros
    assert sig.permutation_p([0.8] * 4 + [0.0] * 2, [0.0] * 4) == pytest.approx(2 * 15 / 210)


def test_permutation_p_for_clearly_different_and_identical_samples():
    # C(20, 10) splits: sampled; the observed split is the most extreme, so p is about
    # 1 / (n_resamples + 1)
    p = sig.permutation_p([1.0] * 10, [0.0] * 10)
    assert 1e-4 <= p < 1e-3
    assert sig.permutation_p([0.5] * 4, [0.5] * 4) == 1.0


# ---- power -------------------------------------------------------------------------------
def test_runs_per_arm_for_proportions_is_the_corrected_normal_approximation():
    za, zb = Z, 0.8416212335729143
    p1, p2 = 0.7, 0.2
    mean = (p1 + p2) / 2
    n = (za * math.sqrt(2 * mean * (1 - mean))
         + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    assert 14 < n < 15  # uncorrected
    corrected = n / 4 * (1 + math.sqrt(1 + 4 / (n * 0.5))) ** 2  # Fleiss
    assert 18 < corrected < 19
    assert sig.runs_per_arm_for_proportions(0.7, 0.2) == 19 == math.ceil(corrected)
    assert sig.runs_per_arm_for_proportions(0.2, 0.7) == 19
    assert sig.runs_per_arm_for_proportions(0.4, 0.4) is None


@pytest.mark.parametrize("n", [2, 3])
def test_the_power_advice_never_contradicts_fisher_s_test(n):
    # All pass against all fail: Fisher's test is not significant at 2 or 3 runs per arm
    # (p = 0.33, 0.1), so the runs it advises must be more than were made (4 suffice).
    assert sig.fisher_p(n, n, 0, n) > 0.05 and sig.fisher_p(4, 4, 0, 4) < 0.05
    assert sig.runs_per_arm_for_proportions(1.0, 0.0) == 4


def test_runs_per_arm_for_means_uses_the_pooled_sd():
    a, b = [1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]  # means 0.75 and 0.25
    pooled_var = (0.75 + 0.75) / 6  # sums of squares 0.75 each, 6 degrees of freedom
    expected = 2 * (Z + 0.8416212335729143) ** 2 * pooled_var / 0.25
    assert sig.runs_per_arm_for_means(a, b) == math.ceil(expected)
    assert sig.runs_per_arm_for_means([0.5, 0.7], [0.7, 0.5]) is None  # no difference
    assert sig.runs_per_arm_for_means([1.0], [0.0]) is None  # no standard deviation
    assert sig.runs_per_arm_for_means([], [0.0, 1.0]) is None


@pytest.mark.parametrize(("p", "runs", "sentence"), [
    (0.003, 5, "significant at 5 % (p = 0.003)"),
    (0.0001, None, "significant at 5 % (p < 0.001)"),
    (0.0698, 24, "not significant at 5 % (p = 0.07); about 24 runs per arm would detect "
                 "a difference this large with 80 % power"),
    (1.0, None, "not significant at 5 % (p = 1); the arms show no difference to detect"),
    (None, None, "no test: too few runs"),
])
def test_significance_sentence(p, runs, sentence):
    assert sig.significance_sentence(p, runs) == sentence


def test_significance_sentence_at_another_level():
    assert sig.significance_sentence(0.02, 30, alpha=0.01, power=0.9) == (
        "not significant at 1 % (p = 0.02); about 30 runs per arm would detect a "
        "difference this large with 90 % power")
