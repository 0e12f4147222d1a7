"""Agreement between annotators who labeled the same items, field by field: for every pair of
annotators, over the items both labeled (each one's earliest annotation of an item), Cohen's kappa with
Donner & Eliasziw's interval on the two yes/no decisions (:func:`binary_agreement`) and the overlap of
their mistake spans (:func:`span_agreement`). Every figure carries the number of items it rests on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mixtral_ft.eval.metrics import rate
from mixtral_ft.eval.stats import DEFAULT_CONFIDENCE, z_value

KAPPA_METHOD = "donner-eliasziw-gof"


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str


@dataclass(frozen=True)
class Vote:
    """What one annotator said about one item (the parts agreement compares)."""

    annotator: str
    hallucinated: bool
    irrelevant: bool
    spans: tuple[Span, ...]


def _gof(counts: tuple[int, int, int], p: float, kappa: float) -> float:
    """Chi-square goodness of fit of (both yes, discordant, both no) to the common-rate kappa model."""
    n = sum(counts)
    q = p * (1 - p)
    expected = (n * (p * p + q * kappa), n * 2 * q * (1 - kappa), n * ((1 - p) ** 2 + q * kappa))
    total = 0.0
    for obs, exp in zip(counts, expected):
        if exp <= 1e-12:
            if obs:
                return math.inf
            continue
        total += (obs - exp) ** 2 / exp
    return total


def _bisect(f, lo: float, hi: float) -> float:
    """The point in [lo, hi] where the increasing-or-decreasing ``f`` crosses 0 (f(lo), f(hi) differ in sign)."""
    sign_lo = f(lo) > 0
    for _ in range(100):
        mid = (lo + hi) / 2
        if (f(mid) > 0) == sign_lo:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def kappa_interval(
    both_yes: int, discordant: int, both_no: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float, float] | None:
    """(common-rate kappa, low, high) by Donner & Eliasziw's goodness-of-fit method; None when every
    answer is the same (kappa undefined)."""
    n = both_yes + discordant + both_no
    p = (2 * both_yes + discordant) / (2 * n)
    if n == 0 or p in (0.0, 1.0):
        return None
    q = p * (1 - p)
    k_hat = 1 - discordant / (2 * n * q)
    k_min = max(-p / (1 - p), -(1 - p) / p)
    crit = z_value(confidence) ** 2
    counts = (both_yes, discordant, both_no)

    def excess(k: float) -> float:
        return _gof(counts, p, k) - crit

    low = k_min if excess(k_min) <= 0 else _bisect(excess, k_min, k_hat)
    high = 1.0 if excess(1.0) <= 0 else _bisect(excess, k_hat, 1.0)
    return k_hat, max(-1.0, low), min(1.0, high)


def binary_agreement(pairs: Sequence[tuple[bool, bool]], confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Agreement of two annotators on a yes/no decision over ``pairs`` (a's answer, b's answer).

    **hallucinated/clean** and **relevant/irrelevant** (two yes/no decisions): the share of items
    they agree on (Wilson interval) and Cohen's kappa, the agreement beyond what their own yes-rates
    would give by chance: (p_o - p_e) / (1 - p_e). Kappa is undefined when both gave one and the
    same answer to every item (p_e = 1). Its interval is Donner & Eliasziw's (1992, Stat Med
    11:1511-1519) goodness-of-fit interval: the kappas whose expected table (under a common
    yes-rate for both annotators) fits the observed one at the 5% level (chi-square, 1 df). Unlike
    the large-sample Wald interval it keeps a width at perfect agreement and with few items (10
    items all agreed, half of them hallucinated, give 0.44 to 1, not 1 to 1). It is built around the common-yes-rate kappa
    (``common_rate_kappa``, Scott's pi), which equals Cohen's when the two yes-rates are equal and is
    below it when they differ: the two ``yes_rate`` figures show when that is the case.
    """
    n = len(pairs)
    both_yes = sum(a and b for a, b in pairs)
    only_a = sum(a and not b for a, b in pairs)
    only_b = sum(b and not a for a, b in pairs)
    both_no = n - both_yes - only_a - only_b
    out: dict[str, Any] = {
        "items": n,
        "table": {"both_yes": both_yes, "only_first": only_a, "only_second": only_b, "both_no": both_no},
        "agreement": rate(both_yes + both_no, n, "wilson", confidence, "no shared items").to_dict(),
        "yes_rate": [(both_yes + only_a) / n, (both_yes + only_b) / n] if n else [None, None],
    }
    pa, pb = (both_yes + only_a) / n if n else 0.0, (both_yes + only_b) / n if n else 0.0
    pe = pa * pb + (1 - pa) * (1 - pb)
    gof = kappa_interval(both_yes, only_a + only_b, both_no, confidence)
    if n == 0 or gof is None or pe >= 1.0:
        why = "no shared items" if n == 0 else f"both annotators gave the same answer to all {n} items"
        out["kappa"] = {"value": None, "ci": None, "note": f"undefined: {why}"}
        return out
    po = (both_yes + both_no) / n
    k_hat, low, high = gof
    out["kappa"] = {
        "value": (po - pe) / (1 - pe),
        "ci": {"low": low, "high": high, "method": KAPPA_METHOD, "confidence": confidence},
        "common_rate_kappa": k_hat,
    }
    return out


def _chars(spans: tuple[Span, ...]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for s in spans:
        for i in range(s.start, s.end):
            out.setdefault(i, set()).add(s.type)
    return out


def _overlaps(span: Span, others: tuple[Span, ...]) -> bool:
    return any(o.start < span.end and span.start < o.end for o in others)


def span_agreement(pairs: Sequence[tuple[tuple[Span, ...], tuple[Span, ...]]]) -> dict[str, Any]:
    """Overlap of two annotators' mistake spans over ``pairs`` (a's spans, b's spans) of shared items:
    **mistake spans**: character overlap of the marked text (intersection over union, summed over
    the items), the share of commonly marked characters given the same mistake type, and span F1
    (a span counts as found by the other annotator when one of theirs overlaps it).
    """
    inter = union = same_type = 0
    found_a = found_b = total_a = total_b = 0
    items = 0
    for a, b in pairs:
        if not a and not b:
            continue
        items += 1
        ca, cb = _chars(a), _chars(b)
        common = ca.keys() & cb.keys()
        inter += len(common)
        union += len(ca.keys() | cb.keys())
        same_type += sum(bool(ca[i] & cb[i]) for i in common)
        total_a, total_b = total_a + len(a), total_b + len(b)
        found_a += sum(_overlaps(s, b) for s in a)
        found_b += sum(_overlaps(s, a) for s in b)
    out: dict[str, Any] = {"items_with_spans": items, "spans": [total_a, total_b]}
    out["char_iou"] = inter / union if union else None
    out["type_agreement"] = same_type / inter if inter else None
    if total_a and total_b:
        r, p = found_a / total_a, found_b / total_b
        out["span_f1"] = 2 * p * r / (p + r) if p + r else 0.0
    else:
        out["span_f1"] = None
    if not union:
        out["note"] = "neither annotator marked a span on the shared items"
    return out


def pairwise(items: dict[str, list[Vote]], confidence: float = DEFAULT_CONFIDENCE) -> list[dict[str, Any]]:
    """Agreement figures for every pair of annotators that share at least one item. ``items`` maps an
    item id to its votes, earliest first; an annotator's earliest vote on an item is theirs."""
    firsts: dict[str, dict[str, Vote]] = {}
    for item_id, votes in items.items():
        for v in votes:
            firsts.setdefault(item_id, {}).setdefault(v.annotator, v)
    annotators = sorted({a for per in firsts.values() for a in per})
    out = []
    for x, y in itertools.combinations(annotators, 2):
        shared = [(per[x], per[y]) for per in firsts.values() if x in per and y in per]
        if not shared:
            continue
        out.append(
            {
                "annotators": [x, y],
                "items": len(shared),
                "hallucinated": binary_agreement([(a.hallucinated, b.hallucinated) for a, b in shared], confidence),
                "irrelevant": binary_agreement([(a.irrelevant, b.irrelevant) for a, b in shared], confidence),
                "mistakes": span_agreement([(a.spans, b.spans) for a, b in shared]),
            }
        )
    return out
