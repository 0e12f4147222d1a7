"""Interval estimates and paired tests for proportions, in pure Python (math + stdlib only).

Methods (all two-sided, default 95%):

- Wilson score interval for one proportion: E. B. Wilson (1927), "Probable inference, the
  law of succession, and statistical inference", JASA 22:209-212. Recommended over the Wald
  interval by Newcombe (1998, Stat Med 17:857-872) and Brown, Cai & DasGupta (2001, Stat Sci
  16:101-133); it stays inside [0, 1] and behaves at 0 and n successes.
- Clopper-Pearson "exact" interval: C. J. Clopper & E. S. Pearson (1934), Biometrika 26:404-413.
  Conservative; offered for users who must report it.
- McNemar's test for paired binary outcomes: Q. McNemar (1947), Psychometrika 12:153-157.
  The exact (binomial) version conditions on the discordant pairs, b + c, and tests
  b ~ Binomial(b + c, 1/2); the chi-square version uses Edwards' (1948) continuity correction,
  (|b - c| - 1)^2 / (b + c) on 1 degree of freedom.
- Paired difference of proportions: Newcombe's square-and-add interval built from two Wilson
  intervals with a correction for the correlation of the paired estimates ("method 10" of
  R. G. Newcombe (1998), "Improved confidence intervals for the difference between binomial
  proportions based on paired data", Stat Med 17:2635-2650; as in Fagerland, Lydersen & Laake
  (2017), "Statistical Analysis of Contingency Tables", ch. 8).
- Percentile bootstrap (Efron & Tibshirani 1993) for statistics that are not a single
  proportion (F1, balanced accuracy), with a fixed seed so results are reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from mixtral_ft.errors import MixftError

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
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))


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
    from mixtral_ft.errors import UsageError, suggest

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
    low = d - math.sqrt(max(0.0, dl_a ** 2 - 2 * phi * dl_a * du_b + du_b ** 2))
    high = d + math.sqrt(max(0.0, du_a ** 2 - 2 * phi * du_a * dl_b + dl_b ** 2))
    return Interval(max(-1.0, low), min(1.0, high), "newcombe-paired", confidence)


# ---------------------------------------------------------------------------- bootstrap

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_interval(
    cell_counts: Sequence[int],
    statistic: Callable[[Sequence[int]], float | None],
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Percentile bootstrap over items described by their cell of a contingency table.

    Each resample draws N items with replacement (a multinomial over the cells) and
    recomputes ``statistic`` from the resampled cell counts. Resamples where the statistic
    is undefined are skipped; if more than 5% are, no interval is returned.
    """
    _check_confidence(confidence)
    n = sum(cell_counts)
    if n == 0:
        raise EmptyInputError("cannot bootstrap a statistic over 0 items")
    rng = random.Random(seed)
    cells = range(len(cell_counts))
    values: list[float] = []
    for _ in range(resamples):
        draw = rng.choices(cells, weights=cell_counts, k=n)
        counts = [0] * len(cell_counts)
        for cell in draw:
            counts[cell] += 1
        value = statistic(counts)
        if value is not None:
            values.append(value)
    if len(values) < 0.95 * resamples:
        return None
    values.sort()
    alpha = 1 - confidence
    return Interval(_quantile(values, alpha / 2), _quantile(values, 1 - alpha / 2),
                    f"percentile-bootstrap(resamples={resamples},seed={seed})", confidence)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default, 'type 7')."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
