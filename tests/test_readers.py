"""Readers for user inputs: each format, source tags, and the file/row problems they report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.errors import UsageError
from mixtral_ft.prepare.readers import (
    InputSpec,
    detect_format,
    iter_chunks,
    iter_jsonl_range,
    iter_rows,
    parse_input,
    split_jsonl,
)

ROWS = [
    {"id": "a", "question": "Q1?", "context": ["s1", "s2"], "answer": "A1"},
    {"id": "b", "question": "Q2?", "context": "one snippet", "answer": "A2"},
]


def _rows(spec: InputSpec):
    out = list(iter_rows(spec))
    return [(r.line, r.obj) for r in out], [str(r.problem) for r in out if r.problem]


def test_jsonl_rows_and_lines_skip_blank_lines(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    rows, problems = _rows(parse_input(str(p)))
    assert rows == [(1, ROWS[0]), (3, ROWS[1])]
    assert problems == []


def test_json_array(tmp_path):
    p = tmp_path / "in.json"
    p.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    rows, problems = _rows(parse_input(str(p)))
    assert rows == [(1, ROWS[0]), (2, ROWS[1])]  # element positions
    assert problems == []


def test_json_must_be_an_array_and_valid(tmp_path):
    p = tmp_path / "obj.json"
    p.write_text(json.dumps(ROWS[0]), encoding="utf-8")
    assert _rows(parse_input(str(p)))[1] == [
        f"{p}: expected a JSON array of objects, got object (for one object per line use .jsonl)"
    ]
    p2 = tmp_path / "lines.json"
    p2.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    (problem,) = _rows(parse_input(str(p2)))[1]
    assert problem.startswith(f"{p2}:2: invalid JSON:") and "name the file .jsonl" in problem


def test_csv_with_quoted_multiline_field_and_bad_field_count(tmp_path):
    p = tmp_path / "in.csv"
    p.write_bytes(b'id,question,context,answer\r\na,Q1?,"line one\r\nline two",A1\r\nb,Q2?,c2\r\nc,Q3?,c3,A3\r\n')
    rows, problems = _rows(parse_input(str(p)))
    assert rows[0] == (2, {"id": "a", "question": "Q1?", "context": "line one\r\nline two", "answer": "A1"})
    assert rows[2] == (5, {"id": "c", "question": "Q3?", "context": "c3", "answer": "A3"})
    assert problems == [f"{p}:4: has 3 field(s), the header has 4"]  # CRLF is normal in CSV


def test_csv_header_problems_are_fatal(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("id,question,question\n1,a,b\n", encoding="utf-8")
    (chunk,) = list(iter_chunks(parse_input(str(p))))
    assert [str(x) for x in chunk.problems] == [f"{p}:1: question: CSV header names this column twice"]


def test_parquet_rows_with_list_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([dict(ROWS[0]), dict(ROWS[1], context=["x"])]), p)
    rows, problems = _rows(parse_input(str(p)))
    assert rows == [(1, ROWS[0]), (2, dict(ROWS[1], context=["x"]))]
    assert problems == []


def test_unreadable_parquet_is_a_file_problem(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    (chunk,) = list(iter_chunks(parse_input(str(p))))
    assert chunk.problems and str(chunk.problems[0]).startswith(f"{p}: not a readable Parquet file")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'\xef\xbb\xbf{"a": 1}\n', "{f}:1: file starts with a UTF-8 byte-order mark (BOM)"),
        (b'{"a": 1}\n{"a": 2}\r\n{"a": 3}\r\n', "{f}:2: Windows line ending (CRLF) on 2 line(s), first here"),
        (b'{"a": 1}\n{"a": "\xff"}\n', "{f}:2: not valid UTF-8: byte 0xff at byte 8 of the line"),
        (b'{"a": 1}\n{"a": 1,}\n', "{f}:2: invalid JSON:"),
        (b"[1, 2]\n", "{f}:1: expected a JSON object, got array"),
    ],
    ids=["bom", "crlf", "undecodable", "invalid-json", "not-object"],
)
def test_jsonl_problems(tmp_path, data, expected):
    p = tmp_path / "in.jsonl"
    p.write_bytes(data)
    problems = _rows(parse_input(str(p)))[1]
    assert any(x.startswith(expected.format(f=p)) for x in problems), problems


def test_undecodable_csv_line(tmp_path):
    p = tmp_path / "in.csv"
    p.write_bytes(b"question,context,answer\nq,c,a\nq\xff,c,a\n")
    rows, problems = _rows(parse_input(str(p)))
    assert problems == [f"{p}:3: not valid UTF-8: byte 0xff at byte 2 of the line"]


def test_missing_file_is_reported(tmp_path):
    assert _rows(parse_input(str(tmp_path / "nope.jsonl")))[1] == [f"{tmp_path / 'nope.jsonl'}: file not found"]


def test_parse_input_tags_and_formats(tmp_path):
    spec = parse_input("live=chats.jsonl")
    assert (spec.tag, spec.path, spec.format, spec.default_source) == ("live", Path("chats.jsonl"), "jsonl", "live")
    assert parse_input("x/synthetic.csv").default_source == "synthetic"
    odd = tmp_path / "a=b.jsonl"  # an existing file whose name has '=' is a path, not a tag
    odd.write_text("")
    assert parse_input(str(odd)).tag is None
    assert parse_input("data.txt", "jsonl").format == "jsonl"
    with pytest.raises(UsageError, match="cannot tell the format"):
        detect_format("data.txt")
    with pytest.raises(UsageError, match="unknown input format 'xml'"):
        parse_input("a.jsonl", "xml")
    with pytest.raises(UsageError, match="TAG=PATH"):
        parse_input("bad tag=x.jsonl")


def test_byte_ranges_cover_the_file_exactly(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps({"i": i, "pad": "x" * (i % 37)}) + "\n" for i in range(1000)), encoding="utf-8")
    spec = parse_input(str(p))
    whole = [(line, item) for c in iter_chunks(spec, 64) for line, item in c.items]
    for parts in (1, 3, 7, 50):
        ranges = split_jsonl(p, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == p.stat().st_size
        got, offset = [], 0
        for start, end in ranges:
            for chunk in iter_jsonl_range(spec, start, end, 64):
                got += [(line + offset, item) for line, item in chunk.items]
            offset += chunk.lines
        assert got == whole
