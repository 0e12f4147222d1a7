"""Turn the three label forms of a labeled responses row (docs/formats.md §3): a verdict object, RAGTruth
spans or a boolean ``hallucinated``, into one verdict. :func:`label_verdict` gives the verdict or raises
``LabelError`` naming the field at fault, as ``prepare tc`` reports it (``file:line: field: message``).
"""

from __future__ import annotations

from typing import Any

from mixtral_ft.tc.verdict import (
    Groundedness,
    Mistake,
    Relevance,
    Verdict,
    VerdictError,
    is_hallucinated,
    verdict_from_dict,
)

LABEL_FIELDS = ("verdict", "labels", "hallucinated")


class LabelError(ValueError):
    """A row's label cannot give a verdict: ``field`` (a dotted path: ``labels[0].text``) and what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def verdict_from_spans(spans: Any, field: str = "labels") -> Verdict:
    """RAGTruth spans → a verdict; raises ``LabelError``."""
    if not isinstance(spans, list):
        raise LabelError(field, f"expected a list of spans, got {type(spans).__name__}")
    mistakes = []
    for i, span in enumerate(spans):
        where = f"{field}[{i}]"
        if not isinstance(span, dict):
            raise LabelError(where, f"expected an object, got {type(span).__name__}")
        text, label_type, meta = span.get("text"), span.get("label_type"), span.get("meta")
        if not isinstance(text, str) or not text.strip():
            raise LabelError(f"{where}.text", "must be a non-empty string")
        if not isinstance(label_type, str) or not label_type.strip():
            raise LabelError(f"{where}.label_type", "must be a non-empty string")
        if meta is not None and not isinstance(meta, str):
            raise LabelError(f"{where}.meta", f"must be a string or null, got {type(meta).__name__}")
        # One RAGTruth span has meta null: an empty explanation, not an invented one.
        mistakes.append(Mistake(text, label_type, (meta or "").strip()))
    return Verdict(Relevance(False, ""), Groundedness(bool(mistakes), tuple(mistakes)), None)


def verdict_from_bool(hallucinated: bool) -> Verdict:
    return Verdict(Relevance(False, ""), Groundedness(hallucinated, ()), None)


def label_verdict(row: dict[str, Any], count_relevance: bool = False) -> Verdict:
    """The verdict a row's label(s) give; raises ``LabelError`` naming the field.

    ``verdict`` wins over ``labels`` (they may not both be given); ``hallucinated`` beside
    either must agree with it (under ``count_relevance``).

    - ``verdict``: a verdict object (§5), validated strictly;
    - ``labels``: RAGTruth-style spans ``{"text", "label_type", "meta", ...}``; each span becomes
      a groundedness mistake (``type`` = ``label_type``, ``explanation`` = the annotator's
      ``meta``); an empty list means no hallucination;
    - ``hallucinated``: a boolean; true gives an unlocalized groundedness mistake (no spans).

    A row may carry more than one form only when they agree on whether it is hallucinated.
    """
    has = [f for f in LABEL_FIELDS if row.get(f) is not None]
    if not has:
        raise LabelError(
            "verdict", "no label: give a verdict object, RAGTruth 'labels' spans, or 'hallucinated' (bool)"
        )
    if "verdict" in has and "labels" in has:
        raise LabelError("labels", "both 'verdict' and 'labels' are given; keep one label form")
    if "verdict" in has:
        try:
            verdict = verdict_from_dict(row["verdict"])
        except VerdictError as e:
            # "relevance.mistake: expected ..." -> field "verdict.relevance.mistake"
            path, _, message = str(e).partition(": ")
            raise LabelError(path if path.startswith("verdict") else f"verdict.{path}", message) from None
        form = "verdict"
    elif "labels" in has:
        verdict = verdict_from_spans(row["labels"])
        form = "labels"
    else:
        verdict = None
        form = "hallucinated"
    flag = row.get("hallucinated")
    if flag is not None and not isinstance(flag, bool):
        raise LabelError("hallucinated", f"expected true or false, got {flag!r:.40}")
    if verdict is None:
        assert flag is not None  # only 'hallucinated' is given: ``has`` is not empty
        return verdict_from_bool(flag)
    if flag is not None and flag != is_hallucinated(verdict, count_relevance):
        raise LabelError("hallucinated", f"{str(flag).lower()} contradicts the {form} label")
    return verdict
