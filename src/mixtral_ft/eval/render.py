"""Formatting helpers shared by the eval reports: percentages with intervals, tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mixtral_ft.util.fmt import pct  # noqa: F401  (re-exported: eval and report modules import it from here)

# What each stored interval method is, for captions (results.json stores the key, never the caption).
INTERVAL_CAPTIONS = {
    "wilson": "Wilson score",
    "clopper-pearson": "Clopper-Pearson exact",
    "newcombe-paired": "Newcombe's paired square-and-add (method 10)",
    "lang-reiczigel": "Lang-Reiczigel adjusted Wald, carrying the judge's estimated sensitivity and specificity",
    "mover-r": "MOVER-R ratio of the paired difference and the judge's Youden J (Newcombe 2016)",
}


def interval_caption(method: str) -> str:
    """A readable name for a stored ``ci.method`` (composite methods name their parts)."""
    if method in INTERVAL_CAPTIONS:
        return INTERVAL_CAPTIONS[method]
    head, _, base = method.partition("-")
    if head == "jaccard" and base:
        return f"{interval_caption(base)} interval of TP/(TP+FP+FN), mapped to F1 = 2J/(1+J)"
    if head == "mover" and base:
        return f"MOVER (square-and-add) of two {interval_caption(base)} intervals"
    return method


def intervals_sentence(estimates: Iterable[tuple[str, dict[str, Any] | None]]) -> str:
    """ "Intervals: 95% Wilson score." from the methods stored in (name, Estimate dict) pairs; with several
    methods, each is followed by the metrics that use it."""
    by_method: dict[tuple[str, float], list[str]] = {}
    for name, est in estimates:
        ci = (est or {}).get("ci")
        if ci:
            names = by_method.setdefault((ci["method"], ci["confidence"]), [])
            if name.replace("_", " ") not in names:
                names.append(name.replace("_", " "))
    if not by_method:
        return "No intervals (no metric is defined)."
    if len(by_method) == 1:
        ((method, conf),) = by_method
        return f"Intervals: {ci_level(conf)} {interval_caption(method)}."
    parts = [f"{interval_caption(m)} ({', '.join(names)})" for (m, _), names in by_method.items()]
    levels = sorted({ci_level(c) for _, c in by_method})
    return f"Intervals ({', '.join(levels)}): " + "; ".join(parts) + "."


def ci_level(confidence: float) -> str:
    """``95%`` for 0.95."""
    return f"{100 * confidence:g}%"


def est_text(est: dict[str, Any] | None, digits: int = 1) -> str:
    """``4.5% [2.7%, 7.4%] (9/200)`` from an Estimate dict."""
    if not est or est.get("value") is None:
        note = (est or {}).get("note")
        return f"n/a ({note})" if note else "n/a"
    text = pct(est["value"], digits)
    ci = est.get("ci")
    if ci:
        text += f" [{pct(ci['low'], digits)}, {pct(ci['high'], digits)}]"
    if est.get("denominator") is not None:
        text += f" ({est['numerator']}/{est['denominator']})"
    return text


def signed_points(est: dict[str, Any] | None) -> str:
    """``+3.1 points [-0.4, +6.6]`` for a difference of rates (an Estimate dict)."""
    if not est or est.get("value") is None:
        note = (est or {}).get("note")
        return f"n/a ({note})" if note else "n/a"
    text = pct(est["value"], signed=True, unit=" points")
    if est.get("ci"):
        text += f" [{pct(est['ci']['low'], signed=True, unit='')}, {pct(est['ci']['high'], signed=True, unit='')}]"
    return text


def correction_text(
    corrected: dict[str, Any] | None, checker_eval: dict[str, Any] | None, with_judge: bool = True
) -> str:
    """The corrected rate and the judge error it rests on, or why there is none:
    ``3.9% [1.2%, 7.7%] (judge sensitivity 9/10, specificity 280/290)`` /
    ``not identifiable: the checker's recall is 0/10``."""
    if checker_eval is None:
        return "not corrected (no --checker-eval: the judge's error was not measured)"
    if not corrected or corrected.get("value") is None:
        return (corrected or {}).get("note") or "n/a"
    text = est_text({k: v for k, v in corrected.items() if k != "note"})
    if not with_judge:
        return text
    se, sp = checker_eval["sensitivity"], checker_eval["specificity"]
    return (
        f"{text} (judge sensitivity {se['numerator']}/{se['denominator']}, "
        f"specificity {sp['numerator']}/{sp['denominator']})"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces (the stdout summary)."""
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    return "\n".join("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(r)).rstrip() for r in rows)
