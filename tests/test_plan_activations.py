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
from support.shipped import tiny_mixtral_config

pytestmark = pytest.mark.slow

MODES = {"none": (False, True), "reentrant": (True, True), "non-reentrant": (True, False)}
LORA = LoraSpec(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def _setup(mode: str, attn: str = "eager", qlora: bool = False, dtype: str = "bfloat16", **kw) -> TrainSetup:
    checkpointing, reentrant = MODES[mode]
    return TrainSetup(
        base_model="tiny",
        adapter="qlora" if qlora else "lora",
        load_in_4bit=qlora,
        quantize_moe_experts=qlora,
        lora=LORA,
        compute_dtype=dtype,
        mixed_precision=dtype != "float32",
        gradient_checkpointing=checkpointing,
        use_reentrant=reentrant,
        attn_implementation=attn,
        model_config_overrides={"output_router_logits": True},
        **kw,
    )


def _step(arch, setup, layers: int, fake: bool, batch: int = 2, seq: int = 48):
    from mixtral_ft.plan.measure import build_training_model, simulate_training_step

    model, mode, lora_params, torch = build_training_model(arch, setup, layers, fake=fake)
    return simulate_training_step(model, mode, lora_params, torch, setup, arch.vocab_size, batch, seq)


@pytest.mark.parametrize(
    "mode,attn,qlora,extra",
    [
        ("none", "eager", False, {}),
        ("non-reentrant", "eager", False, {}),
        ("reentrant", "flash_attention_2", True, {}),
        ("none", "sdpa", True, {}),
        ("reentrant", "eager", False, {"load_in_8bit": True}),
        ("non-reentrant", "sdpa", True, {"cut_cross_entropy": True}),
    ],
    ids=lambda v: str(v),
)
def test_fake_step_equals_real_step(mode, attn, qlora, extra):
    arch = load_arch(tiny_mixtral_config())
    setup = _setup(mode, attn, qlora, **extra)
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
        model = AutoModelForCausalLM.from_pretrained(
            tiny_mixtral_dir,
            dtype=torch.float32,
            attn_implementation="eager",
            num_hidden_layers=layers,
            output_router_logits=True,
        )
        model.requires_grad_(False)
        checkpointing, reentrant = MODES[mode]
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
            model.enable_input_require_grads()
        model = get_peft_model(
            model,
            LoraConfig(
                r=LORA.r,
                lora_alpha=LORA.alpha,
                lora_dropout=LORA.dropout,
                target_modules=list(LORA.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        model.train()
        lora_params = [p for p in model.parameters() if p.requires_grad]
        r = simulate_training_step(
            model, contextlib.nullcontext(), lora_params, torch, setup, arch.vocab_size, batch, seq
        )
        saved[layers] = r["saved_layers"]["bytes"]
    assert saved[3] - saved[2] == planned["bytes"]
    hidden = arch.hidden_size
    if MODES[mode][0]:
        assert planned["bytes"] == batch * seq * hidden * 4  # checkpointing keeps each layer's float32 input
    else:
        assert planned["bytes"] > 10 * batch * seq * hidden * 4


@pytest.mark.parametrize("mode,skip_upcast", [("reentrant", False), ("reentrant", True), ("none", False)])
def test_depth_extrapolation_equals_a_deeper_step(mode, skip_upcast):
    """Peaks at 5 layers from the 2- and 3-layer runs equal a 5-layer run (training and prefill).

    The peak can move between layer 0's backward and the last layer's as the depth grows (what
    the embedding leaves alive is counted once), which is why both ends are extrapolated."""
    from dataclasses import replace

    from mixtral_ft.plan.measure import (
        SIM_LAYERS,
        TrainingSimulator,
        at_depth,
        build_inference_model,
        depth_split,
        simulate_prefill,
    )

    arch = load_arch(dict(tiny_mixtral_config(), hidden_size=128, num_attention_heads=8))
    setup = replace(_setup(mode, "flash_attention_2", qlora=True), embeddings_skip_upcast=skip_upcast)
    planned = at_depth(TrainingSimulator(arch, setup).run(2, 256), 5)
    deep = _step(arch, setup, 5, True, 2, 256)
    for phase, tags in planned.items():
        assert sum(tags.values()) == deep["peaks"][phase]["bytes"], phase
    runs = {}
    for layers in SIM_LAYERS + (5,):
        model, fake, torch = build_inference_model(arch, True, layers)
        runs[layers] = simulate_prefill(model, fake, torch, arch.vocab_size, 3, 40, "sdpa")["peaks"]
    for phase in ("forward_layer0", "forward"):
        split = depth_split(
            runs[SIM_LAYERS[0]][phase]["by_tag"],
            runs[SIM_LAYERS[1]][phase]["by_tag"],
            5,
            ("activations", "logits", "dequant"),
        )
        assert sum(split.values()) == runs[5][phase]["bytes"], phase


def _dense(**kw) -> dict:
    """A small Llama-shaped config (full-width simulation stays cheap) with a large vocabulary."""
    return {
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 65536,
        "tie_word_embeddings": False,
        **kw,
    }


def _plan(config: dict, model: dict):
    from mixtral_ft.plan.training import plan_training

    return plan_training(config, None, 80.0, model=model, use_cache=False, search=False)


QLORA = {
    "base_model": "x",
    "adapter": "qlora",
    "load_in_4bit": True,
    "lora_r": 8,
    "lora_target_linear": True,
    "sequence_len": 2048,
    "micro_batch_size": 2,
    "optimizer": "adamw_torch",
    "gradient_checkpointing": True,
    "flash_attention": True,
    "bf16": True,
}
CCE = {"plugins": ["axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"]}


def test_cut_cross_entropy_never_holds_the_logits():
    """With Axolotl's CCE plugin the plan has no logits part (4,096 tokens x 65,536 vocabulary: 1 GiB in bf16
    alone without it), and the head phase holds only the hidden states' gradient and per-token float32 stats."""
    plain, cce = _plan(QLORA, _dense()), _plan(QLORA | CCE, _dense())
    assert cce.setup.cut_cross_entropy and not plain.setup.cut_cross_entropy
    assert plain.parts["logits_loss"] > 4096 * 65536 * 2
    assert cce.parts["logits_loss"] < 2 * 65536 * 4 * 2  # the one-position head output the simulation runs
    assert cce.phases["head"] < plain.phases["head"] / 4
    assert (
        _plan(QLORA | CCE | {"cut_cross_entropy": False}, _dense()).parts["logits_loss"] == plain.parts["logits_loss"]
    )


def test_int8_lora_plans_int8_weights_and_the_backward_dequantization():
    """load_in_8bit: the weights are int8 with row scales (not float32: about half of bf16), and the LLM.int8
    matmul's own buffers (the float16 input copy, the int8 input, the int32 product; in backward the dequantized
    weight) make the recomputed layer's backward hold more than the 16-bit LoRA's."""
    int8 = _plan(QLORA | {"adapter": "lora", "load_in_4bit": False, "load_in_8bit": True}, _dense())
    lora16 = _plan(QLORA | {"adapter": "lora", "load_in_4bit": False}, _dense())
    assert int8.weights["dtypes"]["attention"] == ["int8"] and int8.weights["dtypes"]["mlp"] == ["int8"]
    linear16 = lora16.parts["weights_attention"] + lora16.parts["weights_mlp"]
    assert int8.parts["weights_attention"] + int8.parts["weights_mlp"] == pytest.approx(linear16 / 2, rel=0.02)
    assert int8.phases["layers_backward"] > lora16.phases["layers_backward"]


def test_bloom_plans_with_its_final_norm():
    """Bloom's final norm is transformer.ln_f (not model.norm): the step is planned, attention counted as such."""
    bloom = {"model_type": "bloom", "hidden_size": 256, "n_layer": 4, "n_head": 4, "vocab_size": 4096}
    cfg = {
        "base_model": "x",
        "adapter": "lora",
        "lora_r": 8,
        "lora_target_modules": ["query_key_value"],
        "sequence_len": 512,
        "micro_batch_size": 1,
        "optimizer": "adamw_torch",
        "gradient_checkpointing": True,
        "sdp_attention": True,
    }
    plan = _plan(cfg, bloom)
    assert plan.parts["weights_attention"] > 0 and plan.lora_parameters > 0
    assert plan.phases["head"] > 0 and plan.peak_gib > 0
