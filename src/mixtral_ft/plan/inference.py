"""The inference plan of ``mixft generate`` / ``mixft judge`` (hf backend): memory and tokens/s.

Peak = weights (+ adapter) + the larger of the simulated prefill of the first (largest) batch and the
decode at its longest context, plus the CUDA context and an allocator allowance. Decoding is bound by
memory bandwidth: tokens/s from the bytes each step reads. The composition and its assumptions:
docs/design/planner.md.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.plan.arch import load_arch
from mixtral_ft.plan.gpus import Gpu
from mixtral_ft.plan.measure import LA, LB, depth_split, measure_prefill, size_key
from mixtral_ft.plan.storage import inference_decisions
from mixtral_ft.plan.timing import BANDWIDTH_EFFICIENCY
from mixtral_ft.plan.training import CUDA_CONTEXT_GIB, GIB, _largest, _resolve_gpu, report_calibration
from mixtral_ft.plan.weights import weight_summary

KV_BYTES = 2  # bf16 cache (the hf backend loads in bf16 on CUDA)
# The caching allocator's rounding and fragmentation at the inference peak: a stated allowance (the
# training plan replays the allocator on its step instead; docs/planning.md).
ALLOCATOR_RESERVE_GIB = 1.0

INFERENCE_PART_LABELS = {
    "weights_experts": "weights: experts",
    "weights_attention": "weights: attention",
    "weights_mlp": "weights: dense MLP",
    "weights_embeddings_head": "weights: embeddings + output head",
    "weights_other": "weights: other (norms, router)",
    "adapter": "LoRA adapter",
    "kv_cache": "KV cache",
    "activations": "activations",
    "logits": "logits",
    "dequant_buffers": "dequantization buffers",
    "cuda_overhead": "CUDA context + allocator",
}


def adapter_bytes(adapter: str | Path | None) -> tuple[int, str]:
    """Bytes of a PEFT adapter once loaded (float32: PEFT upcasts 16-bit adapters,
    ``autocast_adapter_dtype=True``), read from the safetensors header without loading it."""
    if adapter is None:
        return 0, "no adapter"
    path = Path(adapter) / "adapter_model.safetensors"
    if not path.exists():
        return 0, f"{Path(adapter)}: no adapter_model.safetensors; adapter not counted"
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    numel = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in info["shape"]:
            count *= d
        numel += count
    return numel * 4, f"{numel:,} parameters in float32"


@dataclass
class InferencePlan:
    """``to_dict()``: ``peak_gib``, ``gpu_memory_gib``, ``fits``, ``parts`` (GiB), ``tokens_per_s``, ``hours``."""

    gpu: Gpu
    model: str
    load_in_4bit: bool
    batch_size: int
    max_new_tokens: int
    longest_prompt: int
    rows: int | None
    parts: dict[str, float]
    peak_phase: str
    phases: dict[str, float]
    tokens_per_s: float
    decode_step_s: float
    prefill_s: float
    hours: float | None
    largest_batch_size: int | None = None
    notes: list[str] = field(default_factory=list)
    weight_dtypes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def peak_gib(self) -> float:
        return sum(self.parts.values()) / GIB

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.gpu.memory_gib

    @property
    def margin_gib(self) -> float:
        return self.gpu.memory_gib - self.peak_gib

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "mixft-plan-inference",
            "peak_gib": round(self.peak_gib, 2),
            "gpu_memory_gib": round(self.gpu.memory_gib, 2),
            "fits": self.fits,
            "margin_gib": round(self.margin_gib, 2),
            "parts": {k: round(v / GIB, 6) for k, v in self.parts.items()},
            "peak_phase": self.peak_phase,
            "phases_gib": {k: round(v / GIB, 3) for k, v in self.phases.items()},
            "tokens_per_s": round(self.tokens_per_s, 1),
            "decode_step_s": round(self.decode_step_s, 4),
            "prefill_s": round(self.prefill_s, 3),
            "hours": None if self.hours is None else round(self.hours, 6),
            "gpu": self.gpu.as_dict(),
            "model": self.model,
            "load_in_4bit": self.load_in_4bit,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "longest_prompt": self.longest_prompt,
            "rows": self.rows,
            "largest_batch_size": self.largest_batch_size,
            "constants": {"cuda_context_gib": CUDA_CONTEXT_GIB, "allocator_reserve_gib": ALLOCATOR_RESERVE_GIB},
            "notes": self.notes,
        }


def _kv_bytes(arch, batch: int, tokens: int) -> float:
    return 2.0 * arch.num_layers * batch * tokens * arch.num_kv_heads * arch.head_dim * KV_BYTES


def _decode_bytes_per_step(weights: dict[str, Any], arch, batch: int, context: float, load_in_4bit: bool) -> float:
    """Bytes moved by one decode step (docs/design/planner.md)."""
    m = weights["matmul_params"]
    experts, top_k = weights["experts"], weights["top_k"]
    active = min(1.0, batch * top_k / experts) if experts > 1 else 1.0
    deq = weights["dequant_elements"]
    if load_in_4bit:
        # Linear4bit: one row -> 4-bit gemv (packed read); several rows -> dequantize + matmul.
        linear = deq["linear"] * (0.5 if batch == 1 else 4.5) + (m["dense"] - deq["linear"]) * 2
        expert_bytes = deq["experts"] * (0.5 + 2 + 2 * active) + (m["experts"] - deq["experts"]) * 2 * active
    else:
        linear = m["dense"] * 2
        expert_bytes = m["experts"] * 2 * active
    head = m["head"] * 2
    kv = _kv_bytes(arch, batch, int(context)) * 3  # attention reads it; torch.cat reads and rewrites it
    return linear + expert_bytes + head + kv


@dataclass
class _Composer:
    """The parts of the inference peak for one batch size: weights, adapter, and the larger of the
    prefill and decode phases (docs/design/planner.md)."""

    arch: Any
    weights: dict[str, Any]
    adapter_bytes: int
    load_in_4bit: bool
    width: int  # the longest prompt: every row of the first batch is left-padded to it
    max_new_tokens: int
    use_cache: bool

    def _depth_peak(self, b: int) -> dict[str, float]:
        """The prefill's transient at full depth, split by tag: the larger of the first and the last
        layer's forward (see ``measure.PHASES``)."""
        sim = measure_prefill(self.arch, self.load_in_4bit, b, self.width, use_cache=self.use_cache)
        entry = sim["sizes"][size_key(b, self.width)]
        at: dict[str, float] = {}
        for phase in ("forward_layer0", "forward"):
            split = depth_split(
                entry[LA]["peaks"][phase]["by_tag"],
                entry[LB]["peaks"][phase]["by_tag"],
                self.arch.num_layers,
                ("activations", "logits", "dequant"),
            )
            if sum(split.values()) > sum(at.values()):
                at = split
        return at

    def __call__(self, b: int) -> tuple[dict[str, float], str, dict[str, float]]:
        arch, layers = self.arch, self.arch.num_layers
        at = self._depth_peak(b)
        kv_prompt = _kv_bytes(arch, b, self.width)
        kv_full = _kv_bytes(arch, b, self.width + self.max_new_tokens)
        prefill = {
            "kv_cache": kv_prompt,
            "activations": max(0.0, at["activations"] - kv_prompt),
            "logits": at["logits"],
            "dequant_buffers": at["dequant"],
        }
        decode = {
            "kv_cache": kv_full,
            "activations": kv_full / layers,  # one layer's cache copy in torch.cat
            "logits": 2 * b * arch.vocab_size * 4.0,
            "dequant_buffers": at["dequant"],
        }
        phases = {"prefill": sum(prefill.values()), "decode": sum(decode.values())}
        peak = max(phases, key=phases.__getitem__)
        parts = {f"weights_{k}": float(v) for k, v in self.weights["parts"].items() if v}
        if self.adapter_bytes:
            parts["adapter"] = float(self.adapter_bytes)
        parts.update(prefill if peak == "prefill" else decode)
        parts["cuda_overhead"] = (CUDA_CONTEXT_GIB + ALLOCATOR_RESERVE_GIB) * GIB
        return parts, peak, phases


def _all_rows_hours(
    lengths: list[int],
    batch_size: int,
    weights: dict[str, Any],
    arch,
    gpu: Gpu,
    mfu: float,
    max_new_tokens: int,
    load_in_4bit: bool,
    bandwidth: float,
) -> float:
    """Hours for every row: each batch's prefill at the MFU, then ``max_new_tokens`` bandwidth-bound steps."""
    flops_per_s = gpu.bf16_tflops * 1e12 * mfu
    total_s = 0.0
    for i in range(0, len(lengths), batch_size):
        chunk = lengths[i : i + batch_size]
        b, w = len(chunk), chunk[0]
        total_s += 2 * b * w * weights["active_matmul_params_per_token"] / flops_per_s
        total_s += (
            max_new_tokens * _decode_bytes_per_step(weights, arch, b, w + max_new_tokens / 2, load_in_4bit) / bandwidth
        )
    return total_s / 3600


def _throughput_notes(step_bytes: float, gpu: Gpu, load_in_4bit: bool, weights: dict[str, Any]) -> list[str]:
    notes = [
        f"decode is memory-bandwidth bound: {step_bytes / 1e9:.1f} GB moved per step at "
        f"{BANDWIDTH_EFFICIENCY:.0%} of {gpu.bandwidth_gbs:,.0f} GB/s; hours assume every row runs to "
        "--max-new-tokens (an upper bound)"
    ]
    if load_in_4bit and weights["dequant_elements"]["experts"]:
        notes.append(
            "4-bit experts are dequantized whole on every forward (bitsandbytes parametrization): "
            "each decode step writes and reads them in bf16"
        )
    return notes


def plan_inference(
    model,
    gpu: Gpu | str | float | None = "a100-80gb",
    *,
    adapter: str | Path | None = None,
    load_in_4bit: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    prompt_lengths: list[int] | None = None,
    use_cache: bool = True,
    search: bool = True,
) -> InferencePlan:
    """Plan ``generate``/``judge`` with the hf backend.

    ``model``: the base (or merged) model: a directory, a config.json path, a Hub id with a
    built-in or cached config, a dict or a ``transformers`` config. ``prompt_lengths``: tokens of
    every prompt of the input file (``None``: one prompt of 1,024 tokens, stated in the notes).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise UsageError("--batch-size and --max-new-tokens must be at least 1")
    arch = load_arch(model)
    the_gpu = _resolve_gpu(gpu)
    notes: list[str] = []
    if not prompt_lengths:
        prompt_lengths = [1024]
        notes.append("no input file: one prompt of 1,024 tokens assumed")
    lengths = sorted(prompt_lengths, reverse=True)
    batch = len(lengths[:batch_size])
    width = lengths[0]
    weights = weight_summary(arch, inference_decisions(load_in_4bit), None, use_cache=use_cache)
    ad_bytes, ad_note = adapter_bytes(adapter)
    if adapter is not None:
        notes.append(f"adapter: {ad_note}")
    compose = _Composer(arch, weights, ad_bytes, load_in_4bit, width, max_new_tokens, use_cache)
    parts, peak, phases = compose(batch)
    bw = the_gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY
    step_bytes = _decode_bytes_per_step(weights, arch, batch, width + max_new_tokens / 2, load_in_4bit)
    step_s = step_bytes / bw
    mfu = report_calibration(use_cache)["mfu"]
    prefill_s = 2 * batch * width * weights["active_matmul_params_per_token"] / (the_gpu.bf16_tflops * 1e12 * mfu)
    hours = _all_rows_hours(lengths, batch_size, weights, arch, the_gpu, mfu, max_new_tokens, load_in_4bit, bw)
    notes += _throughput_notes(step_bytes, the_gpu, load_in_4bit, weights)
    plan = InferencePlan(
        gpu=the_gpu,
        model=str(model),
        load_in_4bit=load_in_4bit,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        longest_prompt=width,
        rows=len(prompt_lengths),
        parts=parts,
        peak_phase=peak,
        phases=phases,
        tokens_per_s=batch / step_s,
        decode_step_s=step_s,
        prefill_s=prefill_s,
        hours=hours,
        notes=notes,
        weight_dtypes=weights["dtypes"],
    )
    if search and not plan.fits and batch > 1:
        plan.largest_batch_size = _largest(
            lambda b: sum(compose(b)[0].values()) / GIB <= the_gpu.memory_gib, 1, batch - 1
        )
    return plan
