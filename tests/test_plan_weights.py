"""Weight bytes: bitsandbytes' storage layout, the default Mixtral config, and the planner's
accounting against the bytes of the tiny Mixtral really loaded in 4-bit on the CPU."""

from __future__ import annotations

import pytest

from mixtral_ft.plan.arch import MIXTRAL_8X7B_CONFIG, load_arch
from mixtral_ft.plan.loadplan import inference_decisions, nf4_stored_bytes, training_decisions
from mixtral_ft.plan.setup import setup_from_config


@pytest.mark.parametrize("shape", [(64, 64), (4, 256, 64), (3, 100), (7, 33, 9), (5, 3), (300, 257)])
@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("storage", ["uint8", "bfloat16"])
def test_nf4_formula_equals_bitsandbytes(shape, double_quant, storage):
    """Packed data + absmax (+ nested absmax, dynamic code, offset) + NF4 code, as stored_bytes counts them."""
    torch = pytest.importorskip("torch")
    bf = pytest.importorskip("bitsandbytes.functional")

    weight = torch.randn(*shape, dtype=torch.bfloat16)
    packed, state = bf.quantize_4bit(weight, blocksize=64, compress_statistics=double_quant, quant_type="nf4",
                                     quant_storage=getattr(torch, storage))
    real = packed.numel() * packed.element_size()
    for s in (state, state.state2):
        if s is None:
            continue
        for t in (s.absmax, s.code, getattr(s, "offset", None)):
            if isinstance(t, torch.Tensor):
                real += t.numel() * t.element_size()
    n = weight.numel()
    assert nf4_stored_bytes(n, 64, double_quant, torch.empty(0, dtype=getattr(torch, storage)).element_size()) == real


def test_default_mixtral_config_is_the_transformers_default():
    """The built-in Mixtral-8x7B config.json has the shapes of transformers' MixtralConfig() defaults."""
    transformers = pytest.importorskip("transformers")

    default = transformers.MixtralConfig()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "num_local_experts", "num_experts_per_tok", "sliding_window",
                "tie_word_embeddings", "rms_norm_eps", "hidden_act"):
        assert getattr(default, key) == MIXTRAL_8X7B_CONFIG[key], key
    assert default.rope_parameters["rope_theta"] == MIXTRAL_8X7B_CONFIG["rope_theta"]
    # The two differences, neither of which changes a tensor:
    assert default.max_position_embeddings != MIXTRAL_8X7B_CONFIG["max_position_embeddings"]
    assert default.router_aux_loss_coef != MIXTRAL_8X7B_CONFIG["router_aux_loss_coef"]


def test_arch_sources(tmp_path):
    import json

    from mixtral_ft.errors import UsageError

    assert load_arch("mistralai/Mixtral-8x7B-Instruct-v0.1").source.startswith("builtin:")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    assert load_arch(tmp_path / "m").config["hidden_size"] == 8
    assert load_arch(tmp_path / "m" / "config.json").model_type == "llama"
    assert load_arch({"model_type": "mistral"}).model_type == "mistral"
    with pytest.raises(UsageError, match="nothing is downloaded"):
        load_arch("someone/unknown-model")


def test_axolotl_training_decisions():
    """QLoRA: linears in 4-bit with bf16 storage, experts only with quantize_moe_experts, fp32 upcasts."""
    s = setup_from_config({"base_model": "x", "adapter": "qlora", "load_in_4bit": True, "quantize_moe_experts": True,
                           "lora_target_modules": ["q_proj"], "bf16": True})
    d = training_decisions(s)
    assert d.linear_4bit and d.experts_4bit and d.linear_storage == "bfloat16" and not d.kbit_prepare_fp32
    assert d.stored_dtype("model.layers.0.input_layernorm.weight", "bfloat16") == "float32"
    assert d.stored_dtype("model.layers.0.mlp.gate.weight", "bfloat16") == "float32"
    assert d.stored_dtype("lm_head.weight", "bfloat16") == "float32"
    no_experts = training_decisions(setup_from_config({"base_model": "x", "adapter": "qlora", "load_in_4bit": True,
                                                       "lora_target_modules": ["q_proj"]}))
    assert not no_experts.experts_4bit and no_experts.kbit_prepare_fp32  # PEFT casts the 16-bit rest to fp32


def _inventory_total(arch_dir, decisions):
    from mixtral_ft.plan.model_build import build_meta_model, inventory

    records = inventory(build_meta_model(load_arch(arch_dir), decisions), decisions)
    return sum(r.bytes for r in records), records


@pytest.mark.slow
def test_accounting_equals_the_tiny_mixtral_loaded_in_4bit(tiny_mixtral_dir):
    """The meta-model accounting equals stored_bytes of the real 4-bit load on CPU (experts included)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mixtral_ft.models.quant import FourBitSpec, quantization_record, quantize_experts_on_load, stored_bytes

    spec = FourBitSpec(compute_dtype="float32")
    with quantize_experts_on_load(spec):
        model = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir, quantization_config=spec.bnb_config(),
                                                     device_map="cpu", dtype=torch.float32)
    assert quantization_record(model)["expert_tensors_4bit"] == 4
    planned, records = _inventory_total(tiny_mixtral_dir, inference_decisions(True, dtype="float32"))
    assert planned == stored_bytes(model)["bytes"]
    assert sum(1 for r in records if r.quantized) == 4 + 8  # 4 fused expert tensors, 8 attention linears
    # Without the 4-bit plan the same accounting is the plain float32 model.
    plain = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir, dtype=torch.float32)
    assert _inventory_total(tiny_mixtral_dir, inference_decisions(False, dtype="float32"))[0] == stored_bytes(plain)["bytes"]


@pytest.mark.slow
def test_simulated_model_stores_what_the_accounting_says(tiny_mixtral_dir):
    """The FakeTensor model the simulator trains holds exactly the bytes of the accounting."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mixtral_ft.models.quant import stored_bytes
    from mixtral_ft.plan.model_build import build_meta_model, inventory, materialize

    for load_in_4bit in (True, False):
        decisions = inference_decisions(load_in_4bit, dtype="bfloat16")
        model = build_meta_model(load_arch(tiny_mixtral_dir), decisions)
        total = sum(r.bytes for r in inventory(model, decisions))
        materialize(model, decisions, FakeTensorMode(allow_non_fake_inputs=True))
        assert stored_bytes(model)["bytes"] == total
