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
    packed, state = bf.quantize_4bit(
        weight, blocksize=64, compress_statistics=double_quant, quant_type="nf4", quant_storage=getattr(torch, storage)
    )
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
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "num_local_experts",
        "num_experts_per_tok",
        "sliding_window",
        "tie_word_embeddings",
        "rms_norm_eps",
        "hidden_act",
    ):
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
    """QLoRA: linears in 4-bit with bf16 storage, experts only with quantize_moe_experts; Axolotl's casts in order:
    norms, router and embeddings to float32, PEFT's kbit cast, then norms and embeddings back to bf16."""
    s = setup_from_config(
        {
            "base_model": "x",
            "adapter": "qlora",
            "load_in_4bit": True,
            "quantize_moe_experts": True,
            "lora_target_modules": ["q_proj"],
            "bf16": True,
        }
    )
    d = training_decisions(s, "mixtral")
    assert d.linear_4bit and d.experts_4bit and d.linear_storage == "bfloat16" and not d.kbit_prepare_fp32
    assert d.stored_dtype("model.layers.0.input_layernorm.weight", "bfloat16") == "bfloat16"
    assert d.stored_dtype("model.norm.weight", "bfloat16") == "bfloat16"
    assert d.stored_dtype("model.layers.0.mlp.gate.weight", "bfloat16") == "float32"  # the router: first cast only
    assert d.stored_dtype("lm_head.weight", "bfloat16") == "bfloat16"
    assert d.stored_dtype("model.embed_tokens.weight", "bfloat16") == "bfloat16"
    no_experts = training_decisions(
        setup_from_config(
            {
                "base_model": "x",
                "adapter": "qlora",
                "load_in_4bit": True,
                "lora_target_modules": ["q_proj"],
                "bf16": True,
            }
        ),
        "mixtral",
    )
    assert not no_experts.experts_4bit and no_experts.kbit_prepare_fp32  # PEFT casts the 16-bit rest to fp32 ...
    assert no_experts.stored_dtype("model.layers.0.mlp.experts.gate_up_proj", "bfloat16") == "float32"
    assert (
        no_experts.stored_dtype("model.layers.0.post_attention_layernorm.weight", "bfloat16") == "bfloat16"
    )  # ... then back
    assert no_experts.stored_dtype("lm_head.weight", "bfloat16") == "bfloat16"
    skip = training_decisions(
        setup_from_config(
            {
                "base_model": "x",
                "adapter": "qlora",
                "load_in_4bit": True,
                "embeddings_skip_upcast": True,
                "lora_target_modules": ["q_proj"],
                "bf16": True,
            }
        ),
        "llama",
    )
    assert skip.stored_dtype("model.embed_tokens.weight", "bfloat16") == "float32"  # PEFT's cast, never cast back
    neox = training_decisions(s, "gpt_neox")
    assert neox.embedding_modules == ("embed_in", "embed_out")
    assert neox.stored_dtype("gpt_neox.embed_in.weight", "bfloat16") == "bfloat16"


LLAMA_2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}


def test_llama_qlora_embeddings_and_head_are_bf16():
    """Llama-2-7B QLoRA: embed_tokens + lm_head = 2 x 32,000 x 4,096 values in bf16 (0.49 GiB), not float32."""
    from mixtral_ft.plan.weights import weight_summary

    s = setup_from_config(
        {"base_model": "x", "adapter": "qlora", "load_in_4bit": True, "lora_target_linear": True, "bf16": True}
    )
    w = weight_summary(load_arch(LLAMA_2_7B), training_decisions(s, "llama"), use_cache=False)
    assert w["parts"]["embeddings_head"] == 2 * 32000 * 4096 * 2
    assert w["dtypes"]["embeddings_head"] == ["bfloat16"]


def test_int8_weights_are_int8_with_row_scales():
    """load_in_8bit: Linear8bitLt weights as bitsandbytes stores them (int8 + a float32 scale per output row),
    checked against a real Int8Params quantized on the CPU; Llama-2-7B's linears come to 6.04 GiB, not float32."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    from mixtral_ft.plan.loadplan import int8_stored_bytes
    from mixtral_ft.plan.weights import weight_summary

    layer = bnb.nn.Linear8bitLt(96, 40, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(
        torch.randn(40, 96, dtype=torch.bfloat16), requires_grad=False, has_fp16_weights=False
    )
    layer = layer.to("cpu")  # quantizes, as .cuda() does on a GPU
    w = layer.weight
    assert w.dtype == torch.int8
    assert int8_stored_bytes(40, 96) == w.numel() * w.element_size() + w.SCB.numel() * w.SCB.element_size()

    s = setup_from_config(
        {"base_model": "x", "adapter": "lora", "load_in_8bit": True, "lora_target_linear": True, "bf16": True}
    )
    d = training_decisions(s, "llama")
    assert d.linear_8bit and not d.linear_4bit and d.kbit_prepare_fp32
    summary = weight_summary(load_arch(LLAMA_2_7B), d, use_cache=False)
    per_layer = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
    linear = 32 * sum(int8_stored_bytes(o, i) for o, i in per_layer)
    assert summary["parts"]["attention"] + summary["parts"]["mlp"] == linear
    assert summary["dtypes"]["attention"] == ["int8"] and summary["dtypes"]["mlp"] == ["int8"]
    assert linear / 2**30 == pytest.approx(6.04, abs=0.01)


@pytest.mark.slow
def test_stored_dtypes_equal_axolotls_loader(tiny_mixtral_dir, tmp_path):
    """Every unquantized tensor of the tiny Mixtral loaded by Axolotl 0.19's own ModelLoader (the CPU twin of the
    shipped RG config on an A100-80GB: QLoRA, 4-bit experts) has the dtype the planner's decisions give it."""
    pytest.importorskip("axolotl")
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from support.twin import load_twin

    values = render(
        RenderRequest("rg", tmp_path / "data", "a100-80gb", tmp_path / "run", base_model=str(tiny_mixtral_dir))
    ).values
    twin = load_twin(values, tmp_path / "twin")
    decisions = training_decisions(setup_from_config(values), "mixtral")
    checked = {}
    for name, p in twin.model.get_base_model().named_parameters():
        if "lora_" in name or not p.dtype.is_floating_point or type(p).__name__ == "Params4bit":
            continue
        if "parametrizations" in name:  # a 4-bit expert
            continue
        plain = name.replace(".base_layer", "")
        checked[plain] = (str(p.dtype).replace("torch.", ""), decisions.stored_dtype(plain, "bfloat16"))
    assert {n: real for n, (real, _) in checked.items()} == {n: planned for n, (_, planned) in checked.items()}
    dtypes = {n: real for n, (real, _) in checked.items()}
    assert dtypes["model.embed_tokens.weight"] == dtypes["lm_head.weight"] == dtypes["model.norm.weight"] == "bfloat16"
    assert dtypes["model.layers.0.mlp.gate.weight"] == "float32"
    del twin


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
        model = AutoModelForCausalLM.from_pretrained(
            tiny_mixtral_dir, quantization_config=spec.bnb_config(), device_map="cpu", dtype=torch.float32
        )
    assert quantization_record(model)["expert_tensors_4bit"] == 4
    planned, records = _inventory_total(tiny_mixtral_dir, inference_decisions(True, dtype="float32"))
    assert planned == stored_bytes(model)["bytes"]
    assert sum(1 for r in records if r.quantized) == 4 + 8  # 4 fused expert tensors, 8 attention linears
    # Without the 4-bit plan the same accounting is the plain float32 model.
    plain = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir, dtype=torch.float32)
    assert (
        _inventory_total(tiny_mixtral_dir, inference_decisions(False, dtype="float32"))[0]
        == stored_bytes(plain)["bytes"]
    )


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
