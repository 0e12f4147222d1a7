"""Interval and test functions against published values and hand-computed edge cases."""

from __future__ import annotations

import math

import pytest

from mixtral_ft.errors import MixftError
from mixtral_ft.eval.stats import (
    EmptyInputError,
    binom_cdf,
    bootstrap_interval,
    clopper_pearson_interval,
    mcnemar,
    mcnemar_chi2,
    mcnemar_exact_p,
    newcombe_paired_interval,
    proportion_interval,
    wilson_interval,
    z_value,
)

# Newcombe (1998) "Two-sided confidence intervals for the single proportion", Stat Med 17:857,
# Table II: (k, n) -> Wilson score (method 3) and Clopper-Pearson (method 5), 4 decimals.
NEWCOMBE_1998 = [
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0000, 0.1611), (0.0000, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]


@pytest.mark.parametrize("k,n,wilson,exact", NEWCOMBE_1998)
def test_intervals_match_newcombe_1998(k, n, wilson, exact):
    w = wilson_interval(k, n)
    c = clopper_pearson_interval(k, n)
    assert (round(w.low, 4), round(w.high, 4)) == wilson
    assert (round(c.low, 4), round(c.high, 4)) == exact


def test_z_value():
    assert z_value() == pytest.approx(1.959964, abs=1e-6)
    assert z_value(0.99) == pytest.approx(2.575829, abs=1e-6)


@pytest.mark.parametrize("n", [1, 5, 300])
def test_zero_and_all_successes_hit_the_bounds(n):
    zero, full = wilson_interval(0, n), wilson_interval(n, n)
    assert zero.low == 0.0 and 0 < zero.high < 1
    assert full.high == 1.0 and 0 < full.low < 1
    assert zero.high == pytest.approx(1 - full.low)  # symmetric
    cz, cf = clopper_pearson_interval(0, n), clopper_pearson_interval(n, n)
    assert cz.high == pytest.approx(1 - 0.025 ** (1 / n), abs=1e-9)  # closed form at k = 0
    assert cf.low == pytest.approx(0.025 ** (1 / n), abs=1e-9)


def test_reference_report_half_width():
    # The example: 4.5% on 300 is about +-2.3 points (the normal approximation);
    # the Wilson interval for 13/300 is asymmetric, 2.5% to 7.3%.
    wald = 1.96 * math.sqrt(0.045 * 0.955 / 300)
    assert round(100 * wald, 1) == 2.3
    w = wilson_interval(13, 300)
    assert (round(w.low, 3), round(w.high, 3)) == (0.025, 0.073)


def test_interval_input_errors():
    with pytest.raises(EmptyInputError):
        wilson_interval(0, 0)
    with pytest.raises(EmptyInputError):
        clopper_pearson_interval(0, 0)
    with pytest.raises(MixftError):
        wilson_interval(5, 4)
    with pytest.raises(MixftError, match="Did you mean 'wilson'"):
        proportion_interval(1, 2, "wilsn")


def test_binom_cdf_hand_values():
    assert binom_cdf(0, 3, 0.5) == pytest.approx(1 / 8)
    assert binom_cdf(1, 3, 0.5) == pytest.approx(4 / 8)
    assert binom_cdf(3, 3, 0.5) == 1.0


def test_mcnemar_textbook_examples():
    # Agresti, Categorical Data Analysis (2002), Table 10.1 (presidential approval, n = 1600):
    # discordant 150 and 86; uncorrected z^2 = 17.36, continuity-corrected 63^2/236 = 16.82.
    stat, p = mcnemar_chi2(150, 86)
    assert stat == pytest.approx(63 ** 2 / 236)
    assert round(stat, 2) == 16.82
    assert p == pytest.approx(4.11e-5, rel=1e-2)
    # Wikipedia's McNemar example (b = 121, c = 59): corrected chi-square 20.67.
    assert round(mcnemar_chi2(121, 59)[0], 2) == 20.67
    # Exact test by hand: b=1, c=5 -> 2 * P(X <= 1 | 6, 1/2) = 2 * 7/64.
    assert mcnemar_exact_p(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_chi2(0, 0) == (0.0, 1.0)
    assert mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar(2, 9).to_dict()["discordant_b_only"] == 9


def test_newcombe_paired_interval_matches_fagerland():
    # Fagerland, Lydersen & Laake (2017) ch. 8, Cavo et al. (2012) table [[59, 6], [16, 80]]:
    # Newcombe square-and-add estimate -0.0621, 95% CI -0.1186 to -0.0046.
    ci = newcombe_paired_interval(59, 6, 16, 80)
    assert (round(ci.low, 4), round(ci.high, 4)) == (-0.1186, -0.0046)
    assert ci.low < (6 - 16) / 161 < ci.high


def test_newcombe_paired_edge_cases():
    ci = newcombe_paired_interval(0, 0, 0, 10)  # no positives anywhere: difference 0
    assert ci.low < 0 < ci.high or (ci.low == 0 == ci.high) or (ci.low <= 0 <= ci.high)
    ci = newcombe_paired_interval(0, 10, 0, 0)  # A all positive, B none: difference 1
    assert ci.high == 1.0 and 0.5 < ci.low < 1
    with pytest.raises(EmptyInputError):
        newcombe_paired_interval(0, 0, 0, 0)


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    def share(c):
        return c[0] / sum(c)

    a = bootstrap_interval([30, 70], share)
    b = bootstrap_interval([30, 70], share)
    assert a == b
    assert a.low < 0.3 < a.high
    w = wilson_interval(30, 100)
    assert a.low == pytest.approx(w.low, abs=0.03) and a.high == pytest.approx(w.high, abs=0.03)
    assert bootstrap_interval([5, 5], lambda c: None) is None
    with pytest.raises(EmptyInputError):
        bootstrap_interval([0, 0], share)
