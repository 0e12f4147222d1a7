"""LoRA on a MoE model's fused experts (``lora_target_parameters``): what it adds to the plan.

On transformers v5 Mixtral's experts are two 3-D parameters per layer, ``gate_up_proj``
``[E, 2I, H]`` and ``down_proj`` ``[E, H, I]``; PEFT wraps each targeted one in a ``ParamWrapper``
(``peft/tuners/lora/layer.py``). In every forward it registers a parametrization that returns
``W + s * A @ B`` (``_activate_lora``; with one adapter and several experts ``_LoraFactorsProxy``,
one ``baddbmm``): no separate delta, but a new tensor the size of the whole expert stack, on top of
the 4-bit experts' dequantized copy (bitsandbytes' ``Bnb4bitParametrization``) under it. Axolotl's
``patch_peft_target_parameters_matching`` (``monkeypatch/moe_quant.py``), applied whenever
``lora_target_parameters`` is set, drops the parametrization cache entry when each wrapper activates,
so with both tensors targeted each is evaluated twice in the layer's forward.

Measured on the CPU (``scripts/measure_expert_lora.py``, ``bench/expert_lora.py``: the real
``MixtralExperts`` at Mixtral widths, nf4 experts, Axolotl's patch, PEFT 0.21.2, one forward and
backward under bf16 autocast, every allocation counted by ``plan.sim.MemoryTracker``), the layer's
peak grows by :data:`EXTRA_PER_EXPERT` times the bf16 bytes of one expert's two tensors, per expert:
0.4371 GiB per expert with both tensors targeted, at 2 and at 3 experts alike (linear, through the
origin), so 3.50 GiB for Mixtral-8x7B's 8 (bf16 experts: 0.4401 GiB per expert). The bytes saved for backward do not grow (the layer saves
``W + ΔW`` instead of the dequantized ``W``), so with checkpointing or without, one layer's
transient is the term. The term's second part is persistent: the per-expert LoRA factors
(``E * r * (in + out)`` values per targeted tensor and layer, float32 as PEFT upcasts 16-bit
adapters), their gradients and the optimizer state, sharded over the ranks by ZeRO-2 as the
attention LoRA is.

The training simulator runs without these targets (:func:`simulated_setup`) and
``plan.training`` adds :func:`expert_lora_parts` to the plan's parts.
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
