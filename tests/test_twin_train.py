"""The CPU twin of every GPU profile x task (issue 10, item 10, training side).

Each GPU profile is rendered exactly as `mixft train` renders it (with the tiny Mixtral as base
model), then :func:`support.twin.cpu_twin_config` swaps only what a CPU cannot run (the
device map, flash attention -> sdpa, Axolotl's CUDA LoRA kernels, DeepSpeed's process group), and
Axolotl 0.19's own ``ModelLoader`` loads the model in-process. The tests assert the decisions the
GPU run makes from the same config: every expert tensor and every attention projection in 4-bit
(router, norms, embeddings and head not), LoRA on q/k/v/o only, flash_attention_2 asked for,
gradient checkpointing on with the mode the GPU run gets, sample packing with an attention that
packs. Only the CUDA kernels wait for a GPU (`make gpu-check`).

Expert quantization on CPU: Axolotl's ``quantize_moe_experts`` hook only touches CUDA tensors
(``monkeypatch/moe_quant.py``: ``param_value.is_cuda``). The twin applies the same rule through
mixft's ``quantize_experts_on_load`` (the shared 4-bit load plan, ``models/quant.py``: bitsandbytes'
``replace_parameter_4bit``, nf4, double quantization), and Axolotl's ``get_moe_quantized_count``
reads mixft's count, so Axolotl's own follow-up (``_moe_experts_quantized``, no
``prepare_model_for_kbit_training``) runs as on CUDA. Nothing else in Axolotl is patched.

The router auxiliary loss's gradient is measured by the gpu-models work (issue 10, item 5): its
assertion belongs here, on the same ``twin`` fixture (``twin.forward(ids, labels=ids)`` returns the
model output with ``aux_loss``), so it runs for every profile x task.

One load per profile x task (module-scoped fixture); about 5 s each after Axolotl's import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.twin import Swap, cpu_twin_config

GPU_PROFILES = ["a100-40gb", "a100-80gb", "h100-80gb", "multi-gpu"]
TASKS = ["rg", "tc"]
DATA = Path("/data/prepared")  # rendering and loading never read the data files
LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj"}


def _rendered(
    task: str,
    profile: str,
    base_model: str = "mistralai/Mixtral-8x7B-Instruct-v0.1",
    run_dir: Path = Path("/runs/twin"),
) -> dict:
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    return render(RenderRequest(task, DATA, profile, run_dir, base_model=base_model)).values


# --- the swap list: fast tier -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_twin_swaps_only_what_a_cpu_cannot_run(task, profile):
    gpu = _rendered(task, profile)
    before = repr(gpu)
    twin, swaps = cpu_twin_config(gpu)
    assert repr(gpu) == before  # pure
    expected = [
        ("attn_implementation", "flash_attention_2", "sdpa"),
        ("device_map", None, "cpu"),
        ("lora_qkv_kernel", True, False),
        ("lora_o_kernel", True, False),
    ]
    if profile == "multi-gpu":
        expected.append(("deepspeed", gpu["deepspeed"], None))
    assert [(s.key, s.gpu, s.cpu) for s in swaps] == expected
    assert all(isinstance(s, Swap) and s.why for s in swaps)
    swapped = {s.key for s in swaps}
    assert {k: v for k, v in twin.items() if k not in swapped} == {k: v for k, v in gpu.items() if k not in swapped}
    assert cpu_twin_config(twin)[1] == ()  # the twin already runs on CPU


def test_cpu_profile_needs_no_swap_and_legacy_flash_flag_is_swapped():
    assert cpu_twin_config(_rendered("rg", "cpu"))[1] == ()
    legacy = {"flash_attention": True, "adapter": "lora"}
    twin, swaps = cpu_twin_config(legacy)
    assert twin == {"attn_implementation": "sdpa", "adapter": "lora"}
    assert [s.key for s in swaps] == ["flash_attention", "attn_implementation"]


# --- Axolotl's loader on the twin: slow tier -----------------------------------------------------------------


@pytest.fixture(scope="module", params=[(t, p) for p in GPU_PROFILES for t in TASKS], ids=lambda tp: f"{tp[0]}-{tp[1]}")
def twin(request, tiny_mixtral_dir, tmp_path_factory):
    pytest.importorskip("axolotl")
    from support.twin import load_twin

    task, profile = request.param
    work = tmp_path_factory.mktemp(f"twin-{task}-{profile}")
    load = load_twin(_rendered(task, profile, base_model=str(tiny_mixtral_dir), run_dir=work), work)
    yield load
    del load.model


@pytest.mark.slow
def test_experts_and_attention_are_4bit_router_and_embeddings_are_not(twin):
    import torch

    from mixtral_ft.models.quant import expert_tensors, quantization_record

    # 2 layers x (gate_up_proj, down_proj) fused experts, 2 layers x q/k/v/o linears
    assert quantization_record(twin.model) == {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}
    assert all(is4 for _, is4 in expert_tensors(twin.model))
    assert len(twin.experts_quantized_on_load) == 4
    assert twin.model.get_base_model()._moe_experts_quantized is True  # Axolotl's own flag, as on CUDA
    params = dict(twin.model.named_parameters())
    routers = [n for n in params if n.endswith("mlp.gate.weight")]
    assert len(routers) == 2 and all(params[n].dtype == torch.float32 for n in routers)  # Axolotl upcasts .gate
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        full = next(n for n in params if n.endswith(name))
        assert params[full].dtype == torch.bfloat16 and params[full].ndim == 2 and params[full].shape[0] > 1


@pytest.mark.slow
def test_lora_on_the_attention_projections_only(twin):
    lora_modules = {n.rsplit(".lora_A", 1)[0] for n, _ in twin.model.named_parameters() if ".lora_A." in n}
    assert {m.rsplit(".", 1)[-1] for m in lora_modules} == LORA_TARGETS
    assert len(lora_modules) == 2 * len(LORA_TARGETS)
    trainable = [n for n, p in twin.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert twin.model.peft_config["default"].r == twin.gpu_values["lora_r"] == 32


@pytest.mark.slow
def test_flash_attention_asked_and_sdpa_in_the_twin(twin):
    assert twin.gpu_values["attn_implementation"] == "flash_attention_2"
    assert "flash_attention" not in twin.gpu_values  # Axolotl 0.19's key, not the deprecated flag
    assert twin.cfg.attn_implementation == "sdpa"
    assert twin.model.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_gradient_checkpointing_mode_is_the_one_the_gpu_run_gets(twin):
    """Axolotl's default is reentrant (utils/config/__init__.py: normalize_config) unless the config says otherwise."""
    expected = twin.gpu_values.get("gradient_checkpointing_kwargs") or {"use_reentrant": True}
    assert twin.gpu_values["gradient_checkpointing"] is True
    assert twin.cfg.gradient_checkpointing_kwargs == expected
    assert twin.model.is_gradient_checkpointing
    layers = [m for m in twin.model.modules() if type(m).__name__ == "MixtralDecoderLayer"]
    assert len(layers) == 2
    for layer in layers:
        assert layer.gradient_checkpointing is True
        assert layer._gradient_checkpointing_func.keywords == expected


@pytest.mark.slow
def test_sample_packing_with_an_attention_that_packs(twin):
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    from mixtral_ft.axolotl_cfg.validate import _quiet

    assert twin.cfg.sample_packing is True and twin.cfg.pad_to_sequence_len is True
    with _quiet():
        gpu = validate_config(DictDefault(dict(twin.gpu_values)))
    assert gpu.attn_implementation == "flash_attention_2" and gpu.attn_supports_packing is True


@pytest.mark.slow
def test_the_twin_trains_lora_through_4bit_experts(twin):
    import torch

    ids = twin.tokenizer("Context: The museum opens at 9 am.\nQuestion: When?\n", return_tensors="pt")["input_ids"]
    out = twin.forward(ids, labels=ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in twin.model.named_parameters() if ".lora_B." in n}
    assert len(grads) == 8 and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    twin.model.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_router_aux_loss_reaches_lora_under_the_checkpointing_the_gpu_run_gets(twin):
    """``output_router_logits`` with non-reentrant checkpointing (rg.yml/tc.yml): the aux loss is part
    of the graph and its gradient reaches the LoRA tensors. Under Axolotl's default reentrant mode it
    would be a constant (docs/training.md, "Router auxiliary loss"; scripts/measure_router_aux.py)."""
    import torch

    assert twin.gpu_values["model_config"]["output_router_logits"] is True
    assert twin.gpu_values["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    ids = twin.tokenizer("Context: The museum opens at 9 am.\nQuestion: When?\n", return_tensors="pt")["input_ids"]
    out = twin.forward(ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss.grad_fn is not None
    lora = [p for n, p in twin.model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    grads = torch.autograd.grad(out.aux_loss, lora, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    twin.model.zero_grad(set_to_none=True)
