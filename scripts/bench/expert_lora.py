"""What LoRA on the fused experts (``lora_target_parameters``) materialises, measured on one layer.

One Mixtral experts block (transformers' ``MixtralExperts``, grouped_mm, the default experts
implementation) at full width, built as a QLoRA run builds it: the fused tensors quantized to nf4
by bitsandbytes' ``replace_parameter_4bit`` (what Axolotl's ``quantize_moe_experts`` hook calls),
Axolotl's ``patch_peft_target_parameters_matching`` (applied whenever ``lora_target_parameters`` is
set, ``loaders/patch_manager.py``, ``_apply_moe_expert_quantization_patch``), then PEFT's LoRA on the
targeted tensors (``ParamWrapper``, peft 0.21's ``_LoraFactorsProxy``: ``W + s * A @ B`` folded by one
``baddbmm``, whose output is a tensor the size of the whole expert stack). One forward and backward
at ``tokens`` tokens (every expert hit), under bf16 autocast as the Trainer runs it, with
``mixtral_ft.plan.sim``'s instruments on real tensors: the peak of the bytes allocated beyond the
module's own storage (the CUDA allocator's "allocated" count, no rounding), and the bytes autograd
saves for backward.

The planner's term (``mixtral_ft.plan.expert_lora``) is the difference between the peak with and
without LoRA on the experts. ``scripts/measure_expert_lora.py`` runs this for a few expert counts
(each in a fresh process: Axolotl's patch is process-wide) and shows the difference is linear in the
number of experts.
"""

from __future__ import annotations

import gc
from typing import Any

MIXTRAL_HIDDEN = 4096
MIXTRAL_INTERMEDIATE = 14336
TARGETS = ("gate_up_proj", "down_proj")


def build_block(experts: int, targets: tuple[str, ...], quantized: bool, r: int, hidden: int, intermediate: int):
    """A module holding one ``MixtralExperts`` at ``experts`` experts, quantized and wrapped as Axolotl does."""
    import torch
    from torch import nn
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    cfg = MixtralConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_local_experts=experts, num_experts_per_tok=2
    )
    cfg._experts_implementation = "grouped_mm"  # what PreTrainedModel picks for Mixtral (modeling_utils.py)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = MixtralExperts(cfg)

        def forward(self, x, index, weights):
            return self.experts(x, index, weights)

    with torch.device("meta"):
        block = Block()
    gen = torch.Generator().manual_seed(0)
    for name, shape in (
        ("gate_up_proj", (experts, 2 * intermediate, hidden)),
        ("down_proj", (experts, hidden, intermediate)),
    ):
        value = torch.empty(shape, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
        setattr(block.experts, name, nn.Parameter(value, requires_grad=False))
        del value
    if quantized:
        from axolotl.monkeypatch.moe_quant import record_quantized_expert
        from bitsandbytes.nn.parametrize import replace_parameter_4bit

        for name in TARGETS:
            record_quantized_expert("experts", block.experts)
            replace_parameter_4bit(block.experts, name, compress_statistics=True, quant_type="nf4")
        gc.collect()
    if targets:
        from axolotl.monkeypatch.moe_quant import patch_peft_target_parameters_matching
        from peft import LoraConfig, inject_adapter_in_model

        patch_peft_target_parameters_matching()
        config = LoraConfig(
            r=r, lora_alpha=16, lora_dropout=0.0, target_modules=[], target_parameters=[f"experts.{t}" for t in targets]
        )
        wrapped = inject_adapter_in_model(config, block)
        for p in wrapped.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # PEFT's autocast_adapter_dtype: 16-bit adapters are upcast to float32
        return wrapped
    return block


def measure(
    experts: int,
    targets: tuple[str, ...] = TARGETS,
    quantized: bool = True,
    tokens: int = 64,
    r: int = 32,
    hidden: int = MIXTRAL_HIDDEN,
    intermediate: int = MIXTRAL_INTERMEDIATE,
) -> dict[str, Any]:
    """Peak bytes beyond the block's storage over one forward and backward, and the bytes saved for backward."""
    import torch

    from mixtral_ft.plan.sim import MemoryTracker, SavedTensors, model_storage_keys, storage_keys

    block = build_block(experts, targets, quantized, r, hidden, intermediate)
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16).requires_grad_(True)
    index = torch.stack([torch.arange(tokens) % experts, (torch.arange(tokens) + 1) % experts], 1)
    weights = torch.full((tokens, 2), 0.5, dtype=torch.bfloat16)
    exclude = model_storage_keys(block) | storage_keys([x, index, weights])
    tracker = MemoryTracker(-1, exclude)
    saved = SavedTensors(exclude)
    with tracker, torch.autocast("cpu", dtype=torch.bfloat16):
        tracker.set_phase("forward")
        with saved.recording():
            y = block(x, index, weights)
        tracker.set_phase("backward")
        y.float().sum().backward()
        del y
    peaks = {phase: int(p["bytes"]) for phase, p in tracker.peaks.items()}
    return {
        "experts": experts,
        "targets": list(targets),
        "quantized": quantized,
        "tokens": tokens,
        "r": r,
        "hidden": hidden,
        "intermediate": intermediate,
        "expert_tensor_bytes": experts * 3 * hidden * intermediate * 2,  # both fused tensors in bf16
        "peak_bytes": max(peaks.values()),
        "peaks": peaks,
        "saved_bytes": int(saved.bytes),
    }
