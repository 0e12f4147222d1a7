"""The imported gold file drives what already exists, unchanged (slow tier, the tiny model):

sample → judge (the tiny random Mixtral) → export with the judge's pre-annotations → two annotators
(an export shaped as Label Studio writes it: tests/data/label/export.json is a real one) → import →
``eval tc --gold``, ``eval pipeline --gold``, ``eval rg --checker-eval`` (through ``eval tc``) and
``prepare tc`` on the gold file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def _result(rid: str, name: str, kind: str, value: dict) -> dict:
    return {"value": value, "id": rid, "from_name": name, "to_name": "response", "type": kind, "origin": "manual"}


def _annotation(aid: int, user: int, task: int, response: str, hallucinated: bool, minute: int) -> dict:
    result = [
        _result("g", "groundedness", "choices", {"choices": ["Hallucinated" if hallucinated else "Clean"]}),
        _result("r", "relevance", "choices", {"choices": ["Relevant"]}),
    ]
    if hallucinated:
        word = response.split()[-1]
        start = response.rindex(word)
        span = {"start": start, "end": start + len(word)}
        result += [
            _result(f"s{aid}", "mistakes", "labels", {**span, "text": word, "labels": ["Evident Conflict"]}),
            _result(f"s{aid}", "mistake_explanation", "textarea", {**span, "text": ["The context says otherwise."]}),
        ]
    stamp = f"2026-01-01T10:{minute:02d}:00.000000Z"
    return {
        "id": aid,
        "completed_by": user,
        "result": result,
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": stamp,
        "updated_at": stamp,
        "lead_time": 20.0,
        "task": task,
        "project": 1,
        "parent_prediction": None,
    }


def _export(tasks_json: Path) -> list[dict]:
    """Annotator 1 labels every task (every other one hallucinated); annotator 2 the first four,
    disagreeing on the second."""
    export = []
    for i, task in enumerate(json.loads(tasks_json.read_text())):
        response = task["data"]["response"]
        annotations = [_annotation(100 + i, 1, i + 1, response, i % 2 == 1, i)]
        if i < 4:
            annotations.append(_annotation(200 + i, 2, i + 1, response, (i % 2 == 1) != (i == 1), 30 + i))
        export.append(
            {
                "id": i + 1,
                "annotations": annotations,
                "drafts": [],
                "predictions": [],
                "data": task["data"],
                "meta": {},
                "project": 1,
            }
        )
    return export


def test_gold_set_feeds_eval_and_prepare_unchanged(tiny_mixtral_dir, tc_data_dir, tmp_path, capsys):
    sample, judge, gold = tmp_path / "sample", tmp_path / "judge.jsonl", tmp_path / "gold.jsonl"
    assert (
        main(["label", "sample", str(tc_data_dir / "train.jsonl"), "--n", "8", "--seed", "1", "--out", str(sample)])
        == 0
    )
    args = ["judge", "--responses", str(sample / "sample.jsonl"), "--out", str(judge), "-m", str(tiny_mixtral_dir)]
    assert main([*args, "--max-new-tokens", "12"]) == 0
    assert main(["label", "export", str(sample), "--predictions", str(judge), "--out", str(tmp_path / "tasks")]) == 0
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_export(tmp_path / "tasks" / "tasks.json")))
    assert (
        main(["label", "import", str(export), "--sample", str(sample), "--out", str(gold), "--resolve", "first"]) == 0
    )
    capsys.readouterr()
    gold_rows = {r["id"]: r for r in _rows(gold)}
    assert len(gold_rows) == 8 and sum(r["verdict"]["groundedness"]["mistake"] for r in gold_rows.values()) == 4

    # eval tc and eval pipeline take it as --gold; eval rg corrects with the eval tc result.
    assert main(["eval", "tc", "--pred", str(judge), "--gold", str(gold), "--out", str(tmp_path / "eval-tc")]) == 0
    tc = json.loads((tmp_path / "eval-tc" / "results.json").read_text())
    cm = tc["confusion_matrix"]["gold_hallucinated"]
    assert cm["flagged"] + cm["not_flagged"] + cm["unparsed"] == 4
    assert (
        main(["eval", "pipeline", "--gold", str(gold), "--checker", str(judge), "--out", str(tmp_path / "eval-pipe")])
        == 0
    )
    pipe = json.loads((tmp_path / "eval-pipe" / "results.json").read_text())
    assert pipe["metrics"]["base_hallucination_rate"]["value"] == pytest.approx(0.5)
    args = ["eval", "rg", "--verdicts", str(judge), "--checker-eval", str(tmp_path / "eval-tc")]
    assert main([*args, "--out", str(tmp_path / "eval-rg")]) == 0
    rg = json.loads((tmp_path / "eval-rg" / "results.json").read_text())
    assert "hallucination_rate_corrected" in rg["metrics"] and rg["checker_eval"]["path"].endswith("results.json")

    # prepare tc takes it as labeled input: the human verdicts become the training targets.
    assert main(["prepare", "tc", str(gold), "--test-size", "2", "--out", str(tmp_path / "prepared")]) == 0
    prepared = _rows(tmp_path / "prepared" / "train.jsonl") + _rows(tmp_path / "prepared" / "test.jsonl")
    assert sorted(r["id"] for r in prepared) == sorted(gold_rows)
    for r in prepared:
        assert r["verdict"] == gold_rows[r["id"]]["verdict"]
        assert r["hallucinated"] == gold_rows[r["id"]]["verdict"]["groundedness"]["mistake"]
