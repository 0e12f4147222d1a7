"""4-bit inference on the CPU twin: `mixft generate|judge --load-in-4bit` with a LoRA adapter
from a real `mixft train --profile cpu` run, through the one inference loader
(models/loading.py) and bitsandbytes' CPU backend. The GPU path runs the same code; only the
device map, the dtype (pure decisions, tested in tests/test_loading.py) and the kernels differ.
"""

from __future__ import annotations

import json

import pytest

from mixtral_ft.cli.main import main
from support.fixtures_models import TC_PROMPT

pytestmark = pytest.mark.slow

ALL_4BIT = {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}


def test_generate_load_in_4bit_with_adapter(rg_lora_run, tiny_mixtral_dir, rg_data_dir, tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    assert (
        main(
            [
                "generate",
                "--data",
                str(rg_data_dir / "test.jsonl"),
                "--out",
                str(out),
                "-m",
                str(tiny_mixtral_dir),
                "--adapter",
                str(rg_lora_run / "output"),
                "--load-in-4bit",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    assert "tokens/s" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["error"] is None and 1 <= r["n_new_tokens"] <= 8 for r in rows)
    manifest = json.loads((tmp_path / "gen.jsonl.manifest.json").read_text())
    assert manifest["quantization"] == ALL_4BIT  # 100% of the expert tensors in 4-bit
    backend = manifest["backend"]
    assert backend["quantization"] == ALL_4BIT and backend["load_in_4bit"] is True
    assert backend["load"]["device_map"] == {"": "cpu"} and backend["load"]["four_bit"]["quant_type"] == "nf4"
    assert backend["lora_targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"] and backend["lora_modules"] == 8


def test_judge_load_in_4bit_with_adapter(tc_lora_run, tiny_mixtral_dir, tc_data_dir, tmp_path, capsys):
    template = tmp_path / "tc_fixture.txt"
    template.write_text(TC_PROMPT)
    out = tmp_path / "j.jsonl"
    assert (
        main(
            [
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
                "--load-in-4bit",
                "--max-new-tokens",
                "16",
            ]
        )
        == 0
    )
    assert "parse failures" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["error"] is None and isinstance(r["raw"], str) for r in rows)
    manifest = json.loads((tmp_path / "j.jsonl.manifest.json").read_text())
    assert manifest["quantization"] == ALL_4BIT
    assert manifest["backend"]["lora_targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_loaded_4bit_model_stores_experts_in_uint8_with_lora_on_attention(rg_lora_run, tiny_mixtral_dir):
    """The CPU twin of the GPU inference load: the decisions, read off the loaded model."""
    import bitsandbytes as bnb
    import torch

    from mixtral_ft.models.loading import load_for_inference

    loaded = load_for_inference(
        str(tiny_mixtral_dir), adapter=str(rg_lora_run / "output"), load_in_4bit=True, device="cpu"
    )
    model = loaded.model
    assert loaded.quantization == ALL_4BIT
    # The fused experts: uint8 storage behind bitsandbytes' parametrization, 3-D when read.
    for layer in model.base_model.model.model.layers:
        experts = layer.mlp.experts
        for name, shape in (("gate_up_proj", (4, 256, 64)), ("down_proj", (4, 64, 128))):
            stored = experts.parametrizations[name].original
            assert stored.dtype == torch.uint8 and stored.numel() * 2 == torch.Size(shape).numel()
            assert tuple(getattr(experts, name).shape) == shape
    # Exactly the attention projections are 4-bit linears; router, embeddings and lm_head are not.
    four_bit = sorted(n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit))
    assert [n.rpartition(".")[2] for n in four_bit] == ["base_layer"] * 8
    assert {n.split(".")[-2] for n in four_bit} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert all(m.compute_dtype == torch.float32 for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert model.base_model.model.lm_head.weight.dtype == torch.float32
    # LoRA sits on q/k/v/o of both layers, nowhere else.
    assert loaded.lora_modules == [f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in "koqv"]
    assert loaded.plan.device_map == {"": "cpu"} and loaded.plan.dtype == "float32"


def test_expert_lora_over_4bit_experts_equals_dequantized_base_plus_adapter(tiny_mixtral_dir, tmp_path):
    """An adapter on the fused experts (lora_target_parameters) is applied over 4-bit experts,
    not dropped: the 4-bit model's logits equal those of a float model holding the very same
    dequantized weights with the adapter applied by plain PEFT (only the 4-bit rounding differs
    from the full-precision base, and here it is the same on both sides)."""
    import bitsandbytes.functional as bnbf
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from mixtral_ft.models.loading import load_for_inference

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir)
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(base, cfg).save_pretrained(tmp_path / "adapter")

    loaded = load_for_inference(
        str(tiny_mixtral_dir), adapter=str(tmp_path / "adapter"), load_in_4bit=True, device="cpu"
    )
    assert loaded.quantization == {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}
    assert "model.layers.0.mlp.experts" in loaded.lora_modules

    # A float model with the dequantized weights of the 4-bit one, adapter applied by PEFT alone.
    dequant = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir)
    q_layers = loaded.model.base_model.model.model.layers
    with torch.no_grad():
        for q_layer, f_layer in zip(q_layers, dequant.model.layers):
            q_experts = q_layer.mlp.experts.get_base_layer()  # under PEFT's (nested) ParamWrappers
            for name in ("gate_up_proj", "down_proj"):
                getattr(f_layer.mlp.experts, name).copy_(q_experts.parametrizations[name]())
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                q_lin = getattr(q_layer.self_attn, p)
                q_lin = getattr(q_lin, "base_layer", q_lin)
                w = bnbf.dequantize_4bit(q_lin.weight.data, q_lin.weight.quant_state)
                getattr(f_layer.self_attn, p).weight.copy_(w)
    reference = PeftModel.from_pretrained(dequant, str(tmp_path / "adapter")).eval()
    ids = loaded.tokenizer("Context: The museum opens at 9 am.\nQuestion: When?\n", return_tensors="pt")
    # Train mode (no dropout and no router jitter in this model) keeps bitsandbytes on its
    # dequantize-then-matmul path in float32: in eval mode, on a CPU with AVX512-BF16 it repacks
    # the 4-bit linears for a fused kernel that computes in bf16 (bitsandbytes/nn/modules.py,
    # Linear4bit.forward), a rounding difference (~3e-3 here) that has nothing to do with LoRA.
    loaded.model.train()
    with torch.no_grad():
        got = loaded.model(**ids).logits
        want = reference(**ids).logits
        with loaded.model.disable_adapter():
            no_adapter = loaded.model(**ids).logits
    assert (got - no_adapter).abs().max() > 0.05  # the adapter matters
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_adapter_for_another_model_is_refused(tiny_mixtral_dir, tmp_path, capsys):
    """A LoRA tensor that finds no module is an error, never a silent partial adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors = {k.replace("self_attn.q_proj", "self_attn.qq_proj"): v for k, v in tensors.items()}
    save_file(tensors, weights)
    out = tmp_path / "gen.jsonl"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "context": "c", "question": "q"}) + "\n")
    assert (
        main(
            [
                "generate",
                "--data",
                str(data),
                "--out",
                str(out),
                "-m",
                str(tiny_mixtral_dir),
                "--adapter",
                str(tmp_path / "adapter"),
                "--load-in-4bit",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "LoRA tensor(s) found no module in the model" in err and "qq_proj" in err
    assert not out.exists()
