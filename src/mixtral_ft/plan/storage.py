"""How the loader stores every tensor: 4-bit or not, and in which dtype. Pure Python.

These are the loaders' decisions, not a second opinion: Axolotl's QLoRA settings and its post-load dtype
casts for training (:func:`training_decisions`), mixft's hf backend for inference
(:func:`inference_decisions`), and bitsandbytes' storage layout of a 4-bit or 8-bit tensor. Each rule,
with the file and line it is read from: docs/design/quantization.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixtral_ft.models.quant import FourBitSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "uint8": 1, "int8": 1}
# Axolotl's embedding modules per model type (axolotl/loaders/utils.py, get_linear_embedding_layers).
EMBEDDING_MODULES = {
    "gpt_neox": ("embed_in", "embed_out"),
    "falcon": ("word_embeddings", "lm_head"),
    "nemotron_h": ("embeddings", "lm_head"),
    "bailing_hybrid": ("word_embeddings", "lm_head"),
}
DEFAULT_EMBEDDING_MODULES = ("embed_tokens", "lm_head")
NESTED_BLOCKSIZE = 256  # quantize_blockwise of the absmax (bitsandbytes functional.quantize_4bit)
DYNAMIC_CODE_BYTES = 256 * 4  # the 8-bit dynamic map of the nested absmax, float32
NF4_CODE_BYTES = 16 * 4  # the 16-entry NF4 code book, float32


def nf4_stored_bytes(numel: int, blocksize: int = 64, double_quant: bool = True, storage_bytes: int = 1) -> int:
    """Bytes of one tensor stored by ``bitsandbytes.functional.quantize_4bit`` (0.50.2).

    - packed data: two 4-bit values per byte, in ``quant_storage`` elements:
      ``(n + 1) // (2 * s)`` elements of ``s`` bytes (the op's fake impl, ``bitsandbytes/_ops.py``);
    - absmax: one per ``blocksize`` values, float32; with double quantization it is stored as
      uint8 plus a nested float32 absmax per 256 values, the 256-entry dynamic code and the
      float32 offset;
    - the NF4 code book (16 float32 values).
    """
    blocks = -(-numel // blocksize)
    packed = (numel + 1) // (2 * storage_bytes) * storage_bytes
    if double_quant:
        nested = -(-blocks // NESTED_BLOCKSIZE)
        stats = blocks + nested * 4 + DYNAMIC_CODE_BYTES + 4
    else:
        stats = blocks * 4
    return packed + stats + NF4_CODE_BYTES


def int8_stored_bytes(out_features: int, in_features: int) -> int:
    """Bytes of one ``Linear8bitLt`` weight after bitsandbytes quantizes it (``Int8Params._quantize``,
    ``bitsandbytes/nn/modules.py``): the int8 matrix (``CB``, kept as the weight's data) and one
    float32 absmax per output row (``SCB``)."""
    return out_features * in_features + 4 * out_features


def embedding_modules(model_type: str) -> tuple[str, ...]:
    return EMBEDDING_MODULES.get(model_type, DEFAULT_EMBEDDING_MODULES)


@dataclass(frozen=True)
class LoadDecisions:
    """The loader's storage decisions for one model load."""

    load_dtype: str  # the dtype from_pretrained loads in
    linear_4bit: bool  # nn.Linear -> bitsandbytes Linear4bit (transformers' rule)
    experts_4bit: bool  # fused 3-D expert tensors -> 4-bit (quant.is_fused_expert)
    spec: FourBitSpec = field(default_factory=FourBitSpec)
    linear_storage: str = "uint8"  # bnb_4bit_quant_storage of the linears
    experts_storage: str = "uint8"  # replace_parameter_4bit's default
    linear_8bit: bool = False  # nn.Linear -> bitsandbytes Linear8bitLt (load_in_8bit)
    upcast_norms_router_embeddings: bool = False  # Axolotl's first cast (step 1, docs/design/quantization.md)
    skip_embedding_upcast: bool = False  # load_in_4bit + embeddings_skip_upcast: no embedding module is cast
    kbit_prepare_fp32: bool = False  # PEFT prepare_model_for_kbit_training's fp32 cast (step 2)
    recast_norms_embeddings: bool = False  # Axolotl's cast back to the training dtype (step 3)
    recast_embeddings_only: bool = False  # TRL's cast back: embeddings and head only, the norms stay float32
    embedding_modules: tuple[str, ...] = DEFAULT_EMBEDDING_MODULES
    skip_modules: tuple[str, ...] = ()  # llm_int8_skip_modules

    def stored_dtype(self, name: str, dtype: str) -> str:
        """The dtype an unquantized tensor ends up in after the post-load casts, applied in Axolotl's order."""
        if dtype not in ("bfloat16", "float16", "float32"):
            return dtype
        module = name.rsplit(".", 1)[0] if "." in name else name
        norm = "norm" in module
        embedding = not self.skip_embedding_upcast and any(k in module for k in self.embedding_modules)
        if self.upcast_norms_router_embeddings and (norm or module.endswith(".gate") or embedding):
            dtype = "float32"
        if self.kbit_prepare_fp32 and dtype in ("bfloat16", "float16"):
            dtype = "float32"
        if self.recast_norms_embeddings and (norm or embedding):
            dtype = self.load_dtype
        if self.recast_embeddings_only and embedding and not norm:
            dtype = self.load_dtype
        return dtype


def training_decisions(setup, model_type: str = "") -> LoadDecisions:
    """The decisions Axolotl 0.21.0 makes for a training config (:class:`TrainSetup`) and model type; with
    ``setup.casts`` "peft" or "trl", the casts of those stacks instead of Axolotl's (``plan.setup.CASTS``)."""
    q4 = setup.adapter == "qlora" and setup.load_in_4bit
    q8 = bool(setup.adapter) and setup.load_in_8bit and not setup.load_in_4bit
    experts = q4 and setup.quantize_moe_experts
    spec = FourBitSpec(compute_dtype=setup.compute_dtype)
    zero3 = setup.deepspeed_stage == 3
    lora = setup.adapter in ("lora", "qlora")
    flash_cast = setup.attn_implementation not in ("eager", "sdpa")
    kbit_prepare = bool(lora) and (setup.load_in_4bit or setup.load_in_8bit) and not experts and not zero3
    if setup.casts in ("peft", "trl"):
        return LoadDecisions(
            load_dtype=setup.compute_dtype,
            linear_4bit=q4,
            experts_4bit=experts,
            spec=spec,
            linear_storage="uint8",  # BitsAndBytesConfig's default quant storage
            linear_8bit=q8,
            kbit_prepare_fp32=kbit_prepare,
            recast_embeddings_only=setup.casts == "trl" and q4 and setup.compute_dtype == "bfloat16",
            embedding_modules=embedding_modules(model_type),
        )
    return LoadDecisions(
        load_dtype=setup.compute_dtype,
        linear_4bit=q4,
        experts_4bit=experts,
        spec=spec,
        linear_storage="bfloat16" if q4 else "uint8",
        experts_storage="uint8",
        linear_8bit=q8,
        upcast_norms_router_embeddings=True,  # not under FSDP, which mixft does not run
        skip_embedding_upcast=setup.load_in_4bit and setup.embeddings_skip_upcast,
        kbit_prepare_fp32=kbit_prepare,
        recast_norms_embeddings=lora or flash_cast or setup.cut_cross_entropy,
        embedding_modules=embedding_modules(model_type),
    )


def inference_decisions(load_in_4bit: bool, dtype: str = "bfloat16") -> LoadDecisions:
    """mixft's hf backend: bf16 on CUDA; ``--load-in-4bit`` is FourBitSpec on the linears and the
    on-load expert hook (``models/quant.py``) on the fused experts."""
    return LoadDecisions(
        load_dtype=dtype,
        linear_4bit=load_in_4bit,
        experts_4bit=load_in_4bit,
        spec=FourBitSpec(compute_dtype=dtype),
        linear_storage="uint8",
        experts_storage="uint8",
    )
