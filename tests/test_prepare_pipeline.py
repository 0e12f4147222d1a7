"""The pieces `prepare rg` and `prepare tc` share: the field checker, the bucket lines, the
tallies, and the pipeline's checks and rejected.jsonl, which behave the same for both tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.errors import UsageError
from mixtral_ft.prepare.buckets import Keyed, Place
from mixtral_ft.prepare.fields import EMPTY, FieldSpec, RowCheck, resolve_fields
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import run_prepare
from mixtral_ft.prepare.readers import parse_input
from mixtral_ft.prepare.rg import RgTask
from mixtral_ft.prepare.summary import Tally
from mixtral_ft.prepare.tc import TcTask

Q, C, A = (FieldSpec(n, n, f"--{n}-field") for n in ("question", "context", "answer"))
CLEAN = {
    "relevance": {"mistake": False, "explanation": ""},
    "groundedness": {"mistake": False, "mistakes": []},
    "corrected_response": None,
}
HINT = "hint: fix the rows or pass --skip-invalid to reject them into rejected.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------- the field checker


def test_row_check_lists_one_problem_per_field_in_field_order():
    check = RowCheck({"question": "  \t ", "context": ["a", 3], "answer": 5}, "f.jsonl", 7)
    assert check.texts((Q, C, A), snippets="context") == {}
    assert [str(p) for p in check.problems] == [
        f"f.jsonl:7: question: {EMPTY}",
        "f.jsonl:7: context: item 1 of the list: expected a string, got number",
        "f.jsonl:7: answer: expected a string, got number",
    ]


def test_row_check_normalizes_texts_and_keeps_snippets_as_a_list():
    row = {"question": " Why\u00a0 so? ", "context": ["  One  ", "", "Two\r\n\r\n\r\nThree"], "answer": "Cafe\u0301"}
    check = RowCheck(row, "f.jsonl", 1)
    assert check.texts((Q, C, A), snippets="context") == {
        "question": "Why so?",
        "context": ["One", "", "Two\n\nThree"],
        "answer": "Café",
    }
    assert check.problems == []
    blank = RowCheck({"question": "q", "context": [" ", "\n"], "answer": "a"}, "f.jsonl", 2)
    blank.texts((Q, C, A), snippets="context")
    assert [str(p) for p in blank.problems] == [f"f.jsonl:2: context: {EMPTY}"]


def test_row_check_null_is_a_wrong_type_or_missing_as_the_task_says():
    row = {"question": None, "context": "c", "answer": "a", "id": None}
    ident = FieldSpec("id", "id", "--id-field")
    rg = RowCheck(row, "f.jsonl", 1)
    rg.texts((Q, C, A))
    rg.id(ident)
    assert [p.message for p in rg.problems] == [
        "expected a string, got null",
        "expected a string or an integer, got null",
    ]
    tc = RowCheck(row, "f.jsonl", 1, null_is_missing=True)
    tc.texts((Q, C, A))
    tc.id(ident)
    assert [p.message for p in tc.problems] == [
        "missing; use --question-field to map another column",
        "missing; use --id-field to map another column",
    ]
    optional = RowCheck({}, "f.jsonl", 1)
    assert optional.id(FieldSpec("id", "id", "--id-field", required=False)) is None and optional.problems == []


def test_row_check_names_fields_as_the_row_says_and_columns_are_remapped():
    check = RowCheck({"q": {"text": 1}}, "rt.jsonl", 3, names={"q.text": "source.question"})
    check.texts([FieldSpec("question", "q.text", "--question-field")])
    assert [str(p) for p in check.problems] == ["rt.jsonl:3: source.question: expected a string, got number"]
    fields = resolve_fields((Q, C, A), {"question": "q.text"})
    assert [s.column for s in fields.values()] == ["q.text", "context", "answer"]
    with pytest.raises(UsageError, match="unknown field"):
        resolve_fields((Q, C, A), {"response": "r"})


# ---------------------------------------------------------------------------- bucket lines and tallies


def test_bucket_lines_round_trip_and_sort_by_key_then_tie():
    place = Place(3, 1200, 2)
    assert Place.parse(place.encode()) == place and Place.at(3, 1200, 2) == place.encode() == b"3 1200 2"
    lines = [
        Keyed.line(7, b"b" * 16, Place(0, 2).encode(), b"m", b'{"id":"x\\t"}'),
        Keyed.line(7, b"a" * 16, Place(1, 9).encode(), b"", b"{}"),
        Keyed.line(2**63, b"a" * 16, Place(0, 1).encode(), b'12 "s"', b"{}"),
    ]
    parsed = [Keyed.parse(line.rstrip(b"\n")) for line in sorted(lines)]
    assert [(int(k.key, 16), k.tie[:1]) for k in parsed] == [(7, b"a"), (7, b"b"), (2**63, b"a")]
    assert parsed[1].payload == b'{"id":"x\\t"}' and Place.parse(parsed[1].place) == Place(0, 2)


def test_tally_counts_rows_per_key_and_side_with_the_task_s_counts():
    tally = Tally(("source", "model"), ("hallucinated", "mistakes"))
    for i in range(0, 5000, 10):  # groups of 10 rows, more than one batch
        rows = [(("kb" if j % 2 else "live", "m1"), (j % 3 == 0, 2)) for j in range(i, i + 10)]
        tally.add_group("train" if i % 50 else "test", rows)
    by_source = tally.table("source", ("hallucinated",))
    assert by_source["kb"] == {"rows": 2500, "train": 2000, "test": 500, "hallucinated": 833}
    assert set(by_source["live"]) == {"rows", "train", "test", "hallucinated"}
    assert tally.table("model")["m1"] == {"rows": 5000, "train": 4000, "test": 1000}
    assert tally.totals() == {"hallucinated": 1667, "mistakes": 10000}
    assert tally.totals("test")["mistakes"] == 2000 and tally.groups == {"train": 400, "test": 100}


# ---------------------------------------------------------------------------- one pipeline, both tasks


def _rg_rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "question": f"Q {i}?", "context": [f"C {i}."], "answer": f"A {i}."} for i in range(n)]


def _tc_rows(n: int) -> list[dict]:
    return [
        {"id": f"r{i}", "question": f"Q {i}?", "context": [f"C {i}."], "response": f"A {i}.", "verdict": CLEAN}
        for i in range(n)
    ]


@pytest.mark.parametrize("task,rows", [("rg", _rg_rows), ("tc", _tc_rows)])
def test_both_tasks_stop_on_bad_rows_with_the_same_hint(tmp_path, capsys, task, rows):
    data = rows(6)
    data[2] = {**data[2], "question": 5}
    data.append(dict(data[4]))  # a duplicate id (RG: the same row is an exact duplicate, so change it)
    data[-1]["question"] = "Another?"
    src = write_jsonl(tmp_path / "in.jsonl", data)
    assert main(["prepare", task, str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {src}:3: question: expected a string, got number"
    assert err[1].startswith(f"{src}:7: id: duplicate id 'r4' (")
    assert err[2:] == [HINT]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("task,rows", [("rg", _rg_rows), ("tc", _tc_rows)])
def test_both_tasks_write_rejected_rows_in_input_and_line_order(tmp_path, capsys, task, rows):
    a = rows(8)
    b = [{**r, "id": f"b{i}", "question": f"B {i}?"} for i, r in enumerate(rows(4))]
    b[1]["id"] = "r6"  # shares an id with a.jsonl:7
    b[3] = "{broken"
    a[2] = {k: v for k, v in a[2].items() if k != "question"}
    fa, fb = write_jsonl(tmp_path / "a.jsonl", a), write_jsonl(tmp_path / "b.jsonl", b)
    out = tmp_path / "o"
    assert main(["prepare", task, str(fa), str(fb), "--out", str(out), "--skip-invalid", "--test-size", "2"]) == 0
    places = [(r["file"], r["line"]) for r in read_jsonl(out / "rejected.jsonl")]
    if task == "rg":  # every row sharing an id is rejected
        assert places == [(str(fa), 3), (str(fa), 7), (str(fb), 2), (str(fb), 4)]
    else:  # the first one is kept
        assert places == [(str(fa), 3), (str(fb), 2), (str(fb), 4)]


@pytest.mark.parametrize("task,rows", [("rg", _rg_rows), ("tc", _tc_rows)])
def test_both_tasks_refuse_an_empty_data_set_and_a_test_size_that_leaves_no_training_row(tmp_path, capsys, task, rows):
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "x"}, {"id": "y"}])
    assert main(["prepare", task, str(empty), "--out", str(tmp_path / "o"), "--skip-invalid"]) == 2
    assert capsys.readouterr().err == f"error: {empty}: no valid rows to prepare (2 read, 2 invalid)\n"
    src = write_jsonl(tmp_path / "in.jsonl", rows(4))
    assert main(["prepare", task, str(src), "--out", str(tmp_path / "o"), "--test-size", "4"]) == 2
    assert capsys.readouterr().err == (
        "error: --test-size 4 leaves no training rows: only 4 valid, unique row(s); use a smaller count or fraction\n"
    )
    grouped = write_jsonl(tmp_path / "grouped.jsonl", [{**r, "g": "same"} for r in rows(4)])
    assert (
        main(["prepare", task, str(grouped), "--out", str(tmp_path / "o"), "--test-size", "3", "--group-by", "g"]) == 2
    )
    assert capsys.readouterr().err == (
        "error: --test-size 3 puts every group in test (4 rows); use a smaller count or fraction\n"
    )
    assert not (tmp_path / "o").exists()


def test_tc_rows_preview_like_rg_rows(tmp_path):
    """The write pass keeps preview examples for any task (the CLI offers --preview on rg)."""
    src = write_jsonl(tmp_path / "in.jsonl", _tc_rows(5))
    opts = PrepareOptions(inputs=[parse_input(str(src))], out=tmp_path / "o", preview=2)
    result = run_prepare(opts, TcTask())
    assert [set(ex) for ex in result.preview] == [{"split", "id", "source", "prompt", "response"}] * 2
    first = read_jsonl(tmp_path / "o" / f"{result.preview[0]['split']}.jsonl")[0]
    assert (result.preview[0]["prompt"], result.preview[0]["response"]) == (first["prompt"], first["completion"])
    rg = run_prepare(
        PrepareOptions(inputs=[parse_input(str(write_jsonl(tmp_path / "rg.jsonl", _rg_rows(5))))], out=tmp_path / "r"),
        RgTask(),
    )
    assert rg.preview == [] and rg.test_size.text == "0.125"  # the task's default
