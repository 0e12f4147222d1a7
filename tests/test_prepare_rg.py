"""`mixft prepare rg` as a user runs it: files written, messages printed, bad input refused
with nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main

GOOD = [
    {
        "id": "q1",
        "question": "How do I reset my password?",
        "context": ["Go to Settings.", "Click  Reset."],
        "answer": "Open Settings and click Reset.",
        "article_id": "kb-1",
    },
    {
        "id": "q2",
        "question": "Is shipping free?",
        "context": "Shipping is free over $50.",
        "answer": "Yes, over $50.",
        "article_id": "kb-2",
    },
    {
        "id": "q3",
        "question": "Can I return items?",
        "context": ["Returns within 30 days."],
        "answer": "Yes, within 30 days.",
        "article_id": "kb-2",
    },
    {
        "id": "q4",
        "question": "Do you ship abroad?",
        "context": ["We ship to 40 countries."],
        "answer": "Yes, to 40 countries.",
        "article_id": "kb-3",
    },
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_prepare_writes_split_manifest_and_summary(tmp_path, capsys):
    a = write_jsonl(tmp_path / "synthetic.jsonl", GOOD[:3])
    b = write_jsonl(tmp_path / "chats.jsonl", GOOD[3:] + [dict(GOOD[0], id="dup-of-q1")])
    out = tmp_path / "out"
    rc = main(["prepare", "rg", str(a), f"live={b}", "--out", str(out), "--test-size", "1", "--seed", "7"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl"]
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "test.jsonl")
    assert len(read_jsonl(out / "test.jsonl")) == 1 and len(rows) == 4  # the exact duplicate is removed
    assert all(list(r) == ["id", "source", "group", "context", "question", "answer"] for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["q1"]["context"] == "Go to Settings.\n\nClick Reset."  # joined + normalized
    assert by_id["q4"]["source"] == "live" and by_id["q2"]["source"] == "synthetic"

    m = json.loads((out / "manifest.json").read_text())
    assert m["summary"] == {"read": 5, "invalid": 0, "duplicates": 1, "train": 3, "test": 1}
    assert m["inputs"][0]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert m["inputs"][1]["source_tag"] == "live" and m["inputs"][1]["rows"] == 2
    assert m["outputs"]["train.jsonl"]["sha256"] == hashlib.sha256((out / "train.jsonl").read_bytes()).hexdigest()
    assert m["settings"]["seed"] == 7 and m["split"]["test_size"] == {"count": 1, "fraction": None}
    assert m["environment"]["packages"]["mixtral-ft"]
    assert m["lengths"]["kind"] == "estimate"
    assert m["per_source"]["live"]["read"] == 2 and m["per_source"]["synthetic"]["read"] == 3
    assert sum(v["train"] + v["test"] for v in m["per_source"].values()) == 4

    assert "duplicates  1 removed" in captured.out
    assert f"Next: mixft train rg --data {out} --profile" in captured.out
    assert "ESTIMATED" in captured.out
    assert leftovers(tmp_path) == []


def test_every_validation_problem_is_listed_and_nothing_is_written(tmp_path, capsys):
    bad = write_jsonl(
        tmp_path / "raw.jsonl",
        [
            GOOD[0],
            {"id": "q2", "context": "c", "answer": "a"},
            {"id": "q3", "question": 5, "context": {"x": 1}, "answer": "   "},
            '{"id": "q4", "question": "q",',
            '["not", "an", "object"]',
            {"id": "", "question": "q", "context": ["ok", None], "answer": "a"},
            {"id": "q1", "question": "other", "context": "c", "answer": "a"},
        ],
    )
    out = tmp_path / "out"
    rc = main(["prepare", "rg", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err == [
        f"error: {bad}:2: question: missing; use --question-field to map another column",
        f"{bad}:3: question: expected a string, got number",
        f"{bad}:3: context: expected a string or a list of strings, got object",
        f"{bad}:3: answer: empty (nothing left after whitespace normalization)",
        f"{bad}:4: invalid JSON: unexpected end of data (column 31)",
        f"{bad}:5: expected a JSON object, got array",
        f"{bad}:6: context: item 1 of the list: expected a string, got null",
        f"{bad}:6: id: empty",
        f"{bad}:7: id: duplicate id 'q1' (also at {bad}:1)",
        "hint: fix the rows or pass --skip-invalid to reject them into rejected.jsonl",
    ]
    assert not out.exists() and leftovers(tmp_path) == []


def test_encoding_problems_name_file_and_line(tmp_path, capsys):
    f = tmp_path / "win.jsonl"
    f.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(GOOD[0]).encode() + b"\r\n" + json.dumps(GOOD[1]).encode()[:-1] + b'\xff"}\r\n'
    )
    rc = main(["prepare", "rg", str(f), "--out", str(tmp_path / "out"), "--skip-invalid"])
    err = capsys.readouterr().err
    assert rc == 2  # BOM / CRLF are problems of the whole file: --skip-invalid cannot skip them
    assert f"{f}:1: file starts with a UTF-8 byte-order mark (BOM)" in err
    assert f"{f}:1: Windows line ending (CRLF) on 2 line(s), first here" in err
    assert f"{f}:2: not valid UTF-8: byte 0xff" in err
    assert not (tmp_path / "out").exists()


def test_problem_cap_then_count(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "raw.jsonl", [{"id": f"x{i}", "context": "c", "answer": "a"} for i in range(30)])
    assert main(["prepare", "rg", str(bad), "--out", str(tmp_path / "o"), "--max-problems", "5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 7 and err[-2].startswith("hint: ") and err[-1] == "... and 25 more problem(s)"


def test_skip_invalid_writes_valid_rows_and_rejected_reasons(tmp_path, capsys):
    bad = write_jsonl(
        tmp_path / "raw.jsonl", GOOD + [{"id": "z", "question": "q"}, "{broken", dict(GOOD[1], question="different")]
    )
    out = tmp_path / "out"
    rc = main(["prepare", "rg", str(bad), "--out", str(out), "--skip-invalid", "--test-size", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rejected = read_jsonl(out / "rejected.jsonl")
    reasons = [p for r in rejected for p in r["problems"]]
    assert f"{bad}:5: context: missing; use --context-field to map another column" in reasons
    assert any(p.startswith(f"{bad}:6: invalid JSON") for p in reasons)
    assert f"{bad}:2: id: duplicate id 'q2'" in reasons and f"{bad}:7: id: duplicate id 'q2'" in reasons
    assert next(r for r in rejected if r["line"] == 6)["raw"] == "{broken"
    assert next(r for r in rejected if r["line"] == 5)["row"] == {"id": "z", "question": "q"}
    kept = read_jsonl(out / "train.jsonl") + read_jsonl(out / "test.jsonl")
    assert sorted(r["id"] for r in kept) == ["q1", "q3", "q4"]
    assert "skipped 4 invalid row(s)" in captured.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["summary"]["rejected"] == 4 and m["outputs"]["rejected.jsonl"]["rows"] == 4


def test_existing_output_is_refused_unless_force_and_a_failed_force_keeps_it(tmp_path, capsys):
    src = write_jsonl(tmp_path / "raw.jsonl", GOOD)
    out = tmp_path / "out"
    assert main(["prepare", "rg", str(src), "--out", str(out), "--test-size", "1"]) == 0
    before = (out / "train.jsonl").read_bytes()
    assert main(["prepare", "rg", str(src), "--out", str(out), "--test-size", "1"]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}])
    assert main(["prepare", "rg", str(bad), "--out", str(out), "--force"]) == 2
    assert (out / "train.jsonl").read_bytes() == before and leftovers(tmp_path) == []
    assert main(["prepare", "rg", str(src), "--out", str(out), "--test-size", "2", "--force"]) == 0
    assert len(read_jsonl(out / "test.jsonl")) == 2


def test_field_mapping_nested_paths_numbering_and_grouping(tmp_path, capsys):
    rows = [
        {
            "key": f"k{i}",
            "q": {"text": f"Question {i}?"},
            "docs": [f"Doc {i}a.", f"Doc {i}b."],
            "reply": f"Reply {i}.",
            "topic": i % 3,
        }
        for i in range(12)
    ]
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    out = tmp_path / "out"
    rc = main(
        [
            "prepare",
            "rg",
            str(src),
            "--out",
            str(out),
            "--question-field",
            "q.text",
            "--context-field",
            "docs",
            "--answer-field",
            "reply",
            "--id-field",
            "key",
            "--group-by",
            "topic",
            "--test-size",
            "4",
            "--number-snippets",
            "--context-separator",
            "\\n",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert len(test) == 4 and len(train) == 8
    assert {r["group"] for r in train}.isdisjoint({r["group"] for r in test})
    r0 = next(r for r in train + test if r["id"] == "k0")
    assert r0["context"] == "[1] Doc 0a.\n[2] Doc 0b." and r0["question"] == "Question 0?" and r0["group"] == "0"


def test_missing_group_is_a_problem(tmp_path, capsys):
    src = write_jsonl(tmp_path / "raw.jsonl", [GOOD[0], {k: v for k, v in GOOD[1].items() if k != "article_id"}])
    assert main(["prepare", "rg", str(src), "--out", str(tmp_path / "o"), "--group-by", "article_id"]) == 2
    assert f"{src}:2: article_id: missing; --group-by needs a group on every row" in capsys.readouterr().err


def test_all_formats_give_the_same_output(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import csv

    import pyarrow.parquet as pq

    flat = [dict(r, context=r["context"] if isinstance(r["context"], str) else " ".join(r["context"])) for r in GOOD]
    write_jsonl(tmp_path / "rows.jsonl", flat)
    (tmp_path / "rows.json").write_text(json.dumps(flat), encoding="utf-8")
    with open(tmp_path / "rows.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "rows.parquet")
    outputs = set()
    for ext in ("jsonl", "json", "csv", "parquet"):
        out = tmp_path / f"out-{ext}"
        assert main(["prepare", "rg", f"kb={tmp_path / f'rows.{ext}'}", "--out", str(out), "--test-size", "1"]) == 0
        outputs.add((out / "train.jsonl").read_bytes() + b"|" + (out / "test.jsonl").read_bytes())
    assert len(outputs) == 1


def test_preview_marks_the_trained_part(tmp_path, capsys):
    src = write_jsonl(tmp_path / "raw.jsonl", GOOD)
    assert main(["prepare", "rg", str(src), "--out", str(tmp_path / "o"), "--test-size", "1", "--preview", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- example") == 2
    assert "[TRAINED]Answer: " in out and "<EOS>[/TRAINED]" in out
    assert "Context: " in out and "\nQuestion: " in out


def test_parallel_read_gives_identical_output(tmp_path, monkeypatch):
    from mixtral_ft.prepare import readpass
    from mixtral_ft.prepare.options import PrepareOptions
    from mixtral_ft.prepare.pipeline import run_prepare
    from mixtral_ft.prepare.readers import InputSpec
    from mixtral_ft.prepare.rg import RgTask
    from mixtral_ft.prepare.split import TestSize

    rows = [
        {"id": f"q{i}", "question": f"Q {i}?", "context": [f"C {i}.", "Shared."], "answer": f"A {i}.", "g": i % 50}
        for i in range(3000)
    ]
    rows.append(dict(rows[10], id="again"))
    rows.append("{bad")
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    monkeypatch.setattr(readpass, "_MIN_RANGE_BYTES", 1000)
    results = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        opts = PrepareOptions(
            inputs=[InputSpec(src, "jsonl")],
            out=out,
            group_by="g",
            test_size=TestSize(count=300),
            skip_invalid=True,
            workers=workers,
        )
        res = run_prepare(opts, RgTask())
        results.append((res.counts, [(out / f).read_bytes() for f in ("train.jsonl", "test.jsonl", "rejected.jsonl")]))
    assert results[0] == results[1]
    assert results[0][0]["duplicates"] == 1 and results[0][0]["invalid"] == 1
    assert b'"line":3002' in results[0][1][2]


def test_bundled_sample_prepares(repo_root, tmp_path, capsys):
    sample = repo_root / "data" / "sample_qa.jsonl"
    assert sample.is_file(), "data/sample_qa.jsonl is missing: it is bundled data (scripts/build_sample_data.py)"
    out = tmp_path / "out"
    assert main(["prepare", "rg", str(sample), "--out", str(out), "--group-by", "article_id"]) == 0, (
        capsys.readouterr().err
    )
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert train and test and {r["group"] for r in train}.isdisjoint({r["group"] for r in test})


def test_ragtruth_nested_fields(ragtruth_path, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "prepare",
            "rg",
            f"ragtruth={ragtruth_path}",
            "--out",
            str(out),
            "--question-field",
            "source.question",
            "--context-field",
            "source.passages",
            "--answer-field",
            "responses.0.response",
            "--id-field",
            "source_id",
            "--test-size",
            "20",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    assert (
        m["summary"]["test"] == 20 and m["summary"]["train"] + 20 + m["summary"]["duplicates"] == m["summary"]["read"]
    )
    row = read_jsonl(out / "test.jsonl")[0]
    assert row["source"] == "ragtruth" and row["context"].startswith("passage 1:")


def test_cli_subprocess_and_light_start_up(tmp_path):
    src = write_jsonl(tmp_path / "raw.jsonl", GOOD)
    mixft = Path(sys.executable).with_name("mixft")
    env = dict(os.environ, MIXFT_PROGRESS="0")
    proc = subprocess.run(
        [str(mixft), "prepare", "rg", str(src), "--out", str(tmp_path / "o"), "--test-size", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Prepared RG data" in proc.stdout and proc.stderr == ""
    proc = subprocess.run(
        [str(mixft), "prepare", "rg", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr == f"error: {tmp_path / 'missing.jsonl'}: file not found\n"
    assert "Traceback" not in proc.stderr
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mixtral_ft.cli.main; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'axolotl', 'pyarrow', 'numpy') "
            "if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert heavy.stdout.strip() == "[]", heavy.stdout + heavy.stderr


def test_no_valid_rows_bad_tokenizer_and_no_arguments(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert main(["prepare", "rg", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert f"{empty}: no valid rows to prepare (0 read, 0 invalid)" in capsys.readouterr().err
    src = write_jsonl(tmp_path / "raw.jsonl", GOOD)
    assert main(["prepare", "rg", str(src), "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "nope")]) == 2
    assert "tokenizer directory not found" in capsys.readouterr().err
    assert main(["prepare", "rg", str(src), "--out", str(tmp_path / "o"), "--test-size", "1.5"]) == 2
    assert "a fraction must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    main(["prepare", "rg"])
    assert "Usage: mixft prepare rg" in capsys.readouterr().out


def test_length_report_per_split_names_long_rows(tmp_path):
    from mixtral_ft.prepare.options import PrepareOptions
    from mixtral_ft.prepare.pipeline import run_prepare
    from mixtral_ft.prepare.readers import parse_input
    from mixtral_ft.prepare.rg import RgTask
    from mixtral_ft.prepare.split import TestSize

    rows = [dict(r, context=r["context"] if i else "A long snippet. " * 40) for i, r in enumerate(GOOD)]
    src = write_jsonl(tmp_path / "raw.jsonl", rows)
    result = run_prepare(
        PrepareOptions(
            inputs=[parse_input(str(src))], out=tmp_path / "o", test_size=TestSize(count=1), sequence_len=60
        ),
        RgTask(),
    )
    report = result.lengths
    assert report["kind"] == "estimate" and report["n"] == 4 and report["over_sequence_len"] == 1
    assert report["over_sequence_len_ids"] == ["q1"]
    assert report["by_split"]["train"]["n"] + report["by_split"]["test"]["n"] == 4
    assert report == json.loads((tmp_path / "o" / "manifest.json").read_text())["lengths"]
