"""`mixft merge`: fold a LoRA adapter from a real tiny run into its base (slow tier)."""

from __future__ import annotations

import json
import shutil

import pytest

from fixtures_models import run_mixft

pytestmark = pytest.mark.slow


def test_merge_gives_a_model_that_loads_and_generates(rg_lora_run, tiny_mixtral_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    shutil.copytree(rg_lora_run, run)
    assert run_mixft(["merge", str(run)]) == 0
    merged = run / "merged"
    assert f"merged model: {merged}" in capsys.readouterr().out
    assert json.loads((merged / "mixft_merge.json").read_text())["settings"]["base_model"] == str(tiny_mixtral_dir)
    model = AutoModelForCausalLM.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[q], base.state_dict()[q])  # the adapter was folded in
    tok = AutoTokenizer.from_pretrained(merged)
    ids = tok("Context: x\nQuestion: y\n", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    assert run_mixft(["merge", str(run)]) == 2  # no clobbering without --force


def test_merge_refuses_prequantized_4bit_base_on_cpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    base = tmp_path / "base-bnb-4bit"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "mixtral", "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True}}))
    run = tmp_path / "run"
    (run / "output").mkdir(parents=True)
    (run / "output" / "adapter_config.json").write_text("{}")
    (run / "axolotl.yml").write_text(f"base_model: {base}\nadapter: qlora\n")
    assert run_mixft(["merge", str(run)]) == 3
    assert "is stored in 4-bit; dequantizing it for a merge needs a CUDA GPU" in capsys.readouterr().err
    assert not (run / "merged").exists()
