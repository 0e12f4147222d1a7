"""`mixft judge --backend hf` with a TC adapter trained by a real `mixft train tc --profile cpu`
run on the tiny Mixtral, and the TC prompt ids checked against Axolotl's user-defined type
(slow tier)."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.cli.main import main
from support.fixtures_models import TC_PROMPT

pytestmark = pytest.mark.slow


def test_tc_prompt_ids_are_axolotls_masked_prefix(tiny_mixtral_dir):
    from axolotl.prompt_strategies.user_defined import UserDefinedDatasetConfig, load
    from axolotl.utils.dict import DictDefault
    from transformers import AutoTokenizer

    from mixtral_ft.backends.hf import prompt_token_ids
    from mixtral_ft.tc.prompt import render_tc_prompt

    tok = AutoTokenizer.from_pretrained(tiny_mixtral_dir)
    prompt = render_tc_prompt("The museum opens at 9 am.", "When?", "At 10 am.")
    ds_cfg = UserDefinedDatasetConfig(
        field_instruction="prompt", field_output="completion", format="{instruction}", no_input_format="{instruction}"
    )
    strategy = load(tok, DictDefault({"train_on_inputs": False, "sequence_len": 8192}), ds_cfg)
    trained = strategy.tokenize_prompt({"prompt": prompt, "completion": '{"relevance": {}}'})
    n_prompt = sum(1 for label in trained["labels"] if label == -100)
    assert prompt_token_ids(tok, prompt) == trained["input_ids"][:n_prompt]


def test_judge_hf_with_trained_adapter(tc_lora_run, tiny_mixtral_dir, tc_data_dir, tmp_path, capsys):
    # The fixture trained on its own short prompt; judge renders the same one via --template.
    template = tmp_path / "tc_fixture.txt"
    template.write_text(TC_PROMPT)
    out = tmp_path / "j.jsonl"
    args = [
        "judge",
        "--responses",
        str(tc_data_dir / "test.jsonl"),
        "--out",
        str(out),
        "-m",
        str(tiny_mixtral_dir),
        "--adapter",
        str(tc_lora_run / "output"),
        "--template",
        str(template),
        "--max-new-tokens",
        "24",
    ]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "parse failures" in stdout and "hallucinated" in stdout
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    test_ids = [json.loads(l)["id"] for l in (tc_data_dir / "test.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(test_ids)
    for r in rows:
        assert r["judge"]["backend"] == "hf" and r["judge"]["adapter"] == str(tc_lora_run / "output")
        assert isinstance(r["raw"], str) and r["n_new_tokens"] <= 24
        assert r["parse_ok"] == (r["verdict"] is not None)
        assert r["score"] is None or 0.0 <= r["score"] <= 1.0
    # Re-running judges nothing again and leaves the file as it was.
    before = out.read_bytes()
    assert main(args) == 0 and out.read_bytes() == before
