"""TC rows through the installed Axolotl's user-defined strategy (docs/formats.md §4): the
prompt is masked, exactly the verdict text + EOS is trained, and the length report counts
the same tokens Axolotl builds."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import run_prepare
from mixtral_ft.prepare.split import TestSize
from mixtral_ft.prepare.tc import TcTask, parse_inputs

# The dataset type docs/formats.md §4 tells Axolotl to use for TC rows.
TC_DATASET_TYPE = {
    "field_instruction": "prompt",
    "field_output": "completion",
    "format": "{instruction}",
    "no_input_format": "{instruction}",
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real byte-level BPE tokenizer with Mixtral's BOS/EOS behaviour, trained locally."""
    pytest.importorskip("transformers")
    from mixtral_ft.models.tiny import corpus_lines, train_tokenizer
    from mixtral_ft.tc.prompt import load_template

    tok = train_tokenizer(corpus_lines(None) + load_template().splitlines(), vocab_size=600)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return tok, path


def test_axolotl_masks_prompt_and_trains_verdict_plus_eos(tmp_path, tokenizer):
    pytest.importorskip("axolotl")
    from axolotl.prompt_strategies import load
    from axolotl.utils.dict import DictDefault

    from mixtral_ft.data.lengths import AxolotlInstructionTokenizer

    tok, tok_path = tokenizer
    rows = [
        {
            "id": "a",
            "context": ["The shop opens at 9.", "It closes at 5."],
            "question": "When does it open?",
            "response": "At 10 on weekdays.",
            "labels": [{"text": "At 10", "label_type": "Evident Conflict", "meta": "The context says 9."}],
        },
        {
            "id": "b",
            "context": "Refunds within 30 days.",
            "question": "Refund window?",
            "response": "30 days, “with receipt” — é.",
            "hallucinated": False,
        },
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_prepare(
        PrepareOptions(
            inputs=parse_inputs([str(tmp_path / "in.jsonl")]),
            out=tmp_path / "out",
            test_size=TestSize(count=1),
            tokenizer=tok_path,
            sequence_len=8192,
        ),
        TcTask(),
    )
    out = [
        json.loads(x) for f in ("train.jsonl", "test.jsonl") for x in (tmp_path / "out" / f).read_text().splitlines()
    ]
    assert len(out) == 2

    cfg = DictDefault({"train_on_inputs": False, "sequence_len": 8192})
    strategy = load("user_defined", tok, cfg, dict(TC_DATASET_TYPE))
    ours = AxolotlInstructionTokenizer(tok, 8192)
    lengths = []
    for row in out:
        built = strategy.tokenize_prompt(row)
        ids, labels = built["input_ids"], built["labels"]
        n_prompt = len(tok(row["prompt"])["input_ids"])
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert labels[:n_prompt] == [-100] * n_prompt
        assert all(x != -100 for x in labels[n_prompt:])
        trained = labels[n_prompt:]
        assert trained[-1] == tok.eos_token_id and tok.bos_token_id not in trained
        assert tok.decode(trained[:-1]) == row["completion"]
        assert tok.decode(ids[:n_prompt], skip_special_tokens=True) == row["prompt"]
        assert ours.tokenize_batch([(row["prompt"], row["completion"])])[0] == (ids, labels)
        lengths.append(len(ids))
    # the report counts the same tokens (train and test together here: test_size 1 row)
    report = result.summary["lengths"]
    assert report["kind"] == "tokens"
    assert sorted([report["by_split"]["train"]["p100"], report["by_split"]["test"]["p100"]]) == sorted(lengths)
