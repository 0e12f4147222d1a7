"""`eval rg`: the hallucination rate of a response generator, from per-item verdicts."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from mixtral_ft.choices import GroupField, values
from mixtral_ft.errors import UsageError, suggest
from mixtral_ft.eval.correction import CheckerEval, corrected_rate
from mixtral_ft.eval.items import Item, ItemFile, mistake_type_counts
from mixtral_ft.eval.metrics import Estimate, count_rate, rate
from mixtral_ft.eval.render import ci_level, correction_text, est_text, intervals_sentence, markdown_table
from mixtral_ft.eval.result import EvalResult
from mixtral_ft.eval.stats import DEFAULT_CONFIDENCE

GROUP_FIELDS = values(GroupField)


def default_label(f: ItemFile) -> str:
    models = {it.model for it in f.items if it.model}
    return models.pop() if len(models) == 1 else Path(f.path).stem


def group_rows(
    items: list[Item], by: str, method: str, confidence: float, checker: CheckerEval | None = None
) -> list[dict]:
    """One row per value of ``by`` (items without it grouped under '(none)'), sorted by name;
    with ``checker``, each row's rate corrected for the judge's error beside it."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[getattr(it, by) or "(none)"].append(it)
    rows = []
    for name in sorted(groups):
        members = groups[name]
        parsed = [it for it in members if it.parsed]
        k = sum(bool(it.hallucinated) for it in parsed)
        row = {
            by: name,
            "items": len(members),
            "parsed": len(parsed),
            "unparsed": len(members) - len(parsed),
            "hallucinated": k,
            "hallucination_rate": rate(k, len(parsed), method, confidence, "every item is unparsed").to_dict(),
        }
        if checker is not None:
            row["hallucination_rate_corrected"] = corrected_rate(k, len(parsed), checker, method, confidence).to_dict()
        rows.append(row)
    return rows


def evaluate_rg(
    verdicts: ItemFile,
    by: list[str] | None = None,
    count_relevance: bool = False,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
    label: str | None = None,
    checker: CheckerEval | None = None,
) -> EvalResult:
    """Hallucination rate over parsed items, with relevance, unparsed and breakdowns beside it.

    ``checker``: an ``eval tc`` result of the same judge; adds ``hallucination_rate_corrected``
    (correction.py) and the judge's measured error (``checker_eval``)."""
    if checker is not None:
        checker.check_applies_to([verdicts], count_relevance)
    for b in by or []:
        if b not in GROUP_FIELDS:
            raise UsageError(suggest(b, GROUP_FIELDS, "--by field"))
    items = verdicts.items
    parsed = [it for it in items if it.parsed]
    if by is None:
        by = [g for g in GROUP_FIELDS if any(getattr(it, g) for it in items)]
    type_rows = [
        {"type": t, "items": c, "share_of_parsed": c / len(parsed) if parsed else None}
        for t, c in sorted(mistake_type_counts(parsed).items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    body: dict[str, Any] = {
        "counts": _counts(items),
        "metrics": {k: v.to_dict() for k, v in _metrics(items, checker, method, confidence).items()},
        "breakdown": {g: group_rows(items, g, method, confidence, checker) for g in by},
        "mistake_types": type_rows,
    }
    if checker is not None:
        body["checker_eval"] = checker.to_dict(method, confidence)
    options = {"count_relevance": count_relevance, "by": by, "interval": method, "confidence": confidence}
    if checker is not None:
        options["checker_eval"] = str(checker.path)
    md = _markdown(body, count_relevance, confidence)
    return EvalResult("rg", label or default_label(verdicts), {"verdicts": verdicts}, options, body, _summary(body), md)


def _metrics(items: list[Item], checker: CheckerEval | None, method: str, confidence: float) -> dict[str, Estimate]:
    """The hallucination rate and its companions; with ``checker``, the rate corrected for the judge."""
    n = len(items)
    parsed = [it for it in items if it.parsed]
    hall = sum(bool(it.hallucinated) for it in parsed)
    unparsed = n - len(parsed)
    rel_known = [it for it in parsed if it.relevance_mistake is not None]
    metrics = {
        "hallucination_rate": count_rate([it.hallucinated for it in items], method, confidence),
        "groundedness_mistake_rate": count_rate([it.groundedness_mistake for it in items], method, confidence),
        "relevance_mistake_rate": rate(
            sum(bool(it.relevance_mistake) for it in rel_known),
            len(rel_known),
            method,
            confidence,
            "no item carries a verdict with relevance",
        ),
        "unparsed_rate": rate(unparsed, n, method, confidence),
        "hallucination_rate_if_unparsed_hallucinated": rate(hall + unparsed, n, method, confidence),
    }
    if checker is not None:
        metrics["hallucination_rate_corrected"] = corrected_rate(hall, len(parsed), checker, method, confidence)
    return metrics


def _counts(items: list[Item]) -> dict[str, Any]:
    parsed = [it for it in items if it.parsed]
    hall = sum(bool(it.hallucinated) for it in parsed)
    rel_known = [it for it in parsed if it.relevance_mistake is not None]
    return {
        "items": len(items),
        "parsed": len(parsed),
        "unparsed": len(items) - len(parsed),
        "hallucinated": hall,
        "clean": len(parsed) - hall,
        "relevance_known": len(rel_known),
        "relevance_mistakes": sum(bool(it.relevance_mistake) for it in rel_known),
        "label_sources": dict(sorted(_label_sources(items).items())),
    }


def _summary(body: dict) -> list[tuple[str, str]]:
    """The rows printed to stdout."""
    m, c = body["metrics"], body["counts"]
    summary = [("items", str(c["items"])), ("hallucination rate", est_text(m["hallucination_rate"]))]
    if "checker_eval" in body:
        summary.append(
            ("  corrected for the judge", correction_text(m["hallucination_rate_corrected"], body["checker_eval"]))
        )
    summary += [
        ("relevance mistakes", est_text(m["relevance_mistake_rate"])),
        ("unparsed", f"{c['unparsed']} ({est_text(m['unparsed_rate'])})"),
    ]
    for g, rows in body["breakdown"].items():
        for r in rows:
            summary.append((f"  {g}={r[g]}", est_text(r["hallucination_rate"])))
    return summary


def _label_sources(items: list[Item]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for it in items:
        out[it.label_from] += 1
    return out


def _markdown(body: dict, count_relevance: bool, confidence: float) -> str:
    m, c = body["metrics"], body["counts"]
    rule = "groundedness or relevance mistake" if count_relevance else "groundedness mistake"
    rows = [["hallucination rate (as judged)", est_text(m["hallucination_rate"])]]
    checker = body.get("checker_eval")
    if checker is not None:
        rows.append(
            [
                "hallucination rate corrected for the judge's error",
                correction_text(m["hallucination_rate_corrected"], checker),
            ]
        )
    rows += [
        ["groundedness mistake rate", est_text(m["groundedness_mistake_rate"])],
        ["relevance mistake rate", est_text(m["relevance_mistake_rate"])],
        ["unparsed", est_text(m["unparsed_rate"])],
        [
            "hallucination rate if every unparsed item were hallucinated",
            est_text(m["hallucination_rate_if_unparsed_hallucinated"]),
        ],
    ]
    parts = [
        f"Hallucinated ⇔ {rule}. Rates are over parsed items; unparsed items are reported "
        "separately and never counted as clean. " + intervals_sentence(m.items()),
        "",
        markdown_table(["metric", f"value [{ci_level(confidence)} CI] (k/n)"], rows),
        "",
        f"Items: {c['items']}; parsed: {c['parsed']}; hallucinated: {c['hallucinated']}; "
        f"clean: {c['clean']}; unparsed: {c['unparsed']}.",
    ]
    if checker is not None:
        parts += ["", "## The judge's own error", "", _checker_paragraph(checker)]
    for g, rows_ in body["breakdown"].items():
        headers = [g, "items", "unparsed", "hallucinated", f"rate [{ci_level(confidence)} CI]"]
        if checker is not None:
            headers.append("corrected for the judge")
        table = []
        for r in rows_:
            row = [r[g], r["items"], r["unparsed"], r["hallucinated"], est_text(r["hallucination_rate"])]
            if checker is not None:
                row.append(correction_text(r["hallucination_rate_corrected"], checker, with_judge=False))
            table.append(row)
        parts += ["", f"## By {g}", "", markdown_table(headers, table)]
    if body["mistake_types"]:
        parts += [
            "",
            "## By mistake type",
            "",
            "Items with at least one mistake of the type.",
            "",
            markdown_table(
                ["type", "items", "share of parsed items"],
                [[r["type"], r["items"], est_text({"value": r["share_of_parsed"]})] for r in body["mistake_types"]],
            ),
        ]
    return "\n".join(parts)


def _checker_paragraph(checker: dict) -> str:
    """What the correction rests on: the judge's measured sensitivity and specificity, and the assumption."""
    se, sp, j = checker["sensitivity"], checker["specificity"], checker["youden_j"]
    j_text = (
        "undefined" if j.get("value") is None else f"{j['value']:.3f} [{j['ci']['low']:.3f}, {j['ci']['high']:.3f}]"
    )
    lines = [
        (
            f"The rate above is what the judge flagged. The judge's error was measured by `eval tc` "
            f"(`{checker['path']}`, {checker['label']}) over its parsed verdicts on gold: sensitivity "
            f"{est_text(se)}, specificity {est_text(sp)}, sensitivity + specificity - 1 = {j_text}. "
            "Corrected rate: Rogan-Gladen, (flag rate + specificity - 1) / (sensitivity + specificity - 1), "
            "clipped to [0, 1], with an interval that carries the uncertainty of the flag rate, the "
            "sensitivity and the specificity."
        )
    ]
    if not checker["identifiable"]:
        lines.append(
            f"Not identifiable: {checker['not_identifiable_reason']}; the judged rate then says what "
            "the judge can see, not how often responses hallucinate."
        )
    lines.append(f"Assumption: {checker['assumption']}.")
    return " ".join(lines)
