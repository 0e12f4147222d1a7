"""The field checker of every ``prepare`` task: field mapping, typed checks, problem collection.

A task maps each canonical field (``question``, ``context``...) to a column of the input
(``FieldSpec``; ``resolve_fields`` applies the user's ``--*-field`` columns). ``RowCheck`` reads
one row's fields with ``get_path`` (dotted paths reach into nested objects: ``source.question``),
checks them with the ``check_*`` functions - which return the value or a message, never raise -
normalizes the texts, and gathers every problem as ``file:line: field: message``; a
``ProblemCollector`` keeps the first ``cap`` problems of a run and counts the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mixtral_ft.data.normalize import normalize_many
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.prepare.readers import type_name
from mixtral_ft.util.ids import id_problem

DEFAULT_PROBLEM_CAP = 50
EMPTY = "empty (nothing left after whitespace normalization)"
_MISSING = object()


@dataclass(frozen=True)
class FieldSpec:
    """A canonical field, the input column it comes from and the option that remaps it."""

    name: str  # canonical name, used in messages when the column has the same name
    column: str  # column / dotted path in the input
    option: str  # e.g. "--question-field"
    required: bool = True

    @property
    def label(self) -> str:
        """The name messages use: the input column, since that is what the user sees."""
        return self.column


def resolve_fields(defaults: Sequence[FieldSpec], columns: Mapping[str, str]) -> dict[str, FieldSpec]:
    """A task's fields (``defaults``, in order) reading the ``columns`` the user named."""
    known = [s.name for s in defaults]
    unknown = sorted(set(columns) - set(known))
    if unknown:
        raise UsageError(f"unknown field(s) {', '.join(unknown)}; this task reads {', '.join(known)}")
    return {s.name: replace(s, column=columns.get(s.name, s.column)) for s in defaults}


def get_path(obj: dict[str, Any], path: str) -> Any:
    """``obj[path]``, or a dotted path into nested objects and lists (``source.question``,
    ``responses.0.response``); ``MISSING`` when absent."""
    if path in obj:
        return obj[path]
    if "." not in path:
        return _MISSING
    cur: Any = obj
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]  # "responses.0.response"
        else:
            return _MISSING
    return cur


MISSING = _MISSING


def missing_message(spec: FieldSpec) -> str:
    return f"missing; use {spec.option} to map another column"


def row_source(obj: dict[str, Any], column: str, tag: str | None, default: str) -> tuple[str, str | None]:
    """A row's ``source``: the input's ``TAG=``, else the row's own ``column`` (a non-empty string;
    ``""`` = never read), else ``default``. Returns ``(source, problem message or None)``."""
    if tag is not None:
        return tag, None
    if column:
        value = get_path(obj, column)
        if value is not MISSING and value is not None:
            if isinstance(value, str) and value.strip():
                return value.strip(), None
            return default, (
                "expected a non-empty string; use --source-field to map another column or tag the input as TAG=PATH"
            )
    return default, None


def row_group(obj: dict[str, Any], column: str) -> tuple[str | None, str | None]:
    """The ``--group-by`` value of a row: ``(group, problem message or None)``."""
    value = get_path(obj, column)
    if value is MISSING or value is None:
        return None, "missing; --group-by needs a group on every row"
    return check_key(value)


def check_text(value: Any) -> tuple[str | None, str | None]:
    """A non-empty string (emptiness is checked after normalization by the caller)."""
    if isinstance(value, str):
        return value, None
    return None, f"expected a string, got {type_name(value)}"


def check_text_or_list(value: Any) -> tuple[str | list[str] | None, str | None]:
    """A string or a non-empty list of strings (e.g. context snippets)."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, (list, tuple)):
        if not value:
            return None, "empty list of snippets"
        for i, item in enumerate(value):
            if not isinstance(item, str):
                return None, f"item {i} of the list: expected a string, got {type_name(item)}"
        return list(value), None
    return None, f"expected a string or a list of strings, got {type_name(value)}"


def check_key(value: Any) -> tuple[str | None, str | None]:
    """An identifier (id, group): a non-empty string or an integer, returned as a string."""
    if isinstance(value, bool):
        return None, "expected a string or an integer, got boolean"
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float) and value.is_integer():
        return str(int(value)), None  # CSV/Parquet integer columns with nulls arrive as floats
    if isinstance(value, str):
        v = value.strip()
        return (v, None) if v else (None, "empty")
    return None, f"expected a string or an integer, got {type_name(value)}"


def check_id(value: Any) -> tuple[str | None, str | None]:
    """A row id: ``check_key`` (a string or an integer, stripped), then the id rules of
    ``mixtral_ft.util.ids`` (no control characters, separators or bidi controls; at most 256)."""
    key, err = check_key(value)
    if err:
        return None, err
    problem = id_problem(key)
    return (None, problem) if problem else (key, None)


class ProblemCollector:
    """Collects problems: keeps the first ``cap`` for the message, counts all of them."""

    def __init__(self, cap: int = DEFAULT_PROBLEM_CAP):
        self.cap = cap
        self.shown: list[Problem] = []
        self.total = 0

    def add(self, problem: Problem) -> None:
        self.total += 1
        if len(self.shown) < self.cap:
            self.shown.append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p)

    def count_hidden(self, n: int) -> None:
        """Count ``n`` more problems that were found elsewhere but not kept (beyond a cap)."""
        self.total += n

    def __bool__(self) -> bool:
        return self.total > 0

    def error(self) -> InputError:
        """One ``InputError`` listing the kept problems and the count of the others."""
        return InputError(self.shown, total=self.total, cap=self.cap)

    def raise_if_any(self) -> None:
        if self.total:
            raise self.error()


class RowCheck:
    """Checks the fields of one decoded row and gathers its problems (``problems``).

    Call the checks in the order the messages should come. ``null_is_missing``: a null value
    counts as an absent field (``prepare tc``: ``mixft generate`` writes a null response for a
    row it could not generate) rather than a value of the wrong type. ``names`` renames fields
    in messages (a RAGTruth row says where each field came from: ``responses[2].response``).
    """

    __slots__ = ("display", "line", "names", "null_is_missing", "obj", "problems")

    def __init__(
        self,
        obj: dict[str, Any],
        display: str,
        line: int,
        null_is_missing: bool = False,
        names: Mapping[str, str] | None = None,
    ):
        self.obj = obj
        self.display = display
        self.line = line
        self.null_is_missing = null_is_missing
        self.names = names
        self.problems: list[Problem] = []

    def bad(self, field: str, message: str) -> None:
        name = self.names.get(field, field) if self.names else field
        self.problems.append(Problem(self.display, self.line, name, message))

    def _value(self, spec: FieldSpec) -> Any:
        value = get_path(self.obj, spec.column)
        return _MISSING if value is None and self.null_is_missing else value

    def texts(self, specs: Sequence[FieldSpec], snippets: str | None = None) -> dict[str, Any]:
        """The text fields ``specs``, normalized (one ``normalize_many`` call: fast for the usual
        clean row). The field named ``snippets`` may also be a list of strings, returned as a
        list of normalized snippets. A field that is missing, of another type, or empty after
        normalization (every snippet empty) is a problem, one per field in the order of
        ``specs``, and is left out of the result."""
        found: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for spec in specs:
            value = self._value(spec)
            if value is _MISSING:
                errors[spec.name] = missing_message(spec)
                continue
            value, err = check_text_or_list(value) if spec.name == snippets else check_text(value)
            if err is not None:
                errors[spec.name] = err
            else:
                found[spec.name] = value
        normal = _normalize(found) if found else {}
        texts: dict[str, Any] = {}
        for spec in specs:
            name = spec.name
            if name in errors:
                self.bad(spec.label, errors[name])
            elif name in normal:
                value = normal[name]
                if any(value) if isinstance(value, list) else value:
                    texts[name] = value
                else:
                    self.bad(spec.label, EMPTY)
        return texts

    def id(self, spec: FieldSpec) -> str | None:
        """The row's id (``check_id``); None when it is absent (a problem if ``spec.required``) or bad."""
        value = self._value(spec)
        if value is _MISSING:
            if spec.required:
                self.bad(spec.label, missing_message(spec))
            return None
        row_id, err = check_id(value)
        if err:
            self.bad(spec.label, err)
        return row_id

    def key(self, field: str, value: Any) -> str | None:
        """An identifier-like value (``check_key``) read from ``field``; None when bad."""
        key, err = check_key(value)
        if err:
            self.bad(field, err)
        return key

    def group(self, column: str) -> str | None:
        """The ``--group-by`` value (``row_group``)."""
        group, err = row_group(self.obj, column)
        if err:
            self.bad(column, err)
        return group

    def source(self, column: str, tag: str | None, default: str) -> str:
        """The row's ``source`` (``row_source``)."""
        source, err = row_source(self.obj, column, tag, default)
        if err:
            self.bad(column, err)
        return source


def _normalize(found: dict[str, Any]) -> dict[str, Any]:
    """Every text of ``found`` normalized in one ``normalize_many`` call; lists stay lists."""
    flat: list[str] = []
    for value in found.values():
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    normal = normalize_many(flat)
    out: dict[str, Any] = {}
    i = 0
    for name, value in found.items():
        if isinstance(value, list):
            out[name] = normal[i : i + len(value)]
            i += len(value)
        else:
            out[name] = normal[i]
            i += 1
    return out
