"""How many items to label: the gold-set size whose judge-corrected rate interval is about a
target width (:func:`gold_size_for_width`), by the simulation behind docs/evaluation.md's table of
gold-set sizes (:func:`corrected_width`, which ``scripts/sim_correction_coverage.py --widths`` calls too).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.eval.correction import CheckerEval, corrected_rate
from mixtral_ft.eval.stats import lang_reiczigel_interval

Binomial = Callable[[random.Random, int, float], int]

DEFAULT_REPEATS = 400
MAX_NOT_IDENTIFIABLE = 0.05  # a size is good enough only when at most this share of data sets is not identifiable
_UNLIMITED = 10**9


def binomial(rng: random.Random, n: int, p: float) -> int:
    """One binomial draw (``random.Random.binomialvariate``: constant time in ``n``)."""
    return rng.binomialvariate(n, p) if n > 0 else 0


def corrected_width(
    rng: random.Random,
    *,
    sensitivity: float,
    specificity: float,
    rate: float,
    responses: int,
    gold: int,
    positives: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    draw: Binomial = binomial,
) -> tuple[float | None, float]:
    """(mean width of the corrected rate's 95% interval over the identifiable data sets, share of
    data sets not identifiable) for ``responses`` judged responses and a gold set of ``gold`` items,
    ``positives`` of them hallucinated (None: binomial with ``rate``, as in a random sample).

    The judge flags a share p = Se * r + (1 - Sp) * (1 - r) of the judged responses; ``eval tc`` on a
    gold set of n items measures Se on its hallucinated items and Sp on its clean ones; the corrected
    rate and its interval are ``eval.correction.corrected_rate`` (Rogan-Gladen, Lang-Reiczigel). One
    simulated data set draws the three binomials mixft sees (flags among the judged responses, hits
    among the gold hallucinated items, passes among the gold clean items) and records the width of
    the interval, or that the rate is not identifiable. ``corrected_width`` averages that over many
    data sets; ``scripts/sim_correction_coverage.py --widths`` (the table in docs/evaluation.md) and
    ``gold_size_for_width`` both call it.

    A gold set drawn by ``label sample`` is a simple random sample, so the number of hallucinated
    items in it is itself binomial with the true rate (``positives=None``); the table in
    docs/evaluation.md fixes it at 30% of the gold set instead.
    """
    flag_rate = sensitivity * rate + (1 - specificity) * (1 - rate)
    widths: list[float] = []
    unidentified = 0
    for _ in range(repeats):
        flagged = draw(rng, responses, flag_rate)
        pos = positives if positives is not None else draw(rng, gold, rate)
        tp, tn = draw(rng, pos, sensitivity), draw(rng, gold - pos, specificity)
        checker = CheckerEval(Path("simulated"), "", "", None, None, False, tp, pos - tp, gold - pos - tn, tn, 0, 0)
        est = corrected_rate(flagged, responses, checker)
        if est.value is None or est.interval is None:
            unidentified += 1
        else:
            widths.append(est.interval.high - est.interval.low)
    return (sum(widths) / len(widths) if widths else None), unidentified / repeats


def floor_width(
    rng: random.Random,
    *,
    sensitivity: float,
    specificity: float,
    rate: float,
    responses: int,
    repeats: int = DEFAULT_REPEATS,
    draw: Binomial = binomial,
    hallucinated_share: float = 0.3,
) -> float:
    """Mean width with an unlimited gold set (the judge's error known exactly): what the judged
    responses alone allow, the floor no gold set can go below."""
    flag_rate = sensitivity * rate + (1 - specificity) * (1 - rate)
    pos, neg = _UNLIMITED * hallucinated_share, _UNLIMITED * (1 - hallucinated_share)
    total = 0.0
    for _ in range(repeats):
        ci = lang_reiczigel_interval(
            draw(rng, responses, flag_rate), responses, sensitivity * pos, pos, specificity * neg, neg
        )
        total += ci.high - ci.low if ci is not None else 1.0
    return total / repeats


@dataclass(frozen=True)
class GoldSize:
    """The answer of ``gold_size_for_width``: the size, what the simulation found there, and its inputs."""

    n: int
    mean_width: float
    not_identifiable: float
    floor_width: float
    target_width: float
    sensitivity: float
    specificity: float
    rate: float
    responses: int
    repeats: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low < value < high:
        raise UsageError(f"{name} must be between {low} and {high} (exclusive), got {value}")


def gold_size_for_width(
    target_width: float,
    *,
    sensitivity: float,
    specificity: float,
    rate: float,
    responses: int,
    limit: int,
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
) -> GoldSize:
    """The smallest gold-set size (a random sample, at most ``limit``) whose corrected-rate interval
    is on average at most ``target_width`` wide (a proportion: 0.10 is 10 points) and identifiable in
    at least 95% of the simulated data sets. Raises ``UsageError`` saying why when none is."""
    _check("--target-width", target_width, 0.0, 1.0)
    _check("the sensitivity", sensitivity, 0.0, 1.0 + 1e-12)
    _check("the specificity", specificity, 0.0, 1.0 + 1e-12)
    _check("--expected-rate", rate, 0.0, 1.0)
    if sensitivity + specificity <= 1:
        raise UsageError(
            f"a judge with sensitivity {sensitivity:.3f} and specificity {specificity:.3f} is no better than "
            "chance: no gold set makes its rate correctable"
        )
    if responses < 1:
        raise UsageError("--judged must be at least 1")
    floor = floor_width(
        random.Random(seed),
        sensitivity=sensitivity,
        specificity=specificity,
        rate=rate,
        responses=responses,
        repeats=repeats,
    )
    if floor >= target_width:
        raise UsageError(
            f"no gold set reaches an interval {100 * target_width:.1f} points wide: with the judge's error known "
            f"exactly, {responses} judged responses give {100 * floor:.1f} points; judge more responses, use a "
            "better judge or ask for a wider interval"
        )

    def measure(n: int) -> tuple[float | None, float]:
        return corrected_width(
            random.Random(seed),
            sensitivity=sensitivity,
            specificity=specificity,
            rate=rate,
            responses=responses,
            gold=n,
            repeats=repeats,
        )

    def good(result: tuple[float | None, float]) -> bool:
        width, unidentified = result
        return width is not None and width <= target_width and unidentified <= MAX_NOT_IDENTIFIABLE

    low, high = 1, 16
    while not good(found := measure(min(high, limit))):
        if high >= limit:
            shown = "not identifiable" if found[0] is None else f"{100 * found[0]:.1f} points"
            raise UsageError(
                f"the population has {limit} responses, and a gold set of all of them gives {shown} "
                f"({100 * found[1]:.0f}% of simulated data sets not identifiable); it cannot reach "
                f"{100 * target_width:.1f} points"
            )
        low, high = high, high * 2
    high = min(high, limit)
    while high - low > 1:  # smallest good size in (low, high]
        mid = (low + high) // 2
        if good(measure(mid)):
            high = mid
        else:
            low = mid
    width, unidentified = measure(high)
    assert width is not None
    return GoldSize(
        high, width, unidentified, floor, target_width, sensitivity, specificity, rate, responses, repeats, seed
    )
