"""Text normalization (:func:`normalize_text`, the same rules for every field), snippet joining and
content keys.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

DEFAULT_SNIPPET_SEPARATOR = "\n\n"
DEFAULT_NUMBER_FORMAT = "[{n}] "
# Every character str.split() treats as whitespace, except " " and "\n".
_ASCII_ODD_WHITESPACE = "\t\r\x0b\x0c\x1c\x1d\x1e\x1f"
_UNICODE_WHITESPACE = "\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def normalize_text(text: str) -> str:
    """Normalize ``text``; the result is ``""`` for blank text. The rules:

    1. Unicode NFC (so "é" typed two ways is one string);
    2. line ends ``\\r\\n`` and ``\\r`` become ``\\n``;
    3. inside a line every run of whitespace (spaces, tabs, no-break spaces, other Unicode
       spaces) becomes one space, and each line is stripped;
    4. more than one blank line in a row becomes one blank line;
    5. leading and trailing blank lines are removed.

    Line breaks are kept: they carry structure (lists, snippets, paragraphs).
    """
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return _normalize_whitespace(text)


def _normalize_whitespace(text: str) -> str:
    if _is_normal(text):
        return text  # already normal: the common case, checked without splitting
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in text:
        return " ".join(text.split())
    out: list[str] = []
    blank = True  # drops leading blank lines
    for line in text.split("\n"):
        line = " ".join(line.split())
        if line:
            out.append(line)
            blank = False
        elif not blank:
            out.append("")
            blank = True
    if out and out[-1] == "":
        out.pop()
    return "\n".join(out)


def _is_normal(text: str) -> bool:
    """True when ``normalize_text`` would return ``text`` unchanged (NFC aside).

    Written for speed: single-character and rare-last-character searches are near memchr
    speed, so the only full scan with a common character is the one for a double space.
    """
    if "  " in text or " \n" in text or "\n\n\n" in text:
        return False
    if text[:1].isspace() or text[-1:].isspace():
        return False
    for ch in _ASCII_ODD_WHITESPACE:
        if ch in text:
            return False
    if not text.isascii():
        for ch in _UNICODE_WHITESPACE:
            if ch in text:
                return False
    if "\n" in text:  # a line starting with a space ("\n " is a slow search: split instead)
        for line in text.split("\n"):
            if line[:1] == " ":
                return False
    return True


def normalize_many(texts: Sequence[str]) -> list[str]:
    """``[normalize_text(t) for t in texts]``, faster for the usual already-clean row: one
    check over all texts joined by NUL (not whitespace, so no run spans two texts)."""
    joined = "\x00".join(texts)
    if not joined.isascii():
        joined = unicodedata.normalize("NFC", joined)  # NFC never moves characters across NUL
    parts = joined.split("\x00")
    if len(parts) != len(texts):  # a text contained NUL itself
        return [normalize_text(t) for t in texts]
    if _is_normal(joined) and all(not (p[:1].isspace() or p[-1:].isspace()) for p in parts):
        return parts
    return [_normalize_whitespace(p) for p in parts]  # already NFC


def join_snippets(
    snippets: Sequence[str],
    separator: str = DEFAULT_SNIPPET_SEPARATOR,
    numbered: bool = False,
    number_format: str = DEFAULT_NUMBER_FORMAT,
    normalized: bool = False,
) -> str:
    """Normalize each snippet (unless already ``normalized``), drop blank ones, and join them;
    with ``numbered`` each snippet is prefixed ``[1] ``, ``[2] ``... (numbers count the kept
    snippets)."""
    kept = [s for s in (snippets if normalized else normalize_many(snippets)) if s]
    if numbered:
        kept = [number_format.format(n=i) + s for i, s in enumerate(kept, 1)]
    return separator.join(kept)


def content_key(*parts: str) -> str:
    """A 128-bit hex key of the parts (unit-separator joined): equal iff the parts are equal."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8"))
    return h.hexdigest()[:32]
