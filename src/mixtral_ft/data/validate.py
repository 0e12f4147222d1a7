"""Field mapping, typed field checks and problem collection.

A command maps each canonical field (``question``, ``context``...) to a column of the input
(``FieldSpec``), reads it with ``get_path`` (dotted paths reach into nested objects:
``source.question``), checks it with one of the ``check_*`` functions - which return the value
or a message, never raise - and collects ``Problem``s in a ``ProblemCollector`` that keeps
the first ``cap`` and counts the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mixtral_ft.data.readers import type_name
from mixtral_ft.errors import InputError, Problem

DEFAULT_PROBLEM_CAP = 50
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
    from mixtral_ft.util.ids import id_problem

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
