"""The 4-bit load plan on the CPU twin: every fused expert tensor of the tiny Mixtral is stored
in 4-bit under ``quantize_experts_on_load``, through bitsandbytes' CPU backend, and the model
still generates. A plain ``BitsAndBytesConfig`` load (what transformers does alone) leaves them
unquantized: that is the bug this module fixes."""

from __future__ import annotations

import pytest

from mixtral_ft.models.quant import FourBitSpec, is_fused_expert, quantization_record, quantize_experts_on_load


def test_expert_rule_matches_axolotl():
    assert is_fused_expert("model.layers.0.mlp.experts.gate_up_proj", 3)
    assert is_fused_expert("model.layers.0.mlp.experts.down_proj", 3)
    assert not is_fused_expert("model.layers.0.mlp.gate.weight", 2)  # the router stays 16-bit
    assert not is_fused_expert("model.layers.0.self_attn.q_proj.weight", 2)


def _load(path, hook: bool):
    import torch
    from transformers import AutoModelForCausalLM

    spec = FourBitSpec(compute_dtype="float32")
    kwargs = dict(quantization_config=spec.bnb_config(), device_map="cpu", dtype=torch.float32)
    if not hook:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs), None
    with quantize_experts_on_load(spec) as counter:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, counter


@pytest.mark.slow
def test_plain_4bit_load_leaves_experts_unquantized(tiny_mixtral_dir):
    model, _ = _load(tiny_mixtral_dir, hook=False)
    assert quantization_record(model) == {"expert_tensors": 4, "expert_tensors_4bit": 0, "linear_4bit": 8}


@pytest.mark.slow
def test_on_load_hook_quantizes_every_expert_and_generates(tiny_mixtral_dir):
    import torch
    import transformers.core_model_loading as cml
    from transformers import AutoTokenizer

    before = cml.set_param_for_module
    model, counter = _load(tiny_mixtral_dir, hook=True)
    assert cml.set_param_for_module is before  # the patch is undone
    assert counter.count == 4
    assert quantization_record(model) == {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}
    experts = model.model.layers[0].mlp.experts
    assert experts.parametrizations.gate_up_proj.original.dtype == torch.uint8
    assert tuple(experts.gate_up_proj.shape) == (4, 256, 64)  # dequantized on access
    tok = AutoTokenizer.from_pretrained(tiny_mixtral_dir)
    ids = tok("Context: a\nQuestion: b\n", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
