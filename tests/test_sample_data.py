"""Invariants of the bundled sample data in data/ (built by scripts/build_sample_data.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SCRIPT = REPO / "scripts" / "build_sample_data.py"

QA_FIELDS = {"id": str, "question": str, "context": list, "answer": str, "article_id": str, "source": str}
TC_FIELDS = {
    "id": str,
    "question_id": str,
    "group": str,
    "context": list,
    "question": str,
    "response": str,
    "model": str,
    "source": str,
    "verdict": dict,
}
MISTAKE_TYPES = {"Evident Conflict", "Subtle Conflict", "Evident Baseless Info", "Subtle Baseless Info"}
# The range data/README.md states for the share of responses with a groundedness mistake.
HALLUCINATED_SHARE = (0.25, 0.35)


def _load_script():
    spec = importlib.util.spec_from_file_location("build_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _rows(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def kb() -> list[dict]:
    return _rows("sample_kb.jsonl")


@pytest.fixture(scope="module")
def qa() -> list[dict]:
    return _rows("sample_qa.jsonl")


@pytest.fixture(scope="module")
def tc() -> list[dict]:
    return _rows("sample_tc_responses.jsonl")


def _check_fields(rows: list[dict], fields: dict[str, type]) -> None:
    for row in rows:
        assert set(row) == set(fields), f"{row.get('id')}: fields {sorted(row)}"
        for name, kind in fields.items():
            assert isinstance(row[name], kind), f"{row['id']}: {name} is {type(row[name]).__name__}"
            if kind is str:
                assert row[name].strip(), f"{row['id']}: {name} is empty"
        assert 1 <= len(row["context"]) <= 4, row["id"]
        assert all(isinstance(s, str) and s.strip() for s in row["context"]), row["id"]


def test_files_are_plain_utf8_jsonl_and_small():
    total = 0
    for name in ("sample_kb.jsonl", "sample_qa.jsonl", "sample_tc_responses.jsonl"):
        raw = (DATA / name).read_bytes()
        total += len(raw)
        assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw and raw.endswith(b"\n"), name
        raw.decode("utf-8")
    assert total < 1_500_000


def test_qa_rows(qa, kb):
    _check_fields(qa, QA_FIELDS)
    assert 300 <= len(qa) <= 400
    assert len({r["id"] for r in qa}) == len(qa)
    assert all(re.fullmatch(r"qa-\d{4}", r["id"]) for r in qa)
    assert len({r["question"] for r in qa}) == len(qa)
    assert {r["source"] for r in qa} == {"synthetic", "live"}
    live_share = sum(r["source"] == "live" for r in qa) / len(qa)
    assert 0.2 <= live_share <= 0.4
    snippets = {s for article in kb for s in article["snippets"]}
    articles = {a["article_id"] for a in kb}
    assert {r["article_id"] for r in qa} == articles  # every article has questions
    for row in qa:
        assert set(row["context"]) <= snippets, f"{row['id']}: context snippet not in the knowledge base"
    # Grouping by article must leave enough groups for a grouped train/test split.
    assert len(articles) >= 30
    assert sum(len(r["context"]) > 1 for r in qa) >= 50


def test_tc_rows(tc, qa):
    _check_fields(tc, TC_FIELDS)
    assert 240 <= len(tc) <= 300
    assert len({r["id"] for r in tc}) == len(tc)
    assert all(re.fullmatch(r"resp-\d{4}", r["id"]) for r in tc)
    by_id = {r["id"]: r for r in qa}
    for row in tc:
        question = by_id.get(row["question_id"])
        assert question is not None, f"{row['id']}: unknown question_id {row['question_id']}"
        assert row["question"] == question["question"] and row["context"] == question["context"], row["id"]
        assert row["group"] == question["article_id"], row["id"]
        assert (row["model"], row["source"]) in {("kb-bot-v1", "rg"), ("weak-bot", "augment")}, row["id"]


def test_verdicts(tc):
    for row in tc:
        v = row["verdict"]
        assert set(v) == {"relevance", "groundedness", "corrected_response"}, row["id"]
        assert isinstance(v["relevance"]["mistake"], bool) and v["relevance"]["explanation"].strip()
        g = v["groundedness"]
        assert g["mistake"] == bool(g["mistakes"]), row["id"]
        for m in g["mistakes"]:
            assert set(m) == {"text", "type", "explanation"}, row["id"]
            assert m["type"] in MISTAKE_TYPES, row["id"]
            assert m["text"] and m["text"] in row["response"], f"{row['id']}: {m['text']!r} not in response"
            assert m["explanation"].strip(), row["id"]
        flagged = g["mistake"] or v["relevance"]["mistake"]
        if flagged:
            assert isinstance(v["corrected_response"], str) and v["corrected_response"] != row["response"], row["id"]
            for m in g["mistakes"]:
                assert m["text"].strip() not in v["corrected_response"], f"{row['id']}: correction keeps the mistake"
        else:
            assert v["corrected_response"] is None, row["id"]


def test_verdicts_match_the_package_schema(tc):
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = REPO / "src" / "mixtral_ft" / "resources" / "verdict.schema.json"
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text(encoding="utf-8")))
    for row in tc:
        errors = [e.message for e in validator.iter_errors(row["verdict"])]
        assert not errors, f"{row['id']}: {errors}"


def test_label_balance(tc):
    hallucinated = [r for r in tc if r["verdict"]["groundedness"]["mistake"]]
    share = len(hallucinated) / len(tc)
    assert HALLUCINATED_SHARE[0] <= share <= HALLUCINATED_SHARE[1], share
    per_model = {}
    for model in ("kb-bot-v1", "weak-bot"):
        rows = [r for r in tc if r["model"] == model]
        per_model[model] = sum(r["verdict"]["groundedness"]["mistake"] for r in rows) / len(rows)
    assert per_model["kb-bot-v1"] <= 0.12 < per_model["weak-bot"]
    types = {m["type"] for r in hallucinated for m in r["verdict"]["groundedness"]["mistakes"]}
    assert types == MISTAKE_TYPES
    assert sum(r["verdict"]["relevance"]["mistake"] for r in tc) >= 3


def test_generator_reproduces_the_files_byte_for_byte(tmp_path):
    build = _load_script()
    assert build.main(["--out", str(tmp_path)]) == 0
    for name in ("sample_kb.jsonl", "sample_qa.jsonl", "sample_tc_responses.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), (
            f"data/{name} is out of date: run python scripts/build_sample_data.py"
        )


def test_generator_rejects_a_mistake_span_not_in_the_response(tmp_path):
    build = _load_script()
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    article = {
        "id": "a",
        "title": "A",
        "category": "C",
        "snippets": ["Plan X costs $5."],
        "qa": [
            {
                "q": "How much is X?",
                "ctx": [1],
                "src": "synthetic",
                "a": "X costs $5.",
                "r": [
                    {
                        "model": "weak-bot",
                        "text": "X costs $7.",
                        "mistakes": [{"text": "$9", "type": "EC", "fix": "$5", "why": "wrong price"}],
                    }
                ],
            }
        ],
    }
    (kb_dir / "01-a.json").write_text(json.dumps(article), encoding="utf-8")
    out = tmp_path / "out"
    assert build.main(["--out", str(out), "--kb", str(kb_dir)]) == 2
    assert not out.exists()
