"""The real model class of the base model, built without weights, with the loader's decisions.

:func:`build_meta_model` builds it on the meta device with transformers' own 4-bit module swap;
:func:`inventory` lists every tensor the loaded model will hold with its stored bytes;
:func:`materialize` turns it into ``FakeTensor``s (or real tensors, for the tests) on the CPU, quantized
with bitsandbytes' own ops, for the memory simulator (:mod:`mixtral_ft.plan.sim`).
docs/design/quantization.md says what is stored how.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from mixtral_ft.models.quant import is_fused_expert
from mixtral_ft.plan.arch import ModelArch, to_transformers_config
from mixtral_ft.plan.storage import DTYPE_BYTES, LoadDecisions, int8_stored_bytes, nf4_stored_bytes

PARTS = ("experts", "attention", "mlp", "embeddings_head", "other")


def part_of(name: str) -> str:
    """Which part of the model a tensor belongs to (for the plan's table)."""
    low = name.lower()
    if "expert" in low:
        return "experts"
    if any(k in low for k in (".self_attn.", ".attention.", ".attn.", ".self_attention.")):
        return "attention"
    if any(k in low for k in ("embed_tokens", "lm_head", "wte", "embed_out", "word_embeddings")):
        return "embeddings_head"
    if ".mlp." in low or ".feed_forward." in low:
        if low.endswith(".gate.weight") or ".router" in low:
            return "other"
        return "mlp"
    return "other"


@dataclass
class TensorRecord:
    name: str
    shape: tuple[int, ...]
    dtype: str  # stored dtype ("nf4" for 4-bit)
    part: str
    quantized: bool
    bytes: int
    is_buffer: bool = False


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def build_meta_model(
    arch: ModelArch,
    decisions: LoadDecisions,
    overrides: dict[str, Any] | None = None,
    attn_implementation: str = "eager",
):
    """The model on the meta device with the loader's ``Linear4bit`` swap applied (imports torch)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = to_transformers_config(arch, overrides)
    dtype = getattr(torch, decisions.load_dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    if decisions.linear_4bit or decisions.linear_8bit:
        from transformers import BitsAndBytesConfig
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear
        from transformers.quantizers.base import HfQuantizer

        if decisions.linear_8bit:  # transformers' defaults for load_in_8bit (threshold 6.0, int8 weights)
            bnb = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(decisions.skip_modules) or None)
        else:
            bnb = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=decisions.spec.quant_type,
                bnb_4bit_use_double_quant=decisions.spec.double_quant,
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_quant_storage=getattr(torch, decisions.linear_storage),
                llm_int8_skip_modules=list(decisions.skip_modules) or None,
            )
        skip = HfQuantizer.get_modules_to_not_convert(model, bnb.llm_int8_skip_modules, model._keep_in_fp32_modules)
        model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=bnb)
        # What from_pretrained sets; PEFT picks its 4-bit / 8-bit LoRA layer by it.
        if decisions.linear_8bit:
            model.is_loaded_in_8bit = True
        else:
            model.is_loaded_in_4bit = True
    return model


def _linear4bit_class():
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    return bnb.nn.Linear4bit


def _linear8bit_class():
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    return bnb.nn.Linear8bitLt


def inventory(model, decisions: LoadDecisions) -> list[TensorRecord]:
    """Every parameter and buffer of a meta model built by :func:`build_meta_model`, as stored."""
    lin4, lin8 = _linear4bit_class(), _linear8bit_class()
    spec = decisions.spec
    records: list[TensorRecord] = []
    four_bit_weights: dict[str, tuple[int, int]] = {}
    eight_bit_weights: dict[str, tuple[int, int]] = {}
    for mod_name, module in model.named_modules():
        if lin4 is not None and isinstance(module, lin4):
            four_bit_weights[f"{mod_name}.weight"] = (module.out_features, module.in_features)
        elif lin8 is not None and isinstance(module, lin8):
            eight_bit_weights[f"{mod_name}.weight"] = (module.out_features, module.in_features)
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if name in eight_bit_weights:
            shape = eight_bit_weights[name]
            records.append(TensorRecord(name, shape, "int8", part_of(name), True, int8_stored_bytes(*shape)))
            continue
        if name in four_bit_weights:
            shape = four_bit_weights[name]
            n = shape[0] * shape[1]
            nbytes = nf4_stored_bytes(n, spec.blocksize, spec.double_quant, DTYPE_BYTES[decisions.linear_storage])
            records.append(TensorRecord(name, shape, spec.quant_type, part_of(name), True, nbytes))
            continue
        if decisions.experts_4bit and is_fused_expert(name, p.ndim):
            nbytes = nf4_stored_bytes(
                p.numel(), spec.blocksize, spec.double_quant, DTYPE_BYTES[decisions.experts_storage]
            )
            records.append(TensorRecord(name, shape, spec.quant_type, part_of(name), True, nbytes))
            continue
        dtype = decisions.stored_dtype(name, _dtype_name(p.dtype))
        records.append(TensorRecord(name, shape, dtype, part_of(name), False, p.numel() * DTYPE_BYTES[dtype]))
    for name, b in model.named_buffers():
        dtype = _dtype_name(b.dtype)
        records.append(
            TensorRecord(
                name, tuple(b.shape), dtype, part_of(name), False, b.numel() * b.element_size(), is_buffer=True
            )
        )
    return records


def _linear4bit_weight(module, dense, decisions: LoadDecisions):
    """A ``Linear4bit`` weight as bitsandbytes stores it: ``dense`` quantized by ``quantize_4bit`` (its fake
    kernel gives the real packed/absmax shapes), kept as a plain parameter carrying its ``quant_state``
    and the attributes of a ``Params4bit`` (which cannot wrap a FakeTensor)."""
    import bitsandbytes.functional as bf
    import torch

    spec = decisions.spec
    storage = getattr(torch, decisions.linear_storage)
    packed, state = bf.quantize_4bit(
        dense,
        blocksize=spec.blocksize,
        compress_statistics=spec.double_quant,
        quant_type=spec.quant_type,
        quant_storage=storage,
    )
    param = torch.nn.Parameter(packed, requires_grad=False)
    params4bit = {
        "quant_state": state,
        "quant_type": spec.quant_type,
        "blocksize": spec.blocksize,
        "compress_statistics": spec.double_quant,
        "quant_storage": storage,
        "bnb_quantized": True,
        "module": module,
    }
    for attr, value in params4bit.items():
        setattr(param, attr, value)
    return param


def _linear8bit_weight(module, new, real_values):
    """What ``Int8Params`` keeps after quantizing on the GPU: the int8 matrix as the weight's data (also
    ``state.CB``) and a float32 absmax per output row (``state.SCB``); sets the module's state."""
    import torch

    cb = torch.zeros(module.out_features, module.in_features, dtype=torch.int8)
    if real_values is not None:
        cb = torch.randint(-127, 128, cb.shape, generator=real_values, dtype=torch.int8)
    param = torch.nn.Parameter(cb, requires_grad=False)
    for attr in ("CB", "SCB"):  # Int8Params after init_8bit_state moved them to the state
        setattr(param, attr, None)
    module.state.CB = param.data
    module.state.SCB = new((module.out_features,), torch.float32).abs() + 1.0
    module.state.has_fp16_weights = False
    return param


def _set_compute_dtype(model, load_dtype) -> None:
    lin4 = _linear4bit_class()
    for module in model.modules():
        if lin4 is not None and isinstance(module, lin4):
            module.compute_dtype = load_dtype
            module.compute_type_is_set = True
            # bitsandbytes repacks 4-bit weights for AVX512 CPUs on the first inference forward
            # (Linear4bit.forward, _convert_weight_packed_for_cpu); CUDA has no such step.
            module.support_avx512bf16_for_cpu = False


def materialize(model, decisions: LoadDecisions, fake_mode=None, seed: int = 0):
    """Replace every meta tensor of ``model`` by a CPU tensor stored as the loader would store it:
    a ``FakeTensor`` (shape, dtype and storage, no data) under ``fake_mode``, or with ``fake_mode=None``
    a real one (small random values), so the same model can be checked against a real run.

    Linear4bit weights are quantized by ``bitsandbytes.functional.quantize_4bit``
    (:func:`_linear4bit_weight`); Linear8bitLt weights are stored as ``Int8Params`` keeps them
    (:func:`_linear8bit_weight`); fused experts go through bitsandbytes' ``replace_parameter_4bit``
    exactly as the on-load hooks call it.
    """
    import bitsandbytes.functional as bf
    import torch
    from bitsandbytes.nn.parametrize import replace_parameter_4bit

    lin4, lin8 = _linear4bit_class(), _linear8bit_class()
    spec = decisions.spec
    bf.quantize_blockwise(torch.ones(NESTED_WARMUP))  # builds the dynamic code map outside fake mode
    load_dtype = getattr(torch, decisions.load_dtype)
    gen = torch.Generator().manual_seed(seed)

    def new(shape, dtype):
        if fake_mode is not None:
            return torch.empty(shape, dtype=dtype)
        if dtype.is_floating_point:
            return (torch.randn(shape, generator=gen) * 0.02).to(dtype)
        return torch.zeros(shape, dtype=dtype)

    with fake_mode if fake_mode is not None else contextlib.nullcontext():
        for mod_name, module in list(model.named_modules()):
            for pname, p in list(module.named_parameters(recurse=False)):
                full = f"{mod_name}.{pname}" if mod_name else pname
                if lin4 is not None and isinstance(module, lin4) and pname == "weight":
                    dense = new((module.out_features, module.in_features), load_dtype)
                    module._parameters[pname] = _linear4bit_weight(module, dense, decisions)
                elif lin8 is not None and isinstance(module, lin8) and pname == "weight":
                    module._parameters[pname] = _linear8bit_weight(module, new, None if fake_mode else gen)
                elif decisions.experts_4bit and is_fused_expert(full, p.ndim):
                    module._parameters[pname] = torch.nn.Parameter(new(p.shape, load_dtype), requires_grad=False)
                    replace_parameter_4bit(
                        module, pname, compress_statistics=spec.double_quant, quant_type=spec.quant_type
                    )
                else:
                    dtype = getattr(torch, decisions.stored_dtype(full, _dtype_name(p.dtype)))
                    module._parameters[pname] = torch.nn.Parameter(new(p.shape, dtype), requires_grad=p.requires_grad)
            for bname, b in list(module.named_buffers(recurse=False)):
                # Values do not change memory; zeros keep a real run finite (rotary: cos 1, sin 0).
                module._buffers[bname] = torch.zeros(b.shape, dtype=b.dtype)
    _set_compute_dtype(model, load_dtype)
    return model


def materialize_fake(model, decisions: LoadDecisions, fake_mode):
    """:func:`materialize` with FakeTensors."""
    return materialize(model, decisions, fake_mode)


NESTED_WARMUP = 256
