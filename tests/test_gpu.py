"""GPU tier (`make test-gpu`, never in CI): the CUDA-only settings of the shipped profiles take effect.

On a CPU machine every test here is skipped. On a GPU box they run real Axolotl training with the
GPU profiles and read back, through `--probe`, that the Mixtral experts were quantized to 4-bit
(`quantize_moe_experts`), that flash attention was used, and how memory grows per layer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_models import run_mixft

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


def test_tiny_mixtral_trains_with_gpu_profile_settings_in_effect(gpu_profile, tiny_mixtral_dir, rg_data_dir,
                                                                  tmp_path, capsys):
    run = tmp_path / "gpu-run"
    rc = run_mixft(["train", "rg", "--data", str(rg_data_dir), "--profile", gpu_profile,
                    "--base-model", str(tiny_mixtral_dir), "--run-dir", str(run), "--probe",
                    # 12 short rows: 256-token packs, one per batch, so every epoch has steps
                    "--set", "max_steps=4", "--set", "num_epochs=10", "--set", "sequence_len=256",
                    "--set", "micro_batch_size=1", "--set", "test_datasets=null",
                    "--set", "evals_per_epoch=null", "--set", "saves_per_epoch=null",
                    "--set", "loss_watchdog_threshold=null", "--set", "loss_watchdog_patience=null"])
    assert rc == 0, (run / "train.log").read_text()[-4000:]
    probe = json.loads((run / "output" / "mixft_probe.json").read_text())
    model = probe["model"]
    assert model["attn_implementation"].startswith("flash_attention"), model
    assert model["quantized_expert_tensors"] == 4 and model["unquantized_expert_tensors"] == 0, model
    assert model["linear_4bit_modules"] == 8 and model["gradient_checkpointing"] is True
    assert probe["device"]["type"] == "cuda"
    assert "probe warning" not in capsys.readouterr().out


def test_full_width_layers_memory_per_layer(gpu_profile, tmp_path):
    """Mixtral-8x7B widths at 1 and 2 layers: 4-bit experts cost ~0.7 GiB a layer (bf16 would be 2.6)."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_train.py"), "--width", "full",
                           "--profile", gpu_profile, "--layers", "1,2", "--steps", "3", "--warmup", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=1800)
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
