"""QLoRA training steps of a Mixtral at real width with 1, 2 ... layers, without Axolotl.

``scripts/bench_train.py`` measures through ``mixft train --probe`` (Axolotl). A bare GPU machine
cannot hold Axolotl and its dependencies in one 64 MiB wheelhouse (docs/design/gpu-check.md), so this is the reduced form ``make gpu-check`` runs. It takes the settings of
each (task, profile) from the rendered config, loads the model the way the training run stores
it, and runs optimizer steps:

- 4-bit: mixft's load plan (``models/quant.py``): bitsandbytes nf4 linears for the attention
  projections and every fused expert tensor quantized while it is read, as Axolotl's
  ``quantize_moe_experts`` does; the router in fp32, as Axolotl's loader leaves it.
- LoRA through peft directly with the config's ``lora_r``/``lora_alpha``/``lora_dropout``/
  ``lora_target_modules``; gradient checkpointing with the config's kwargs (Axolotl's reentrant
  default when it has none); the config's 8-bit AdamW (bitsandbytes) or torch AdamW.
- One micro batch of ``micro_batch_size`` x ``sequence_len`` random token ids per step, under
  bf16 autocast. Axolotl packs a micro batch into one row for flash attention; here the rows stay
  separate and attention is what the machine has (sdpa without flash-attn). Memory differs from
  the packed flash run by the attention workspace only.

Peak memory is the CUDA allocator's peak over the measured steps (reset after loading), so each
case on the same loaded model is measured on its own.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 2**30
# Axolotl's default when gradient_checkpointing_kwargs is unset (utils/config/__init__.py, normalize_config).
AXOLOTL_DEFAULT_CHECKPOINTING = {"use_reentrant": True}
# The (task, profile) pairs whose shapes differ: multi-gpu and h100-80gb use a100-80gb's per card.
DEFAULT_CASES = (("rg", "a100-80gb"), ("tc", "a100-80gb"), ("rg", "a100-40gb"), ("tc", "a100-40gb"))


@dataclass(frozen=True)
class StepCase:
    """What one training step of (task, profile) does, read from its rendered config."""

    task: str
    profile: str
    micro_batch_size: int
    sequence_len: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: tuple[str, ...]
    gradient_checkpointing: bool
    gradient_checkpointing_kwargs: dict[str, Any]
    optimizer: str
    learning_rate: float
    output_router_logits: bool

    @property
    def name(self) -> str:
        return f"{self.task}/{self.profile}"

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.sequence_len


def case_from_config(task: str, profile: str, values: dict[str, Any]) -> StepCase:
    """The step settings of a rendered config (``render(...).values``)."""
    gc_on = bool(values.get("gradient_checkpointing"))
    return StepCase(
        task=task,
        profile=profile,
        micro_batch_size=int(values["micro_batch_size"]),
        sequence_len=int(values["sequence_len"]),
        lora_r=int(values["lora_r"]),
        lora_alpha=int(values["lora_alpha"]),
        lora_dropout=float(values.get("lora_dropout") or 0.0),
        lora_target_modules=tuple(values["lora_target_modules"]),
        gradient_checkpointing=gc_on,
        gradient_checkpointing_kwargs=dict(
            values.get("gradient_checkpointing_kwargs") or (AXOLOTL_DEFAULT_CHECKPOINTING if gc_on else {})
        ),
        optimizer=str(values.get("optimizer") or "adamw_torch"),
        learning_rate=float(values.get("learning_rate") or 2e-4),
        output_router_logits=bool((values.get("model_config") or {}).get("output_router_logits")),
    )


def render_cases(pairs=DEFAULT_CASES, overrides: tuple[str, ...] = ()) -> list[StepCase]:
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    out = []
    for task, profile in pairs:
        values = render(RenderRequest(task, Path("/unused"), profile, Path("/unused"), overrides=overrides)).values
        out.append(case_from_config(task, profile, values))
    return out


def attention_available(device: str) -> str:
    """flash_attention_2 where flash-attn imports on CUDA, else sdpa."""
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401
        except Exception:  # noqa: BLE001 - absent, or built for another torch (an undefined symbol)
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


def load_4bit_model(model_dir: str | Path, device: str, attn_implementation: str, compute_dtype: str = "bfloat16"):
    """The model as a QLoRA training run stores it: 4-bit linears and experts, router in fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    from mixtral_ft.models.quant import FourBitSpec, quantize_experts_on_load

    spec = FourBitSpec(compute_dtype=compute_dtype)
    with quantize_experts_on_load(spec) as counter:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            quantization_config=spec.bnb_config(),
            device_map={"": device},
            dtype=getattr(torch, compute_dtype),
            attn_implementation=attn_implementation,
        )
    for name, module in model.named_modules():
        if name.endswith(".gate"):  # Axolotl upcasts the router (loaders/model.py, _convert_embedding_modules_dtype)
            module.to(torch.float32)
    return model, counter.quantized


def add_lora(model, case: StepCase):
    from peft import LoraConfig, get_peft_model

    if case.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs)
    model.config.output_router_logits = case.output_router_logits
    config = LoraConfig(
        r=case.lora_r,
        lora_alpha=case.lora_alpha,
        lora_dropout=case.lora_dropout,
        target_modules=list(case.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def make_optimizer(params, case: StepCase):
    import torch

    if case.optimizer == "adamw_bnb_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=case.learning_rate)
    return torch.optim.AdamW(params, lr=case.learning_rate)


def _rss_peak_gib() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GIB if sys.platform == "darwin" else 2**20)


def measure_case(model, case: StepCase, device: str, steps: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """``warmup`` + ``steps`` optimizer steps of ``case`` on an already LoRA-wrapped model.

    Returns peak memory over the whole case (CUDA: reset first, so only this case counts), the mean
    step time and token rate over the measured steps, and the last loss.
    """
    import torch

    cuda = device.startswith("cuda")
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], case)
    model.train()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / GIB if cuda else None
    times: list[float] = []
    loss = None
    try:
        for i in range(warmup + steps):
            ids = torch.randint(0, vocab, (case.micro_batch_size, case.sequence_len), generator=gen).to(device)
            t0 = time.perf_counter()
            with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            loss = float(out.loss.detach())
            del out, ids
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        step_s = sum(times) / len(times) if times else None
        row: dict[str, Any] = {
            "ok": True,
            "loss": loss,
            "step_s": step_s,
            "token_slots_per_s": case.tokens_per_micro_batch / step_s if step_s else None,
        }
    except torch.OutOfMemoryError as exc:
        row = {"ok": False, "error": f"CUDA out of memory: {str(exc).splitlines()[0][:160]}"}
    finally:
        del optimizer
        gc.collect()
    if cuda:
        row.update(
            before_step_gib=base,
            peak_gib=torch.cuda.max_memory_allocated() / GIB,
            peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB,
        )
        torch.cuda.empty_cache()
    else:
        row.update(before_step_gib=None, peak_gib=_rss_peak_gib(), peak_reserved_gib=None)
    return row


@dataclass
class StepBenchOptions:
    layers: tuple[int, ...]
    cases: tuple[StepCase, ...]
    out: Path
    width: str = "full"  # "full" (Mixtral-8x7B shapes) or "tiny"
    device: str = "cuda"
    steps: int = 3
    warmup: int = 1
    keep_models: bool = False


def run_stepbench(opts: StepBenchOptions, say=print) -> dict[str, Any]:
    """Build each layer count once (in a child process), load it in 4-bit once, run every case on it."""
    import shutil

    import torch

    from bench.membench import build_model_in_subprocess, fits_for
    from mixtral_ft.models.quant import quantization_record

    rows: list[dict[str, Any]] = []
    attn = attention_available(opts.device)
    for layers in opts.layers:
        model_dir = opts.out / "models" / f"{opts.width}-L{layers}"
        if not (model_dir / "config.json").exists():
            say(f"building a {opts.width}-width Mixtral with {layers} layer(s) ...")
            build_model_in_subprocess(
                model_dir, opts.width, layers, None, "cuda" if opts.device.startswith("cuda") else None
            )
        t0 = time.perf_counter()
        model, quantized = load_4bit_model(model_dir, opts.device, attn)
        load_s = time.perf_counter() - t0
        after_load = torch.cuda.memory_allocated() / GIB if opts.device.startswith("cuda") else None
        record = quantization_record(model)
        for case in opts.cases:
            peft_model = add_lora(model, case)
            say(f"  {case.name}: {case.micro_batch_size} x {case.sequence_len} tokens, {layers} layer(s) ...")
            row = {
                "case": case.name,
                "profile": case.name,
                "task": case.task,
                "layers": layers,
                "micro_batch_size": case.micro_batch_size,
                "sequence_len": case.sequence_len,
                "tokens_per_micro_batch": case.tokens_per_micro_batch,
                "attn_implementation": attn,
                "gradient_checkpointing_kwargs": case.gradient_checkpointing_kwargs,
                "optimizer": case.optimizer,
                "after_load_gib": after_load,
                "load_s": round(load_s, 2),
                "quantization": record,
                "experts_quantized": record["expert_tensors_4bit"],
                "experts_unquantized": record["expert_tensors"] - record["expert_tensors_4bit"],
                "experts_quantized_on_load": len(quantized),
            }
            row.update(measure_case(peft_model, case, opts.device, opts.steps, opts.warmup))
            rows.append(row)
            say(
                "    "
                + (
                    f"peak {row['peak_gib']:.2f} GiB, {row['step_s']:.2f} s/step"
                    if row["ok"]
                    else f"FAILED: {row['error']}"
                )
            )
            model = peft_model.unload()  # the base model back, without this case's LoRA layers
            del peft_model
            gc.collect()
        del model
        gc.collect()
        if opts.device.startswith("cuda"):
            torch.cuda.empty_cache()
        if not opts.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)
    return {"rows": rows, "fits": fits_for(rows), "attn_implementation": attn, "cases": [asdict(c) for c in opts.cases]}
