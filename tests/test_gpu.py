"""GPU tier (`make test-gpu`, `make gpu-check`; never in CI): the CUDA-only settings of the shipped profiles take effect.

On a CPU machine every test here is skipped. On a GPU box:

- mixft's preflight leaves its own process without a CUDA context;
- the tiny Mixtral stored on CUDA through mixft's 4-bit plan (every expert 4-bit) trains a LoRA step;
- Axolotl's own on-load expert hook quantizes on CUDA;
- a real Axolotl run of the tiny Mixtral with a GPU profile (`mixft train --probe`): experts 4-bit
  through `quantize_moe_experts`, the LoRA kernels patched in, flash attention where flash-attn
  imports and sdpa otherwise (`bench.gpucheck.train_tiny`, which `make gpu-check` runs as its train part);
- the full-width model's memory per layer through `scripts/bench_train.py` (needs flash-attn; on a
  bare GPU machine `make gpu-check`'s step benchmark measures it instead).

`make gpu-check` runs this module without the last two (its own parts cover them); docs/design/gpu-check.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_profile() -> str:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    props = torch.cuda.get_device_properties(0)
    if props.total_memory < 75 * 2**30:
        return "a100-40gb"
    return "h100-80gb" if "H100" in props.name or "H200" in props.name else "a100-80gb"


# mixft's preflight in a fresh process: check_gpus, the free memory, the memory plan (when peft is
# there); then whether that process holds a CUDA context (it must not: Axolotl's ranks need the cards).
_PREFLIGHT_CHILD = """
import importlib.util, json, sys, torch
from mixtral_ft.axolotl_cfg.keys import snapshot_keys
from mixtral_ft.axolotl_cfg.render import RenderRequest, render
from mixtral_ft.plan.check import PlanRefused, free_gpu_memory_gib, preflight_training
from mixtral_ft.train.preflight import check_gpus
profile = sys.argv[1]
check_gpus(profile, 1)
free = free_gpu_memory_gib(0)
if importlib.util.find_spec("peft") and importlib.util.find_spec("bitsandbytes"):
    req = RenderRequest(task="rg", data_dir="/data/prepared", profile=profile, run_dir="/runs/plan")
    try:
        preflight_training(render(req, keys=snapshot_keys()).values, profile, 1, 1)
    except PlanRefused:
        pass  # refused after reading the card: the process must still hold no context
print(json.dumps({"initialized": torch.cuda.is_initialized(), "free_gib": free}))
"""


def test_preflight_leaves_no_cuda_context_in_mixfts_process(gpu_profile):
    import os

    import torch

    # src first, then what the environment has (make gpu-check puts the wheelhouse there)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    env.pop("MIXFT_PLAN_FREE_GIB", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PREFLIGHT_CHILD, gpu_profile],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["initialized"] is False
    free, _total = torch.cuda.mem_get_info(0)  # this process has a context: it sees a little less
    assert got["free_gib"] is not None and abs(got["free_gib"] - free / 2**30) < 2.0, got


def test_4bit_plan_on_cuda_quantizes_every_expert_and_trains_lora(gpu_profile, tiny_mixtral_dir):
    """No Axolotl needed: the tiny Mixtral stored on the GPU as a QLoRA run stores it, one optimizer step."""
    import torch

    from bench.stepbench import add_lora, load_4bit_model, measure_case, render_cases
    from mixtral_ft.models.quant import quantization_record

    case = render_cases([("rg", gpu_profile)], overrides=("sequence_len=256",))[0]
    model, quantized = load_4bit_model(tiny_mixtral_dir, "cuda:0", "sdpa")
    assert len(quantized) == 4
    assert quantization_record(model) == {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}
    experts = model.model.layers[0].mlp.experts
    assert experts.parametrizations.gate_up_proj.original.device.type == "cuda"
    assert experts.parametrizations.gate_up_proj.original.dtype == torch.uint8
    model = add_lora(model, case)
    row = measure_case(model, case, "cuda", steps=2, warmup=1)
    assert row["ok"] and row["peak_gib"] > 0 and torch.isfinite(torch.tensor(row["loss"]))


def test_axolotl_expert_hook_quantizes_on_cuda(gpu_profile, tiny_mixtral_dir):
    """What the CPU twin emulates: Axolotl's own on-load hook, which acts on CUDA tensors only."""
    pytest.importorskip("axolotl")
    import torch
    from axolotl.monkeypatch import moe_quant
    from axolotl.utils.dict import DictDefault
    from transformers import AutoModelForCausalLM

    from mixtral_ft.models.quant import FourBitSpec, quantization_record

    moe_quant.patch_moe_quantization_on_load(DictDefault({"load_in_4bit": True}))
    model = AutoModelForCausalLM.from_pretrained(
        tiny_mixtral_dir, quantization_config=FourBitSpec().bnb_config(), device_map={"": 0}, dtype=torch.bfloat16
    )
    assert moe_quant.get_moe_quantized_count() == 4
    assert quantization_record(model) == {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}


def test_tiny_mixtral_trains_with_gpu_profile_settings_in_effect(gpu_profile, tmp_path):
    """The GPU profile's settings take effect in a real run; without flash-attn the run asks for sdpa."""
    pytest.importorskip("axolotl")
    from bench.gpucheck import TINY_EXPERT_TENSORS, TINY_LINEARS, ensure_inputs, train_problems, train_tiny

    model_dir, data = ensure_inputs(REPO, tmp_path)
    try:
        import flash_attn  # noqa: F401

        attention = None  # the profile's flash_attention_2
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        attention = "sdpa"
    row = train_tiny(model_dir, data, tmp_path / "gpu-run", gpu_profile, attention)
    assert row["exit_status"] == 0, row.get("output_tail")
    assert train_problems(row, "cuda") == []
    model = row["probe_model"]
    assert (
        model["attn_implementation"].startswith("flash_attention")
        if attention is None
        else model["attn_implementation"] == "sdpa"
    )
    assert model["quantized_expert_tensors"] == TINY_EXPERT_TENSORS and model["unquantized_expert_tensors"] == 0
    assert model["linear_4bit_modules"] == TINY_LINEARS and model["gradient_checkpointing"] is True
    assert row["probe_device"]["type"] == "cuda" and row["lora_kernel_lines"]
    assert row["probe_summary"]["planned"] is not None  # preflight planned the run; the probe compares
    assert row["mixft_held_cuda"] is not True  # None: nvidia-smi listed no process to tell


def test_full_width_layers_memory_per_layer(gpu_profile, tmp_path):
    """Mixtral-8x7B widths at 1 and 2 layers: 4-bit experts cost ~0.7 GiB a layer (bf16 would be 2.6)."""
    pytest.importorskip("axolotl")
    pytest.importorskip("flash_attn")
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_train.py"),
            "--width",
            "full",
            "--profile",
            gpu_profile,
            "--layers",
            "1,2",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    for r in results["rows"]:
        assert r["ok"] and r["flash_attention_in_effect"], r
        assert r["experts_quantized"] == 2 * r["layers"] and r["experts_unquantized"] == 0, r
        assert r["warnings"] == [], r
    fit = results["fits"][gpu_profile]["peak_gib"]
    assert 0.3 < fit["per_layer"] < 1.5, fit
    if gpu_profile != "a100-40gb":
        assert fit["value_at"] < 78, fit  # the report's run fits one 80 GB GPU
