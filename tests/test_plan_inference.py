"""`mixft plan generate|judge` on the tiny Mixtral: prompt lengths from the input file, the adapter,
the KV cache of the longest batch, and the refusal when it does not fit."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def adapter_dir(tmp_path):
    """An adapter directory with the tensors of a rank-8 LoRA on one 64x64 projection (bf16 on disk)."""
    import torch
    from safetensors.torch import save_file

    out = tmp_path / "adapter"
    out.mkdir()
    save_file(
        {
            "a.lora_A.weight": torch.zeros(8, 64, dtype=torch.bfloat16),
            "a.lora_B.weight": torch.zeros(64, 8, dtype=torch.bfloat16),
        },
        out / "adapter_model.safetensors",
    )
    (out / "adapter_config.json").write_text("{}")
    return out


def test_plan_generate_and_judge(
    tiny_mixtral_dir, rg_data_dir, tc_data_dir, adapter_dir, tmp_path, monkeypatch, capsys
):
    from mixtral_ft.cli.main import main
    from mixtral_ft.data.lengths import load_tokenizer
    from mixtral_ft.generate.prompts import rg_prompt
    from mixtral_ft.util.jsonl import read_jsonl

    monkeypatch.setenv("MIXFT_CACHE", str(tmp_path / "cache"))
    assert (
        main(
            [
                "plan",
                "generate",
                "--model",
                str(tiny_mixtral_dir),
                "--adapter",
                str(adapter_dir),
                "--data",
                str(rg_data_dir / "test.jsonl"),
                "--batch-size",
                "3",
                "--max-new-tokens",
                "50",
                "--load-in-4bit",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    tok = load_tokenizer(tiny_mixtral_dir)
    rows = list(read_jsonl(rg_data_dir / "test.jsonl"))
    longest = max(len(tok(rg_prompt(r["context"], r["question"]))["input_ids"]) for r in rows)
    assert d["longest_prompt"] == longest and d["rows"] == len(rows) and d["batch_size"] == 3
    assert d["parts"]["adapter"] == pytest.approx(2 * 8 * 64 * 4 / 2**30, abs=1e-6)  # float32 once loaded
    tokens = longest if d["peak_phase"] == "prefill" else longest + 50
    # 2 layers x (K, V) x 3 rows x tokens x 2 KV heads x 16 head dim x 2 bytes
    assert d["parts"]["kv_cache"] == pytest.approx(2 * 2 * 3 * tokens * 2 * 16 * 2 / 2**30, abs=1e-6)
    assert d["fits"] and d["tokens_per_s"] > 0 and d["hours"] is not None

    assert (
        main(
            [
                "plan",
                "judge",
                "--model",
                str(tiny_mixtral_dir),
                "--responses",
                str(tc_data_dir / "test.jsonl"),
                "--json",
            ]
        )
        == 0
    )
    j = json.loads(capsys.readouterr().out)
    assert j["max_new_tokens"] == 1024 and j["load_in_4bit"] is False and j["longest_prompt"] > longest

    # A GPU of 1 MiB: the plan says it does not fit.
    assert (
        main(
            [
                "plan",
                "generate",
                "--model",
                str(tiny_mixtral_dir),
                "--data",
                str(rg_data_dir / "test.jsonl"),
                "--gpu-memory",
                "0.001",
            ]
        )
        == 0
    )
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_check_inference_plan_refuses(tiny_mixtral_dir, tmp_path, monkeypatch):
    from mixtral_ft.plan import PlanRefused, check_inference_plan, plan_inference

    monkeypatch.setenv("MIXFT_CACHE", str(tmp_path / "cache"))
    plan = plan_inference(str(tiny_mixtral_dir), 0.5, batch_size=4, max_new_tokens=16, prompt_lengths=[30, 20, 10])
    check_inference_plan(plan, 80.0)
    with pytest.raises(PlanRefused, match="needs .* GiB per GPU by plan, but the GPU has 0.1 GiB free"):
        check_inference_plan(plan, 0.1)


def test_request_lengths_equal_the_file_lengths(tiny_mixtral_dir, tc_data_dir, tmp_path, monkeypatch):
    """What generate/judge would pass to preflight_inference equals what `mixft plan judge` counts."""
    from mixtral_ft.backends.base import Request
    from mixtral_ft.plan.prompts import prompt_lengths, request_lengths
    from mixtral_ft.tc.prompt import render_tc_prompt
    from mixtral_ft.util.jsonl import read_jsonl

    monkeypatch.setenv("MIXFT_CACHE", str(tmp_path / "cache"))
    path = tc_data_dir / "test.jsonl"
    requests = [
        Request(r["id"], prompt=render_tc_prompt(r["context"], r["question"], r["response"])) for r in read_jsonl(path)
    ]
    chat = [Request(r.key, messages=({"role": "user", "content": r.prompt},)) for r in requests]
    model = str(tiny_mixtral_dir)
    assert request_lengths(requests, model, None) == prompt_lengths("judge", path, model, None, "tc")
    assert request_lengths(chat, model, None) == prompt_lengths("judge", path, model, None, "chat")
