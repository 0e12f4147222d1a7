"""GPU tier (`make test-gpu`, `make gpu-check`; never in CI): the CUDA-only settings of the shipped profiles take effect.

On a CPU machine every test here is skipped. On a GPU box with Axolotl they run real Axolotl
training with the GPU profiles and read back, through `--probe`, that the Mixtral experts were
quantized to 4-bit (`quantize_moe_experts`), that flash attention was used, and how memory grows
per layer. On a lent GPU machine without Axolotl (`make gpu-check`: its wheels do not fit the
64 MiB a call carries) those skip, and the Axolotl-free tests check the same 4-bit decisions
through mixft's load plan and peft, the ones the CPU twin (tests/test_twin_train.py) emulates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.fixtures_models import run_mixft

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


def test_tiny_mixtral_trains_with_gpu_profile_settings_in_effect(
    gpu_profile, tiny_mixtral_dir, rg_data_dir, tmp_path, capsys
):
    pytest.importorskip("axolotl")
    pytest.importorskip("flash_attn")  # the GPU profiles ask for flash_attention_2; preflight refuses without it
    run = tmp_path / "gpu-run"
    rc = run_mixft(
        [
            "train",
            "rg",
            "--data",
            str(rg_data_dir),
            "--profile",
            gpu_profile,
            "--base-model",
            str(tiny_mixtral_dir),
            "--run-dir",
            str(run),
            "--probe",
            # 12 short rows: 256-token packs, one per batch, so every epoch has steps
            "--set",
            "max_steps=4",
            "--set",
            "num_epochs=10",
            "--set",
            "sequence_len=256",
            "--set",
            "micro_batch_size=1",
            "--set",
            "test_datasets=null",
            "--set",
            "evals_per_epoch=null",
            "--set",
            "saves_per_epoch=null",
            "--set",
            "loss_watchdog_threshold=null",
            "--set",
            "loss_watchdog_patience=null",
        ]
    )
    assert rc == 0, (run / "train.log").read_text()[-4000:]  # needs flash-attn: the profile asks for flash_attention_2
    probe = json.loads((run / "output" / "mixft_probe.json").read_text())
    model = probe["model"]
    assert model["attn_implementation"].startswith("flash_attention"), model
    assert model["quantized_expert_tensors"] == 4 and model["unquantized_expert_tensors"] == 0, model
    assert model["linear_4bit_modules"] == 8 and model["gradient_checkpointing"] is True
    assert probe["device"]["type"] == "cuda"
    assert "probe warning" not in capsys.readouterr().out


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
