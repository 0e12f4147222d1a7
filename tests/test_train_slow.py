"""Real Axolotl runs on CPU with the tiny Mixtral through `mixft train` (slow tier)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from support.fixtures_models import run_mixft

pytestmark = pytest.mark.slow


def _state(run: Path) -> dict:
    states = sorted(
        (run / "output").glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    return json.loads(states[-1].read_text())


def _prepared_rows(run: Path, n_rows: int) -> list[dict]:
    """Axolotl's tokenized dataset (dataset_prepared_path/<hash>/) with ``n_rows`` rows."""
    from datasets import load_from_disk

    for d in sorted((run / "prepared").iterdir()):
        if d.is_dir():
            ds = load_from_disk(str(d))
            if len(ds) == n_rows:
                return [ds[i] for i in range(len(ds))]
    raise AssertionError(f"no prepared dataset with {n_rows} rows under {run / 'prepared'}")


def _check_masking(run: Path, model_dir: Path, data: Path, n_train: int, prompt_of, answer_of) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    prepared = _prepared_rows(run, n_train)
    decoded = {tok.decode(r["input_ids"], skip_special_tokens=False): r for r in prepared}
    for row in rows[:2]:
        full = "<s>" + prompt_of(row) + answer_of(row) + "</s>"
        assert full in decoded, f"prepared dataset has no row {full!r}"
        r = decoded[full]
        trained = [i for i, lab in zip(r["input_ids"], r["labels"]) if lab != -100]
        masked = [i for i, lab in zip(r["input_ids"], r["labels"]) if lab == -100]
        assert tok.decode(trained) == answer_of(row) + "</s>"  # answer tokens trained, EOS included
        assert tok.decode(masked) == "<s>" + prompt_of(row)  # every prompt token masked


def test_rg_lora_run(rg_lora_run, tiny_mixtral_dir, rg_data_dir):
    run = rg_lora_run
    assert (run / "output" / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((run / "output" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    state = _state(run)
    assert state["global_step"] == 4
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 4 and all(0 < x < 20 for x in losses)
    assert any("eval_loss" in e for e in state["log_history"])
    manifest = json.loads((run / "manifest.json").read_text())
    attempt = manifest["attempts"][-1]
    assert attempt["exit_status"] == 0 and attempt["ended_at"] and attempt["config_sha256"]
    assert manifest["environment"]["packages"]["axolotl"] == "0.19.0"
    inputs = {e["role"]: e for e in manifest["inputs"]}
    assert len(inputs["train"]["sha256"]) == 64 and (inputs["train"]["rows"], inputs["test"]["rows"]) == (12, 4)
    assert manifest["kind"] == "train" and manifest["settings"]["task"] == "rg"
    assert manifest["summary"]["global_step"] == 4
    assert (
        manifest["outputs"]["output/adapter_model.safetensors"]["sha256"]
        == hashlib.sha256((run / "output" / "adapter_model.safetensors").read_bytes()).hexdigest()
    )
    assert "Model successfully saved" in (run / "train.log").read_text()
    _check_masking(
        run,
        tiny_mixtral_dir,
        rg_data_dir,
        12,
        lambda r: f"Context: {r['context']}\nQuestion: {r['question']}\n",
        lambda r: f"Answer: {r['answer']}",
    )


def test_tc_lora_run(tc_lora_run, tiny_mixtral_dir, tc_data_dir):
    assert (tc_lora_run / "output" / "adapter_model.safetensors").exists()
    assert _state(tc_lora_run)["global_step"] == 4
    _check_masking(tc_lora_run, tiny_mixtral_dir, tc_data_dir, 12, lambda r: r["prompt"], lambda r: r["completion"])


def test_resume_continues_from_newest_checkpoint(rg_lora_run, tiny_mixtral_dir, rg_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(rg_lora_run, run)
    rc = run_mixft(
        [
            "train",
            "rg",
            "--data",
            str(rg_data_dir),
            "--profile",
            "cpu",
            "--base-model",
            str(tiny_mixtral_dir),
            "--run-dir",
            str(run),
            "--resume",
            "--set",
            "max_steps=6",
        ]
    )
    assert rc == 0
    assert "steps: 6" in capsys.readouterr().out
    state = _state(run)
    assert state["global_step"] == 6
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]  # history carried over from checkpoint-4, then steps 5-6
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["attempts"]) == 2
    assert manifest["attempts"][1]["resumed_from"].endswith("checkpoint-4")
    assert "resume_from_checkpoint:" in (run / "axolotl.yml").read_text()


def test_qlora_4bit_on_cpu(tiny_mixtral_dir, rg_data_dir, tmp_path, capsys):
    run = tmp_path / "qlora"
    rc = run_mixft(
        [
            "train",
            "rg",
            "--data",
            str(rg_data_dir),
            "--profile",
            "cpu",
            "--base-model",
            str(tiny_mixtral_dir),
            "--run-dir",
            str(run),
            "--set",
            "adapter=qlora",
            "--set",
            "load_in_4bit=true",
            "--set",
            "max_steps=2",
            "--set",
            "eval_steps=2",
            "--probe",
        ]
    )
    assert rc == 0, (run / "train.log").read_text()[-3000:]
    # --probe: what took effect, read from the loaded model inside Axolotl's process.
    out = capsys.readouterr().out
    assert "probe attention: sdpa; experts: 0 tensor(s) quantized, 4 in 16/32-bit; 4-bit linears: 8" in out
    assert "probe warning: load_in_4bit without quantize_moe_experts" in out
    probe = json.loads((run / "output" / "mixft_probe.json").read_text())
    assert probe["finished"] and [s["step"] for s in probe["steps"]] == [1, 2]
    assert probe["model"]["trainable_parameters"] > 0 and probe["memory_after_load"]["rss_peak_gib"] > 0
    assert json.loads((run / "manifest.json").read_text())["probe"]["linear_4bit_modules"] == 8
    assert "mixtral_ft.train.probe.ProbePlugin" in (run / "axolotl.yml").read_text()
    qc = json.loads((run / "output" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"] and qc["bnb_4bit_quant_type"] == "nf4"
    assert (run / "output" / "adapter_model.safetensors").exists()
    assert any("loss" in e for e in _state(run)["log_history"])


def test_a_run_that_trains_no_step_is_an_error(tiny_mixtral_dir, rg_data_dir, tmp_path, capsys):
    """12 short rows packed into 1024-token sequences make no full batch of 4: Axolotl exits 0
    having trained nothing (transformers only logs it), and mixft says so instead of reporting success."""
    run = tmp_path / "empty"
    rc = run_mixft(
        [
            "train",
            "rg",
            "--data",
            str(rg_data_dir),
            "--profile",
            "cpu",
            "--base-model",
            str(tiny_mixtral_dir),
            "--run-dir",
            str(run),
            "--set",
            "sample_packing=true",
            "--set",
            "pad_to_sequence_len=true",
            "--set",
            "micro_batch_size=4",
            "--set",
            "test_datasets=null",
            "--set",
            "eval_steps=null",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert (
        "Axolotl exited 0 but made no optimizer step: 12 training rows give no full batch of micro_batch_size 4 "
        "packed 1024-token sequences"
    ) in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["attempts"][-1]["exit_status"] == 0 and not manifest["summary"]["global_step"]
