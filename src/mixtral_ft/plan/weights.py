"""Weight bytes of the loaded model, per part, from the real model class and the loader's decisions.

:func:`weight_summary` builds the base model on the meta device
(:func:`~mixtral_ft.plan.model_build.build_meta_model`), lists every tensor as the loader will
store it (:func:`~mixtral_ft.plan.model_build.inventory`: 4-bit with bitsandbytes' layout, or the
dtype after Axolotl's casts) and sums it per part. It also counts the matmul parameters one token
goes through (experts scaled by top-k / experts), for the FLOPs of :mod:`mixtral_ft.plan.timing`.
The result is cached beside the activation measurements (:mod:`mixtral_ft.plan.measure`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mixtral_ft.plan import measure
from mixtral_ft.plan.arch import ModelArch
from mixtral_ft.plan.model_build import build_meta_model, inventory
from mixtral_ft.plan.storage import LoadDecisions


def decisions_key(decisions: LoadDecisions) -> dict[str, Any]:
    """The decisions as a cache key; a field added later is left out at its default, so keys made before
    it existed stay valid."""
    key = asdict(decisions)
    if not key["recast_embeddings_only"]:
        del key["recast_embeddings_only"]
    return key


def summarize_inventory(records, arch: ModelArch) -> dict[str, Any]:
    parts: dict[str, int] = {}
    quantized: dict[str, bool] = {}
    dtypes: dict[str, set[str]] = {}
    for r in records:
        parts[r.part] = parts.get(r.part, 0) + r.bytes
        quantized[r.part] = quantized.get(r.part, False) or r.quantized
        dtypes.setdefault(r.part, set()).add(r.dtype)
    experts = int(arch.get("num_local_experts") or arch.get("num_experts") or 1)
    top_k = int(arch.get("num_experts_per_tok") or 1)
    matmul = {"dense": 0, "experts": 0, "head": 0}
    dequant_elements = {"experts": 0, "linear": 0}
    for r in records:
        if r.is_buffer or len(r.shape) < 2:
            continue
        n = 1
        for d in r.shape:
            n *= d
        low = r.name.lower()
        if "embed_tokens" in low or "wte" in low or "word_embeddings" in low:
            continue  # a lookup, no matmul
        if "lm_head" in low or "embed_out" in low:
            matmul["head"] += n
        elif len(r.shape) >= 3 and "expert" in low:
            matmul["experts"] += n
            if r.quantized:
                dequant_elements["experts"] += n
        else:
            matmul["dense"] += n
            if r.quantized:
                dequant_elements["linear"] += n
    return {
        "parts": parts,
        "quantized": quantized,
        "dtypes": {k: sorted(v) for k, v in dtypes.items()},
        "total": sum(parts.values()),
        "tensors": len(records),
        "tensors_4bit": sum(1 for r in records if r.quantized),
        "matmul_params": matmul,
        "active_matmul_params_per_token": matmul["dense"] + matmul["head"] + matmul["experts"] * top_k / experts,
        "dequant_elements": dequant_elements,
        "experts": experts,
        "top_k": top_k,
    }


def weight_summary(
    arch: ModelArch, decisions: LoadDecisions, overrides: dict[str, Any] | None = None, use_cache: bool = True
) -> dict[str, Any]:
    """Bytes per part of the loaded model (cached per architecture and decisions)."""
    key = measure.cache_key("weights", arch, {"decisions": decisions_key(decisions), "overrides": overrides or {}})
    if use_cache:
        cached = measure._read_cache(key)
        if cached is not None:
            return cached

    with measure.quiet():
        model = build_meta_model(arch, decisions, overrides)
    summary = summarize_inventory(inventory(model, decisions), arch)
    measure._write_cache(key, summary)
    return summary
