"""What a rendered Axolotl config decides about memory and time, read once into typed fields.

A key the config leaves out is read as Axolotl 0.21.0's default (cited at ``setup_from_config``),
so it is planned as Axolotl would run it, not as ``None``. Pure Python: no torch, no Axolotl import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mixtral_ft.errors import ConfigError

# Axolotl's Cut Cross Entropy plugin (axolotl/integrations/cut_cross_entropy): the loss from the
# hidden states and the head's weight, chunk by chunk, without the logits tensor.
CCE_PLUGIN = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"

# The dtype casts a training stack applies after loading, for the Python API's ``casts`` (mixft trains
# through Axolotl: "axolotl"). "peft": PEFT's prepare_model_for_kbit_training alone (every 16-bit tensor
# that is not quantized goes to float32: norms, embeddings, head); "trl": TRL's SFTTrainer (<= 0.12) for a
# 4-bit model: that, then peft_module_casting_to_bf16 (norms float32, embeddings and head back to bf16).
CASTS = ("axolotl", "peft", "trl")

# Attention implementations the planner knows, by the name transformers uses.
# Hub kernels are named org/name[@revision][:function] (transformers' hub_kernels.is_kernel); the name decides.
FLASH_LIKE = (
    "flash_attention_2",
    "flash_attention_3",
    "kernels-community/flash-attn",
    "kernels-community/flash-attn2",
    "kernels-community/flash-attn3",
    "kernels-community/vllm-flash-attn3",
)


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    target_linear: bool = False
    target_parameters: tuple[str, ...] = ()
    modules_to_save: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainSetup:
    """The memory- and time-relevant settings of one training config."""

    base_model: str
    model_config_overrides: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = "qlora"
    load_in_4bit: bool = True
    load_in_8bit: bool = False
    quantize_moe_experts: bool = False
    lora: LoraSpec | None = None
    compute_dtype: str = "bfloat16"  # the dtype the model is loaded in and autocast runs in
    mixed_precision: bool = True  # Trainer autocast (bf16/fp16 set)
    embeddings_skip_upcast: bool = False
    gradient_checkpointing: bool | str = True  # True, False, "offload", "offload_disk"
    use_reentrant: bool = True
    attn_implementation: str = "flash_attention_2"
    experts_implementation: str | None = None
    sequence_len: int = 4096
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    sample_packing: bool = False
    pad_to_sequence_len: bool = False
    num_epochs: float = 1.0
    max_steps: int | None = None
    optimizer: str = "adamw_torch"
    deepspeed_stage: int | None = None
    deepspeed_config: str | None = None  # the JSON file's path
    world_size: int = 1
    lora_qkv_kernel: bool = False
    lora_o_kernel: bool = False
    lora_mlp_kernel: bool = False
    excess_length_strategy: str = "drop"
    cut_cross_entropy: bool = False  # the CCE plugin is loaded and cut_cross_entropy is not false
    casts: str = "axolotl"  # whose dtype casts follow the load: one of CASTS

    @property
    def tokens_per_micro_batch(self) -> int:
        """Token slots in one micro batch at the longest: what memory is planned for."""
        return self.micro_batch_size * self.sequence_len

    @property
    def checkpointing_mode(self) -> str:
        """``none``, ``reentrant``, ``non-reentrant`` or ``offload``."""
        if not self.gradient_checkpointing:
            return "none"
        if isinstance(self.gradient_checkpointing, str):
            return "offload"
        return "reentrant" if self.use_reentrant else "non-reentrant"

    @property
    def attention_kind(self) -> str:
        """``flash`` (O(T) memory kernels), ``sdpa`` or ``eager``."""
        name = self.attn_implementation.split(":", 1)[0].split("@", 1)[0]
        if name in FLASH_LIKE or name.startswith("flash"):
            return "flash"
        if self.attn_implementation == "sdpa":
            return "sdpa"
        return "eager"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bool(v: Any) -> bool:
    return bool(v) and v != "false"


def _attention(cfg: dict[str, Any]) -> str:
    """Axolotl 0.21 rewrites the deprecated flags into ``attn_implementation``
    (``utils/schemas/config.py:1643-1692``, ``utils/schemas/enums.py:127-135``): flash_attention ->
    flash_attention_2, sdp_attention -> sdpa, eager_attention -> eager; with none set transformers picks sdpa."""
    impl = cfg.get("attn_implementation")
    if impl:
        return str(impl)
    if _bool(cfg.get("flash_attention")):
        return "flash_attention_2"
    if _bool(cfg.get("sdp_attention")):
        return "sdpa"
    if _bool(cfg.get("eager_attention")):
        return "eager"
    return "sdpa"


def _compute_dtype(cfg: dict[str, Any], on_gpu: bool) -> tuple[str, bool]:
    """(load dtype, autocast on). ``bf16: auto`` is bf16 on a GPU (every GPU in the table has bf16)."""
    bf16, fp16 = cfg.get("bf16"), cfg.get("fp16")
    if bf16 is True or (bf16 == "auto" and on_gpu):
        return "bfloat16", True
    if fp16 is True:
        return "float16", True
    return "float32", False


def _deepspeed_stage(value: Any) -> int | None:
    if not value:
        return None
    text = str(value).lower()
    for stage in (3, 2, 1):
        if f"zero{stage}" in text or f"zero_{stage}" in text or f"stage{stage}" in text:
            return stage
    return 2


def _cut_cross_entropy(cfg: dict[str, Any]) -> bool:
    """Axolotl runs CCE when its plugin is listed under ``plugins``; the plugin's own key
    ``cut_cross_entropy`` defaults to true (``integrations/cut_cross_entropy/args.py``, ``CutCrossEntropyArgs``)."""
    plugins = cfg.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    return CCE_PLUGIN in plugins and cfg.get("cut_cross_entropy") is not False


def setup_from_config(
    cfg: dict[str, Any], world_size: int = 1, on_gpu: bool = True, casts: str = "axolotl"
) -> TrainSetup:
    """Read a rendered config (``RenderedConfig.values``). Raises ``ConfigError`` for what cannot be planned.
    ``casts``: the stack's post-load dtype casts (:data:`CASTS`; mixft's own runs are Axolotl's).

    Axolotl 0.21.0's defaults for what is left out: ``sequence_len`` 512 (``utils/schemas/config.py:706-711``),
    ``excess_length_strategy`` drop (``utils/data/utils.py:347``), ``micro_batch_size`` and
    ``gradient_accumulation_steps`` 1 (``utils/schemas/training.py:111-119``), ``num_epochs`` 1
    (``training.py:307``), ``optimizer`` adamw_torch_fused (``training.py:162-165``), ``lora_dropout`` 0
    (``utils/schemas/peft.py:96``). ``lora_r``, which Axolotl leaves unset, is PEFT's 8
    (``peft/tuners/lora/config.py:632``); ``lora_alpha`` (16 when unset) changes no memory."""
    if casts not in CASTS:
        raise ConfigError(f"casts: {casts!r} is not one of {', '.join(CASTS)}")
    base = cfg.get("base_model")
    if not base:
        raise ConfigError("base_model: missing; the planner needs the model to plan for")
    adapter = cfg.get("adapter")
    lora = None
    if adapter in ("lora", "qlora"):
        targets = cfg.get("lora_target_modules") or []
        if isinstance(targets, str):
            targets = [targets]
        params = cfg.get("lora_target_parameters") or []
        if isinstance(params, str):
            params = [params]
        lora = LoraSpec(
            r=int(cfg.get("lora_r") or 8),
            alpha=float(cfg.get("lora_alpha") or 16),
            dropout=float(cfg.get("lora_dropout") or 0.0),
            target_modules=tuple(str(t) for t in targets),
            target_linear=_bool(cfg.get("lora_target_linear")),
            target_parameters=tuple(str(p) for p in params),
            modules_to_save=tuple(str(m) for m in (cfg.get("lora_modules_to_save") or [])),
        )
        if not lora.target_modules and not lora.target_linear and not lora.target_parameters:
            raise ConfigError("lora_target_modules: empty; the adapter would train nothing")
    elif adapter:
        raise ConfigError(f"adapter: {adapter!r} is not planned (lora and qlora are)")
    dtype, autocast = _compute_dtype(cfg, on_gpu)
    gc = cfg.get("gradient_checkpointing")
    gc_kwargs = cfg.get("gradient_checkpointing_kwargs") or {}
    deepspeed_stage = _deepspeed_stage(cfg.get("deepspeed"))
    # Axolotl 0.21's default when gradient checkpointing is on and no use_reentrant is given: non-reentrant,
    # reentrant under ZeRO-3 (axolotl/utils/config/__init__.py:470-483, normalize_config).
    use_reentrant = bool(gc_kwargs.get("use_reentrant", deepspeed_stage == 3)) if gc else False
    model_config = cfg.get("model_config") or cfg.get("overrides_of_model_config") or {}
    return TrainSetup(
        base_model=str(base),
        model_config_overrides=dict(model_config),
        adapter=adapter,
        load_in_4bit=_bool(cfg.get("load_in_4bit")),
        load_in_8bit=_bool(cfg.get("load_in_8bit")),
        quantize_moe_experts=_bool(cfg.get("quantize_moe_experts")),
        lora=lora,
        compute_dtype=dtype,
        mixed_precision=autocast,
        embeddings_skip_upcast=_bool(cfg.get("embeddings_skip_upcast")),
        gradient_checkpointing=gc if isinstance(gc, str) else bool(gc),
        use_reentrant=use_reentrant,
        attn_implementation=_attention(cfg),
        experts_implementation=cfg.get("experts_implementation"),
        sequence_len=int(cfg.get("sequence_len") or 512),
        micro_batch_size=int(cfg.get("micro_batch_size") or 1),
        gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps") or 1),
        sample_packing=_bool(cfg.get("sample_packing")),
        pad_to_sequence_len=_bool(cfg.get("pad_to_sequence_len")),
        num_epochs=float(cfg.get("num_epochs") or 1),
        max_steps=int(cfg["max_steps"]) if cfg.get("max_steps") else None,
        optimizer=str(cfg.get("optimizer") or "adamw_torch_fused"),
        deepspeed_stage=deepspeed_stage,
        deepspeed_config=str(cfg["deepspeed"]) if cfg.get("deepspeed") else None,
        world_size=max(1, int(world_size)),
        lora_qkv_kernel=_bool(cfg.get("lora_qkv_kernel")),
        lora_o_kernel=_bool(cfg.get("lora_o_kernel")),
        lora_mlp_kernel=_bool(cfg.get("lora_mlp_kernel")),
        excess_length_strategy=str(cfg.get("excess_length_strategy") or "drop"),
        cut_cross_entropy=_cut_cross_entropy(cfg),
        casts=casts,
    )
