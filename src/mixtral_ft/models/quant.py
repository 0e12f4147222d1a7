"""The 4-bit load layout: which tensors a ``--load-in-4bit`` load stores in 4-bit (:func:`is_fused_expert`,
the rule of Axolotl's ``quantize_moe_experts``), the hook that quantizes the fused MoE experts while the
checkpoint is read, on any device, and the counts a manifest records. Inference, the memory planner and
the CPU tests all follow this one decision. Why transformers alone keeps the experts in 16-bit:
docs/design/quantization.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class FourBitSpec:
    """bitsandbytes 4-bit settings; the defaults are Axolotl's for QLoRA and for the experts."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    blocksize: int = 64  # bitsandbytes' 4-bit block size (Params4bit default)

    def bnb_config(self):
        """The ``BitsAndBytesConfig`` for the linears (transformers' own 4-bit path)."""
        import torch
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype),
        )


def is_fused_expert(name: str, ndim: int) -> bool:
    """Axolotl's rule (``moe_quant.py``): a parameter of 3+ dimensions named like an expert."""
    return ndim >= 3 and "expert" in name.lower()


@dataclass
class ExpertQuantCounter:
    """What the on-load hook did: the expert tensors it quantized, by full parameter name."""

    quantized: list[str]

    @property
    def count(self) -> int:
        return len(self.quantized)


@contextlib.contextmanager
def quantize_experts_on_load(spec: FourBitSpec = FourBitSpec()) -> Iterator[ExpertQuantCounter]:
    """Within this block, ``from_pretrained`` stores every fused expert tensor in 4-bit as it is read.

    Each expert tensor is quantized right after it is placed on its device, and its 16-bit copy
    is released before the next one is read, so the peak never holds all experts in 16-bit.
    transformers' allocator warm-up, which would reserve the 16-bit size of every parameter on
    the GPU up front, is switched off for the block (Axolotl does the same). Both patches are
    undone on exit.
    """
    import torch
    import transformers.core_model_loading as cml
    import transformers.modeling_utils as mu
    from bitsandbytes.nn.parametrize import replace_parameter_4bit

    counter = ExpertQuantCounter(quantized=[])
    original_set = cml.set_param_for_module
    original_warmup = mu.caching_allocator_warmup

    def set_and_quantize(model, target_name, param_value, *args, **kwargs):
        original_set(model, target_name, param_value, *args, **kwargs)
        if not is_fused_expert(target_name, param_value.ndim):
            return
        mod_path, _, pname = target_name.rpartition(".")
        module = model.get_submodule(mod_path) if mod_path else model
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is not None and pname in parametrizations:
            return  # already quantized (e.g. Axolotl's own patch is active in this process)
        replace_parameter_4bit(module, pname, compress_statistics=spec.double_quant, quant_type=spec.quant_type)
        counter.quantized.append(target_name)
        if param_value.is_cuda:
            param_value.data = torch.empty(0, device="cpu")
            torch.cuda.empty_cache()

    cml.set_param_for_module = set_and_quantize
    mu.caching_allocator_warmup = lambda *a, **k: None
    try:
        yield counter
    finally:
        cml.set_param_for_module = original_set
        mu.caching_allocator_warmup = original_warmup


def _is_params4bit(param) -> bool:
    try:
        from bitsandbytes.nn import Params4bit
    except ImportError:
        return False
    return isinstance(param, Params4bit)


def expert_tensors(model) -> list[tuple[str, bool]]:
    """Every fused expert tensor of ``model`` and whether it is stored in 4-bit.

    A quantized expert is a parametrized parameter (``module.parametrizations[name]``) whose
    parametrization is bitsandbytes' ``Bnb4bitParametrization``; an unquantized one is a plain
    3-D parameter. Works through PEFT wrappers (names keep their PEFT prefixes).
    """
    found: list[tuple[str, bool]] = []
    for mod_name, module in model.named_modules():
        parametrizations = getattr(module, "parametrizations", None)
        for pname, param in module.named_parameters(recurse=False):
            if is_fused_expert(f"{mod_name}.{pname}", param.ndim):
                found.append((f"{mod_name}.{pname}", False))
        if parametrizations is not None:
            for pname, plist in parametrizations.items():
                is4 = any(type(p).__name__ == "Bnb4bitParametrization" for p in plist)
                # The name check uses the logical (3-D) tensor; the stored one is packed 2-D.
                if "expert" in f"{mod_name}.{pname}".lower():
                    found.append((f"{mod_name}.{pname}", is4))
    return found


def quantization_record(model) -> dict[str, int]:
    """``{"expert_tensors": N, "expert_tensors_4bit": N, "linear_4bit": K}`` for a loaded model."""
    experts = expert_tensors(model)
    linear_4bit = sum(1 for _, p in model.named_parameters() if _is_params4bit(p))
    return {
        "expert_tensors": len(experts),
        "expert_tensors_4bit": sum(1 for _, is4 in experts if is4),
        "linear_4bit": linear_4bit,
    }


def stored_bytes(model) -> dict[str, Any]:
    """Bytes the loaded model really holds: parameters and buffers, plus bitsandbytes' quantization
    state (absmax, nested absmax, codebooks) of every 4-bit tensor, which are not parameters."""
    import torch

    def qs_bytes(state) -> int:
        if state is None:
            return 0
        total = 0
        for attr in ("absmax", "code"):
            t = getattr(state, attr, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
        offset = getattr(state, "offset", None)
        if isinstance(offset, torch.Tensor):
            total += offset.numel() * offset.element_size()
        return total + qs_bytes(getattr(state, "state2", None))

    total = 0
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel() * p.element_size() + qs_bytes(getattr(p, "quant_state", None))
    for _, b in model.named_buffers():
        if id(b) in seen:
            continue
        seen.add(id(b))
        total += b.numel() * b.element_size()
    for _, module in model.named_modules():
        for plist in (getattr(module, "parametrizations", None) or {}).values():
            for p in plist:
                total += qs_bytes(getattr(p, "quant_state", None))
    return {"bytes": total}
