"""`mixft generate --backend hf` on the tiny Mixtral with a LoRA adapter trained by a real
`mixft train rg --profile cpu` run, and the prompt ids checked against Axolotl's own
tokenization of the training rows (slow tier)."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.cli.main import main

pytestmark = pytest.mark.slow


def test_prompt_ids_are_axolotls_masked_prefix(tiny_mixtral_dir):
    """The ids generation starts from are exactly the prompt part Axolotl trained on."""
    from axolotl.prompt_strategies.context_qa import ContextQaV2PromptTokenizingStrategy, ContextV2Prompter
    from transformers import AutoTokenizer

    from mixtral_ft.backends.hf import prompt_token_ids
    from mixtral_ft.generate.prompts import rg_prompt, strip_answer_prefix

    tok = AutoTokenizer.from_pretrained(tiny_mixtral_dir)
    strategy = ContextQaV2PromptTokenizingStrategy(ContextV2Prompter(), tok, False, 2048)
    row = {
        "context": "The museum opens at 9 am.\n\nIt closes at 5 pm.",
        "question": "When does it open?",
        "answer": "At 9 am.",
    }
    trained = strategy.tokenize_prompt(row)
    n_prompt = sum(1 for label in trained["labels"] if label == -100)
    ours = prompt_token_ids(tok, rg_prompt(row["context"], row["question"]))
    assert ours == trained["input_ids"][:n_prompt]
    completion = tok.decode(trained["input_ids"][n_prompt:], skip_special_tokens=True)
    assert strip_answer_prefix(completion) == ("At 9 am.", True)


def test_generate_hf_with_trained_adapter(rg_lora_run, tiny_mixtral_dir, rg_data_dir, tmp_path, capsys):
    adapter = rg_lora_run / "output"
    out = tmp_path / "gen.jsonl"
    args = [
        "generate",
        "--data",
        str(rg_data_dir / "test.jsonl"),
        "--out",
        str(out),
        "-m",
        str(tiny_mixtral_dir),
        "--adapter",
        str(adapter),
        "--max-new-tokens",
        "12",
        "--batch-size",
        "4",
    ]
    assert main(args) == 0
    assert "tokens/s" in capsys.readouterr().out
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    test_ids = [json.loads(l)["id"] for l in (rg_data_dir / "test.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(test_ids)
    for r in rows:
        assert isinstance(r["response"], str) and r["error"] is None and r["reference_answer"]
        assert 1 <= r["n_new_tokens"] <= 12 and r["model"]["adapter"] == str(adapter)
    manifest = json.loads((tmp_path / "gen.jsonl.manifest.json").read_text())
    assert len(manifest["backend"]["adapter_sha256"]) == 64 and manifest["settings"]["generation"]["do_sample"] is False
    assert manifest["environment"]["packages"]["transformers"]
    # An unquantized load records its counts too: the experts exist, none is 4-bit.
    assert manifest["quantization"] == {"expert_tensors": 4, "expert_tensors_4bit": 0, "linear_4bit": 0}
    assert manifest["backend"]["load"]["load_in_4bit"] is False

    # Greedy generation is deterministic, and batching (left padding) does not change it.
    one = tmp_path / "one.jsonl"
    assert main(args[:4] + [str(one)] + args[5:-1] + ["1"]) == 0
    by_id = {json.loads(l)["id"]: json.loads(l)["response"] for l in one.read_text().splitlines()}
    assert by_id == {r["id"]: r["response"] for r in rows}


def test_generate_hf_sampling_and_stop_strings(tiny_mixtral_dir, rg_data_dir, tmp_path):
    out = [tmp_path / f"s{i}.jsonl" for i in range(2)]
    for path in out:
        assert (
            main(
                [
                    "generate",
                    "--data",
                    str(rg_data_dir / "test.jsonl"),
                    "--out",
                    str(path),
                    "-m",
                    str(tiny_mixtral_dir),
                    "--max-new-tokens",
                    "8",
                    "--temperature",
                    "0.9",
                    "--top-p",
                    "0.95",
                    "--seed",
                    "7",
                    "--stop",
                    "\n",
                    "--limit",
                    "2",
                ]
            )
            == 0
        )
    a, b = ([json.loads(l)["response"] for l in p.read_text().splitlines()] for p in out)
    assert a == b and all("\n" not in s for s in a)
