"""Formatting helpers shared by the eval reports: percentages with intervals, tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


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


def half_width_points(est: dict[str, Any] | None) -> float | None:
    """The larger half-width of the interval, in percentage points."""
    if not est or not est.get("ci") or est.get("value") is None:
        return None
    ci = est["ci"]
    return 100 * max(est["value"] - ci["low"], ci["high"] - est["value"])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces (the stdout summary)."""
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    return "\n".join("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(r)).rstrip() for r in rows)
