"""What an id may be: data, never a path or markup (docs/formats.md, "Ids").

:func:`id_problem` gives the rules; :func:`show_id` prints an id the way messages quote it. No stage
builds a file name or markup from an id: ids travel inside JSON values, error messages print them quoted,
and the report escapes every text it shows.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

MAX_ID_CHARS = 256
_SEPARATORS = {"\u2028", "\u2029"}
_BIDI_CONTROLS = set("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _refused(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in _SEPARATORS or ch in _BIDI_CONTROLS


def show_id(value: Any) -> str:
    """An id as messages print it: quoted, with every refused character escaped (``"a\\nb"``)."""
    if not isinstance(value, str):
        return repr(value)
    text = json.dumps(value, ensure_ascii=False)
    return "".join(f"\\u{ord(ch):04x}" if _refused(ch) else ch for ch in text)


def id_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable id, or None when it is one.

    An id is a non-empty string of at most ``MAX_ID_CHARS`` characters with none of:

    - control characters (Unicode category Cc: NUL, tab, newline, carriage return, ESC, DEL, C1);
    - line or paragraph separators (U+2028, U+2029);
    - bidirectional-text controls (U+200E/F, U+061C, U+202A-U+202E, U+2066-U+2069), which make a
      printed id read differently from what it is;
    - leading or trailing whitespace (``prepare`` strips it; other stages refuse it).

    Everything else is allowed and means nothing special: ``/``, ``..``, ``<``, ``&``, quotes, spaces
    inside, any script. ``prepare`` also accepts an integer id and writes it as a string.
    """
    if not isinstance(value, str) or not value:
        return "missing or not a non-empty string"
    if len(value) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters ({len(value)}); ids are keys, not text"
    for i, ch in enumerate(value):
        if _refused(ch):
            name = unicodedata.name(ch, f"U+{ord(ch):04X}")
            return (
                f"{show_id(value)} contains {name} (U+{ord(ch):04X}) at position {i}; an id may not contain "
                "control characters (newline, tab...), line separators or bidirectional controls"
            )
    if value != value.strip():
        return f"{show_id(value)} has leading or trailing whitespace"
    return None
