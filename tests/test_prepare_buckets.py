"""The external sort with many buckets (what inputs of gigabytes use) writes exactly the bytes of
the one-bucket path, for `prepare rg` and `prepare tc` (the benchmark is not the only place it runs)."""

from __future__ import annotations

import json
from pathlib import Path

from mixtral_ft.prepare.buckets import TARGET_BUCKET_BYTES, bucket_count
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import run_prepare
from mixtral_ft.prepare.readers import estimate_size, parse_input
from mixtral_ft.prepare.rg import RgTask
from mixtral_ft.prepare.split import TestSize
from mixtral_ft.prepare.tc import TcTask

SMALL = 2048  # bytes per bucket: dozens of buckets for these inputs
OUTPUTS = ("train.jsonl", "test.jsonl", "rejected.jsonl")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def outputs(out: Path, names=OUTPUTS) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in names if (out / n).exists()}


def test_rg_many_buckets_write_the_bytes_of_one(tmp_path):
    rows = [
        {
            "id": f"q{i}",
            "question": f"Question {i}?",
            "context": [f"Fact {i}.", "Shared fact."],
            "answer": f"Answer {i}.",
            "article": f"kb-{i % 37}",
        }
        for i in range(1500)
    ]
    rows += [dict(rows[5], id="copy-of-5"), dict(rows[9], question="Another question?"), "{broken"]
    src = write_jsonl(tmp_path / "qa.jsonl", rows)
    inputs = [parse_input(f"syn={src}")]
    assert bucket_count(estimate_size(inputs), TARGET_BUCKET_BYTES) == 1
    assert bucket_count(estimate_size(inputs), SMALL) >= 64
    results = []
    for bucket_bytes in (TARGET_BUCKET_BYTES, SMALL):
        out = tmp_path / f"out-{bucket_bytes}"
        result = run_prepare(
            PrepareOptions(
                inputs=inputs,
                out=out,
                group_by="article",
                test_size=TestSize(count=200),
                skip_invalid=True,
                bucket_bytes=bucket_bytes,
            ),
            RgTask(),
        )
        results.append((result.counts, result.lengths, outputs(out)))
    assert results[0] == results[1]
    counts = results[0][0]
    assert (counts["duplicates"], counts["invalid"]) == (1, 3)  # "{broken" and both rows with id q9
    assert counts["train"] + counts["test"] == 1500 - 1


def test_tc_many_buckets_write_the_bytes_of_one(tmp_path):
    clean = {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {"mistake": False, "mistakes": []},
        "corrected_response": None,
    }
    wrong = {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {
            "mistake": True,
            "mistakes": [{"text": "2 days", "type": "Evident Conflict", "explanation": "It says 3."}],
        },
        "corrected_response": None,
    }
    main = [
        {
            "id": f"m{i}",
            "group": f"q{i // 3}",
            "context": f"Delivery takes {i} days.",
            "question": f"How long {i // 3}?",
            "response": f"{i} days." if i % 4 else f"{i + 1} days.",
            "verdict": clean if i % 4 else wrong,
        }
        for i in range(600)
    ]
    main += [dict(main[7]), "[1, 2]"]  # a duplicate id and a row that is not an object
    unlabeled = [
        {"id": f"u{i}", "group": f"q{i}", "context": "Ctx.", "question": f"Q{i}?", "response": f"R{i}."}
        for i in range(40)
    ]
    judged = [{"id": f"u{i}", "verdict": wrong if i % 2 else clean} for i in range(40)]
    augment = [
        {
            "id": f"a{i}",
            "group": f"q{i % 250}",
            "context": "Other ctx.",
            "question": f"How long {i % 250}?",
            "response": f"Maybe {i}.",
            "hallucinated": bool(i % 3),
        }
        for i in range(300)
    ]
    files = {
        "main": write_jsonl(tmp_path / "main.jsonl", main),
        "more": write_jsonl(tmp_path / "more.jsonl", unlabeled),
        "judged": write_jsonl(tmp_path / "judged.jsonl", judged),
        "aug": write_jsonl(tmp_path / "aug.jsonl", augment),
    }
    assert bucket_count(2 * estimate_size([parse_input(str(p)) for p in files.values()]), SMALL) >= 64
    results = []
    for bucket_bytes in (TARGET_BUCKET_BYTES, SMALL):
        out = tmp_path / f"out-{bucket_bytes}"
        result = run_prepare(
            PrepareOptions(
                inputs=[parse_input(f"rg={files['main']}"), parse_input(f"live={files['more']}")],
                out=out,
                test_size=TestSize(fraction=0.2),
                skip_invalid=True,
                bucket_bytes=bucket_bytes,
            ),
            TcTask(
                augment=(parse_input(f"gpt35={files['aug']}"),),
                augment_cap=100,
                judgements=(parse_input(str(files["judged"])),),
                corrections="from-clean",
            ),
        )
        results.append((result.summary, outputs(out, OUTPUTS + ("summary.json",))))
    assert results[0] == results[1]
    s = results[0][0]
    assert s["augment"]["rows_read"] == 300 and s["by_source"]["gpt35"]["rows"] == 100
    assert s["invalid_rows"] == 2 and s["by_source"]["live"]["rows"] == 40
    assert s["corrections_from_clean"] > 0 and abs(s["test"] - 128) <= 2  # ceil(0.2 x 640 main rows), whole groups
