"""`eval pipeline`: what a user sees when every response the checker flags is rejected.

Rejection rate, and the net hallucination rate (hallucinated and accepted) over all responses and
over accepted ones. "Hallucinated" comes from gold; "flagged" from the checker's verdicts, or
``score >= --threshold``; unparsed checker outputs are rejected or accepted (``--unparsed``).
"""

from __future__ import annotations

from typing import Any

from mixtral_ft.choices import Unparsed, values
from mixtral_ft.errors import UsageError, suggest
from mixtral_ft.eval.items import Item, ItemFile, match_ids
from mixtral_ft.eval.metrics import Estimate, rate, risk_coverage
from mixtral_ft.eval.render import ci_level, est_text, intervals_sentence, markdown_table, pct
from mixtral_ft.eval.result import EvalResult
from mixtral_ft.eval.stats import DEFAULT_CONFIDENCE
from mixtral_ft.eval.tc import default_label

UNPARSED_POLICIES = values(Unparsed)


def evaluate_pipeline(
    gold: ItemFile,
    checker: ItemFile,
    unparsed: str = "reject",
    threshold: float | None = None,
    count_relevance: bool = False,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
    label: str | None = None,
) -> EvalResult:
    if unparsed not in UNPARSED_POLICIES:
        raise UsageError(suggest(unparsed, UNPARSED_POLICIES, "--unparsed policy"))
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    ids = match_ids(gold, checker, "gold", "checker")
    g, c = gold.by_id(), checker.by_id()
    gold_flags = [bool(g[i].hallucinated) for i in ids]
    decisions = _decisions(checker, ids, threshold)
    rejected = [d if d is not None else unparsed == "reject" for d in decisions]
    counts, metrics = _rates(gold_flags, rejected, sum(d is None for d in decisions), method, confidence)
    rc_rows, rc_note = _risk_coverage(gold_flags, [c[i] for i in ids], unparsed)
    body: dict[str, Any] = {
        "counts": counts,
        "metrics": {k: v.to_dict() for k, v in metrics.items()},
        "risk_coverage": rc_rows,
    }
    if rc_note:
        body["risk_coverage_note"] = rc_note
    m = body["metrics"]
    summary = [("items", str(counts["items"]))] + [
        (k.replace("_", " "), est_text(m[k]))
        for k in (
            "base_hallucination_rate",
            "rejection_rate",
            "net_hallucination_rate_all",
            "net_hallucination_rate_accepted",
            "checker_unparsed_rate",
        )
    ]
    options = {
        "unparsed": unparsed,
        "threshold": threshold,
        "count_relevance": count_relevance,
        "interval": method,
        "confidence": confidence,
    }
    return EvalResult(
        "pipeline",
        label or default_label(checker),
        {"gold": gold, "checker": checker},
        options,
        body,
        summary,
        _markdown(m, rc_rows, rc_note, threshold, unparsed, confidence),
    )


def _decisions(checker: ItemFile, ids: list[str], threshold: float | None) -> list[bool | None]:
    """Whether the checker flags each item (its verdict, or ``score >= threshold``); None: unparsed."""
    c = checker.by_id()
    if threshold is None:
        return [c[i].hallucinated for i in ids]
    decisions = [None if (s := c[i].score) is None else s >= threshold for i in ids]
    if all(d is None for d in decisions):
        raise UsageError(f"--threshold given but {checker.path} has no 'score' on any row")
    return decisions


def _rates(
    gold_flags: list[bool], rejected: list[bool], n_unparsed: int, method: str, confidence: float
) -> tuple[dict[str, int], dict[str, Estimate]]:
    """The counts and rates of rejecting every flagged response."""
    n = len(gold_flags)
    n_rejected = sum(rejected)
    accepted = n - n_rejected
    hall_accepted = sum(h and not r for h, r in zip(gold_flags, rejected))
    hall = sum(gold_flags)
    metrics = {
        "base_hallucination_rate": rate(hall, n, method, confidence),
        "rejection_rate": rate(n_rejected, n, method, confidence),
        "net_hallucination_rate_all": rate(hall_accepted, n, method, confidence),
        "net_hallucination_rate_accepted": rate(hall_accepted, accepted, method, confidence, "every response rejected"),
        "hallucinations_caught": rate(hall - hall_accepted, hall, method, confidence, "no hallucinated responses"),
        "checker_unparsed_rate": rate(n_unparsed, n, method, confidence),
    }
    counts = {
        "items": n,
        "hallucinated": hall,
        "rejected": n_rejected,
        "accepted": accepted,
        "hallucinated_accepted": hall_accepted,
        "checker_unparsed": n_unparsed,
    }
    return counts, metrics


def _risk_coverage(gold_flags: list[bool], checked: list[Item], unparsed: str) -> tuple[list[dict] | None, str | None]:
    """The risk-coverage rows when the checker scored its items, or why there are none (a note)."""
    scores = [it.score for it in checked]
    if not any(s is not None for s in scores):
        return None, None
    missing = sum(it.score is None for it in checked if it.parsed)
    if missing:
        return None, f"no risk-coverage table: {missing} parsed checker row(s) have no score"
    return [r.to_dict() for r in risk_coverage(gold_flags, scores, reject_unscored=unparsed == "reject")], None


def _markdown(
    m: dict[str, dict],
    rc_rows: list[dict] | None,
    rc_note: str | None,
    threshold: float | None,
    unparsed: str,
    confidence: float,
) -> str:
    decision = "the checker's verdicts" if threshold is None else f"score >= {threshold}"
    parts = [
        f"Rejected: flagged by {decision}; unparsed checker outputs are {unparsed}ed. "
        "Hallucinated: from the gold file. " + intervals_sentence(m.items()),
        "",
        markdown_table(
            ["metric", f"value [{ci_level(confidence)} CI] (k/n)"], [[k.replace("_", " "), est_text(m[k])] for k in m]
        ),
    ]
    if rc_rows:
        parts += [
            "",
            "## Risk-coverage",
            "",
            "Reject every response whose score is at least the threshold (first row: reject none).",
            "",
            markdown_table(
                ["threshold", "rejection rate", "coverage", "net hallucination (all)", "hallucination among accepted"],
                [
                    [
                        "none" if r["threshold"] is None else f"{r['threshold']:.4g}",
                        pct(r["rejection_rate"]),
                        pct(r["coverage"]),
                        pct(r["net_hallucination_rate_all"]),
                        pct(r["risk_accepted"]),
                    ]
                    for r in rc_rows
                ],
            ),
        ]
    elif rc_note:
        parts += ["", rc_note + "."]
    return "\n".join(parts)
