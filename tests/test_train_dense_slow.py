"""A dense base model end to end: `mixft train rg --profile cpu --base-model <tiny dense>` with real Axolotl (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mixtral_ft.axolotl_cfg.families import MOE_ONLY_KEYS
from support.fixtures_models import run_mixft

pytestmark = pytest.mark.slow

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from mixtral_ft.models.tiny import TinyDenseSpec, build_tiny_dense, default_corpus

    return build_tiny_dense(
        tmp_path_factory.mktemp("models") / "tiny-llama", TinyDenseSpec(arch="llama"), sample_path=default_corpus()
    )


def test_train_rg_on_a_tiny_dense_llama(tiny_llama_dir, rg_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    rc = run_mixft(
        [
            "train",
            "rg",
            "--data",
            str(rg_data_dir),
            "--profile",
            "cpu",
            "--base-model",
            str(tiny_llama_dir),
            "--run-dir",
            str(run),
        ]
    )
    assert rc == 0, (run / "train.log").read_text()[-3000:]
    assert "steps: 4" in capsys.readouterr().out

    text = (run / "axolotl.yml").read_text()
    cfg = yaml.safe_load(text)
    assert "# model family: llama (dense; model_type 'llama'" in text
    # no MoE-only key (MOE_ONLY_KEYS are top-level or under model_config, which held only MoE keys)
    assert "model_config" not in cfg and not [k for k in MOE_ONLY_KEYS if k in cfg]
    assert cfg["lora_target_modules"] == ALL_LINEAR

    adapter = json.loads((run / "output" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(ALL_LINEAR)
    assert adapter["r"] == 32 and adapter["lora_alpha"] == 16
    from safetensors import safe_open

    with safe_open(str(run / "output" / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    # "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight" -> "gate_proj@0"
    trained = {
        k.split(".lora_A")[0].rsplit(".", 1)[-1] + f"@{k.split('layers.')[1].split('.')[0]}"
        for k in names
        if ".lora_A" in k
    }
    assert trained == {f"{m}@{layer}" for m in ALL_LINEAR for layer in (0, 1)}  # every projection, both layers
    loaded = json.loads((run / "output" / "config.json").read_text())
    assert loaded["model_type"] == "llama" and "output_router_logits" not in loaded


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_tiny_dense_builds_are_deterministic_and_load(arch, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixtral_ft.util.hashing import sha256_tree

    a, b = tmp_path / "a", tmp_path / "b"
    assert run_mixft(["models", "tiny-dense", "--arch", arch, "--out", str(a)]) == 0
    assert run_mixft(["models", "tiny-dense", "--arch", arch, "--out", str(b)]) == 0
    assert capsys.readouterr().out.split() == [str(a), str(b)]
    assert sha256_tree(a) == sha256_tree(b)
    model = AutoModelForCausalLM.from_pretrained(a)
    tok = AutoTokenizer.from_pretrained(a)
    assert model.config.model_type == arch and model.config.num_hidden_layers == 2
    ids = tok("Context: The museum opens at 9 am.\nQuestion: When?\n", return_tensors="pt")
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
