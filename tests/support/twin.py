"""The CPU twin of a GPU training run: the exact rendered GPU config, minus only what a CPU cannot run.

A CUDA-only path is not "untested because there is no GPU": its *decisions* (which tensors are
4-bit, which modules carry LoRA, which attention and checkpointing mode the run asks for) are made
by Axolotl's own loader from the config, and a CPU can make them too. :func:`cpu_twin_config`
is the single list of differences; :func:`load_twin` loads a model through Axolotl's
``ModelLoader`` with that config, in-process, and returns it with Axolotl's normalized config.

The swap list (read in Axolotl 0.21.0 / transformers 5.20.1; the slow twin tests load each on a CPU):

- ``attn_implementation: flash_attention_2`` -> ``sdpa``: flash-attn is CUDA-only; without it
  transformers refuses to build the model (``modeling_utils.py:1512``, ``_flash_attn_import_error``,
  called from ``_flash_attn_can_dispatch``, ``:1578-1602``).
- ``device_map`` -> ``cpu``: with ``quantize_moe_experts`` Axolotl places the whole model on CUDA
  device ``LOCAL_RANK`` (``loaders/model.py:981-986``, ``_set_device_map_config``), which a CPU lacks
  ("Cannot access accelerator device when none is available").
- ``lora_qkv_kernel`` / ``lora_o_kernel`` / ``lora_mlp_kernel: true`` -> ``false``: Axolotl's fused
  LoRA kernels load on CPU but their forward dequantizes on the current CUDA stream
  (``axolotl/kernels/quantize.py:41-49``, ``_stream``: ``torch._C._cuda_getCurrentRawStream``). What the
  GPU run does with them before any forward, patching the attention class and every attention
  module, runs on CPU: :func:`gpu_lora_kernels` applies it to the loaded twin, as the GPU config asks.
- ``deepspeed`` -> removed (multi-gpu): Axolotl starts DeepSpeed's NCCL process group while it
  loads the config (``utils/trainer.py:625-636``, ``setup_deepspeed_env``), and the twin is one process.
  ZeRO-2 does not change what a rank loads: the loader branches only on ZeRO-3
  (``loaders/model.py:962-972``, ``_set_device_map_config``), which mixft refuses.

Everything else stays, bf16 included: the tiny model loads in bf16 on CPU and runs under the
bf16 autocast that accelerate applies in training (:meth:`TwinLoad.forward`).

One more difference is not a config key: Axolotl's on-load expert quantization only acts on CUDA
tensors (``monkeypatch/moe_quant.py:150-153``, ``_patched_set_param_for_module``: ``param_value.is_cuda``).
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


@dataclass
class KernelPatches:
    """What Axolotl's LoRA kernel patches did to a twin model (:func:`gpu_lora_kernels`)."""

    flags: dict[str, bool]  # lora_qkv_kernel / lora_o_kernel / lora_mlp_kernel as the GPU run has them
    attention_class: str | None  # the class patch_self_attn_lora rewrote (None: not called)
    class_forward_calls: tuple[str, ...]  # the apply_* methods the rewritten forward names
    modules: dict[str, dict[str, str]] = field(default_factory=dict)  # attention module -> apply_* -> function
    mlp_patched: list[str] = field(default_factory=list)  # MLP modules whose forward a kernel replaced
    kernel_inputs: dict[str, Any] = field(
        default_factory=dict
    )  # projection -> what get_lora_parameters hands the kernel


@contextlib.contextmanager
def gpu_lora_kernels(load: TwinLoad):
    """Apply Axolotl's LoRA kernel patches to the twin's model as the GPU run applies them, without a
    forward pass (the kernels' forward needs CUDA), and undo them on exit.

    Axolotl's patch manager, with the GPU config's flags: when ``lora_qkv_kernel`` or ``lora_o_kernel``,
    ``check_capability(..., "lora_kernels")`` then ``patch_self_attn_lora(cfg)``, which rewrites the
    attention class's forward to call ``self.apply_qkv``/``self.apply_o`` (``loaders/patch_manager.py:891``,
    ``_apply_self_attention_lora_patch``; ``monkeypatch/lora_kernels.py:254``, ``patch_self_attn_lora``);
    after loading, when any of the three flags, ``apply_lora_kernel_patches(model, cfg)``, which binds
    ``apply_lora_qkv``/``apply_lora_o`` on every attention module whose projections carry LoRA
    (``_apply_lora_kernel_patch``, ``:1264``; ``apply_lora_kernel_patches``, ``lora_kernels.py:476``). The record
    also holds what ``get_lora_parameters`` (``kernels/lora.py:110``) would hand the fused kernel for each projection.
    """
    from axolotl.kernels.lora import get_lora_parameters
    from axolotl.model_support import check_capability, get_model_support
    from axolotl.monkeypatch import lora_kernels
    from axolotl.utils.dict import DictDefault

    flags = {k: bool(load.gpu_values.get(k)) for k in LORA_KERNEL_KEYS}
    cfg = DictDefault({**load.cfg, **flags})
    attention_cls = lora_kernels.get_attention_cls_from_config(cfg)
    original_forward = attention_cls.forward
    layers = lora_kernels.get_layers(load.model)
    mlps = [m for layer in layers for *_, m in lora_kernels.find_mlp_in_layer(layer)]
    mlp_forwards = {id(m): m.__dict__.get("forward") for m in mlps}
    record = KernelPatches(flags=flags, attention_class=None, class_forward_calls=())
    try:
        if flags["lora_qkv_kernel"] or flags["lora_o_kernel"]:
            check_capability(get_model_support(cfg.model_config_type), "lora_kernels", cfg.model_config_type)
            lora_kernels.patch_self_attn_lora(cfg)
            record.attention_class = attention_cls.__name__
            names = attention_cls.forward.__code__.co_names  # the exec'd source has no file to read back
            record.class_forward_calls = tuple(m for m in ("apply_qkv", "apply_o") if m in names)
        if any(flags.values()):
            lora_kernels.apply_lora_kernel_patches(model=load.model, cfg=cfg)
        for name, module in load.model.named_modules():
            bound = {m: getattr(module, m).__func__.__name__ for m in ("apply_qkv", "apply_o") if hasattr(module, m)}
            if bound:
                record.modules[name] = bound
                for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    W, _b, quant, A, B, s, *_ = get_lora_parameters(getattr(module, proj))
                    record.kernel_inputs[f"{name}.{proj}"] = {
                        "weight": type(W).__name__,  # bitsandbytes' Params4bit: packed 4-bit values
                        "quant_state": type(quant).__name__ if quant is not None else None,
                        "lora_shapes": (tuple(A.shape), tuple(B.shape)) if A is not None else None,
                        "scale": s,
                    }
        record.mlp_patched = [
            n
            for n, m in load.model.named_modules()
            if id(m) in mlp_forwards and m.__dict__.get("forward") is not mlp_forwards[id(m)]
        ]
        yield record
    finally:
        attention_cls.forward = original_forward
        if hasattr(attention_cls, "_original_forward"):
            del attention_cls._original_forward
        for module in load.model.modules():
            for m in ("apply_qkv", "apply_o"):
                module.__dict__.pop(m, None)
        for m in mlps:
            if mlp_forwards[id(m)] is None:
                m.__dict__.pop("forward", None)
