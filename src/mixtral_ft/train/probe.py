"""An Axolotl plugin that records what a training run really did: ``mixft train --probe``.

After the model is loaded: the attention, gradient checkpointing, the expert tensors and linears stored
in 4-bit, the bytes of each part of the model; after every optimizer step: wall time, tokens and peak
memory. Written to ``OUTPUT_DIR/mixft_probe.json`` atomically each time (an out-of-memory crash keeps
what was measured), by rank 0 only; a probe failure is logged and never stops the run. Axolotl imports
this module by name (``plugins: [mixtral_ft.train.probe.ProbePlugin]``); nothing else imports it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from mixtral_ft.train.probe_report import PROBE_FILE
from mixtral_ft.util.atomic import atomic_write_text

SCHEMA = "mixft-probe/v1"

LOG = logging.getLogger(__name__)
GIB = 2**30


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _cuda():
    return torch.cuda if torch.cuda.is_available() else None


def _rss_peak_gib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GIB if sys.platform == "darwin" else 2**20)


def memory_now() -> dict[str, float]:
    """Peak memory so far: the CUDA caching allocator on GPU, the process RSS peak always."""
    out = {"rss_peak_gib": round(_rss_peak_gib(), 3)}
    cuda = _cuda()
    if cuda is not None:
        out.update(
            cuda_allocated_gib=round(cuda.memory_allocated() / GIB, 3),
            cuda_peak_allocated_gib=round(cuda.max_memory_allocated() / GIB, 3),
            cuda_peak_reserved_gib=round(cuda.max_memory_reserved() / GIB, 3),
        )
    return out


def _category(name: str) -> str:
    if "lora_" in name:
        return "lora"
    if ".experts." in name or name.endswith(".experts"):
        return "experts"
    if ".self_attn." in name:
        return "attention"
    if "embed_tokens" in name or "lm_head" in name:
        return "embeddings"
    if ".gate." in name or "router" in name:
        return "router"
    return "other"


def describe_model(model) -> dict[str, Any]:
    """What took effect on a loaded (possibly PEFT-wrapped) model. Pure inspection, no side effects."""
    config = getattr(model, "config", None)
    by_cat: dict[str, int] = {}
    trainable = total = 0
    for name, p in model.named_parameters():
        nbytes = p.numel() * p.element_size()
        by_cat[_category(name)] = by_cat.get(_category(name), 0) + nbytes
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    parametrized_experts: list[str] = []
    expert_storage: dict[str, str] = {}
    linear_4bit = linear_8bit = 0
    lin4: type | tuple[type, ...]  # () matches nothing
    lin8: type | tuple[type, ...]
    try:
        import bitsandbytes as bnb

        lin4, lin8 = bnb.nn.Linear4bit, bnb.nn.Linear8bitLt
    except Exception:  # bitsandbytes missing: nothing can be quantized
        lin4 = lin8 = ()
    for mod_name, module in model.named_modules():
        if lin4 and isinstance(module, lin4):
            linear_4bit += 1
        elif lin8 and isinstance(module, lin8):
            linear_8bit += 1
        plist = getattr(module, "parametrizations", None)
        if plist is not None and "expert" in mod_name.lower():
            for pname in plist.keys():
                parametrized_experts.append(f"{mod_name}.{pname}")
                expert_storage[pname] = str(getattr(plist[pname], "original", torch.empty(0)).dtype)
    unquantized_3d = [
        n
        for n, p in model.named_parameters()
        if p.ndim >= 3
        and "expert" in n.lower()
        and "parametrizations" not in n
        and p.dtype in (torch.bfloat16, torch.float16, torch.float32)
    ]
    return {
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
        "moe_experts_quantized_flag": bool(getattr(model, "_moe_experts_quantized", False)),
        "quantized_expert_tensors": len(parametrized_experts),
        "quantized_expert_storage_dtypes": sorted(set(expert_storage.values())),
        "unquantized_expert_tensors": len(unquantized_3d),
        "linear_4bit_modules": linear_4bit,
        "linear_8bit_modules": linear_8bit,
        "parameters": total,
        "trainable_parameters": trainable,
        "parameter_gib": {k: round(v / GIB, 4) for k, v in sorted(by_cat.items())},
        "parameter_gib_total": round(sum(by_cat.values()) / GIB, 4),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "model_dtype": str(getattr(model, "dtype", "")) or None,
    }


class Probe:
    """The record being built; ``flush`` rewrites the JSON file atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "created_at": time.time(),
            "model": None,
            "memory_after_load": None,
            "steps": [],
            "finished": False,
            "errors": [],
        }
        cuda = _cuda()
        if cuda is not None:
            props = cuda.get_device_properties(0)
            self.data["device"] = {
                "type": "cuda",
                "name": props.name,
                "total_gib": round(props.total_memory / GIB, 2),
                "count": cuda.device_count(),
            }
        else:
            self.data["device"] = {"type": "cpu", "name": None, "total_gib": None, "count": os.cpu_count()}

    def flush(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a probe must never stop the run it measures
            LOG.warning("mixft probe: %s failed: %s", what, exc)
            self.data["errors"].append(f"{what}: {type(exc).__name__}: {exc}")
        try:
            self.flush()
        except OSError as exc:
            LOG.warning("mixft probe: cannot write %s: %s", self.path, exc)


def _token_counts(state) -> dict[str, int]:
    tokens = getattr(state, "tokens", None) or {}
    out = {}
    for key in ("total", "trainable"):
        v = tokens.get(key)
        if v is not None:
            out[key] = int(v.item() if hasattr(v, "item") else v)
    return out


class ProbeCallback(TrainerCallback):
    def __init__(self, probe: Probe):
        self.probe = probe

    def _sync(self) -> None:
        cuda = _cuda()
        if cuda is not None:
            cuda.synchronize()  # step times must include the GPU work, not just its launch

    def on_train_begin(self, args, state, control, **kwargs):
        def record():
            self._sync()
            self.probe.data["train_begin"] = {
                "t": time.perf_counter(),
                "step": state.global_step,
                "tokens": _token_counts(state),
                "memory": memory_now(),
            }

        self.probe.guard("train begin", record)

    def on_step_end(self, args, state, control, **kwargs):
        def record():
            self._sync()
            self.probe.data["steps"].append(
                {
                    "step": state.global_step,
                    "t": time.perf_counter(),
                    "tokens": _token_counts(state),
                    "memory": memory_now(),
                }
            )

        self.probe.guard("step", record)

    def on_train_end(self, args, state, control, **kwargs):
        def record():
            self.probe.data["finished"] = True
            self.probe.data["memory_at_end"] = memory_now()

        self.probe.guard("train end", record)


# The settings whose effect the probe checks, read from the config Axolotl validated. Validation
# rewrites the deprecated flash_attention/sdp_attention flags to attn_implementation and drops them
# (utils/schemas/config.py, normalize_attn_implementation), so only attn_implementation is read.
PROBE_CONFIG_KEYS = (
    "base_model",
    "adapter",
    "load_in_4bit",
    "quantize_moe_experts",
    "attn_implementation",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "sequence_len",
    "sample_packing",
    "pad_to_sequence_len",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "bf16",
    "fp16",
    "optimizer",
    "deepspeed",
)


def probe_config(cfg) -> dict[str, Any]:
    """What the run asked for, as the probe records it (``cfg``: Axolotl's validated config)."""
    return {k: cfg.get(k) for k in PROBE_CONFIG_KEYS}


class ProbePlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.probe: Probe | None = None

    def _probe(self, cfg) -> Probe | None:
        if not _is_main():
            return None
        if self.probe is None:
            self.probe = Probe(Path(cfg.output_dir) / PROBE_FILE)
            self.probe.data["config"] = probe_config(cfg)
        return self.probe

    def post_model_load(self, cfg, model):
        probe = self._probe(cfg)
        if probe is None:
            return

        def record():
            probe.data["model"] = describe_model(model)
            probe.data["memory_after_load"] = memory_now()

        probe.guard("model inspection", record)

    def add_callbacks_post_trainer(self, cfg, trainer):
        probe = self._probe(cfg)
        return [ProbeCallback(probe)] if probe is not None else []
