"""Reading ``mixft_probe.json`` (written by :mod:`mixtral_ft.train.probe`): throughput, memory, checks.

Pure functions over the JSON; nothing here imports torch or Axolotl, so ``mixft train`` can
summarise a probe and the benchmark can fit its numbers without loading either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROBE_FILE = "mixft_probe.json"
PROBE_PLUGIN = "mixtral_ft.train.probe.ProbePlugin"


@dataclass
class ProbeSummary:
    device: str
    layers: int | None
    measured_steps: int
    step_s: float | None  # mean wall time of one optimizer step over the measured steps
    token_slots_per_s: float | None  # sequence positions per second, padding included, all ranks
    trainable_tokens_per_s: float | None  # tokens with a label (the answer part), all ranks
    peak_gib: float | None  # CUDA peak allocated on GPU, peak RSS on CPU
    peak_reserved_gib: float | None  # CUDA caching allocator's peak (what nvidia-smi roughly shows)
    after_load_gib: float | None  # CUDA allocated (GPU) or RSS peak (CPU) once the model is loaded
    parameter_gib: dict[str, float] = field(default_factory=dict)
    attn_implementation: str | None = None
    flash_attention_in_effect: bool | None = None
    experts_quantized: int = 0
    experts_unquantized: int = 0
    linear_4bit_modules: int = 0
    finished: bool = False
    warnings: list[str] = field(default_factory=list)
    planned: dict[str, Any] | None = None  # mixft plan's prediction for this run (plan.check.planned_vs_measured)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_probe(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def summarize(probe: dict[str, Any], warmup_steps: int = 1) -> ProbeSummary:
    """Throughput over the steps after ``warmup_steps`` (compilation, allocator growth), peaks, checks.

    The interval before the first measured step ends at the previous step's end, so ``warmup_steps=1``
    drops only the first step (which also pays for CUDA kernel selection and data-loader start).
    """
    device = (probe.get("device") or {}).get("type", "cpu")
    model = probe.get("model") or {}
    steps = probe.get("steps") or []
    begin = probe.get("train_begin")
    points = ([begin] if begin else []) + steps
    measured = points[warmup_steps:] if len(points) > warmup_steps + 1 else []
    step_s = slots = trainable = None
    if len(measured) >= 2:
        first, last = measured[0], measured[-1]
        elapsed = last["t"] - first["t"]
        n = len(measured) - 1
        step_s = elapsed / n if n else None
        if elapsed > 0:
            dt = lambda key: last.get("tokens", {}).get(key, 0) - first.get("tokens", {}).get(key, 0)  # noqa: E731
            slots = dt("total") / elapsed if "total" in last.get("tokens", {}) else None
            trainable = dt("trainable") / elapsed if "trainable" in last.get("tokens", {}) else None
    mems = [s.get("memory") or {} for s in steps]
    end_mem = probe.get("memory_at_end") or {}
    load_mem = probe.get("memory_after_load") or {}
    if device == "cuda":
        peak = max([m.get("cuda_peak_allocated_gib", 0.0) for m in mems + [end_mem, load_mem]], default=None)
        reserved = max([m.get("cuda_peak_reserved_gib", 0.0) for m in mems + [end_mem, load_mem]], default=None)
        after_load = load_mem.get("cuda_allocated_gib")
    else:
        peak = max([m.get("rss_peak_gib", 0.0) for m in mems + [end_mem, load_mem]], default=None)
        reserved = None
        after_load = load_mem.get("rss_peak_gib")
    attn = model.get("attn_implementation")
    flash = is_flash_attention(attn) if isinstance(attn, str) else None
    summary = ProbeSummary(
        device=device,
        layers=model.get("num_hidden_layers"),
        measured_steps=max(len(measured) - 1, 0),
        step_s=step_s,
        token_slots_per_s=slots,
        trainable_tokens_per_s=trainable,
        peak_gib=peak or None,
        peak_reserved_gib=reserved or None,
        after_load_gib=after_load,
        parameter_gib=dict(model.get("parameter_gib") or {}),
        attn_implementation=attn,
        flash_attention_in_effect=flash,
        experts_quantized=int(model.get("quantized_expert_tensors") or 0),
        experts_unquantized=int(model.get("unquantized_expert_tensors") or 0),
        linear_4bit_modules=int(model.get("linear_4bit_modules") or 0),
        finished=bool(probe.get("finished")),
    )
    summary.warnings = check(probe, summary)
    return summary


def is_flash_attention(attn: str) -> bool:
    """flash-attn in any form: ``flash_attention_2``/``_3`` or a hub kernel such as ``kernels-community/flash-attn2``."""
    return attn.startswith("flash_attention") or "flash-attn" in attn


def asked_attention(cfg: dict[str, Any]) -> str | None:
    """The attention a probed run asked for: ``attn_implementation``, or the deprecated ``flash_attention``
    flag that probe files written before mixft recorded attn_implementation carry."""
    if cfg.get("attn_implementation"):
        return str(cfg["attn_implementation"])
    return "flash_attention_2" if cfg.get("flash_attention") else None


def check(probe: dict[str, Any], s: ProbeSummary) -> list[str]:
    """Settings that were asked for but did not take effect, as one-line messages."""
    cfg = probe.get("config") or {}
    out: list[str] = []
    if probe.get("model") is None:
        out.append("the model was never inspected (the run failed before loading finished)")
        return out
    if cfg.get("quantize_moe_experts"):
        if s.experts_quantized == 0:
            out.append(
                "quantize_moe_experts is set but no expert tensor was quantized; "
                "the experts stay in 16-bit (Mixtral-8x7B: ~87 GiB)"
            )
        elif s.experts_unquantized:
            out.append(f"quantize_moe_experts: {s.experts_unquantized} expert tensor(s) remain unquantized")
    elif s.experts_unquantized and cfg.get("load_in_4bit"):
        out.append(
            f"load_in_4bit without quantize_moe_experts: {s.experts_unquantized} fused expert "
            "tensor(s) stay in 16-bit (transformers v5 experts are not nn.Linear)"
        )
    asked = asked_attention(cfg)
    if asked and is_flash_attention(asked) and not s.flash_attention_in_effect:
        out.append(f"attn_implementation {asked} was asked for but the model runs '{s.attn_implementation}' attention")
    if cfg.get("load_in_4bit") and s.linear_4bit_modules == 0:
        out.append("load_in_4bit is set but no bitsandbytes 4-bit linear was found")
    if cfg.get("gradient_checkpointing") and not (probe.get("model") or {}).get("gradient_checkpointing"):
        out.append("gradient_checkpointing is set but the model does not report it enabled")
    for err in probe.get("errors") or []:
        out.append(f"probe: {err}")
    return out


def format_lines(s: ProbeSummary) -> list[str]:
    """The lines `mixft train --probe` prints at the end of a run."""
    gib = lambda v: "n/a" if v is None else f"{v:.2f} GiB"  # noqa: E731
    rate = lambda v: "n/a" if v is None else f"{v:,.0f}"  # noqa: E731
    pct = lambda v: "n/a" if v is None else f"{v:+.1%}"  # noqa: E731
    what = "GPU peak allocated" if s.device == "cuda" else "peak RSS"
    lines = [
        f"memory: {what} {gib(s.peak_gib)}"
        + (f" (reserved {gib(s.peak_reserved_gib)})" if s.peak_reserved_gib else "")
        + f"; after loading {gib(s.after_load_gib)}",
        *(
            [
                f"memory planned: peak allocated {gib(s.planned['planned_allocated_gib'])} (error "
                f"{pct(s.planned['error_allocated'])}), with allocator reserve {gib(s.planned['planned_reserved_gib'])} "
                f"(vs reserved: {pct(s.planned['error_reserved'])})"
            ]
            if s.planned
            else []
        ),
        f"throughput: {rate(s.token_slots_per_s)} token slots/s, {rate(s.trainable_tokens_per_s)} trained "
        f"tokens/s over {s.measured_steps} step(s)" + (f", {s.step_s:.2f} s/step" if s.step_s is not None else ""),
        f"attention: {s.attn_implementation}; experts: {s.experts_quantized} tensor(s) quantized, "
        f"{s.experts_unquantized} in 16/32-bit; 4-bit linears: {s.linear_4bit_modules}",
    ]
    lines += [f"warning: {w}" for w in s.warnings]
    return lines
