"""The plan as text: the parts table and the lines ``mixft plan`` prints. Pure functions."""

from __future__ import annotations

from typing import Any

from mixtral_ft.plan.inference import INFERENCE_PART_LABELS
from mixtral_ft.plan.training import PART_LABELS

GIB = 2**30


def parts_table(parts: dict[str, float], labels: dict[str, str], total_label: str = "peak") -> list[str]:
    """One line per part (GiB), then the total."""
    width = max(len(labels.get(k, k)) for k in parts) if parts else 10
    width = max(width, len(total_label))
    lines = [f"  {labels.get(k, k):<{width}}  {v / GIB:8.2f} GiB" for k, v in parts.items()]
    lines.append(f"  {'-' * width}  {'-' * 12}")
    lines.append(f"  {total_label:<{width}}  {sum(parts.values()) / GIB:8.2f} GiB")
    return lines


def weight_labels(labels: dict[str, str], weights: dict[str, Any]) -> dict[str, str]:
    """Part labels with the stored dtype of each weight part (``nf4`` for 4-bit)."""
    out = dict(labels)
    for part, dtypes in (weights.get("dtypes") or {}).items():
        key = f"weights_{part}"
        if key in out:
            out[key] = f"{out[key]} ({', '.join(dtypes)})"
    return out


def peak_words(plan) -> str:
    """``peak 38.5 GiB (band +12%: 43.1 GiB)`` for a plan with an error band, else ``peak 38.5 GiB``."""
    band = getattr(plan, "band", None)
    if band is None:
        return f"peak {plan.peak_gib:.1f} GiB"
    return f"peak {plan.peak_gib:.1f} GiB (band +{band.pct:g}%: {plan.peak_high_gib:.1f} GiB)"


def _verdict(plan) -> str:
    if plan.fits:
        return f"fits: {peak_words(plan)} of {plan.gpu.memory_gib:.1f} GiB, margin {plan.margin_gib:.1f} GiB"
    return (
        f"DOES NOT FIT: {peak_words(plan)}, {plan.gpu.memory_gib:.1f} GiB on the GPU ({-plan.margin_gib:.1f} GiB short)"
    )


def training_lines(plan) -> list[str]:
    s = plan.setup
    d = plan.to_dict()
    head = (
        f"plan: {s.base_model} ({plan.arch_source}), {s.adapter or 'full'} "
        f"{'4-bit ' if s.load_in_4bit else ''}on {plan.gpus} x {plan.gpu.label}"
    )
    shape = (
        f"  micro batch {s.micro_batch_size} x sequence {s.sequence_len} = {s.tokens_per_micro_batch:,} token "
        f"slots; gradient accumulation {s.gradient_accumulation_steps}; checkpointing {s.checkpointing_mode}; "
        f"attention {s.attn_implementation}; optimizer {s.optimizer}"
    )
    lines = [head, shape, "", f"peak GPU memory per device (phase: {plan.peak_phase.replace('_', ' ')}):"]
    lines += parts_table(plan.parts, weight_labels(PART_LABELS, plan.weights))
    phases = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in d["phases_gib"].items())
    kept = (
        f"  activations kept per layer: {plan.activation_bytes_per_token_per_layer:,.0f} bytes/token "
        f"({s.checkpointing_mode} checkpointing); LoRA: {plan.lora_parameters:,} {plan.lora_dtype} parameters; "
        f"optimizer: {plan.optimizer_note}"
    )
    lines += [f"  transient per phase (GiB): {phases}", kept, f"  error band: {plan.band.source()}", "", _verdict(plan)]
    if not plan.fits:
        lines.append(
            f"  largest micro batch that fits at sequence {s.sequence_len}: "
            f"{plan.largest_micro_batch if plan.largest_micro_batch else 'none'}"
        )
        lines.append(
            f"  longest sequence that fits at micro batch {s.micro_batch_size}: "
            f"{plan.longest_sequence if plan.longest_sequence else 'none'}"
        )
    if plan.time is not None:
        lines += ["", *_time_lines(plan)]
    for note in plan.notes:
        lines.append(f"note: {note}")
    return lines


def _time_lines(plan) -> list[str]:
    s, t, data, b = plan.setup, plan.time, plan.data, plan.batching
    rg, tc = t["mfu_basis"]["points"]["rg"], t["mfu_basis"]["points"]["tc"]
    steps = (
        f"time on {plan.gpus} x {plan.gpu.name}: {t['hours']:.1f} h for {t['total_steps']:,} steps "
        f"({t['steps_per_epoch']:,} per epoch x {s.num_epochs:g} epochs"
        + (f", max_steps {s.max_steps}" if s.max_steps else "")
        + ")"
    )
    tokens = (
        f"  data: {data['kept_rows']:,} rows, {data['tokens']:,} tokens ({data['method']}); "
        f"{b['method']}, packing efficiency {b['packing_efficiency']:.1%}"
    )
    flops = t["flops_split"]
    step = (
        f"  step: {t['token_slots_per_step']:,} token slots, {t['tflop_per_step']:,.1f} TFLOP "
        f"(forward {flops['forward']:,.1f}, backward {flops['backward']:,.1f}, recompute {flops['recompute']:,.1f})"
        f" + {t['dequant_gb_per_step']:,.1f} GB dequantized = {t['step_s']:.2f} s "
        f"({t['token_slots_per_s']:,.0f} token slots/s)"
    )
    mfu = (
        f"  MFU {t['mfu']:.1%}, calibrated on the report's RG {rg['hours']} h (MFU {rg['mfu']:.1%}) and TC "
        f"{tc['hours']} h (MFU {tc['mfu']:.1%}) on one A100-80GB; assumed report data: RG {rg['rows']:,} rows x "
        f"{rg['assumed_mean_tokens']:,} tokens, TC {tc['rows']:,} x {tc['assumed_mean_tokens']:,}"
    )
    return [steps, tokens, step, mfu]


def inference_lines(plan) -> list[str]:
    lines = [
        f"plan: {plan.model} {'in 4-bit ' if plan.load_in_4bit else 'in bf16 '}on {plan.gpu.label}",
        f"  batch {plan.batch_size} (first batch: longest prompt {plan.longest_prompt:,} tokens) + "
        f"{plan.max_new_tokens} new tokens" + (f"; {plan.rows:,} rows" if plan.rows else ""),
        "",
        f"peak GPU memory (phase: {plan.peak_phase}):",
    ]
    lines += parts_table(plan.parts, weight_labels(INFERENCE_PART_LABELS, {"dtypes": plan.weight_dtypes}))
    lines += ["", _verdict(plan)]
    if not plan.fits and plan.largest_batch_size:
        lines.append(f"  largest --batch-size that fits: {plan.largest_batch_size}")
    lines.append(
        f"throughput: {plan.tokens_per_s:,.1f} tokens/s while decoding ({plan.decode_step_s * 1000:.0f} ms "
        f"per step for {plan.batch_size} rows), first-batch prefill {plan.prefill_s:.2f} s"
        + (f"; all rows: at most {plan.hours:.2f} h" if plan.hours is not None else "")
    )
    for note in plan.notes:
        lines.append(f"note: {note}")
    return lines


def as_json(plan) -> dict[str, Any]:
    return plan.to_dict()
