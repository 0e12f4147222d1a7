"""The one loader for in-process inference: a base (or merged) model directory, optionally in
4-bit with its fused MoE experts quantized too, optionally with a PEFT LoRA adapter on top.

Every in-process load goes through :func:`load_for_inference` (the hf backend of ``generate`` and
``judge``; tests and benchmarks too), so the GPU and the CPU run the same code; its decisions are the
pure :func:`load_layout`. What is stored in 4-bit and why: docs/design/quantization.md.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixtral_ft.errors import MissingDependencyError, UsageError
from mixtral_ft.models.quant import FourBitSpec, quantization_record, quantize_experts_on_load

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

DEVICES = ("cuda", "cpu")


@dataclass(frozen=True)
class LoadLayout:
    """What a load asks transformers for; recorded in manifests (``identity()["load"]``)."""

    device: str
    dtype: str  # of every tensor not stored in 4-bit (embeddings, norms, lm_head; all of it without 4-bit)
    device_map: dict[str, int | str]
    four_bit: FourBitSpec | None = None  # None: no quantization

    @property
    def load_in_4bit(self) -> bool:
        return self.four_bit is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["load_in_4bit"] = self.load_in_4bit
        return d


def load_layout(device: str, load_in_4bit: bool) -> LoadLayout:
    """The load decisions for ``device`` ("cuda" or "cpu"); pure, so the CUDA layout is testable on CPU.

    - CUDA: everything on GPU 0 (``{"": 0}``: a 4-bit Mixtral-8x7B, ~25 GB, fits one card, and
      bitsandbytes quantizes tensors on the device they are placed on), bf16 for the tensors that
      stay 16-bit and as the 4-bit compute dtype (the dtype Axolotl trains the GPU profiles in).
    - CPU: ``{"": "cpu"}``, float32 for both. The CPU training profile trains in float32
      (``bf16: false``), many CPUs have no native bf16 matmul (PyTorch emulates it, slowly), and
      the tiny models the CPU runs are stored in float32. The 4-bit experts are dequantized to
      float32 when read (``Bnb4bitParametrization``); the 4-bit linears compute in float32 too,
      except on CPUs with AVX512-BF16, where bitsandbytes repacks them at the first no-grad
      forward for a fused kernel that computes in bf16 whatever the compute dtype
      (``bitsandbytes/nn/modules.py`` ``Linear4bit.forward``, ``backends/cpu/ops.py`` ``gemv_4bit``).
    """
    if device not in DEVICES:
        raise UsageError(f"Unknown device '{device}'. Available: {', '.join(DEVICES)}")
    dtype = "bfloat16" if device == "cuda" else "float32"
    device_map: dict[str, int | str] = {"": 0} if device == "cuda" else {"": "cpu"}
    return LoadLayout(
        device=device,
        dtype=dtype,
        device_map=device_map,
        four_bit=FourBitSpec(compute_dtype=dtype) if load_in_4bit else None,
    )


def default_device() -> str:
    """ "cuda" when a CUDA device is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def adapter_kind(path: Path) -> str:
    """'adapter' for a PEFT adapter directory, 'model' for a full (merged) model directory."""
    if (path / "adapter_config.json").exists():
        return "adapter"
    if (path / "config.json").exists():
        return "model"
    raise UsageError(f"{path}: not a PEFT adapter directory (no adapter_config.json)")


def check_adapter_dir(adapter: str | Path) -> Path:
    adapter_dir = Path(adapter)
    if not adapter_dir.is_dir():
        raise UsageError(f"--adapter {adapter_dir}: directory not found")
    if adapter_kind(adapter_dir) == "model":
        raise UsageError(
            f"--adapter {adapter_dir}: holds a full (merged) model, not a LoRA adapter; pass it as --model"
        )
    return adapter_dir


def lora_modules(model) -> list[str]:
    """Names of the modules that carry a LoRA adapter (PEFT ``LoraLayer``s), PEFT prefix removed."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    prefix = "base_model.model."
    names = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and not name.endswith(".base_layer"):
            names.append(name.removeprefix(prefix))
    return sorted(names)


@dataclass
class LoadedModel:
    """A model ready for ``generate``, with its tokenizer and what the load did."""

    model: Any
    tokenizer: Any
    layout: LoadLayout
    quantization: dict[str, int]  # models.quant.quantization_record of the loaded model
    lora_modules: list[str] = field(default_factory=list)


def load_for_inference(
    model: str, adapter: str | None = None, load_in_4bit: bool = False, device: str | None = None
) -> LoadedModel:
    """Load ``model`` (a local directory or hub id) for generation, per :func:`load_layout`.

    The tokenizer comes from the adapter directory when it holds one (Axolotl saves the
    tokenizer it trained with beside the adapter), else from ``model``.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise MissingDependencyError(
            "loading a model needs torch and transformers: pip install 'mixtral-ft[train]'"
        ) from e

    layout = load_layout(device or default_device(), load_in_4bit)
    adapter_dir = check_adapter_dir(adapter) if adapter else None
    tok_source = adapter_dir if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").exists() else model
    kwargs: dict[str, Any] = {"dtype": getattr(torch, layout.dtype), "device_map": layout.device_map}
    loaded: PreTrainedModel | PeftModel  # PeftModel: with an adapter
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_source))
        if layout.four_bit is not None:
            _check_bitsandbytes()
            kwargs["quantization_config"] = layout.four_bit.bnb_config()
            with quantize_experts_on_load(layout.four_bit):
                loaded = AutoModelForCausalLM.from_pretrained(model, **kwargs)
        else:
            loaded = AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except OSError as e:
        raise UsageError(f"--model {model}: cannot load the model: {e}".splitlines()[0]) from None
    if adapter_dir is not None:
        from peft import PeftModel

        if layout.load_in_4bit and adapter_targets_parameters(adapter_dir):
            _patch_peft_for_quantized_experts(adapter_dir)
        loaded = PeftModel.from_pretrained(loaded, str(adapter_dir))
        check_adapter_applied(loaded, adapter_dir)
    loaded.eval()
    return LoadedModel(
        model=loaded,
        tokenizer=tokenizer,
        layout=layout,
        quantization=quantization_record(loaded),
        lora_modules=lora_modules(loaded),
    )


def adapter_targets_parameters(adapter_dir: Path) -> list[str]:
    """The adapter's ``target_parameters`` (LoRA on raw parameters such as fused MoE experts)."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return list(cfg.get("target_parameters") or [])


def _patch_peft_for_quantized_experts(adapter_dir: Path) -> None:
    """LoRA on 4-bit experts: PEFT 0.21.2 alone matches a parametrized (4-bit) parameter only by its full
    name, not by the suffix an adapter saves (``peft/tuners/tuners_utils.py:1229-1241``), and drops those
    LoRA weights with only a warning (``:1104-1108``, "were set but no parameter was matched"). Axolotl
    trains such adapters with its PEFT patch (``axolotl/monkeypatch/moe_quant.py:192``,
    ``patch_peft_target_parameters_matching``), which wraps them in standard PEFT order; the same patch is
    applied here so inference sees what training saw."""
    try:
        from axolotl.monkeypatch.moe_quant import patch_peft_target_parameters_matching
    except ImportError:
        raise MissingDependencyError(
            f"--adapter {adapter_dir} adapts the MoE experts (target_parameters); loading it over 4-bit experts "
            "needs Axolotl's PEFT patch: pip install 'mixtral-ft[train]', or drop --load-in-4bit"
        ) from None
    patch_peft_target_parameters_matching()


def check_adapter_applied(model, adapter_dir: Path) -> None:
    """Every LoRA tensor saved in the adapter sits in the model: PEFT only warns when a target
    is not found, and generating without part of the adapter would be a silent wrong answer."""
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        return  # a .bin adapter: PEFT's own loading is all there is
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as fh:
        saved = {k.removesuffix(".weight") for k in fh.keys() if ".lora_A." in k or ".lora_B." in k}  # noqa: SIM118
    present = {
        n.replace(".default.", ".").removesuffix(".weight").removesuffix(".default")
        for n, _ in model.named_parameters()
        if ".lora_A." in n or ".lora_B." in n
    }
    missing = sorted(saved - present)
    if missing:
        raise UsageError(
            f"--adapter {adapter_dir}: {len(missing)} of {len(saved)} LoRA tensor(s) found no module in the model "
            f"(first: {missing[0]}); is this the adapter's base model?"
        )


def _check_bitsandbytes() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError("--load-in-4bit needs bitsandbytes: pip install 'mixtral-ft[train]'")
