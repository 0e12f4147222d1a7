"""How the loader stores every tensor: 4-bit or not, and in which dtype. Pure Python.

These are the loader's decisions, not a second opinion:

- which ``nn.Linear`` modules become bitsandbytes ``Linear4bit``: transformers' own
  ``replace_with_bnb_linear`` with ``get_modules_to_not_convert`` (applied to the meta model in
  :mod:`mixtral_ft.plan.model_build`), so the output head and tied weights stay unquantized;
- which fused expert tensors are 4-bit: :func:`mixtral_ft.models.quant.is_fused_expert`, the
  rule of Axolotl's ``quantize_moe_experts`` and of mixft's inference loader;
- the bitsandbytes settings: Axolotl's QLoRA ``BitsAndBytesConfig`` for training (nf4, double
  quantization, ``bnb_4bit_quant_storage=bfloat16``: ``axolotl/loaders/model.py`` ~801-810) and
  :class:`mixtral_ft.models.quant.FourBitSpec` for inference (uint8 storage); the experts use
  ``replace_parameter_4bit`` defaults (uint8 storage, blocksize 64);
- the dtype upcasts Axolotl applies after loading for training without FSDP
  (``_convert_embedding_modules_dtype``, ``axolotl/loaders/model.py`` ~435-450 and ~1152-1170):
  modules named ``*norm*`` and ``*.gate`` and the embeddings/head go to float32 (the embeddings
  stay in the load dtype with ``load_in_4bit`` + ``embeddings_skip_upcast``);
- PEFT's ``prepare_model_for_kbit_training`` (run by Axolotl for 4/8-bit adapters unless the MoE
  experts were quantized on load, ``axolotl/loaders/model.py`` ~1138-1151) casts every remaining
  16-bit parameter to float32 (``peft/utils/other.py`` ~198-202).

:func:`nf4_stored_bytes` is bitsandbytes' storage layout for one 4-bit tensor (packed data,
absmax, nested absmax, code tables), counted exactly as :func:`mixtral_ft.models.quant.stored_bytes`
counts a loaded model; ``tests/test_plan_weights.py`` checks the two agree on a real 4-bit load.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixtral_ft.models.quant import FourBitSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "uint8": 1, "int8": 1}
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


@dataclass(frozen=True)
class LoadDecisions:
    """The loader's storage decisions for one model load."""

    load_dtype: str  # the dtype from_pretrained loads in
    linear_4bit: bool  # nn.Linear -> bitsandbytes Linear4bit (transformers' rule)
    experts_4bit: bool  # fused 3-D expert tensors -> 4-bit (quant.is_fused_expert)
    spec: FourBitSpec = FourBitSpec()
    linear_storage: str = "uint8"  # bnb_4bit_quant_storage of the linears
    experts_storage: str = "uint8"  # replace_parameter_4bit's default
    upcast_norms_router_embeddings: bool = False  # Axolotl's _convert_embedding_modules_dtype
    skip_embedding_upcast: bool = False
    kbit_prepare_fp32: bool = False  # PEFT prepare_model_for_kbit_training's fp32 cast
    skip_modules: tuple[str, ...] = ()  # llm_int8_skip_modules

    def stored_dtype(self, name: str, dtype: str) -> str:
        """The dtype an unquantized tensor ends up in after the post-load casts."""
        if dtype not in ("bfloat16", "float16", "float32"):
            return dtype
        if self.upcast_norms_router_embeddings:
            module = name.rsplit(".", 1)[0] if "." in name else name
            if "norm" in module or module.endswith(".gate"):
                return "float32"
            if not self.skip_embedding_upcast and any(k in module for k in ("embed_tokens", "lm_head")):
                return "float32"
        if self.kbit_prepare_fp32:
            return "float32"
        return dtype


def training_decisions(setup) -> LoadDecisions:
    """The decisions Axolotl 0.19.0 makes for a training config (:class:`TrainSetup`)."""
    q4 = setup.adapter == "qlora" and setup.load_in_4bit
    experts = q4 and setup.quantize_moe_experts
    spec = FourBitSpec(compute_dtype=setup.compute_dtype)
    zero3 = setup.deepspeed_stage == 3
    return LoadDecisions(
        load_dtype=setup.compute_dtype,
        linear_4bit=q4,
        experts_4bit=experts,
        spec=spec,
        linear_storage="bfloat16" if q4 else "uint8",
        experts_storage="uint8",
        upcast_norms_router_embeddings=not zero3,
        skip_embedding_upcast=setup.load_in_4bit and setup.embeddings_skip_upcast,
        kbit_prepare_fp32=bool(setup.adapter) and (setup.load_in_4bit or setup.load_in_8bit) and not experts and not zero3,
    )


def inference_decisions(load_in_4bit: bool, dtype: str = "bfloat16") -> LoadDecisions:
    """mixft's hf backend: bf16 on CUDA; ``--load-in-4bit`` is FourBitSpec on the linears and the
    on-load expert hook (``models/quant.py``) on the fused experts."""
    return LoadDecisions(load_dtype=dtype, linear_4bit=load_in_4bit, experts_4bit=load_in_4bit,
                         spec=FourBitSpec(compute_dtype=dtype), linear_storage="uint8", experts_storage="uint8")
