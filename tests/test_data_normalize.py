"""Normalization rules, snippet joining, field checks and problem collection."""

from __future__ import annotations

import random

import pytest

from mixtral_ft.data.normalize import content_key, join_snippets, normalize_many, normalize_text
from mixtral_ft.errors import InputError, Problem
from mixtral_ft.prepare.fields import MISSING, ProblemCollector, check_key, check_text, check_text_or_list, get_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  hello   world \t", "hello world"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("line one  \n   line two", "line one\nline two"),
        ("\n\npara one\n\n\n\npara two\n\n", "para one\n\npara two"),
        ("no\u00a0break\u2003em\u3000space", "no break em space"),
        ("cafe\u0301", "caf\u00e9"),  # NFC
        (" \t\n ", ""),
        ("already clean.\n\nTwo paragraphs.", "already clean.\n\nTwo paragraphs."),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_normalize_many_matches_one_by_one():
    rng = random.Random(0)
    pieces = ["a", "b", " ", "  ", "\n", "\t", "\r", "\u00a0", "\u00e9", "e\u0301", "\u2028", " \n", "\n ", "\x00"]
    for _ in range(3000):
        texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 4))]
        assert normalize_many(texts) == [normalize_text(t) for t in texts]


def test_join_snippets_separator_numbering_and_blank_snippets():
    assert join_snippets(["  one ", "", "two"]) == "one\n\ntwo"
    assert join_snippets(["one", "  ", "two"], separator="\n---\n", numbered=True) == "[1] one\n---\n[2] two"


def test_content_key_separates_fields():
    assert content_key("a", "b", "c") == content_key("a", "b", "c")
    assert content_key("ab", "", "c") != content_key("a", "b", "c")


def test_field_checks():
    assert check_text("x") == ("x", None)
    assert check_text(3) == (None, "expected a string, got number")
    assert check_text(None) == (None, "expected a string, got null")
    assert check_text_or_list(["a", "b"]) == (["a", "b"], None)
    assert check_text_or_list([]) == (None, "empty list of snippets")
    assert check_text_or_list(["a", {"x": 1}]) == (None, "item 1 of the list: expected a string, got object")
    assert check_text_or_list(True) == (None, "expected a string or a list of strings, got boolean")
    assert check_key(7) == ("7", None)
    assert check_key(7.0) == ("7", None)
    assert check_key("  ") == (None, "empty")
    assert check_key(False) == (None, "expected a string or an integer, got boolean")


def test_get_path_reaches_nested_fields():
    row = {"a": 1, "source": {"question": "q"}, "x.y": 2}
    assert get_path(row, "a") == 1
    assert get_path(row, "source.question") == "q"
    assert get_path(row, "x.y") == 2
    assert get_path(row, "source.missing") is MISSING
    assert get_path(row, "b") is MISSING


def test_problem_collector_caps_then_counts():
    c = ProblemCollector(cap=2)
    for i in range(5):
        c.add(Problem("f.jsonl", i + 1, "question", "missing"))
    c.count_hidden(3)
    err = c.error()
    assert isinstance(err, InputError) and err.exit_code == 2
    assert str(err).splitlines() == [
        "f.jsonl:1: question: missing",
        "f.jsonl:2: question: missing",
        "... and 6 more problem(s)",
    ]
