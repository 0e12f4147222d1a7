"""The activation measurement: a FakeTensor step holds exactly what a real step holds.

Two checks on the tiny Mixtral, per gradient-checkpointing mode:

- the planner's model run on real tensors and on FakeTensors gives the same saved-tensor bytes
  per layer and the same peak of live bytes in every phase (LoRA and 4-bit QLoRA, eager attention
  and the flash-attention memory model);
- the tiny Mixtral loaded the ordinary way (``from_pretrained`` from its directory, PEFT
  ``get_peft_model``, ``gradient_checkpointing_enable``) and trained one real step keeps the
  same saved-tensor bytes per layer (``saved_tensors_hooks``) as the planner measured.
"""

from __future__ import annotations

import contextlib

import pytest

from mixtral_ft.plan.arch import load_arch
from mixtral_ft.plan.setup import LoraSpec, TrainSetup
from mixtral_ft.plan.shipped import tiny_mixtral_config

pytestmark = pytest.mark.slow

MODES = {"none": (False, True), "reentrant": (True, True), "non-reentrant": (True, False)}
LORA = LoraSpec(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def _setup(mode: str, attn: str = "eager", qlora: bool = False, dtype: str = "bfloat16") -> TrainSetup:
    checkpointing, reentrant = MODES[mode]
    return TrainSetup(base_model="tiny", adapter="qlora" if qlora else "lora", load_in_4bit=qlora,
                      quantize_moe_experts=qlora, lora=LORA, compute_dtype=dtype, mixed_precision=dtype != "float32",
                      gradient_checkpointing=checkpointing, use_reentrant=reentrant, attn_implementation=attn,
                      model_config_overrides={"output_router_logits": True})


def _step(arch, setup, layers: int, fake: bool, batch: int = 2, seq: int = 48):
    from mixtral_ft.plan.measure import build_training_model, simulate_training_step

    model, mode, lora_params, torch = build_training_model(arch, setup, layers, fake=fake)
    return simulate_training_step(model, mode, lora_params, torch, setup, arch.vocab_size, batch, seq)


@pytest.mark.parametrize("mode,attn,qlora", [("none", "eager", False), ("non-reentrant", "eager", False),
                                             ("reentrant", "flash_attention_2", True), ("none", "sdpa", True)])
def test_fake_step_equals_real_step(mode, attn, qlora):
    arch = load_arch(tiny_mixtral_config())
    setup = _setup(mode, attn, qlora)
    for layers in (2, 3):
        fake, real = _step(arch, setup, layers, True), _step(arch, setup, layers, False)
        assert fake["saved_layers"] == real["saved_layers"]
        assert {p: v["bytes"] for p, v in fake["peaks"].items()} == {p: v["bytes"] for p, v in real["peaks"].items()}
        assert fake["saved_layers"]["bytes"] > 0


@pytest.mark.parametrize("mode", list(MODES))
def test_activation_count_equals_a_real_tiny_training_step(mode, tiny_mixtral_dir):
    """Saved-tensor bytes per layer: the planner's measurement vs the ordinarily loaded tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mixtral_ft.plan.measure import TrainingSimulator, saved_per_layer, simulate_training_step

    batch, seq = 2, 40
    setup = _setup(mode, "eager", dtype="float32")
    arch = load_arch(tiny_mixtral_dir)
    planned = saved_per_layer(TrainingSimulator(arch, setup).run(batch, seq))

    saved = {}
    for layers in (2, 3):
        model = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir, dtype=torch.float32, attn_implementation="eager",
                                                     num_hidden_layers=layers, output_router_logits=True)
        model.requires_grad_(False)
        checkpointing, reentrant = MODES[mode]
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout,
                                                 target_modules=list(LORA.target_modules), task_type="CAUSAL_LM"))
        model.train()
        lora_params = [p for p in model.parameters() if p.requires_grad]
        r = simulate_training_step(model, contextlib.nullcontext(), lora_params, torch, setup, arch.vocab_size,
                                   batch, seq)
        saved[layers] = r["saved_layers"]["bytes"]
    assert saved[3] - saved[2] == planned["bytes"]
    hidden = arch.hidden_size
    if MODES[mode][0]:
        assert planned["bytes"] == batch * seq * hidden * 4  # checkpointing keeps each layer's float32 input
    else:
        assert planned["bytes"] > 10 * batch * seq * hidden * 4


@pytest.mark.parametrize("mode", ["reentrant", "none"])
def test_depth_extrapolation_equals_a_deeper_step(mode):
    """Peaks at 5 layers from the 2- and 3-layer runs equal a 5-layer run (training and prefill)."""
    from mixtral_ft.plan.measure import (
        SIM_LAYERS,
        TrainingSimulator,
        at_depth,
        build_inference_model,
        depth_split,
        simulate_prefill,
    )

    arch = load_arch(tiny_mixtral_config())
    setup = _setup(mode, "flash_attention_2", qlora=True)
    planned = at_depth(TrainingSimulator(arch, setup).run(2, 48), 5)
    deep = _step(arch, setup, 5, True)
    for phase, tags in planned.items():
        assert sum(tags.values()) == deep["peaks"][phase]["bytes"], phase
    runs = {}
    for layers in SIM_LAYERS + (5,):
        model, fake, torch = build_inference_model(arch, True, layers)
        runs[layers] = simulate_prefill(model, fake, torch, arch.vocab_size, 3, 40, "sdpa")["peaks"]["prefill"]
    split = depth_split(runs[SIM_LAYERS[0]]["by_tag"], runs[SIM_LAYERS[1]]["by_tag"], 5, ("activations", "logits", "dequant"))
    assert sum(split.values()) == runs[5]["bytes"]
