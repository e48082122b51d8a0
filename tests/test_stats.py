"""Paired statistics (``bsrnn.metrics.stats``) against scipy and numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, ttest_rel

from bsrnn.metrics.stats import paired_difference, sign_test, t_half_width


def test_the_interval_of_1_2_3_4_5_is_the_hand_computed_one():
    # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.7764451; half-width = 2.7764451 * 1.5811388 / sqrt(5)
    assert t_half_width([1, 2, 3, 4, 5]) == pytest.approx(1.9632432, abs=1e-6)
    change = paired_difference([0, 0, 0, 0, 0], [1, 2, 3, 4, 5])
    assert (change.mean, change.ci_low, change.ci_high) == pytest.approx((3.0, 3 - 1.9632432, 3 + 1.9632432))


@pytest.mark.parametrize("seed, size", [(0, 2), (1, 8), (2, 40), (3, 824)])
def test_the_interval_is_scipys_paired_t_interval(seed, size):
    rng = np.random.default_rng(seed)
    before = rng.normal(2.0, 0.5, size)
    after = before + rng.normal(0.3, 0.2, size)
    expected = ttest_rel(after, before).confidence_interval(0.95)
    change = paired_difference(before, after)
    assert change.files == size
    assert (change.ci_low, change.ci_high) == pytest.approx((expected.low, expected.high), rel=1e-10)


def test_counts_and_the_sign_test_drop_ties():
    change = paired_difference([1.0, 1.0, 1.0, 1.0, 2.0], [2.0, 2.0, 0.5, 1.0, 2.0])
    assert (change.better, change.worse, change.ties, change.files) == (2, 1, 2, 5)
    assert change.sign_test_p == pytest.approx(binomtest(2, 3).pvalue)


@pytest.mark.parametrize("better, worse", [(0, 1), (3, 7), (5, 5), (39, 1), (0, 12), (400, 424), (10, 990)])
def test_sign_test_p_values_are_scipys_exact_binomial_ones(better, worse):
    assert sign_test(better, worse) == pytest.approx(binomtest(better, better + worse).pvalue, rel=1e-12)


def test_no_untied_pair_gives_p_1_and_negative_counts_are_refused():
    assert sign_test(0, 0) == 1.0
    with pytest.raises(ValueError):
        sign_test(-1, 3)


def test_pairs_with_a_nan_on_either_side_are_left_out():
    change = paired_difference([1.0, math.nan, 2.0, 3.0], [2.0, 5.0, math.nan, 5.0])
    assert change.files == 2 and change.mean == pytest.approx(1.5) and change.better == 2
    assert change.ci_half_width == pytest.approx(t_half_width([1.0, 2.0]))


def test_one_pair_has_a_mean_but_no_interval_and_none_has_neither():
    one = paired_difference([1.0], [1.5])
    assert one.mean == 0.5 and math.isnan(one.ci_half_width)
    none = paired_difference([math.nan], [1.0])
    assert none.files == 0 and math.isnan(none.mean) and none.sign_test_p == 1.0


def test_arrays_of_other_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [1.0])
