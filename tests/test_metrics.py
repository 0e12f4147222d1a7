"""Metric functions on hand-computed cases: zero counts, one class only, unparsed, empty input."""

from __future__ import annotations

import pytest

from mixtral_ft.errors import MixftError
from mixtral_ft.eval.metrics import (
    CLASSIFICATION_METRICS,
    ConfusionMatrix,
    classification_metrics,
    confusion_matrix,
    count_rate,
    get_metric,
    rate,
    risk_coverage,
)
from mixtral_ft.eval.stats import EmptyInputError, proportion_interval, wilson_interval


def test_hand_computed_confusion_matrix_and_metrics():
    gold = [True, True, True, False, False, False, False, True]
    pred = [True, False, None, True, False, False, None, True]
    cm = confusion_matrix(gold, pred)
    assert cm == ConfusionMatrix(tp=2, fn=1, fp=1, tn=2, unparsed_pos=1, unparsed_neg=1)
    m = classification_metrics(cm)
    assert m["accuracy"].value == pytest.approx(4 / 8)  # unparsed count as wrong
    assert m["accuracy_parsed"].value == pytest.approx(4 / 6)
    assert m["precision"].value == pytest.approx(2 / 3)
    assert m["recall"].value == pytest.approx(2 / 4)  # the unparsed positive is missed
    assert m["specificity"].value == pytest.approx(2 / 4)
    assert m["f1"].value == pytest.approx(2 * 2 / (2 * 2 + 1 + 1 + 1))
    assert m["balanced_accuracy"].value == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert m["parse_failure_rate"].value == pytest.approx(2 / 8)
    assert (m["precision"].numerator, m["precision"].denominator) == (2, 3)
    w = wilson_interval(4, 8)
    assert (m["accuracy"].interval.low, m["accuracy"].interval.high) == (w.low, w.high)
    assert m["f1"].interval.method == "jaccard-wilson"
    assert m["balanced_accuracy"].interval.method == "mover-wilson"


def test_a_checker_that_flags_nothing_keeps_honest_intervals():
    """The demo's blind checker: 10 hallucinated and 24 clean gold items, nothing flagged. F1 is 0 and
    balanced accuracy 0.5, but with intervals as wide as 10 positives allow (no [0, 0] / [0.5, 0.5])."""
    cm = confusion_matrix([True] * 10 + [False] * 24, [False] * 34)
    m = classification_metrics(cm)
    recall_high = wilson_interval(0, 10).high
    assert m["f1"].value == 0.0 and m["f1"].interval.low == 0.0
    assert m["f1"].interval.high == pytest.approx(2 * recall_high / (1 + recall_high))  # J = TP/(TP+FP+FN) = 0/10
    assert m["f1"].interval.high > 0.4
    ba = m["balanced_accuracy"]
    assert ba.value == 0.5
    spec = wilson_interval(24, 24)
    assert ba.interval.low == pytest.approx(0.5 - (1 - spec.low) / 2)  # only specificity can pull it down
    assert ba.interval.high == pytest.approx(0.5 + recall_high / 2)  # only recall can push it up
    assert ba.interval.low < 0.45 and ba.interval.high > 0.6


def test_every_prediction_unparsed_is_not_a_degenerate_interval_either():
    cm = confusion_matrix([True] * 10 + [False] * 24, [None] * 34)
    m = classification_metrics(cm)
    assert m["f1"].value == 0.0 and m["f1"].interval.high > 0.4
    assert m["balanced_accuracy"].value == 0.0 and m["balanced_accuracy"].interval.high > 0.1


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_f1_and_balanced_accuracy_intervals_follow_the_chosen_method(method):
    cm = ConfusionMatrix(tp=8, fn=2, fp=3, tn=21)
    m = classification_metrics(cm, method=method)
    j = proportion_interval(8, 13, method)
    assert m["f1"].interval.low == pytest.approx(2 * j.low / (1 + j.low))
    assert m["f1"].interval.low < m["f1"].value < m["f1"].interval.high
    assert m["balanced_accuracy"].interval.low < m["balanced_accuracy"].value < m["balanced_accuracy"].interval.high
    assert m["f1"].interval.method == f"jaccard-{method}"
    assert m["balanced_accuracy"].interval.method == f"mover-{method}"


def test_all_positive_gold_and_flag_everything():
    cm = confusion_matrix([True] * 5, [True] * 5)
    m = classification_metrics(cm)
    assert m["accuracy"].value == 1.0 and m["precision"].value == 1.0 and m["recall"].value == 1.0
    assert m["specificity"].value is None and "no clean items" in m["specificity"].note
    assert m["balanced_accuracy"].value is None
    assert m["f1"].value == 1.0
    assert m["accuracy"].interval.high == 1.0


def test_all_negative_gold_and_flag_nothing():
    cm = confusion_matrix([False] * 4, [False] * 4)
    m = classification_metrics(cm)
    assert m["accuracy"].value == 1.0
    assert m["precision"].value is None and "flagged nothing" in m["precision"].note
    assert m["recall"].value is None
    assert m["f1"].value is None and m["f1"].interval is None
    assert m["flag_rate"].value == 0.0 and m["flag_rate"].interval.low == 0.0


def test_zero_counts_give_zero_rates_with_intervals():
    cm = confusion_matrix([True, False, False], [False, True, True])
    m = classification_metrics(cm)
    assert m["accuracy"].value == 0.0 and m["accuracy"].interval.low == 0.0
    assert m["precision"].value == 0.0 and m["recall"].value == 0.0
    assert m["f1"].value == 0.0


def test_empty_input_is_a_clear_error():
    with pytest.raises(EmptyInputError, match="no items"):
        confusion_matrix([], [])
    with pytest.raises(EmptyInputError):
        count_rate([])
    with pytest.raises(EmptyInputError):
        risk_coverage([], [])
    with pytest.raises(MixftError, match="differ in length"):
        confusion_matrix([True], [True, False])


def test_count_rate_excludes_unparsed_but_never_counts_them_clean():
    est = count_rate([True, False, None, None])
    assert (est.numerator, est.denominator, est.value) == (1, 2, 0.5)
    assert count_rate([None, None]).value is None
    assert rate(0, 0).value is None and "undefined" in rate(0, 0).note


def test_registry_lookup_and_helpful_unknown_name():
    assert get_metric("f1").name == "f1"
    with pytest.raises(MixftError, match="Unknown metric 'accurcy'. Did you mean 'accuracy'"):
        get_metric("accurcy")
    assert list(classification_metrics(confusion_matrix([True], [True]), ["recall"])) == ["recall"]
    assert "accuracy" in CLASSIFICATION_METRICS


def test_risk_coverage_hand_computed():
    gold = [True, True, False, False, True]
    scores = [0.9, 0.4, 0.8, 0.1, None]
    rows = risk_coverage(gold, scores, reject_unscored=True)
    # none rejected but the unscored item; then reject >= 0.9, >= 0.8, >= 0.4, >= 0.1
    assert [r.threshold for r in rows] == [None, 0.9, 0.8, 0.4, 0.1]
    assert [r.rejected for r in rows] == [1, 2, 3, 4, 5]
    assert [r.hallucinated_accepted for r in rows] == [2, 1, 1, 0, 0]
    assert rows[0].net_rate_all == pytest.approx(2 / 5) and rows[0].risk == pytest.approx(2 / 4)
    assert rows[-1].risk is None and rows[-1].coverage == 0.0
    kept = risk_coverage(gold, scores, reject_unscored=False)
    assert kept[0].rejected == 0 and kept[0].hallucinated_accepted == 3
    assert kept[-1].hallucinated_accepted == 1  # the unscored hallucination is always accepted


def test_risk_coverage_ties_move_together():
    rows = risk_coverage([True, False, True], [0.5, 0.5, 0.2])
    assert [r.rejected for r in rows] == [0, 2, 3]
