"""The truth-checker verdict (docs/formats.md §5): data type, strict validation
(:func:`verdict_from_dict`, the rules of ``resources/verdict.schema.json``; tests check they agree), the
text form the model is trained to emit, and one pure parser from model text to a verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERDICT_VERSION = 1

# Mistake types used by the prompt and by RAGTruth labels; other non-empty strings are valid.
MISTAKE_TYPES = ("Evident Conflict", "Subtle Conflict", "Evident Baseless Info", "Subtle Baseless Info")

_TOP_KEYS = ("relevance", "groundedness", "corrected_response")
_RELEVANCE_KEYS = ("mistake", "explanation")
_GROUNDEDNESS_KEYS = ("mistake", "mistakes")
_MISTAKE_KEYS = ("text", "type", "explanation")


class VerdictError(ValueError):
    """A JSON value that is not a valid verdict; the message names the offending path."""


@dataclass(frozen=True)
class Mistake:
    text: str
    type: str
    explanation: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "type": self.type, "explanation": self.explanation}


@dataclass(frozen=True)
class Relevance:
    mistake: bool
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {"mistake": self.mistake, "explanation": self.explanation}


@dataclass(frozen=True)
class Groundedness:
    mistake: bool
    mistakes: tuple[Mistake, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"mistake": self.mistake, "mistakes": [m.to_dict() for m in self.mistakes]}


@dataclass(frozen=True)
class Verdict:
    relevance: Relevance
    groundedness: Groundedness
    corrected_response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict, keys in the canonical order."""
        return {
            "relevance": self.relevance.to_dict(),
            "groundedness": self.groundedness.to_dict(),
            "corrected_response": self.corrected_response,
        }

    def __post_init__(self) -> None:
        if not self.groundedness.mistake and self.groundedness.mistakes:
            raise VerdictError("groundedness: mistake is false but mistakes is not empty")


@dataclass(frozen=True)
class ParseResult:
    """What ``parse_verdict`` found: a verdict (``ok``) or an error; ``raw`` is always the input."""

    ok: bool
    verdict: Verdict | None
    error: str | None
    raw: str


def clean_verdict(corrected_response: str | None = None) -> Verdict:
    """No relevance or groundedness mistake."""
    return Verdict(Relevance(False, ""), Groundedness(False, ()), corrected_response)


def is_hallucinated(verdict: Verdict, count_relevance: bool = False) -> bool:
    """Hallucinated ⇔ a groundedness mistake (or, with ``count_relevance``, a relevance mistake)."""
    return verdict.groundedness.mistake or (count_relevance and verdict.relevance.mistake)


# ---------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _check_keys(obj: Any, path: str, keys: tuple[str, ...], allow_extra: bool) -> None:
    if not isinstance(obj, dict):
        raise VerdictError(f"{path}: expected an object, got {_type_name(obj)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise VerdictError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}")
    extra = sorted(k for k in obj if k not in keys)
    if extra and not allow_extra:
        raise VerdictError(f"{path}: unexpected key(s) {', '.join(repr(k) for k in extra)}")


def _bool(obj: dict, key: str, path: str) -> bool:
    value = obj[key]
    if not isinstance(value, bool):
        raise VerdictError(f"{path}.{key}: expected a boolean, got {_type_name(value)} {value!r:.40}")
    return value


def _str(obj: dict, key: str, path: str, non_empty: bool = False) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise VerdictError(f"{path}.{key}: expected a string, got {_type_name(value)}")
    if non_empty and not value.strip():
        raise VerdictError(f"{path}.{key}: must not be empty")
    return value


def verdict_from_dict(obj: Any, allow_extra_keys: bool = False) -> Verdict:
    """Validate a decoded JSON value strictly and build a ``Verdict``; raise ``VerdictError``.

    Rules (the same as ``resources/verdict.schema.json``; tests check they agree):

    - exactly the keys ``relevance``, ``groundedness``, ``corrected_response`` at the top,
      ``mistake``/``explanation`` in ``relevance``, ``mistake``/``mistakes`` in ``groundedness``,
      ``text``/``type``/``explanation`` in each mistake. Extra keys are rejected: a verdict that
      drifts from the format may carry information we would silently drop (``"hallucinated":
      false`` beside listed mistakes). ``allow_extra_keys=True`` ignores them instead.
    - booleans are JSON booleans (not ``"true"``, not ``0``/``1``); strings are strings;
      ``corrected_response`` is a string or null; a mistake's ``text`` and ``type`` are non-empty.
    - ``groundedness.mistake`` false with a non-empty ``mistakes`` list is a contradiction.
      ``mistake`` true with an empty list is allowed: the response is hallucinated but the
      mistake is not localized. That is what a boolean ``hallucinated: true`` label gives, and
      rejecting it would turn a clear verdict into a parse failure.
    """
    _check_keys(obj, "verdict", _TOP_KEYS, allow_extra_keys)
    rel = obj["relevance"]
    _check_keys(rel, "relevance", _RELEVANCE_KEYS, allow_extra_keys)
    relevance = Relevance(_bool(rel, "mistake", "relevance"), _str(rel, "explanation", "relevance"))

    gro = obj["groundedness"]
    _check_keys(gro, "groundedness", _GROUNDEDNESS_KEYS, allow_extra_keys)
    g_mistake = _bool(gro, "mistake", "groundedness")
    items = gro["mistakes"]
    if not isinstance(items, list):
        raise VerdictError(f"groundedness.mistakes: expected an array, got {_type_name(items)}")
    mistakes = []
    for i, item in enumerate(items):
        path = f"groundedness.mistakes[{i}]"
        _check_keys(item, path, _MISTAKE_KEYS, allow_extra_keys)
        mistakes.append(
            Mistake(
                _str(item, "text", path, non_empty=True),
                _str(item, "type", path, non_empty=True),
                _str(item, "explanation", path),
            )
        )
    if not g_mistake and mistakes:
        raise VerdictError(f"groundedness: mistake is false but {len(mistakes)} mistake(s) are listed")

    corrected = obj["corrected_response"]
    if corrected is not None and not isinstance(corrected, str):
        raise VerdictError(f"verdict.corrected_response: expected a string or null, got {_type_name(corrected)}")
    return Verdict(relevance, Groundedness(g_mistake, tuple(mistakes)), corrected)


def verdict_to_text(verdict: Verdict) -> str:
    """The canonical completion text: one line of JSON, fixed key order, non-ASCII kept as is."""
    return json.dumps(verdict.to_dict(), ensure_ascii=False, separators=(", ", ": "))


# ---------------------------------------------------------------------------- parsing


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def _json_objects(text: str) -> tuple[list[dict], list[str]]:
    """Every top-level JSON object embedded in ``text`` (prose, code fences and all).

    Scans for ``{`` and decodes from there; after a successful decode it skips past the
    object, so nested objects are not reported twice. Duplicate keys are reported, not
    resolved (``json`` would silently keep the last one).
    """
    objects: list[dict] = []
    duplicates: list[str] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except _DuplicateKey as e:
            duplicates.append(str(e))
            pos = text.find("{", pos + 1)
            continue
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            objects.append(obj)
        pos = text.find("{", end)
    return objects, duplicates


def _looks_like_verdict(obj: dict) -> bool:
    return any(k in obj for k in _TOP_KEYS)


def parse_verdict(text: str, allow_extra_keys: bool = False) -> ParseResult:
    """Turn a model's output into a verdict, or a failure that keeps the raw text.

    Accepts code fences, prose before and after, and any key order. Fails (never defaults)
    when no JSON object with verdict keys is found (for example a truncated output), when
    the object breaks the verdict rules, or when the text holds two different verdicts.
    """
    if not isinstance(text, str):
        return ParseResult(False, None, f"expected text, got {_type_name(text)}", str(text))
    if not text.strip():
        return ParseResult(False, None, "empty output", text)
    objects, duplicates = _json_objects(text)
    candidates = [o for o in objects if _looks_like_verdict(o)]
    if not candidates:
        if duplicates:
            return ParseResult(False, None, f"duplicate key {duplicates[0]!r} in JSON object", text)
        if "{" not in text:
            return ParseResult(False, None, "no JSON object in output", text)
        return ParseResult(
            False, None, "no complete JSON object with verdict keys (truncated output or invalid JSON)", text
        )
    verdicts: list[Verdict] = []
    for obj in candidates:
        try:
            verdicts.append(verdict_from_dict(obj, allow_extra_keys=allow_extra_keys))
        except VerdictError as e:
            return ParseResult(False, None, str(e), text)
    if any(v != verdicts[0] for v in verdicts[1:]):
        return ParseResult(False, None, f"{len(verdicts)} different verdicts in output", text)
    return ParseResult(True, verdicts[0], None, text)
