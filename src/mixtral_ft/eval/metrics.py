"""Metric functions over counts: rates, the checker's confusion matrix, risk-coverage.

Every metric is an ``Estimate`` (value, numerator and denominator, interval); a zero denominator
gives ``value`` None with a ``note``. Unparsed checker outputs are a third prediction column:
wrong for every metric over a gold class, not flags for precision (docs/evaluation.md). F1 and
balanced accuracy intervals: docs/design/evaluation-notes.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mixtral_ft.errors import UsageError, suggest
from mixtral_ft.eval.stats import (
    DEFAULT_CONFIDENCE,
    EmptyInputError,
    Interval,
    mover_sum,
    proportion_interval,
)


@dataclass(frozen=True)
class Estimate:
    value: float | None
    interval: Interval | None
    numerator: int | None = None
    denominator: int | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"value": self.value, "ci": self.interval.to_dict() if self.interval else None}
        if self.denominator is not None:
            out["numerator"], out["denominator"] = self.numerator, self.denominator
        if self.note:
            out["note"] = self.note
        return out


def rate(
    k: int, n: int, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE, undefined: str = "no items"
) -> Estimate:
    """``k / n`` with its interval; ``n == 0`` gives an undefined estimate (value None)."""
    if n == 0:
        return Estimate(None, None, k, n, f"undefined: {undefined}")
    return Estimate(k / n, proportion_interval(k, n, method, confidence), k, n)


def count_rate(
    flags: Sequence[bool | None], method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE
) -> Estimate:
    """Share of True among the non-None ``flags`` (None = unparsed, excluded and never clean)."""
    if len(flags) == 0:
        raise EmptyInputError("no items to compute a rate over")
    parsed = [f for f in flags if f is not None]
    return rate(sum(parsed), len(parsed), method, confidence, "every item is unparsed")


# ---------------------------------------------------------------------------- confusion matrix


@dataclass(frozen=True)
class ConfusionMatrix:
    """Gold (hallucinated or not) x prediction (flagged, not flagged, unparsed)."""

    tp: int  # gold hallucinated, flagged
    fn: int  # gold hallucinated, not flagged
    fp: int  # gold clean, flagged
    tn: int  # gold clean, not flagged
    unparsed_pos: int = 0  # gold hallucinated, prediction unparsed
    unparsed_neg: int = 0  # gold clean, prediction unparsed

    @property
    def n(self) -> int:
        return self.tp + self.fn + self.fp + self.tn + self.unparsed_pos + self.unparsed_neg

    @property
    def positives(self) -> int:
        return self.tp + self.fn + self.unparsed_pos

    @property
    def negatives(self) -> int:
        return self.fp + self.tn + self.unparsed_neg

    @property
    def unparsed(self) -> int:
        return self.unparsed_pos + self.unparsed_neg

    def cells(self) -> list[int]:
        return [self.tp, self.fn, self.fp, self.tn, self.unparsed_pos, self.unparsed_neg]

    def to_dict(self) -> dict:
        return {
            "gold_hallucinated": {"flagged": self.tp, "not_flagged": self.fn, "unparsed": self.unparsed_pos},
            "gold_clean": {"flagged": self.fp, "not_flagged": self.tn, "unparsed": self.unparsed_neg},
        }


def confusion_matrix(gold: Sequence[bool | None], pred: Sequence[bool | None]) -> ConfusionMatrix:
    """Count (gold, prediction) pairs; ``pred`` None is an unparsed checker output."""
    if len(gold) != len(pred):
        raise UsageError(f"gold and predictions differ in length ({len(gold)} vs {len(pred)})")
    if len(gold) == 0:
        raise EmptyInputError("no items: cannot build a confusion matrix from empty input")
    c = [0] * 6
    for g, p in zip(gold, pred):
        if g is None:
            raise UsageError("a gold label is missing (None); gold files must label every item")
        if p is None:
            c[4 if g else 5] += 1
        elif g:
            c[0 if p else 1] += 1
        else:
            c[2 if p else 3] += 1
    return ConfusionMatrix(*c)


def _accuracy(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.tp + cm.tn, cm.n, method, confidence)


def _accuracy_parsed(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.tp + cm.tn, cm.n - cm.unparsed, method, confidence, "every prediction is unparsed")


def _precision(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.tp, cm.tp + cm.fp, method, confidence, "the checker flagged nothing")


def _recall(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.tp, cm.positives, method, confidence, "no hallucinated items in gold")


def _specificity(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.tn, cm.negatives, method, confidence, "no clean items in gold")


def _f1_estimate(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    tp, fn, fp, _tn, up, _un = cm.cells()
    not_tn = tp + fp + fn + up  # F1's false negatives include unparsed positives
    if not_tn == 0:
        return Estimate(None, None, note="undefined: no hallucinated items in gold and nothing flagged")
    j = proportion_interval(tp, not_tn, method, confidence)
    interval = Interval(2 * j.low / (1 + j.low), 2 * j.high / (1 + j.high), f"jaccard-{method}", confidence)
    return Estimate(2 * tp / (tp + not_tn), interval)


def _balanced_accuracy_estimate(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    if cm.positives == 0 or cm.negatives == 0:
        return Estimate(None, None, note="undefined: gold has only one class")
    recall, specificity = cm.tp / cm.positives, cm.tn / cm.negatives
    s = mover_sum(
        recall,
        proportion_interval(cm.tp, cm.positives, method, confidence),
        specificity,
        proportion_interval(cm.tn, cm.negatives, method, confidence),
        f"mover-{method}",
    )
    return Estimate(
        (recall + specificity) / 2, Interval(max(0.0, s.low / 2), min(1.0, s.high / 2), s.method, confidence)
    )


def _flag_rate(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.tp + cm.fp, cm.n, method, confidence)


def _gold_rate(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.positives, cm.n, method, confidence)


def _parse_failure_rate(cm: ConfusionMatrix, method: str, confidence: float) -> Estimate:
    return rate(cm.unparsed, cm.n, method, confidence)


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    compute: Callable[[ConfusionMatrix, str, float], Estimate] = field(repr=False)


# The registry of named classification metrics, in display order.
CLASSIFICATION_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "share of items judged correctly; unparsed predictions count as wrong", _accuracy),
        Metric("precision", "share of flagged items that are hallucinated", _precision),
        Metric("recall", "share of hallucinated items flagged (unparsed count as missed)", _recall),
        Metric("f1", "harmonic mean of precision and recall: 2TP / (2TP + FP + FN)", _f1_estimate),
        Metric("specificity", "share of clean items not flagged (unparsed count as wrong)", _specificity),
        Metric("balanced_accuracy", "mean of recall and specificity", _balanced_accuracy_estimate),
        Metric("accuracy_parsed", "accuracy over parsed predictions only", _accuracy_parsed),
        Metric("parse_failure_rate", "share of predictions that did not parse", _parse_failure_rate),
        Metric("flag_rate", "share of items the checker flagged", _flag_rate),
        Metric("gold_hallucination_rate", "share of items hallucinated in gold", _gold_rate),
    )
}


def get_metric(name: str) -> Metric:
    """Look a metric up by name; an unknown name gets a 'Did you mean' message."""
    try:
        return CLASSIFICATION_METRICS[name]
    except KeyError:
        raise UsageError(suggest(name, list(CLASSIFICATION_METRICS), "metric")) from None


def classification_metrics(
    cm: ConfusionMatrix,
    names: Sequence[str] | None = None,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Estimate]:
    """The named metrics (all by default) for a confusion matrix."""
    if cm.n == 0:
        raise EmptyInputError("no items: cannot compute classification metrics")
    chosen = [get_metric(n) for n in (names or list(CLASSIFICATION_METRICS))]
    return {m.name: m.compute(cm, method, confidence) for m in chosen}


# ---------------------------------------------------------------------------- risk-coverage


@dataclass(frozen=True)
class RiskCoveragePoint:
    """Reject every response whose score >= ``threshold`` (None: reject nothing)."""

    threshold: float | None
    n: int
    rejected: int
    accepted: int
    hallucinated_accepted: int

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.n

    @property
    def coverage(self) -> float:
        return self.accepted / self.n

    @property
    def net_rate_all(self) -> float:
        """Hallucinated and accepted, over all responses."""
        return self.hallucinated_accepted / self.n

    @property
    def risk(self) -> float | None:
        """Hallucinated among accepted responses (None when nothing is accepted)."""
        return None if self.accepted == 0 else self.hallucinated_accepted / self.accepted

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "n": self.n,
            "rejected": self.rejected,
            "accepted": self.accepted,
            "hallucinated_accepted": self.hallucinated_accepted,
            "rejection_rate": self.rejection_rate,
            "coverage": self.coverage,
            "net_hallucination_rate_all": self.net_rate_all,
            "risk_accepted": self.risk,
        }


def risk_coverage(
    gold: Sequence[bool], scores: Sequence[float | None], reject_unscored: bool = True
) -> list[RiskCoveragePoint]:
    """The risk-coverage table as the rejection threshold moves over every distinct score.

    The first row rejects nothing (threshold None) except unscored items when
    ``reject_unscored``; each next row rejects items with score >= the threshold, from the
    highest score down, so coverage falls monotonically to 0 (or to the unscored share).
    """
    if len(gold) != len(scores):
        raise UsageError(f"gold and scores differ in length ({len(gold)} vs {len(scores)})")
    n = len(gold)
    if n == 0:
        raise EmptyInputError("no items: cannot build a risk-coverage table from empty input")
    unscored = [g for g, s in zip(gold, scores) if s is None]
    scored = sorted(((s, g) for g, s in zip(gold, scores) if s is not None), key=lambda t: -t[0])
    base_rejected = len(unscored) if reject_unscored else 0
    base_hall_accepted = 0 if reject_unscored else sum(unscored)
    hall_scored = sum(g for _, g in scored)
    rows = [RiskCoveragePoint(None, n, base_rejected, n - base_rejected, base_hall_accepted + hall_scored)]
    rejected_scored = hall_rejected = 0
    i = 0
    while i < len(scored):
        threshold = scored[i][0]
        while i < len(scored) and scored[i][0] == threshold:
            rejected_scored += 1
            hall_rejected += scored[i][1]
            i += 1
        rejected = base_rejected + rejected_scored
        rows.append(
            RiskCoveragePoint(threshold, n, rejected, n - rejected, base_hall_accepted + hall_scored - hall_rejected)
        )
    return rows
