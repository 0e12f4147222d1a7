"""The CPU twin of a GPU training run: the exact rendered GPU config, minus only what a CPU cannot run.

A CUDA-only path is not "untested because there is no GPU": its *decisions* (which tensors are
4-bit, which modules carry LoRA, which attention and checkpointing mode the run asks for) are made
by Axolotl's own loader from the config, and a CPU can make them too. :func:`cpu_twin_config`
is the single list of differences; :func:`load_twin` loads a model through Axolotl 0.19's
``ModelLoader`` with that config, in-process, and returns it with Axolotl's normalized config.

The swap list (each checked on this project's CPU machine, Axolotl 0.19.0 / transformers 5.16.1):

- ``attn_implementation: flash_attention_2`` -> ``sdpa``: flash-attn is CUDA-only; without it
  transformers refuses to build the model (``modeling_utils.py``, ``_flash_attn_import_error``).
- ``device_map`` -> ``cpu``: with ``quantize_moe_experts`` Axolotl places the whole model on CUDA
  device ``LOCAL_RANK`` (``loaders/model.py``, ``_set_device_map_config``), which a CPU lacks
  ("Cannot access accelerator device when none is available").
- ``lora_qkv_kernel`` / ``lora_o_kernel`` / ``lora_mlp_kernel: true`` -> ``false``: Axolotl's fused
  LoRA kernels load on CPU but their forward dequantizes on the current CUDA stream
  (``axolotl/kernels/quantize.py``, ``_stream``: ``torch._C._cuda_getCurrentRawStream``).
- ``deepspeed`` -> removed (multi-gpu): Axolotl starts DeepSpeed's NCCL process group while it
  loads the config (``utils/trainer.py``, ``setup_deepspeed_env``), and the twin is one process.
  ZeRO-2 does not change what a rank loads: the loader branches only on ZeRO-3
  (``loaders/model.py``, ``_set_device_map_config``), which mixft refuses.

Everything else stays, bf16 included: the tiny model loads in bf16 on CPU and runs under the
bf16 autocast that accelerate applies in training (:meth:`TwinLoad.forward`).

One more difference is not a config key: Axolotl's on-load expert quantization only acts on CUDA
tensors (``monkeypatch/moe_quant.py``, ``_patched_set_param_for_module``: ``param_value.is_cuda``).
The twin applies the same rule on CPU through mixft's :func:`~mixtral_ft.models.quant.quantize_experts_on_load`
(bitsandbytes' own ``replace_parameter_4bit``, nf4, double quantization, as Axolotl calls it) and
hands its count to Axolotl's ``get_moe_quantized_count``, so Axolotl's later decisions (the
``_moe_experts_quantized`` flag, skipping ``prepare_model_for_kbit_training``) follow as on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# attn_implementation values that need CUDA, and what the twin runs instead.
CUDA_ATTENTION = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
TWIN_ATTENTION = "sdpa"
LORA_KERNEL_KEYS = ("lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel")


@dataclass(frozen=True)
class Swap:
    """One setting the twin changes: the GPU value (None = absent), the CPU value (None = removed), why."""

    key: str
    gpu: Any
    cpu: Any
    why: str


def cpu_twin_config(values: dict[str, Any]) -> tuple[dict[str, Any], tuple[Swap, ...]]:
    """The CPU twin of a rendered GPU config and the swaps that make it; pure (``values`` is not changed).

    Only settings a CPU cannot run are swapped; a config that already runs on CPU (the ``cpu``
    profile) comes back unchanged with no swaps.
    """
    twin = copy.deepcopy(values)
    swaps: list[Swap] = []

    def swap(key: str, cpu: Any, why: str) -> None:
        swaps.append(Swap(key, values.get(key), cpu, why))
        if cpu is None:
            twin.pop(key, None)
        else:
            twin[key] = cpu

    attn = values.get("attn_implementation") or ("flash_attention_2" if values.get("flash_attention") else None)
    if attn in CUDA_ATTENTION:
        if values.get("flash_attention"):
            swap("flash_attention", None, "deprecated spelling of flash_attention_2 (Axolotl rewrites it)")
        swap("attn_implementation", TWIN_ATTENTION, "flash-attn is CUDA-only; transformers refuses to build without it")
    if values.get("device_map") not in ("cpu", {"": "cpu"}) and (
        values.get("quantize_moe_experts") or values.get("load_in_4bit")
    ):
        swap("device_map", "cpu", "Axolotl places a quantized model on CUDA device LOCAL_RANK")
    for key in LORA_KERNEL_KEYS:
        if values.get(key):
            swap(key, False, "Axolotl's fused LoRA kernels dequantize on a CUDA stream")
    if values.get("deepspeed"):
        swap("deepspeed", None, "DeepSpeed starts an NCCL process group; ZeRO-2 loads each rank as one GPU")
    return twin, tuple(swaps)


@dataclass
class TwinLoad:
    """A model loaded by Axolotl's own loader from the CPU twin of a GPU config."""

    gpu_values: dict[str, Any]  # the rendered GPU config: what the GPU run asks for
    twin_values: dict[str, Any]  # what the twin loaded
    swaps: tuple[Swap, ...]
    cfg: Any  # Axolotl's validated and normalized config of the twin (axolotl.utils.dict.DictDefault)
    model: Any  # what ModelLoader.load() returned (a PEFT model for LoRA/QLoRA)
    tokenizer: Any
    experts_quantized_on_load: list[str] = field(default_factory=list)

    def forward(self, input_ids, labels=None):
        """One forward pass in training mode, under the autocast accelerate applies for ``bf16``/``fp16``.

        Axolotl keeps the router in fp32 (``loaders/model.py``, ``_convert_embedding_modules_dtype``:
        ``.gate`` modules) while the rest is bf16, so outside autocast the router's matmul fails.
        """
        import torch

        dtype = torch.bfloat16 if self.cfg.bf16 else torch.float16 if self.cfg.fp16 else None
        self.model.train()
        ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            return self.model(input_ids=input_ids, labels=labels)


@contextlib.contextmanager
def _process_state_restored():
    """Axolotl's config loading and model loader set process-wide state (environment variables,
    torch matmul precision for tf32, its expert-quantization patch flag); undo it afterwards so one
    twin load does not change the next test."""
    import torch

    env = dict(os.environ)
    precision = torch.get_float32_matmul_precision()
    fp32 = getattr(torch.backends, "fp32_precision", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        torch.set_float32_matmul_precision(precision)
        if fp32 is not None:
            torch.backends.fp32_precision = fp32  # type: ignore[attr-defined]  # newer torch only (read by getattr)
        try:
            from axolotl.monkeypatch import moe_quant

            moe_quant._moe_load_state["patched"] = False  # its patch of transformers is undone below us
        except ImportError:
            pass


def load_twin(gpu_values: dict[str, Any], workdir: Path) -> TwinLoad:
    """Load ``gpu_values``' base model through Axolotl's ``load_cfg``, ``load_tokenizer`` and
    ``ModelLoader``, with the CPU twin's config. ``workdir`` receives the twin's YAML (and Axolotl's
    debug log under the config's ``output_dir``)."""
    from unittest import mock

    import yaml

    from mixtral_ft.models.quant import FourBitSpec, quantize_experts_on_load

    twin_values, swaps = cpu_twin_config(gpu_values)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "axolotl-twin.yml"
    path.write_text(yaml.safe_dump(twin_values, sort_keys=False), encoding="utf-8")
    with _process_state_restored():
        from axolotl.cli.config import load_cfg
        from axolotl.loaders import ModelLoader, load_tokenizer
        from axolotl.monkeypatch import moe_quant

        cfg = load_cfg(str(path))
        tokenizer = load_tokenizer(cfg)
        spec = FourBitSpec(
            quant_type=cfg.bnb_4bit_quant_type or "nf4", double_quant=cfg.bnb_4bit_use_double_quant is not False
        )
        quantize = quantize_experts_on_load(spec) if cfg.quantize_moe_experts else contextlib.nullcontext(None)
        with (
            quantize as counter,
            mock.patch.object(moe_quant, "get_moe_quantized_count", lambda: counter.count if counter else 0),
        ):
            model, _ = ModelLoader(cfg, tokenizer).load()
    return TwinLoad(
        gpu_values=gpu_values,
        twin_values=twin_values,
        swaps=swaps,
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        experts_quantized_on_load=list(counter.quantized) if counter else [],
    )
