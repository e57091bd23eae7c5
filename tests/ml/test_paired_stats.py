"""The gate's statistics on contingency tables whose answers can be worked out by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ml.paired_stats import (
    PairedTable,
    _restricted_p_b,
    binomial_half_cdf,
    mcnemar_exact,
    mcnemar_mid_p,
    non_inferiority,
    score_lower_bound,
    score_statistic,
)

# --- The table ----------------------------------------------------------------------------------


def test_table_counts_each_image_by_who_got_it_right():
    active = [True, True, False, False, True, False]
    candidate = [True, False, True, True, True, False]
    table = PairedTable.from_correct(active, candidate)
    assert (table.a, table.b, table.c, table.d) == (2, 1, 2, 1)
    assert (table.n, table.active_correct, table.candidate_correct) == (6, 3, 4)
    assert table.difference == pytest.approx(1 / 6)


def test_table_refuses_answers_to_different_images():
    with pytest.raises(ValueError, match="not paired"):
        PairedTable.from_correct([True, False], [True])


# --- McNemar's exact test -----------------------------------------------------------------------


def test_binomial_tail_is_exact():
    assert binomial_half_cdf(0, 10) == 0.5**10
    assert binomial_half_cdf(2, 10) == (1 + 10 + 45) / 1024
    assert binomial_half_cdf(-1, 5) == 0.0 and binomial_half_cdf(5, 5) == 1.0
    # Large m: exact rational arithmetic, then one rounding.
    expected = Fraction(sum(math.comb(3000, i) for i in range(1401)), 2**3000)
    assert binomial_half_cdf(1400, 3000) == float(expected)


@pytest.mark.parametrize(
    ("b", "c", "two_sided", "greater", "less"),
    [
        (0, 10, 2 * 0.5**10, 0.5**10, 1.0),  # all ten discordant pairs favour the candidate
        (10, 0, 2 * 0.5**10, 1.0, 0.5**10),
        (2, 8, 2 * 56 / 1024, 56 / 1024, 1013 / 1024),  # P(X >= 8) = (45 + 10 + 1) / 2^10
        (1, 8, 2 * 10 / 512, 10 / 512, 511 / 512),
        (5, 5, 1.0, 638 / 1024, 638 / 1024),
        (0, 0, 1.0, 1.0, 1.0),  # no discordant pair: no evidence either way
    ],
)
def test_mcnemar_exact_p_values(b, c, two_sided, greater, less):
    assert mcnemar_exact(b, c) == pytest.approx(two_sided, rel=1e-12)
    assert mcnemar_exact(b, c, "greater") == pytest.approx(greater, rel=1e-12)
    assert mcnemar_exact(b, c, "less") == pytest.approx(less, rel=1e-12)


@pytest.mark.parametrize(
    ("b", "c", "mid_p"),
    [
        (0, 4, 0.5 * 1 / 16),  # P(X > 4) = 0, P(X = 4) = 1/16
        (0, 6, 0.5 * 1 / 64),
        (2, 8, (10 + 1) / 1024 + 0.5 * 45 / 1024),  # P(X > 8) + P(X = 8) / 2
        (3, 7, (45 + 10 + 1) / 1024 + 0.5 * 120 / 1024),
        (5, 0, 1 - 0.5 * 1 / 32),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_mid_p_values(b, c, mid_p):
    assert mcnemar_mid_p(b, c) == pytest.approx(mid_p, rel=1e-12)
    # Half the point probability below the exact p-value, never above it.
    assert mcnemar_mid_p(b, c) <= mcnemar_exact(b, c, "greater")


def test_mcnemar_matches_scipy():
    # scipy is a test-only dependency (requirements-dev.txt): an independent reference.
    from scipy import stats

    for b, c in [(3, 17), (16, 3), (40, 55), (0, 1)]:
        expected = stats.binomtest(c, b + c, 0.5, alternative="greater").pvalue
        assert mcnemar_exact(b, c, "greater") == pytest.approx(expected, rel=1e-9)
        expected = stats.binomtest(c, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_refuses_bad_input():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
    with pytest.raises(ValueError):
        mcnemar_mid_p(3, -1)
    with pytest.raises(ValueError, match="alternative"):
        mcnemar_exact(1, 3, "bigger")


# --- The score test for the paired difference with a margin -------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "n", "delta"),
    [(16, 3, 10000, -0.003), (16, 3, 10000, 0.001), (5, 20, 100, -0.1), (0, 10, 60, -0.05)],
)
def test_restricted_estimate_maximises_the_likelihood(b, c, n, delta):
    # The closed form against a brute-force search over every allowed p_b.
    grid = np.linspace(max(0, -delta) + 1e-9, (1 - delta) / 2 - 1e-9, 400001)
    loglik = (
        b * np.log(grid) + c * np.log(grid + delta) + (n - b - c) * np.log(1 - 2 * grid - delta)
    )
    assert _restricted_p_b(b, c, n, delta) == pytest.approx(grid[loglik.argmax()], abs=2e-6)


def test_score_statistic_at_no_difference_is_mcnemars():
    # With delta = 0 the restricted estimate is (b + c) / 2n and the statistic (c - b)/sqrt(b + c).
    assert score_statistic(16, 3, 10000, 0.0) == pytest.approx(-13 / math.sqrt(19))
    assert score_statistic(2, 8, 60, 0.0) == pytest.approx(6 / math.sqrt(10))


def test_no_discordant_pair_proves_non_inferiority_on_a_big_set():
    # b = c = 0 at delta = -0.003: p_b = 0.003, variance n * 0.003 * 0.997, z = 30 / sqrt(29.91).
    table = PairedTable(a=9960, b=0, c=0, d=40)
    assert score_statistic(0, 0, 10000, -0.003) == pytest.approx(30 / math.sqrt(29.91))
    result = non_inferiority(table, margin=0.003, alpha=0.05)
    assert result.passed and result.p_value < 1e-6


@pytest.mark.parametrize(
    ("b", "c", "margin", "passes"),
    [
        (16, 3, 0.003, True),  # -0.13 points, 19 discordant: shown under 0.3 points
        (30, 17, 0.003, True),  # -0.13 points, more churn: still shown
        (16, 3, 0.001, False),  # -0.13 points cannot be shown under 0.1
        (60, 10, 0.003, False),  # -0.5 points
        (8, 3, 0.001, False),  # -0.05 points, but 11 pairs cannot show it is under 0.1
        (8, 3, 0.002, True),
    ],
)
def test_non_inferiority_verdicts(b, c, margin, passes):
    table = PairedTable(a=9950 - b, b=b, c=c, d=50 - c)
    result = non_inferiority(table, margin=margin, alpha=0.05)
    assert result.passed is passes
    # The p-value and the one-sided bound say the same thing.
    assert (result.lower_bound > -margin) is passes
    assert result.lower_bound < table.difference


def test_lower_bound_is_where_the_score_test_stops_rejecting():
    table = PairedTable(a=9900, b=25, c=12, d=63)
    bound = score_lower_bound(table, alpha=0.05)
    assert score_statistic(25, 12, 10000, bound) == pytest.approx(1.6448536, abs=1e-6)
    wider = score_lower_bound(table, alpha=0.01)
    assert wider < bound < table.difference


def test_more_losses_only_make_non_inferiority_harder():
    p_values = [
        non_inferiority(PairedTable(9900, b, 5, 95), margin=0.003, alpha=0.05).p_value
        for b in range(0, 60, 5)
    ]
    assert p_values == sorted(p_values)


def test_non_inferiority_test_keeps_its_size_at_the_margin():
    # Simulated tables whose true loss is exactly the margin: H0 holds, so the test may pass the
    # candidate in about alpha of them and no more (the score test is near-nominal).
    rng = np.random.default_rng(12345)
    for p_b, p_c in [(0.0035, 0.0005), (0.005, 0.002)]:
        counts = rng.multinomial(10000, [p_b, p_c, 1 - p_b - p_c], size=1500)
        passed = [
            non_inferiority(
                PairedTable(a=int(r[2]), b=int(r[0]), c=int(r[1]), d=0),
                margin=p_b - p_c,
                alpha=0.05,
            ).passed
            for r in counts
        ]
        assert 0.025 < np.mean(passed) < 0.075


def test_non_inferiority_refuses_bad_settings_and_empty_sets():
    table = PairedTable(a=10, b=0, c=0, d=0)
    with pytest.raises(ValueError):
        non_inferiority(table, margin=0.003, alpha=0)
    with pytest.raises(ValueError):
        non_inferiority(table, margin=-0.1, alpha=0.05)
    assert not non_inferiority(PairedTable(0, 0, 0, 0), margin=0.003, alpha=0.05).passed
