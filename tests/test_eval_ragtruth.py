"""Real data: RAGTruth QA annotations as gold reproduce the dataset README's figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main

# From ../shared/datasets/ragtruth-qa/README.md.
README_PER_MODEL = {
    "gpt-4-0613": (5, 138),
    "gpt-3.5-turbo-0613": (8, 133),
    "llama-2-7b-chat": (84, 139),
    "llama-2-13b-chat": (59, 139),
    "llama-2-70b-chat": (51, 137),
    "mistral-7B-instruct": (52, 131),
}


def ragtruth_items(path: Path, out: Path) -> Path:
    """One row per response; hallucinated iff its RAGTruth ``labels`` list is non-empty."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        for resp in q["responses"]:
            rows.append(
                {
                    "id": f"{q['source_id']}-{resp['model']}",
                    "source": "ragtruth",
                    "model": resp["model"],
                    "hallucinated": bool(resp["labels"]),
                }
            )
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def flag_everything(gold: Path, out: Path) -> Path:
    ids = [json.loads(x)["id"] for x in gold.read_text().splitlines()]
    out.write_text("".join(json.dumps({"id": i, "hallucinated": True, "score": 1.0}) + "\n" for i in ids))
    return out


def check_rg(gold: Path, out: Path) -> None:
    assert main(["eval", "rg", "--verdicts", str(gold), "--by", "model", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    got = {row["model"]: (row["hallucinated"], row["items"]) for row in r["breakdown"]["model"]}
    assert got == README_PER_MODEL
    assert (r["counts"]["hallucinated"], r["counts"]["items"]) == (259, 817)


def check_tc(gold: Path, pred: Path, out: Path) -> None:
    assert main(["eval", "tc", "--pred", str(pred), "--gold", str(gold), "--out", str(out)]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    assert (m["precision"]["numerator"], m["precision"]["denominator"]) == (259, 817)
    assert m["recall"]["value"] == 1.0
    # F1 of "flag everything" = 2 * 259 / (2 * 259 + 558)
    assert m["f1"]["value"] == pytest.approx(518 / 1076)


def test_ragtruth_from_raw_file(ragtruth_path, tmp_path):
    gold = ragtruth_items(ragtruth_path, tmp_path / "gold.jsonl")
    check_rg(gold, tmp_path / "rg")
    check_tc(gold, flag_everything(gold, tmp_path / "all.jsonl"), tmp_path / "tc")


def test_ragtruth_through_prepare_tc(ragtruth_path, tmp_path):
    """The same figures from `prepare tc --format ragtruth` rows (§4, with verdicts), train + test."""
    from mixtral_ft.prepare.options import PrepareOptions
    from mixtral_ft.prepare.pipeline import run_prepare
    from mixtral_ft.prepare.tc import TcTask, parse_inputs

    prepared = tmp_path / "tc_data"
    run_prepare(PrepareOptions(parse_inputs([str(ragtruth_path)], "ragtruth"), prepared), TcTask(format="ragtruth"))
    rows = (prepared / "train.jsonl").read_text() + (prepared / "test.jsonl").read_text()
    gold = tmp_path / "all_rows.jsonl"
    gold.write_text(rows)
    check_rg(gold, tmp_path / "rg")
    check_tc(gold, flag_everything(gold, tmp_path / "flags.jsonl"), tmp_path / "tc")
    r = json.loads((tmp_path / "rg" / "results.json").read_text())
    assert r["counts"]["label_sources"] == {"verdict": 817}
    types = {row["type"] for row in r["mistake_types"]}
    assert types <= {"Evident Conflict", "Subtle Conflict", "Evident Baseless Info", "Subtle Baseless Info"}
