"""`mixft merge`: base + LoRA delta, shard by shard, nothing quantized (slow tier).

Tolerance (also in docs/training.md): with a float32 base the merged model's logits equal
PEFT's base + adapter in float32 within 1e-5 absolute (measured: ~3e-7; the two differ only in
summation order); with a bf16 base every merged tensor is bitwise
``bf16(float32(W) + PEFT's float32 delta)``, and every other tensor is bitwise the base's.
"""

from __future__ import annotations

import json
import shutil

import pytest

from support.fixtures_models import run_mixft

pytestmark = pytest.mark.slow

LOGITS_ATOL = 1e-5
PROMPT = "Context: The museum opens at 9 am.\nQuestion: When does the museum open?\n"


def _logits(model, tokenizer):
    import torch

    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**ids).logits


def _reference(base_dir, adapter_dir):
    """Base + adapter in full precision through PEFT (float32, no 4-bit)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def _tensors(model_dir):
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def _fake_run(tmp_path, base_dir, adapter_dir):
    run = tmp_path / "run"
    (run).mkdir()
    shutil.copytree(adapter_dir, run / "output")
    (run / "axolotl.yml").write_text(f"base_model: {base_dir}\nadapter: lora\n")
    # A run whose training finished (mixft merge merges only finished runs): its manifest's last attempt.
    (run / "manifest.json").write_text('{"kind": "train", "attempts": [{"outcome": "finished", "exit_status": 0}]}\n')
    return run


def _check_merge(run, base_dir, capsys, changed: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert run_mixft(["merge", str(run)]) == 0
    merged = run / "merged"
    assert f"merged model: {merged}  ({changed} of 41 tensors changed" in capsys.readouterr().out
    manifest = json.loads((merged / "mixft_merge.json").read_text())
    assert manifest["kind"] == "merge" and manifest["summary"]["merged_tensors"] == changed
    assert manifest["settings"]["base_dir"] == str(base_dir.resolve())
    tok = AutoTokenizer.from_pretrained(merged)
    got = _logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32), tok)
    want = _logits(_reference(base_dir, run / "output"), tok)
    base = _logits(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), tok)
    assert (want - base).abs().max() > 1e-3  # the adapter changes the output
    torch.testing.assert_close(got, want, atol=LOGITS_ATOL, rtol=0)
    # Untargeted tensors are the base's, bit for bit (no 4-bit round trip of embeddings, router, experts...).
    base_t, merged_t = _tensors(base_dir), _tensors(merged)
    assert base_t.keys() == merged_t.keys()
    same = [k for k in base_t if torch.equal(base_t[k], merged_t[k])]
    assert len(same) == 41 - changed
    return merged


def test_merge_equals_base_plus_adapter(rg_lora_run, tiny_mixtral_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(rg_lora_run, run)
    merged = _check_merge(run, tiny_mixtral_dir, capsys, changed=8)
    assert json.loads((merged / "mixft_merge.json").read_text())["settings"]["lora"]["r"] == 32
    assert run_mixft(["merge", str(run)]) == 2  # no clobbering without --force
    assert run_mixft(["merge", str(run), "--force"]) == 0


@pytest.fixture(scope="module")
def rg_qlora_run(tmp_path_factory, tiny_mixtral_dir, rg_data_dir):
    run = tmp_path_factory.mktemp("runs") / "rg-qlora"
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
        ]
    )
    assert rc == 0, (run / "train.log").read_text()[-3000:]
    return run


def test_merge_of_a_qlora_run_is_full_precision_base_plus_delta(rg_qlora_run, tiny_mixtral_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(rg_qlora_run, run)
    _check_merge(run, tiny_mixtral_dir, capsys, changed=8)


def test_merge_maps_expert_lora_to_mixtral_per_expert_tensors(tiny_mixtral_dir, tmp_path, capsys):
    """An adapter on the fused experts (lora_target_parameters) lands on w1/w3 (gate_up_proj's
    halves) and w2 (down_proj) of every expert in the checkpoint."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir), cfg).save_pretrained(tmp_path / "adapter")
    run = _fake_run(tmp_path, tiny_mixtral_dir, tmp_path / "adapter")
    _check_merge(run, tiny_mixtral_dir, capsys, changed=4 + 2 * 4 * 3)


def test_merge_of_a_sharded_bf16_base_rounds_once(tiny_mixtral_dir, tmp_path, capsys):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tmp_path / "tiny-bf16"
    model = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir, dtype=torch.bfloat16)
    model.save_pretrained(base_dir, max_shard_size="200KB")
    for f in tiny_mixtral_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja"):
            shutil.copy(f, base_dir / f.name)
    assert len(list(base_dir.glob("*.safetensors"))) > 1
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), cfg).save_pretrained(
        tmp_path / "adapter"
    )
    run = _fake_run(tmp_path, base_dir, tmp_path / "adapter")
    assert run_mixft(["merge", str(run)]) == 0
    merged = run / "merged"
    assert (merged / "model.safetensors.index.json").read_bytes() == (
        base_dir / "model.safetensors.index.json"
    ).read_bytes()
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), str(tmp_path / "adapter")
    )
    base_t, merged_t = _tensors(base_dir), _tensors(merged)
    changed = 0
    for name, module in peft_model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            key = f"{name}.weight"
            want = (base_t[key].to(torch.float32) + module.get_delta_weight("default")).to(torch.bfloat16)
            assert merged_t[key].dtype == torch.bfloat16 and torch.equal(merged_t[key], want), key
            changed += 1
    assert changed == 8
    assert sum(torch.equal(base_t[k], merged_t[k]) for k in base_t) == len(base_t) - 8


def test_a_failed_merge_leaves_nothing(rg_lora_run, tmp_path, monkeypatch, capsys):
    import mixtral_ft.train.merge as merge_mod

    run = tmp_path / "run"
    shutil.copytree(rg_lora_run, run)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(merge_mod, "_merge_shard", boom)
    assert run_mixft(["merge", str(run)]) == 1
    assert "writing the merged model failed, nothing was written: disk full" in capsys.readouterr().err
    assert not (run / "merged").exists() and not list(run.glob(".merged.staging-*"))


def _run_with_adapter_config(tmp_path, base_dir, **changes):
    run = tmp_path / "run"
    (run / "output").mkdir(parents=True)
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    cfg.update(changes)
    (run / "output" / "adapter_config.json").write_text(json.dumps(cfg))
    (run / "output" / "adapter_model.safetensors").write_bytes(b"")
    (run / "axolotl.yml").write_text(f"base_model: {base_dir}\nadapter: lora\n")
    # A run whose training finished (mixft merge merges only finished runs): its manifest's last attempt.
    (run / "manifest.json").write_text('{"kind": "train", "attempts": [{"outcome": "finished", "exit_status": 0}]}\n')
    return run


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"use_dora": True}, "use_dora is set (DoRA rescales"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save is set"),
        ({"peft_type": "IA3"}, "peft_type 'IA3'"),
    ],
)
def test_merge_refuses_what_a_lora_delta_cannot_represent(tiny_mixtral_dir, tmp_path, capsys, change, needle):
    run = _run_with_adapter_config(tmp_path, tiny_mixtral_dir, **change)
    assert run_mixft(["merge", str(run)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (run / "merged").exists()


def test_merge_refuses_a_prequantized_4bit_base(tmp_path, capsys):
    base = tmp_path / "base-bnb-4bit"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps(
            {"model_type": "mixtral", "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
        )
    )
    run = _run_with_adapter_config(tmp_path, base)
    assert run_mixft(["merge", str(run)]) == 3
    assert "is stored in 4-bit; merging into it would round the merged weights to 4-bit" in capsys.readouterr().err
    assert not (run / "merged").exists()


def test_merge_refuses_a_base_without_a_local_copy(tmp_path, capsys):
    run = _run_with_adapter_config(tmp_path, "mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert run_mixft(["merge", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no local copy" in err and "hf download mistralai/Mixtral-8x7B-Instruct-v0.1 --local-dir DIR" in err


def test_bench_merge_script_runs_at_tiny_width(tmp_path):
    """scripts/bench_merge.py (its numbers are in docs/benchmarks.md) still works: tiny widths, 1 layer."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "bench_merge.py"),
            "--width",
            "tiny",
            "--layers",
            "1",
            "--experts",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = json.loads((tmp_path / "results.json").read_text())
    assert row["rc"] == 0 and row["merged_tensors"] == 16 and 0 < row["peak_rss_gib"] < 4
