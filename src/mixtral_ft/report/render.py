"""The report document and its one renderer: blocks to Markdown, and that Markdown to HTML.

report.html is report.md rendered by markdown-it-py (CommonMark and tables, raw HTML off).
Text that comes from the inputs (labels, model names, paths, notes) is escaped with
``md_literal``, so it reads as written in both files and can never become markup.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt

from mixtral_ft.eval.render import markdown_table

TITLE = "mixft report"

STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:left}th{background:#f3f3f3}img{max-width:100%}"
)


@dataclass
class Block:
    """One part of the report: ``h2`` (heading), ``p`` (a Markdown paragraph), ``table`` (cells are
    literal text) or ``img`` (a PNG beside the report, by file name)."""

    kind: str  # h2 | p | table | img
    text: str = ""
    headers: list[str] | None = None
    rows: list[list[Any]] | None = None


_ASCII_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def md_literal(text: str) -> str:
    """``text`` escaped so that Markdown shows it as written: no emphasis, code, link, image,
    autolink, HTML or entity can come out of it. Text with none of these reads the same."""
    out = []
    for i, ch in enumerate(text):
        before = text[i - 1] if i else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        if ch == "\\":
            escape = after in _ASCII_PUNCT or not after  # literal unless punctuation (or a line end) follows
        elif ch in "`*<~":
            escape = True
        elif ch == "_":  # between two letters or digits an underscore can never open or close emphasis
            escape = not (before.isalnum() and after.isalnum())
        elif ch == "]":
            escape = after in ("(", "[")  # the only ways to close an inline link or image
        elif ch == "&":
            escape = _ENTITY.match(text, i) is not None
        else:
            escape = False
        out.append("\\" + ch if escape else ch)
    return "".join(out)


def to_markdown(blocks: list[Block]) -> str:
    """report.md: the title, then each block; table cells are escaped with ``md_literal``."""
    parts = [f"# {TITLE}"]
    for b in blocks:
        if b.kind == "h2":
            parts.append(f"## {b.text}")
        elif b.kind == "p":
            parts.append(b.text)
        elif b.kind == "img":
            parts.append(f"![{b.text}]({b.text})")
        elif b.kind == "table":
            parts.append(
                markdown_table(
                    [md_literal(str(h)) for h in b.headers or []],
                    [[md_literal(str(v)) for v in row] for row in b.rows or []],
                )
            )
    return "\n\n".join(parts) + "\n"


def to_html(markdown: str) -> str:
    """report.html: ``markdown`` (report.md) rendered as CommonMark with tables, raw HTML off,
    in a page with a minimal stylesheet; images stay relative to the report."""
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + renderer.render(markdown) + "</body></html>\n"
    )
