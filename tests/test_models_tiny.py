"""`mixft models tiny-mixtral`: a deterministic tiny Mixtral built with no network."""

from __future__ import annotations

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.util.hashing import sha256_tree

pytestmark = pytest.mark.slow


def test_tiny_mixtral_is_a_loadable_mixtral_that_generates(tiny_mixtral_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_mixtral_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_mixtral_dir)
    assert type(model).__name__ == "MixtralForCausalLM"
    cfg = model.config
    assert (cfg.num_local_experts, cfg.num_experts_per_tok, cfg.num_hidden_layers) == (4, 2, 2)
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    ids = tok("Context: The museum opens at 9 am.\nQuestion: When?\n", return_tensors="pt")
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id
    assert (
        tok.decode(ids["input_ids"][0], skip_special_tokens=True)
        == "Context: The museum opens at 9 am.\nQuestion: When?\n"
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


def test_cli_build_is_deterministic(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["models", "tiny-mixtral", "--out", str(a)]) == 0
    assert main(["models", "tiny-mixtral", "--out", str(b)]) == 0
    assert capsys.readouterr().out.split() == [str(a), str(b)]
    assert sha256_tree(a) == sha256_tree(b)
    assert main(["models", "tiny-mixtral", "--out", str(a)]) == 2  # no clobbering without --force
    assert main(["models", "tiny-mixtral", "--out", str(a), "--seed", "1", "--force"]) == 0
    assert sha256_tree(a)["model.safetensors"] != sha256_tree(b)["model.safetensors"]


def test_full_width_spec_has_mixtral_8x7b_shapes():
    """The benchmark's model is Mixtral-8x7B cut to fewer layers: at 32 layers it has 46.7 B parameters."""
    import torch
    from transformers import MixtralForCausalLM

    from mixtral_ft.models.tiny import full_width_spec, mixtral_config, train_tokenizer

    tokenizer = train_tokenizer(["Context: a\nQuestion: b\nAnswer: c"], 600)
    counts = {}
    for layers in (1, 2, 32):
        config = mixtral_config(full_width_spec(layers), tokenizer)
        assert config.vocab_size == 32000 and config.num_local_experts == 8 and config.num_experts_per_tok == 2
        with torch.device("meta"):
            model = MixtralForCausalLM._from_config(config, dtype=torch.bfloat16)
        counts[layers] = sum(p.numel() for p in model.parameters())
    per_layer = counts[2] - counts[1]
    assert per_layer == 8 * 3 * 4096 * 14336 + 2 * 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 8 + 2 * 4096
    assert counts[32] == pytest.approx(46.70e9, rel=1e-3)
