"""LoRA on a MoE model's fused experts (``lora_target_parameters``): what it adds to the plan.

PEFT applies such an adapter as a parametrization that builds a new tensor the size of the whole expert
stack in every forward; the planner adds that transient (:data:`EXTRA_PER_EXPERT`, measured on the CPU)
and the per-expert LoRA factors, gradients and optimizer state as parts of the plan
(:func:`expert_lora_parts`), and simulates the step without these targets (:func:`simulated_setup`).
Why and how it was measured: docs/design/planner.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from mixtral_ft.plan.storage import DTYPE_BYTES

# The fused expert tensors, (in_features, out_features) per expert from hidden H and intermediate I.
FUSED = {"gate_up_proj": lambda h, i: (h, 2 * i), "down_proj": lambda h, i: (i, h)}
# Unfused names Axolotl maps to the fused tensor (moe_quant.py, _UNFUSED_TO_FUSED).
UNFUSED = {"gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}
# Extra peak of one layer per expert, in units of one expert's two fused tensors in the compute dtype
# (3 * H * I values), by whether the experts are 4-bit (quantize_moe_experts) and the tensors targeted;
# measured at 2 experts, and at 3 for both tensors (identical per expert), rounded up
# (scripts/measure_expert_lora.py; tests/golden/expert_lora.json holds the nf4 measurement of both).
EXTRA_PER_EXPERT = {
    (True, frozenset({"gate_up_proj", "down_proj"})): 1.333,  # measured 1.332
    (True, frozenset({"gate_up_proj"})): 0.976,  # 0.975
    (True, frozenset({"down_proj"})): 0.661,  # 0.660
    (False, frozenset({"gate_up_proj", "down_proj"})): 1.342,  # 1.341
    (False, frozenset({"gate_up_proj"})): 1.322,  # 1.321
    (False, frozenset({"down_proj"})): 0.667,  # 0.666
}
PARTS = {
    "expert_lora_state": "expert LoRA: parameters, gradients, optimizer",
    "expert_lora_transient": "expert LoRA: W + dW of one layer in flight",
}


def expert_targets(target_parameters) -> tuple[frozenset[str], tuple[str, ...]]:
    """Split ``lora_target_parameters`` into the fused expert tensors they name and the rest."""
    fused: set[str] = set()
    rest = []
    for target in target_parameters:
        name = str(target).rsplit(".", 1)[-1]
        name = UNFUSED.get(name, name)
        if name in FUSED and "expert" in str(target):
            fused.add(name)
        else:
            rest.append(str(target))
    return frozenset(fused), tuple(rest)


def simulated_setup(setup):
    """``setup`` without the fused expert targets: what the training simulator runs (it cannot
    quantize experts under PEFT's wrapper as the loader orders them); :func:`expert_lora_parts` counts them."""
    lora = getattr(setup, "lora", None)
    if lora is None or not lora.target_parameters:
        return setup
    fused, rest = expert_targets(lora.target_parameters)
    if not fused:
        return setup
    return dataclasses.replace(setup, lora=dataclasses.replace(lora, target_parameters=rest))


def _experts(arch) -> tuple[int, int, int]:
    """(experts, hidden, expert intermediate size) of a MoE ``ModelArch``."""
    experts = next(
        int(arch.get(k) or 0) for k in ("num_local_experts", "num_experts", "n_routed_experts") if arch.get(k)
    )
    intermediate = int(arch.get("moe_intermediate_size") or arch.get("intermediate_size"))
    return experts, arch.hidden_size, intermediate


def expert_lora_parts(arch, setup, optimizer_bytes: Callable[..., tuple[int, str]]) -> dict[str, float]:
    """The plan's parts for LoRA on the fused experts (bytes per GPU); empty without such targets.
    ``optimizer_bytes``: ``plan.training.optimizer_bytes`` (the optimizer state of a list of tensors)."""
    lora = getattr(setup, "lora", None)
    if lora is None:
        return {}
    fused = expert_targets(lora.target_parameters)[0]
    if not fused or not arch.is_moe:
        return {}
    experts, hidden, intermediate = _experts(arch)
    numels = []
    for name in sorted(fused):
        fan_in, fan_out = FUSED[name](hidden, intermediate)
        numels += [experts * lora.r * fan_in, fan_out * lora.r * experts] * arch.num_layers  # lora_A, lora_B
    pbytes = 4  # PEFT's autocast_adapter_dtype: float32 factors on a bf16/fp16 model
    world = setup.world_size if setup.deepspeed_stage in (2, 3) else 1
    optimizer, _note = optimizer_bytes(setup.optimizer, numels, pbytes)
    state = sum(numels) * pbytes * (1 + 1 / world) + optimizer / world
    factor = EXTRA_PER_EXPERT[(bool(setup.quantize_moe_experts), fused)]
    transient = factor * experts * 3 * hidden * intermediate * DTYPE_BYTES.get(setup.compute_dtype, 2)
    return {"expert_lora_state": float(state), "expert_lora_transient": float(transient)}
