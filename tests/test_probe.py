"""`mixft train --probe` and the training benchmark: what took effect, memory, tokens/s, the per-layer fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.membench import bench_overrides, fit_linear, fits_for, render_table, synthetic_rg_rows
from mixtral_ft.train.probe_report import PROBE_PLUGIN, format_lines, summarize

REPO = Path(__file__).resolve().parents[1]


def _gpu_probe(**model_overrides) -> dict:
    """A probe record shaped like the plugin's on a CUDA run: 2 layers, 4 steps of 4 x 4096 slots."""
    model = {
        "attn_implementation": "flash_attention_2",
        "gradient_checkpointing": True,
        "quantized_expert_tensors": 4,
        "unquantized_expert_tensors": 0,
        "linear_4bit_modules": 8,
        "num_hidden_layers": 2,
        "parameters": 3_100_000_000,
        "parameter_gib": {"experts": 1.3},
    }
    model.update(model_overrides)
    steps = [
        {
            "step": i + 1,
            "t": 103.0 + 2.0 * (i + 1),
            "tokens": {"total": 16384 * (i + 1), "trainable": 4000 * (i + 1)},
            "memory": {"cuda_peak_allocated_gib": 5.0 + i, "cuda_peak_reserved_gib": 6.0 + i, "rss_peak_gib": 9.0},
        }
        for i in range(4)
    ]
    return {
        "schema": "mixft-probe/v1",
        "device": {"type": "cuda", "name": "NVIDIA H100"},
        "config": {
            "quantize_moe_experts": True,
            "attn_implementation": "flash_attention_2",
            "load_in_4bit": True,
            "gradient_checkpointing": True,
        },
        "model": model,
        "memory_after_load": {"cuda_allocated_gib": 2.5, "rss_peak_gib": 8.0},
        "train_begin": {"t": 100.0, "step": 0, "tokens": {}},
        "steps": steps,
        "finished": True,
        "errors": [],
    }


def test_summary_measures_after_warmup_and_takes_cuda_peaks():
    s = summarize(_gpu_probe(), warmup_steps=1)
    # Step 1 (5 s, with the 3 s start-up) is dropped; steps 2-4 take 2 s each.
    assert s.measured_steps == 3
    assert s.step_s == pytest.approx(2.0)
    assert s.token_slots_per_s == pytest.approx(16384 / 2.0)
    assert s.trainable_tokens_per_s == pytest.approx(4000 / 2.0)
    assert s.peak_gib == 8.0 and s.peak_reserved_gib == 9.0 and s.after_load_gib == 2.5
    assert s.flash_attention_in_effect is True and s.experts_quantized == 4
    assert s.warnings == []
    with_start = summarize(_gpu_probe(), warmup_steps=0)
    assert with_start.measured_steps == 4 and with_start.step_s == pytest.approx(11.0 / 4)


def test_settings_that_did_not_take_effect_are_warned():
    s = summarize(
        _gpu_probe(
            attn_implementation="sdpa",
            quantized_expert_tensors=0,
            unquantized_expert_tensors=4,
            gradient_checkpointing=False,
        )
    )
    text = "\n".join(s.warnings)
    assert "quantize_moe_experts is set but no expert tensor was quantized" in text
    assert "attn_implementation flash_attention_2 was asked for but the model runs 'sdpa' attention" in text
    assert "gradient_checkpointing is set" in text
    lines = format_lines(s)
    assert any(line.startswith("warning: quantize_moe_experts") for line in lines)
    assert "GPU peak allocated 8.00 GiB (reserved 9.00 GiB)" in lines[0]


def test_flash_attention_warning_fires_from_the_config_axolotl_validated():
    """The plugin records the config after Axolotl's validation, which rewrites flash_attention to
    attn_implementation and drops it; reading flash_attention there could never warn."""
    pytest.importorskip("axolotl")
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.axolotl_cfg.validate import _quiet
    from mixtral_ft.train.probe import probe_config

    for override in ((), ("attn_implementation=null", "flash_attention=true")):  # the current key, the deprecated one
        values = render(
            RenderRequest("rg", REPO / "tests" / "golden", "a100-80gb", REPO / "runs" / "x", overrides=override)
        ).values
        with _quiet():
            validated = validate_config(DictDefault(values))
        assert "flash_attention" not in validated
        probe = _gpu_probe(attn_implementation="sdpa")
        probe["config"] = probe_config(validated)
        assert probe["config"]["attn_implementation"] == "flash_attention_2"
        warnings = summarize(probe).warnings
        assert warnings == ["attn_implementation flash_attention_2 was asked for but the model runs 'sdpa' attention"]
        probe["model"]["attn_implementation"] = "flash_attention_2"
        assert summarize(probe).warnings == []


def test_probe_files_from_before_attn_implementation_still_warn():
    probe = _gpu_probe(attn_implementation="sdpa")
    probe["config"] = {"flash_attention": True}
    assert summarize(probe).warnings == [
        "attn_implementation flash_attention_2 was asked for but the model runs 'sdpa' attention"
    ]
    probe["model"]["attn_implementation"] = "kernels-community/flash-attn2"  # the hub kernel is flash attention too
    assert summarize(probe).warnings == []


def test_a_run_that_died_while_loading_says_so():
    probe = _gpu_probe()
    probe.update(model=None, steps=[], train_begin=None, finished=False)
    s = summarize(probe)
    assert s.measured_steps == 0 and s.step_s is None and s.token_slots_per_s is None
    assert s.warnings == ["the model was never inspected (the run failed before loading finished)"]


def test_fit_is_exact_on_a_line_and_refuses_one_point():
    f = fit_linear([1, 2, 4], [3.5, 4.25, 5.75], at=32)
    assert f.slope == pytest.approx(0.75) and f.intercept == pytest.approx(2.75)
    assert f.value_at == pytest.approx(2.75 + 0.75 * 32)
    assert fit_linear([2, 2], [1.0, 2.0]) is None
    assert fit_linear([1], [1.0]) is None


def test_fits_skip_failed_rows_and_extrapolate_throughput():
    rows = [
        {
            "profile": "h100-80gb",
            "layers": 1,
            "ok": True,
            "peak_gib": 4.0,
            "peak_reserved_gib": 5.0,
            "step_s": 1.0,
            "token_slots_per_s": 16384.0,
        },
        {
            "profile": "h100-80gb",
            "layers": 2,
            "ok": True,
            "peak_gib": 5.0,
            "peak_reserved_gib": 6.0,
            "step_s": 1.5,
            "token_slots_per_s": 16384 / 1.5,
        },
        {"profile": "h100-80gb", "layers": 4, "ok": False, "error": "CUDA out of memory"},
        {"profile": "a100-80gb", "layers": 1, "ok": True, "peak_gib": 4.0, "step_s": 1.2, "token_slots_per_s": 1.0},
    ]
    fits = fits_for(rows, at=32)
    h = fits["h100-80gb"]
    assert h["peak_gib"]["value_at"] == pytest.approx(3.0 + 32.0) and h["peak_gib"]["points"] == 2
    assert h["step_s"]["value_at"] == pytest.approx(0.5 + 0.5 * 32)
    assert h["token_slots_per_s_at_layers"] == pytest.approx(16384 / 16.5, rel=1e-3)
    assert fits["a100-80gb"] == {}
    table = render_table(rows, fits)
    assert "| h100-80gb | 4 |" in table and "CUDA out of memory" in table
    assert "a100-80gb: fewer than two successful layer counts" in table
    assert "→ 35.0 GiB at 32 layers" in table


def test_benchmark_rows_are_unique_multi_snippet_and_long_enough():
    sample = [{"question": f"q{i}?", "answer": f"a{i}.", "context": [f"snippet {i}"]} for i in range(5)]
    rows = synthetic_rg_rows(sample, min_chars=2000, snippets=3)
    assert sum(sum(map(len, r["context"])) + len(r["question"]) + len(r["answer"]) for r in rows) >= 2000
    assert rows[0]["context"] == ["snippet 0", "snippet 1", "snippet 2"] and rows[0]["question"] == "q0?"
    assert rows[4]["context"] == ["snippet 4", "snippet 0", "snippet 1"]
    assert len(rows[5]["context"]) == 4  # second pass over the sample: one more snippet
    keys = [(r["question"], tuple(r["context"])) for r in rows]
    assert len(keys) == len(set(keys)) and len(rows) > 10


@pytest.mark.parametrize("profile", ["a100-80gb", "a100-40gb", "h100-80gb", "cpu"])
def test_benchmark_settings_and_probe_pass_axolotl_validation(profile, tmp_path):
    from mixtral_ft.train.api import TrainRequest, plan

    data = REPO / "tests" / "golden"  # render and validation only read paths, never the files
    p = plan(
        TrainRequest(
            task="rg",
            data_dir=data,
            profile=profile,
            run_dir=tmp_path / "run",
            overrides=bench_overrides(steps=8, warmup=2),
            probe=True,
        )
    )
    v = p.config.values
    assert v["max_steps"] == 10 and v["save_strategy"] == "no" and "test_datasets" not in v
    assert v["plugins"] == [PROBE_PLUGIN]
    assert "loss_watchdog_threshold" not in v
    assert p.config.source_of("plugins") == "--probe"


def test_probe_plugin_is_kept_beside_a_users_plugins(tmp_path):
    from mixtral_ft.train.api import TrainRequest, plan

    p = plan(
        TrainRequest(
            task="rg",
            data_dir=REPO / "tests" / "golden",
            profile="cpu",
            run_dir=tmp_path / "r",
            overrides=("plugins=[axolotl.integrations.liger.LigerPlugin]",),
            probe=True,
        )
    )
    assert p.config.values["plugins"] == ["axolotl.integrations.liger.LigerPlugin", PROBE_PLUGIN]


@pytest.mark.slow
def test_describe_model_counts_4bit_experts(tmp_path):
    """The check behind "expert quantization took effect", on CPU: bitsandbytes' own parametrization
    (what Axolotl's quantize_moe_experts applies on CUDA) on a tiny Mixtral's fused experts."""
    from bitsandbytes.nn.parametrize import replace_parameter_4bit
    from transformers import AutoModelForCausalLM

    from mixtral_ft.models.tiny import build_tiny_mixtral
    from mixtral_ft.train.probe import describe_model

    model_dir = build_tiny_mixtral(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = describe_model(model)
    assert before["quantized_expert_tensors"] == 0 and before["unquantized_expert_tensors"] == 4
    for name, module in model.named_modules():
        if name.endswith("mlp.experts"):
            for pname in ("gate_up_proj", "down_proj"):
                replace_parameter_4bit(module, pname, quant_type="nf4")
    after = describe_model(model)
    assert after["quantized_expert_tensors"] == 4 and after["unquantized_expert_tensors"] == 0
    assert after["quantized_expert_storage_dtypes"] == ["torch.uint8"]
    assert after["parameter_gib"]["experts"] < before["parameter_gib"]["experts"] / 6  # fp32 -> 4-bit
    assert after["attn_implementation"] == "sdpa" and after["num_hidden_layers"] == 2


@pytest.mark.slow
def test_bench_script_on_cpu_measures_each_layer_count(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_train.py"),
            "--width",
            "tiny",
            "--profile",
            "cpu",
            "--layers",
            "1,2",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--set",
            "adapter=qlora",
            "--set",
            "load_in_4bit=true",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [(r["profile"], r["layers"], r["ok"]) for r in rows] == [("cpu", 1, True), ("cpu", 2, True)]
    for r in rows:
        assert r["measured_steps"] == 3 and r["step_s"] > 0 and r["token_slots_per_s"] > 0
        assert r["peak_gib"] > 0.1 and r["attn_implementation"] == "sdpa"
        assert r["linear_4bit_modules"] == 4 * r["layers"]  # q/k/v/o through bitsandbytes' CPU backend
        assert r["experts_quantized"] == 0 and r["experts_unquantized"] == 2 * r["layers"]
        probe = json.loads((Path(r["run_dir"]) / "output" / "mixft_probe.json").read_text())
        assert probe["finished"] and len(probe["steps"]) == 4
    assert set(results["fits"]["cpu"]) >= {"peak_gib", "step_s"}
    assert "| cpu | 2 |" in (out / "results.md").read_text() and "| cpu | 2 |" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["environment"]["packages"]["axolotl"] == "0.19.0"
    assert not (out / "models").exists() or not any((out / "models").iterdir())  # deleted unless --keep-models


def test_bench_script_refuses_gpu_profiles_without_cuda(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_train.py"),
            "--profile",
            "h100-80gb",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "profile(s) h100-80gb need a CUDA GPU; on CPU use --profile cpu --width tiny" in proc.stderr
    assert not (tmp_path / "b").exists()
