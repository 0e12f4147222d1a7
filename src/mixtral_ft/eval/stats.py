"""Interval estimates and paired tests for proportions, in pure Python (math + stdlib only).

Wilson and Clopper-Pearson intervals of one proportion, Newcombe's intervals of paired and
independent differences, MOVER sums and ratios, McNemar's test, and the Rogan-Gladen prevalence
with Lang-Reiczigel's interval. Every interval is a closed form of the counts, never a bootstrap.
References and derivations: docs/design/evaluation-notes.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

from mixtral_ft.errors import MixftError, UsageError, suggest

DEFAULT_CONFIDENCE = 0.95


class EmptyInputError(MixftError):
    """A metric was asked for on no items at all."""

    exit_code = 2


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str
    confidence: float = DEFAULT_CONFIDENCE

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "method": self.method, "confidence": self.confidence}


def z_value(confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The standard normal quantile for a two-sided interval (1.959964 for 95%)."""
    _check_confidence(confidence)
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise MixftError(f"confidence level must be between 0 and 1, got {confidence}")


def _check_counts(k: int, n: int) -> None:
    if n <= 0:
        raise EmptyInputError("cannot compute an interval for a proportion of 0 items")
    if not 0 <= k <= n:
        raise MixftError(f"successes must be between 0 and n={n}, got {k}")


def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval for ``k`` successes in ``n`` trials.

    At k = 0 the lower bound is exactly 0, at k = n the upper bound is exactly 1.
    """
    _check_counts(k, n)
    z = z_value(confidence)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(low, high, "wilson", confidence)


def _log_binom_pmf(i: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return min(1.0, math.fsum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k + 1)))


def _bisect(f: Callable[[float], float], lo: float, hi: float, iterations: int = 100) -> float:
    """Root of an increasing ``f`` on [lo, hi]."""
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Clopper-Pearson exact interval, by inverting the binomial tails (bisection to ~1e-15)."""
    _check_counts(k, n)
    alpha = 1 - confidence
    if k == 0:
        low = 0.0
    else:  # P(X >= k | p) = alpha/2, increasing in p
        low = _bisect(lambda p: (1 - binom_cdf(k - 1, n, p)) - alpha / 2, 0.0, 1.0)
    if k == n:
        high = 1.0
    else:  # P(X <= k | p) = alpha/2, decreasing in p
        high = _bisect(lambda p: alpha / 2 - binom_cdf(k, n, p), 0.0, 1.0)
    return Interval(low, high, "clopper-pearson", confidence)


INTERVAL_METHODS: dict[str, Callable[[int, int, float], Interval]] = {
    "wilson": wilson_interval,
    "clopper-pearson": clopper_pearson_interval,
}


def proportion_interval(k: int, n: int, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Interval for one proportion by a named method (``wilson`` or ``clopper-pearson``)."""
    if method not in INTERVAL_METHODS:
        raise UsageError(suggest(method, INTERVAL_METHODS, "interval method"))
    return INTERVAL_METHODS[method](k, n, confidence)


# ---------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class McNemarResult:
    """``b``: pairs positive in A only; ``c``: positive in B only."""

    b: int
    c: int
    p_exact: float
    chi2: float
    p_chi2: float

    def to_dict(self) -> dict:
        return {
            "discordant_a_only": self.b,
            "discordant_b_only": self.c,
            "p_value_exact": self.p_exact,
            "chi2_continuity_corrected": self.chi2,
            "p_value_chi2": self.p_chi2,
        }


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    if b < 0 or c < 0:
        raise MixftError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf(min(b, c), n, 0.5))


def mcnemar_chi2(b: int, c: int) -> tuple[float, float]:
    """Continuity-corrected McNemar chi-square (Edwards 1948) and its p-value on 1 df."""
    if b < 0 or c < 0:
        raise MixftError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 0.0, 1.0
    stat = max(0, abs(b - c) - 1) ** 2 / (b + c)
    return stat, math.erfc(math.sqrt(stat / 2))  # chi2(1) survival = P(|Z| > sqrt(stat))


def mcnemar(b: int, c: int) -> McNemarResult:
    stat, p = mcnemar_chi2(b, c)
    return McNemarResult(b, c, mcnemar_exact_p(b, c), stat, p)


def newcombe_paired_interval(
    n11: int, n10: int, n01: int, n00: int, confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
    """Interval for p_A - p_B from a paired 2x2 table (Newcombe 1998, method 10).

    ``n11``: positive in both; ``n10``: positive in A only; ``n01``: in B only; ``n00``: in neither.
    p_A = (n11 + n10)/N, p_B = (n11 + n01)/N.
    """
    n = n11 + n10 + n01 + n00
    if min(n11, n10, n01, n00) < 0:
        raise MixftError("paired counts must be >= 0")
    if n == 0:
        raise EmptyInputError("cannot compare two proportions over 0 paired items")
    a_pos, b_pos = n11 + n10, n11 + n01
    pa, pb = a_pos / n, b_pos / n
    la = wilson_interval(a_pos, n, confidence)
    lb = wilson_interval(b_pos, n, confidence)
    a_neg, b_neg = n - a_pos, n - b_pos
    if 0 in (a_pos, a_neg, b_pos, b_neg):
        phi = 0.0
    else:
        det = n11 * n00 - n10 * n01
        if det > n / 2:
            num = det - n / 2
        elif det >= 0:
            num = 0.0
        else:
            num = det
        phi = num / math.sqrt(a_pos * a_neg * b_pos * b_neg)
    d = pa - pb
    dl_a, du_a = pa - la.low, la.high - pa
    dl_b, du_b = pb - lb.low, lb.high - pb
    low = d - math.sqrt(max(0.0, dl_a**2 - 2 * phi * dl_a * du_b + du_b**2))
    high = d + math.sqrt(max(0.0, du_a**2 - 2 * phi * du_a * dl_b + dl_b**2))
    return Interval(max(-1.0, low), min(1.0, high), "newcombe-paired", confidence)


# ---------------------------------------------------------------------------- MOVER: sums, differences, ratios


def mover_difference(est1: float, ci1: Interval, est2: float, ci2: Interval, method: str) -> Interval:
    """Interval of ``est1 - est2`` for two independent estimates from their own intervals (MOVER).

    Zou & Donner (2008): L = d - sqrt((e1 - l1)^2 + (u2 - e2)^2), U = d + sqrt((u1 - e1)^2 + (e2 - l2)^2).
    With two Wilson intervals this is Newcombe's (1998) method 10 for independent proportions.
    """
    d = est1 - est2
    low = d - math.sqrt((est1 - ci1.low) ** 2 + (ci2.high - est2) ** 2)
    high = d + math.sqrt((ci1.high - est1) ** 2 + (est2 - ci2.low) ** 2)
    return Interval(low, high, method, ci1.confidence)


def mover_sum(est1: float, ci1: Interval, est2: float, ci2: Interval, method: str) -> Interval:
    """Interval of ``est1 + est2`` for two independent estimates (MOVER, Zou & Donner 2008)."""
    s = est1 + est2
    low = s - math.sqrt((est1 - ci1.low) ** 2 + (est2 - ci2.low) ** 2)
    high = s + math.sqrt((ci1.high - est1) ** 2 + (ci2.high - est2) ** 2)
    return Interval(low, high, method, ci1.confidence)


def independent_difference_interval(
    k1: int, n1: int, k2: int, n2: int, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
    """Interval of ``k1/n1 - k2/n2`` for independent samples: MOVER on two single-proportion intervals
    (Newcombe's 1998 "method 10" when ``method`` is wilson)."""
    a = proportion_interval(k1, n1, method, confidence)
    b = proportion_interval(k2, n2, method, confidence)
    return mover_difference(k1 / n1, a, k2 / n2, b, f"mover-{method}")


def mover_ratio_interval(
    est1: float,
    ci1: Interval,
    est2: float,
    ci2: Interval,
    method: str = "mover-r",
) -> Interval | None:
    """Interval of ``est1 / est2`` for two independent estimates (MOVER-R, Newcombe 2016).

    The limits are the ratios r at which the MOVER interval of ``est1 - r * est2`` has 0 as an end;
    the denominator's interval must exclude 0 (``ci2.low > 0``), otherwise the ratio is unbounded
    and None is returned. The two equations are solved by bisection: which end of the
    denominator's interval enters depends on the sign of r, and both MOVER ends are strictly
    decreasing in r on the side where they are solved, so each has one root.
    """
    if est2 <= 0 or ci2.low <= 0:
        return None

    def lower_of_difference(r: float) -> float:  # lower MOVER end of est1 - r * est2
        upper_of_product = r * (ci2.high if r >= 0 else ci2.low)
        return est1 - r * est2 - math.sqrt((est1 - ci1.low) ** 2 + (upper_of_product - r * est2) ** 2)

    def upper_of_difference(r: float) -> float:  # upper MOVER end of est1 - r * est2
        lower_of_product = r * (ci2.low if r >= 0 else ci2.high)
        return est1 - r * est2 + math.sqrt((ci1.high - est1) ** 2 + (r * est2 - lower_of_product) ** 2)

    ratio = est1 / est2
    step = 1.0
    while lower_of_difference(ratio - step) <= 0:
        step *= 2
    low = _bisect(lambda r: -lower_of_difference(r), ratio - step, ratio, 200)
    step = 1.0
    while upper_of_difference(ratio + step) >= 0:
        step *= 2
    high = _bisect(lambda r: -upper_of_difference(r), ratio, ratio + step, 200)
    return Interval(low, high, method, ci1.confidence)


# ---------------------------------------------------------------------------- prevalence under misclassification


def rogan_gladen(observed: float, sensitivity: float, specificity: float) -> float | None:
    """Rogan & Gladen (1978): (observed + specificity - 1) / (sensitivity + specificity - 1), unclipped;
    None when sensitivity + specificity - 1 <= 0 (the classifier is no better than chance)."""
    youden = sensitivity + specificity - 1
    if youden <= 0:
        return None
    return (observed + specificity - 1) / youden


def lang_reiczigel_interval(
    x: float, n: float, se_k: float, se_n: float, sp_k: float, sp_n: float, confidence: float = DEFAULT_CONFIDENCE
) -> Interval | None:
    """Interval for the prevalence behind ``x`` positives of ``n``, corrected for a classifier whose
    sensitivity (``se_k`` of ``se_n`` true positives flagged) and specificity (``sp_k`` of ``sp_n``
    true negatives not flagged) are themselves estimated from independent samples.

    Lang & Reiczigel (2014), Prev Vet Med 113:13-22, eqs. 6-7 and 15-17: an Agresti-Coull style
    adjustment (z^2/2 successes of z^2 added to the observed rate, 1 of 2 added to sensitivity and
    specificity), the Rogan-Gladen variance of all three binomials from the adjusted values (eq. 4,
    with (1 - P)^2 where the paper misprints (1 + P)^2), and a shift of the centre (eq. 17).
    Clipped to [0, 1]. None when the adjusted sensitivity + specificity - 1 is not positive.
    Counts may be fractional (published examples give rates, not counts).
    """
    _check_confidence(confidence)
    if n <= 0 or se_n <= 0 or sp_n <= 0:
        raise EmptyInputError("the corrected prevalence needs items, gold positives and gold negatives")
    z = z_value(confidence)
    z2 = z * z
    n_ = n + z2
    p_ = (x + z2 / 2) / n_
    se_n_, sp_n_ = se_n + 2, sp_n + 2
    se_ = (se_k + 1) / se_n_
    sp_ = (sp_k + 1) / sp_n_
    youden = se_ + sp_ - 1
    if youden <= 0:
        return None
    prev = (p_ + sp_ - 1) / youden
    shift = 2 * z2 * (prev * se_ * (1 - se_) / se_n_ - (1 - prev) * sp_ * (1 - sp_) / sp_n_)
    var = (
        p_ * (1 - p_) / n_ + prev**2 * se_ * (1 - se_) / se_n_ + (1 - prev) ** 2 * sp_ * (1 - sp_) / sp_n_
    ) / youden**2
    half = z * math.sqrt(var)
    low = min(1.0, max(0.0, prev + shift - half))
    high = min(1.0, max(0.0, prev + shift + half))
    return Interval(low, high, "lang-reiczigel", confidence)
