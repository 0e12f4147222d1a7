"""Interval and test functions against published values and hand-computed edge cases."""

from __future__ import annotations

import math

import pytest

from mixtral_ft.errors import MixftError
from mixtral_ft.eval.stats import (
    EmptyInputError,
    Interval,
    binom_cdf,
    clopper_pearson_interval,
    independent_difference_interval,
    lang_reiczigel_interval,
    mcnemar,
    mcnemar_chi2,
    mcnemar_exact_p,
    mover_ratio_interval,
    mover_sum,
    newcombe_paired_interval,
    proportion_interval,
    rogan_gladen,
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
    assert stat == pytest.approx(63**2 / 236)
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


# Newcombe (1998) "Interval estimation for the difference between independent proportions",
# Stat Med 17:873, Table II, method 10 (hybrid score = MOVER on two Wilson intervals).
NEWCOMBE_1998_INDEPENDENT = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
]


@pytest.mark.parametrize("counts,expected", NEWCOMBE_1998_INDEPENDENT)
def test_independent_difference_matches_newcombe_method_10(counts, expected):
    ci = independent_difference_interval(*counts)
    assert (round(ci.low, 4), round(ci.high, 4)) == expected
    assert ci.method == "mover-wilson"


def test_mover_sum_is_the_difference_with_one_side_reflected():
    a, b = wilson_interval(3, 10), wilson_interval(17, 20)
    s = mover_sum(0.3, a, 0.85, b, "mover-wilson")
    d = independent_difference_interval(3, 10, 3, 20)  # 0.3 - (1 - 0.85): reflect b
    assert s.low - 1 == pytest.approx(d.low) and s.high - 1 == pytest.approx(d.high)


# Lang & Reiczigel (2014), Prev Vet Med 113:13-22, examples 1-4, as given (rates and sample sizes)
# in the documentation of prevSeSp in Fay's R package asht: (apparent prevalence, n, Se, n_Se, Sp,
# n_Sp) -> the published 95% limits, to their published precision.
LANG_REICZIGEL_2014 = [
    ((4060 / 11284, 11284, 178 / 179, 179, 358 / 359, 359), (0.349, 0.372), 3),
    ((51 / 2971, 2971, 32 / 33, 33, 20 / 20, 20), (0.0, 0.053), 3),
    ((0.06, 11862, 0.80, 10, 1.0, 12), (0.0, 0.147), 3),
    ((259 / 509, 509, 84 / 127, 127, 96 / 109, 109), (0.58, 0.87), 2),
    ((51 / 509, 509, 23 / 41, 41, 187 / 195, 195), (0.037, 0.195), 3),
]


@pytest.mark.parametrize("data,expected,digits", LANG_REICZIGEL_2014)
def test_lang_reiczigel_reproduces_the_papers_examples(data, expected, digits):
    ap, n, se, n_se, sp, n_sp = data
    ci = lang_reiczigel_interval(ap * n, n, se * n_se, n_se, sp * n_sp, n_sp)
    assert (round(ci.low, digits), round(ci.high, digits)) == expected
    assert ci.method == "lang-reiczigel" and ci.confidence == 0.95


def test_rogan_gladen_published_examples():
    # epiR's epi.prev documentation: 23 of 150 cows test positive, Se 0.96, Sp 0.89 -> 5.1 per 100.
    assert round(100 * rogan_gladen(23 / 150, 0.96, 0.89), 1) == 5.1
    # Bendavid et al. (2021) Int J Epidemiol 50:410, unweighted: 50 of 3328 positive (1.5%), sensitivity
    # 130/157 = 82.8% (95% CI 76.0-88.4), specificity 3308/3324 = 99.5% (99.2-99.7) -> adjusted 1.2%.
    se, sp = clopper_pearson_interval(130, 157), clopper_pearson_interval(3308, 3324)
    assert (round(100 * se.low, 1), round(100 * se.high, 1)) == (76.0, 88.4)
    assert (round(100 * sp.low, 1), round(100 * sp.high, 1)) == (99.2, 99.7)
    assert round(100 * rogan_gladen(50 / 3328, 130 / 157, 3308 / 3324), 1) == 1.2
    # Lang & Reiczigel's example 4: 259/509 positive, Se 84/127, Sp 96/109 -> 0.72 (limits 0.58-0.87 above).
    assert round(rogan_gladen(259 / 509, 84 / 127, 96 / 109), 2) == 0.72
    # No better than chance: not identifiable.
    assert rogan_gladen(0.3, 0.4, 0.6) is None and rogan_gladen(0.3, 0.0, 1.0) is None


def test_a_perfect_judge_leaves_the_rate_unchanged():
    # Se = Sp = 1: the correction is the identity; with very large gold samples the interval is the
    # Agresti-Coull interval of the observed rate (the paper's adjustment of the observed rate alone).
    for k, n in ((0, 50), (13, 300), (150, 300)):
        assert rogan_gladen(k / n, 1.0, 1.0) == pytest.approx(k / n)
        ci = lang_reiczigel_interval(k, n, 10**9, 10**9, 10**9, 10**9)
        z = z_value()
        p = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(p * (1 - p) / (n + z * z))
        assert ci.low == pytest.approx(max(0.0, p - half), abs=1e-6)
        assert ci.high == pytest.approx(p + half, abs=1e-6)
        assert ci.low <= k / n <= ci.high


def test_lang_reiczigel_refuses_what_it_cannot_compute():
    assert lang_reiczigel_interval(5, 50, 0, 10, 2, 10) is None  # adjusted Se + Sp - 1 < 0
    with pytest.raises(EmptyInputError):
        lang_reiczigel_interval(5, 0, 8, 10, 9, 10)


def _in_mover_ratio_set(r, e1, c1, e2, c2):
    """Brute-force definition: r is in the MOVER-R interval iff 0 is inside the MOVER interval of e1 - r e2."""
    prod = sorted((r * c2.low, r * c2.high))
    d = e1 - r * e2
    low = d - math.sqrt((e1 - c1.low) ** 2 + (prod[1] - r * e2) ** 2)
    high = d + math.sqrt((c1.high - e1) ** 2 + (r * e2 - prod[0]) ** 2)
    return low <= 0 <= high


@pytest.mark.parametrize(
    "e1,c1,e2,c2",
    [
        (0.05, Interval(-0.01, 0.11, "x"), 0.6, Interval(0.45, 0.72, "x")),
        (-0.08, Interval(-0.15, -0.02, "x"), 0.3, Interval(0.12, 0.47, "x")),
        (0.0, Interval(-0.04, 0.04, "x"), 0.9, Interval(0.85, 0.94, "x")),
        (0.2, Interval(0.1, 0.3, "x"), 0.1, Interval(0.02, 0.35, "x")),  # wide denominator, u2 > 2 * e2
    ],
)
def test_mover_ratio_interval_is_the_set_its_definition_gives(e1, c1, e2, c2):
    ci = mover_ratio_interval(e1, c1, e2, c2)
    assert ci.low < e1 / e2 < ci.high
    grid = [ci.low + (ci.high - ci.low) * t for t in (-0.02, -0.001, 0.001, 0.5, 0.999, 1.001, 1.02)]
    inside = [_in_mover_ratio_set(r, e1, c1, e2, c2) for r in grid]
    assert inside == [False, False, True, True, True, False, False]


def test_mover_ratio_with_an_exact_denominator_is_the_numerators_interval_scaled():
    ci = mover_ratio_interval(0.1, Interval(0.04, 0.17, "x"), 0.5, Interval(0.5, 0.5, "x"))
    assert (ci.low, ci.high) == (pytest.approx(0.08), pytest.approx(0.34))
    assert mover_ratio_interval(0.1, Interval(0.0, 0.2, "x"), 0.2, Interval(-0.05, 0.4, "x")) is None
