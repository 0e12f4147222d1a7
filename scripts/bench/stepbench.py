"""QLoRA training steps of a Mixtral at real width with 1, 2 ... layers, in one process, per case.

``scripts/bench_train.py`` measures through ``mixft train --probe`` (Axolotl, one training run per
profile and layer count: a minute or more each). ``make gpu-check`` (docs/design/gpu-check.md) has
one ~8-minute call for everything, so it measures here instead: it loads each layer count once and
runs every (task, profile) case on the loaded model. Each case takes its settings from the rendered
config:

- 4-bit as a training run stores the model: bitsandbytes nf4 linears for the attention
  projections and every fused expert tensor quantized while it is read, through Axolotl's own
  on-load hook where Axolotl is installed and the model is on CUDA (``quantize_moe_experts``), else
  mixft's load plan (``models/quant.py``, the same rule); the router in fp32, as Axolotl's loader leaves it.
- LoRA through peft with the config's ``lora_r``/``lora_alpha``/``lora_dropout``/
  ``lora_target_modules``, and ``lora_target_parameters`` on the fused experts under Axolotl's PEFT
  patch (the ``+expert-lora`` cases); gradient checkpointing with the config's kwargs (Axolotl's
  reentrant default when it has none); the config's 8-bit AdamW (bitsandbytes) or torch AdamW.
- One micro batch of ``micro_batch_size`` x ``sequence_len`` random token ids per step, under
  bf16 autocast. Axolotl packs a micro batch into one row for flash attention; here the rows stay
  separate and attention is what the machine has (sdpa without flash-attn), as it is with sdpa in
  Axolotl (``multipack_real_batches``). The memory plan compared with it is made for the same attention.

Peak memory is the CUDA allocator's peak over the measured steps (reset after loading), so each
case on the same loaded model is measured on its own. With ``plan=True`` the planner's figure for
the same config and model (and for the model at 32 layers) is computed beside it, in CPU worker
processes while the GPU measures (:func:`plan_figures`).
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

GIB = 2**30
# Axolotl's default when gradient_checkpointing_kwargs is unset (utils/config/__init__.py, normalize_config).
AXOLOTL_DEFAULT_CHECKPOINTING = {"use_reentrant": True}
# The (task, profile) pairs whose shapes differ: multi-gpu and a100-80gb use h100-80gb's per card.
DEFAULT_CASES = (("rg", "h100-80gb"), ("tc", "h100-80gb"), ("rg", "a100-40gb"), ("tc", "a100-40gb"))
# Variants of a case: ``TASK/PROFILE+VARIANT`` adds these overrides. expert-lora is the LoRA on the
# fused experts configs/rg.yml describes (Axolotl requires lora_dropout 0 with lora_target_parameters).
VARIANTS = {
    "expert-lora": ("lora_target_parameters=[mlp.experts.gate_up_proj, mlp.experts.down_proj]", "lora_dropout=0"),
}
MIXTRAL_8X7B_LAYERS = 32


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
    lora_target_parameters: tuple[str, ...] = ()
    variant: str = ""
    overrides: tuple[str, ...] = ()  # every --set the case was rendered with (the plan renders it again)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.profile}" + (f"+{self.variant}" if self.variant else "")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.sequence_len


def case_from_config(
    task: str, profile: str, values: dict[str, Any], variant: str = "", overrides: tuple[str, ...] = ()
) -> StepCase:
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
        lora_target_parameters=tuple(values.get("lora_target_parameters") or ()),
        variant=variant,
        overrides=overrides,
    )


def render_values(task: str, profile: str, overrides: tuple[str, ...], keys=None) -> dict[str, Any]:
    """The rendered config's values; ``keys``: what to check the keys against (None: the installed
    Axolotl's schema, which imports Axolotl; ``snapshot_keys()`` does not)."""
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    return render(RenderRequest(task, Path("/unused"), profile, Path("/unused"), overrides=overrides), keys=keys).values


def render_cases(pairs=DEFAULT_CASES, overrides: tuple[str, ...] = (), keys=None) -> list[StepCase]:
    """``pairs``: (task, profile) or (task, profile, variant) with a variant of :data:`VARIANTS`."""
    out = []
    for task, profile, *rest in pairs:
        variant = rest[0] if rest else ""
        if variant and variant not in VARIANTS:
            raise ValueError(f"unknown case variant {variant!r}; choose from {', '.join(VARIANTS)}")
        case_overrides = tuple(overrides) + VARIANTS.get(variant, ())
        values = render_values(task, profile, case_overrides, keys)
        out.append(case_from_config(task, profile, values, variant, case_overrides))
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


def expert_loader(device: str) -> str:
    """Whose on-load hook quantizes the experts: Axolotl's where it is installed and the model is on
    CUDA (its hook acts on CUDA tensors only), else mixft's (the same rule, on any device)."""
    import importlib.util

    return "axolotl" if device.startswith("cuda") and importlib.util.find_spec("axolotl") else "mixft"


def load_4bit_model(
    model_dir: str | Path, device: str, attn_implementation: str, compute_dtype: str = "bfloat16", loader: str = "mixft"
):
    """The model as a QLoRA training run stores it: 4-bit linears and experts, router in fp32.
    Returns the model and the names of the expert tensors the on-load hook quantized."""
    import torch
    from transformers import AutoModelForCausalLM

    from mixtral_ft.models.quant import FourBitSpec, quantize_experts_on_load

    spec = FourBitSpec(compute_dtype=compute_dtype)
    if loader == "axolotl":
        from axolotl.monkeypatch import moe_quant
        from axolotl.utils.dict import DictDefault

        moe_quant.patch_moe_quantization_on_load(DictDefault({"load_in_4bit": True}))  # process-wide, as in a run
    with quantize_experts_on_load(spec) as counter:  # skips what Axolotl's hook already quantized
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
    if loader == "axolotl":
        from mixtral_ft.models.quant import expert_tensors

        return model, [name for name, four_bit in expert_tensors(model) if four_bit]
    return model, counter.quantized


def add_lora(model, case: StepCase):
    """LoRA of ``case`` on ``model``; LoRA on the fused experts under Axolotl's PEFT patch, as a run
    with ``lora_target_parameters`` gets it (``loaders/patch_manager.py``)."""
    from peft import LoraConfig, get_peft_model

    if case.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs)
    model.config.output_router_logits = case.output_router_logits
    if case.lora_target_parameters:
        from axolotl.monkeypatch.moe_quant import patch_peft_target_parameters_matching

        patch_peft_target_parameters_matching()
    config = LoraConfig(
        r=case.lora_r,
        lora_alpha=case.lora_alpha,
        lora_dropout=case.lora_dropout,
        target_modules=list(case.lora_target_modules),
        target_parameters=list(case.lora_target_parameters) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)  # autocast_adapter_dtype: 16-bit adapters in float32, as in a run


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

    Returns peak memory over the whole case (CUDA: reset first, so only this case counts), what stays
    allocated after the last step (weights, LoRA and the optimizer state; gradients freed), the mean
    step time and token rate over the measured steps, and the last loss.
    """
    import torch

    cuda = device.startswith("cuda")
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, case)
    model.train()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / GIB if cuda else None
    times: list[float] = []
    loss = after_steps = None
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
        after_steps = torch.cuda.memory_allocated() / GIB if cuda else None
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
    row["trainable_parameters"] = sum(p.numel() for p in trainable)
    if cuda:
        row.update(
            before_step_gib=base,
            after_steps_gib=after_steps,
            peak_gib=torch.cuda.max_memory_allocated() / GIB,
            peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB,
        )
        torch.cuda.empty_cache()
    else:
        row.update(before_step_gib=None, after_steps_gib=None, peak_gib=_rss_peak_gib(), peak_reserved_gib=None)
    return row


# --- the memory plan for the same config --------------------------------------------------------------

PLAN_PARTS = {
    # measured quantity -> the plan's parts that make it (mixtral_ft.plan.training, TrainingPlan.parts)
    "weights": ("weights_embeddings_head", "weights_attention", "weights_experts", "weights_other"),
    "state": ("lora_params", "optimizer_state", "expert_lora_state"),
    "transient": ("lora_grads", "activations", "logits_loss", "dequant_buffers", "expert_lora_transient"),
}


def plan_figure(case: dict[str, Any], arch: dict[str, Any], gpu: str) -> dict[str, Any]:
    """The planner's figures for ``case`` (a ``StepCase`` as a dict) on the model ``arch`` (a config dict):
    allocated and reserved peaks as ``max_memory_allocated``/``_reserved`` would read them, and its parts
    summed as :data:`PLAN_PARTS` groups them (GiB). Runs on the CPU (FakeTensors), no CUDA."""
    from mixtral_ft.plan.training import plan_training

    values = render_values(case["task"], case["profile"], tuple(case["overrides"]))
    plan = plan_training(values, None, gpu, model=arch, search=False)
    parts = {k: v / GIB for k, v in plan.parts.items()}
    return {
        "layers": arch["num_hidden_layers"],
        "allocated_peak_gib": round(plan.allocated_peak_gib, 3),
        "reserved_peak_gib": round(plan.reserved_peak_gib, 3),
        "peak_high_gib": round(plan.peak_high_gib, 3),
        "peak_phase": plan.peak_phase,
        "groups_gib": {g: round(sum(parts.get(k, 0.0) for k in keys), 3) for g, keys in PLAN_PARTS.items()},
        "parts_gib": {k: round(v, 3) for k, v in parts.items()},
    }


def plan_gpu(profile: str) -> str:
    """The planner's card for a profile's card (a name of ``mixtral_ft.plan.gpus.GPUS``)."""
    return {"a100-40gb": "a100-40gb", "a100-80gb": "a100-80gb"}.get(profile, "h100-80gb")


def plan_figures(cases: list[StepCase], arch: dict[str, Any], depths: tuple[int, ...], workers: int = 8):
    """Start :func:`plan_figure` for every case at every depth in CPU worker processes; returns
    ``{(case name, depth): future}``. Call ``.result()`` after the GPU work."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    futures = {}
    for case in cases:
        for depth in depths:
            futures[(case.name, depth)] = pool.submit(
                plan_figure, asdict(case), dict(arch, num_hidden_layers=depth), plan_gpu(case.profile)
            )
    pool.shutdown(wait=False)
    return futures


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
    plan: bool = False  # the planner's figures beside the measurement (plan_figures)
    loader: str | None = None  # None: expert_loader(device)


def _case_row(case: StepCase, layers: int, attn: str, loaded: dict[str, Any]) -> dict[str, Any]:
    record = loaded["record"]
    return {
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
        "lora_target_parameters": list(case.lora_target_parameters),
        "loader": loaded["loader"],
        "after_load_gib": loaded["after_load_gib"],
        "load_s": loaded["load_s"],
        "quantization": record,
        "experts_quantized": record["expert_tensors_4bit"],
        "experts_unquantized": record["expert_tensors"] - record["expert_tensors_4bit"],
        "experts_quantized_on_load": loaded["quantized_on_load"],
    }


def _load(model_dir: Path, opts: StepBenchOptions, attn: str, loader: str):
    import torch

    from mixtral_ft.models.quant import quantization_record

    t0 = time.perf_counter()
    model, quantized = load_4bit_model(model_dir, opts.device, attn, loader=loader)
    cuda = opts.device.startswith("cuda")
    return model, {
        "loader": loader,
        "load_s": round(time.perf_counter() - t0, 2),
        "after_load_gib": torch.cuda.memory_allocated() / GIB if cuda else None,
        "record": quantization_record(model),
        "quantized_on_load": len(quantized),
    }


def _run_case(model, case: StepCase, opts: StepBenchOptions, row: dict[str, Any], reload):
    """Measure ``case`` into ``row`` on ``model`` (LoRA added, then removed); returns the base model for
    the next case: the same one, or one loaded again (``reload()``) when removing the LoRA failed."""
    try:
        peft_model = add_lora(model, case)
    except Exception as exc:  # noqa: BLE001 - a case that cannot be set up is a row with its error
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        return model
    row.update(measure_case(peft_model, case, opts.device, opts.steps, opts.warmup))
    try:
        return peft_model.unload()  # the base model back, without this case's LoRA layers
    except Exception as exc:  # noqa: BLE001 - the next case gets a freshly loaded model instead
        row["unload_error"] = f"{type(exc).__name__}: {exc}"[:300]
        del peft_model, model
        gc.collect()
        if opts.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        return reload()[0]
    finally:
        gc.collect()


def run_stepbench(opts: StepBenchOptions, say=print, on_row=None) -> dict[str, Any]:
    """Build each layer count once (in a child process), load it in 4-bit once, run every case on it.
    ``on_row(rows)`` is called after each case (a caller can save what is measured so far)."""
    import shutil

    import torch

    from bench.membench import build_model_in_subprocess, fits_for

    rows: list[dict[str, Any]] = []
    attn = attention_available(opts.device)
    loader = opts.loader or expert_loader(opts.device)
    futures: dict = {}
    for layers in opts.layers:
        model_dir = opts.out / "models" / f"{opts.width}-L{layers}"
        if not (model_dir / "config.json").exists():
            say(f"building a {opts.width}-width Mixtral with {layers} layer(s) ...")
            build_model_in_subprocess(
                model_dir, opts.width, layers, None, "cuda" if opts.device.startswith("cuda") else None
            )
        if opts.plan and not futures:  # the architecture is known now: plan every depth while the GPU measures
            arch = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            depths = tuple(opts.layers) + (MIXTRAL_8X7B_LAYERS,)
            futures = plan_figures(list(opts.cases), arch, depths, workers=max(1, min(8, (os.cpu_count() or 2) // 2)))
        model, loaded = _load(model_dir, opts, attn, loader)
        for case in opts.cases:
            say(f"  {case.name}: {case.micro_batch_size} x {case.sequence_len} tokens, {layers} layer(s) ...")
            row = _case_row(case, layers, attn, loaded)
            model = _run_case(model, case, opts, row, partial(_load, model_dir, opts, attn, loader))
            rows.append(row)
            say(
                "    "
                + (
                    f"peak {row['peak_gib']:.2f} GiB, {row['step_s']:.2f} s/step"
                    if row["ok"]
                    else f"FAILED: {row['error']}"
                )
            )
            if on_row is not None:
                on_row(rows)
        del model
        gc.collect()
        if opts.device.startswith("cuda"):
            torch.cuda.empty_cache()
        if not opts.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)
    plans: dict[str, dict[str, Any]] = {}
    for (name, depth), fut in futures.items():
        try:
            plans.setdefault(name, {})[str(depth)] = fut.result(timeout=300)
        except Exception as exc:  # noqa: BLE001 - a plan that fails is reported beside the measurement
            plans.setdefault(name, {})[str(depth)] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "rows": rows,
        "fits": fits_for(rows),
        "attn_implementation": attn,
        "loader": loader,
        "cases": [asdict(c) for c in opts.cases],
        "plans": plans,
    }
