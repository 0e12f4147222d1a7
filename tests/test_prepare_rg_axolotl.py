"""Prepared RG rows through the installed Axolotl's `context_qa.load_v2` strategy: the same
prompt/response text, the same token ids and labels, the same lengths in our report, and
Axolotl's documented handling of rows longer than sequence_len."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.data.lengths import AXOLOTL_LONG_ROWS, AxolotlInstructionTokenizer
from mixtral_ft.data.prompts import context_qa_v2_prompt, context_qa_v2_response
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import run_prepare
from mixtral_ft.prepare.readers import parse_input
from mixtral_ft.prepare.rg import RgTask
from mixtral_ft.prepare.split import TestSize

ROWS = [
    {
        "id": "a",
        "question": "When does the shop open?",
        "context": ["The shop opens at 9.", "It closes at 5 pm."],
        "answer": "At 9 in the morning.",
    },
    {
        "id": "b",
        "question": "Refund  window?",
        "context": "Refunds within 30 days, “with receipt” — café.",
        "answer": "30 days with a receipt.",
    },
    {
        "id": "c",
        "question": "Is there parking?",
        "context": ["Free parking behind the store.\n\nBikes welcome."],
        "answer": "Yes, free parking behind the store.",
    },
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real byte-level BPE tokenizer that prepends <s> like Mixtral's, trained locally (no download)."""
    pytest.importorskip("transformers")
    from mixtral_ft.models.tiny import corpus_lines, train_tokenizer

    lines = corpus_lines(None) + [x for r in ROWS for x in (r["question"], r["answer"], str(r["context"]))]
    tok = train_tokenizer(lines, vocab_size=400)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return tok, path


def _strategy(tok, sequence_len: int):
    pytest.importorskip("axolotl")
    from axolotl.prompt_strategies.context_qa import load_v2
    from axolotl.utils.dict import DictDefault

    return load_v2(tok, DictDefault({"train_on_inputs": False, "sequence_len": sequence_len}))


def test_prepared_rows_tokenize_exactly_as_axolotl(tmp_path, tokenizer):
    tok, tok_path = tokenizer
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    result = run_prepare(
        PrepareOptions(
            inputs=[parse_input(str(src))],
            out=tmp_path / "out",
            test_size=TestSize(count=1),
            tokenizer=tok_path,
            sequence_len=4096,
        ),
        RgTask(),
    )
    rows = [
        json.loads(x) for f in ("train.jsonl", "test.jsonl") for x in (tmp_path / "out" / f).read_text().splitlines()
    ]
    strategy = _strategy(tok, 4096)
    ours = AxolotlInstructionTokenizer(tok, 4096)
    lengths = []
    for row in rows:
        instruction, _input, response = strategy.parse_instruction_fields(row)
        prompt = next(iter(strategy.prompter.build_prompt(instruction, _input)))
        assert prompt == context_qa_v2_prompt(row["context"], row["question"])
        assert response == context_qa_v2_response(row["answer"])
        built = strategy.tokenize_prompt(row)
        assert ours.tokenize_batch([(prompt, response)])[0] == (built["input_ids"], built["labels"])
        n_masked = built["labels"].count(-100)
        assert built["input_ids"][0] == tok.bos_token_id and built["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(built["labels"][n_masked:-1]) == response  # exactly "Answer: ..." + EOS is trained
        lengths.append(len(built["input_ids"]))
    report = result.lengths
    assert report["kind"] == "tokens" and report["n"] == len(rows) == 3
    assert report["p100"] == max(lengths) and report["over_sequence_len"] == 0


def test_truncation_matches_axolotl_for_long_parts(tokenizer):
    tok, _ = tokenizer
    row = {"context": "The shop opens at 9. " * 20, "question": "When?", "answer": "At nine o'clock every day. " * 5}
    for sequence_len in (8, 32):
        built = _strategy(tok, sequence_len).tokenize_prompt(row)
        pair = (context_qa_v2_prompt(row["context"], row["question"]), context_qa_v2_response(row["answer"]))
        got = AxolotlInstructionTokenizer(tok, sequence_len).tokenize_batch([pair])[0]
        assert got == (built["input_ids"], built["labels"])
        assert len(got[0]) > sequence_len  # both parts truncated separately: Axolotl then drops the row


def test_axolotl_drops_rows_longer_than_sequence_len_by_default():
    pytest.importorskip("axolotl")
    from axolotl.utils.data.utils import handle_long_seq_in_dataset
    from axolotl.utils.dict import DictDefault
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": [[1] * 5, [1] * 11, [1] * 10], "labels": [[1] * 5, [1] * 11, [1] * 10]})
    kept = handle_long_seq_in_dataset(ds, 10, DictDefault({"dataset_num_proc": 1, "is_preprocess": False}))
    assert [len(x) for x in kept["input_ids"]] == [5, 10]
    assert "drops them by default" in AXOLOTL_LONG_ROWS
