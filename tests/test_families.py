"""Model families (axolotl_cfg/families.py): `--base-model` with Mixtral or a dense model renders a valid config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.axolotl_cfg.families import (
    DENSE_MLP,
    FAMILIES,
    MOE_ONLY_KEYS,
    detect_family,
    family_named,
)
from mixtral_ft.axolotl_cfg.render import RenderRequest, render
from mixtral_ft.cli.main import main
from mixtral_ft.errors import ConfigError

DATA = Path("/data/prepared")
RUN = Path("/runs/run")
PROFILES = ["a100-40gb", "a100-80gb", "cpu", "h100-80gb", "multi-gpu"]
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTENTION + ["gate_proj", "up_proj", "down_proj"]


def model_dir(tmp_path: Path, model_type: str, name: str | None = None) -> Path:
    """A base model directory with only a config.json: all the family detection reads."""
    d = tmp_path / (name or f"model-{model_type}")
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["X"]}))
    return d


def _has(values: dict, path: str) -> bool:
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize(
    "model_type,moe", [("mixtral", True), ("mistral", False), ("llama", False), ("qwen2", False), ("qwen3", False)]
)
def test_family_comes_from_config_json(tmp_path, model_type, moe):
    d = model_dir(tmp_path, model_type)
    decision = detect_family(str(d))
    assert decision.family.name == model_type and decision.family.moe is moe and not decision.assumed
    assert decision.evidence == f"model_type '{model_type}' in {d / 'config.json'}"


@pytest.mark.parametrize(
    "name,family",
    [
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral"),
        ("mistralai/Mixtral-8x22B-v0.1", "mixtral"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
        ("mistralai/Mistral-Nemo-Instruct-2407", "mistral"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
        ("meta-llama/Meta-Llama-3-8B", "llama"),
        ("meta-llama/Llama-2-7b-hf", "llama"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2"),
        ("Qwen/Qwen2-7B", "qwen2"),
        ("Qwen/Qwen3-8B", "qwen3"),
        ("models/Mixtral-8x7B-Instruct-v0.1", "mixtral"),  # the README's local copy, rendered on another machine
        # names whose model_type is not one of the families: refused rather than guessed
        ("Qwen/Qwen3-30B-A3B", None),
        ("Qwen/Qwen2-57B-A14B", None),
        ("Qwen/Qwen2.5-VL-7B-Instruct", None),
        ("meta-llama/Llama-3.2-11B-Vision-Instruct", None),
        ("meta-llama/Llama-4-Scout-17B-16E", None),
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", None),
        ("google/gemma-2-9b", None),
    ],
)
def test_hub_ids_assume_the_family_from_the_name_conservatively(name, family):
    if family is None:
        with pytest.raises(ConfigError, match=r"hf download .* --local-dir DIR"):
            detect_family(name)
        return
    decision = detect_family(name)
    assert decision.family.name == family and decision.assumed
    assert decision.evidence == f"assumed from the name '{name}': no local config.json"


def test_bad_local_models_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty/config.json: not found"):
        detect_family(str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad/config.json: cannot read it as JSON"):
        detect_family(str(bad))
    with pytest.raises(ConfigError, match=r"config.json: model_type: 'gemma2' is not a family mixft has configs for"):
        detect_family(str(model_dir(tmp_path, "gemma2")))
    (bad / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"config.json: model_type: missing"):
        detect_family(str(bad))
    with pytest.raises(ConfigError, match=r"/nowhere/tiny: no such directory"):
        detect_family("/nowhere/tiny")


def test_base_model_config_is_read_when_set(tmp_path):
    """Axolotl reads the model config from base_model_config when it is set; so does the family detection."""
    d = model_dir(tmp_path, "qwen3")
    assert detect_family("some/weights-elsewhere", str(d)).family.name == "qwen3"


@pytest.mark.parametrize("task", ["rg", "tc"])
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("model_type", ["mistral", "llama", "qwen2", "qwen3"])
def test_dense_models_render_without_moe_keys_and_with_mlp_lora(tmp_path, task, profile, model_type):
    d = model_dir(tmp_path, model_type)
    r = render(RenderRequest(task, DATA, profile, RUN, base_model=str(d)))
    v = r.values
    assert not [k for k in MOE_ONLY_KEYS if _has(v, k)]
    assert "model_config" not in v  # it held only MoE keys
    assert v["lora_target_modules"] == ALL_LINEAR and r.sources["lora_target_modules"] == "model-family"
    # the fused LoRA MLP kernel is Triton: on where the profile allows kernels, off on cpu (the profile wins)
    assert v["lora_mlp_kernel"] is (profile != "cpu")
    assert r.sources["lora_mlp_kernel"] == ("profile:cpu" if profile == "cpu" else "model-family")
    assert r.notes[0] == f"model family: {model_type} (dense; model_type '{model_type}' in {d / 'config.json'})"
    assert r.notes[1].startswith("removed for a dense model: ")
    assert (
        "quantize_moe_experts (from profile:cpu)" if profile == "cpu" else "quantize_moe_experts (from base)"
    ) in r.notes[1]
    assert v["gradient_checkpointing_kwargs"] == {"use_reentrant": False}  # harmless without a router: kept


@pytest.mark.parametrize("task", ["rg", "tc"])
@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_dense_renderings_pass_axolotl_validation(tmp_path, task, model_type):
    pytest.importorskip("axolotl")
    from mixtral_ft.axolotl_cfg.validate import validate_with_axolotl

    d = model_dir(tmp_path, model_type)
    for profile in PROFILES:
        assert validate_with_axolotl(render(RenderRequest(task, DATA, profile, RUN, base_model=str(d))).values)


@pytest.mark.parametrize("profile", PROFILES)
def test_a_local_mixtral_renders_like_the_shipped_hub_id(tmp_path, profile):
    d = model_dir(tmp_path, "mixtral")
    local = render(RenderRequest("rg", DATA, profile, RUN, base_model=str(d))).values
    hub = render(RenderRequest("rg", DATA, profile, RUN)).values
    assert {**local, "base_model": hub["base_model"]} == hub
    assert hub["lora_target_modules"] == ATTENTION and hub["lora_mlp_kernel"] is False
    assert hub["model_config"] == {"output_router_logits": True, "router_aux_loss_coef": 0.02}


def test_overrides_still_win_and_moe_keys_on_a_dense_model_are_refused(tmp_path):
    d = model_dir(tmp_path, "llama")
    v = render(
        RenderRequest(
            "rg",
            DATA,
            "a100-80gb",
            RUN,
            base_model=str(d),
            overrides=("lora_target_modules=[q_proj, v_proj]", "lora_mlp_kernel=false"),
        )
    ).values
    assert v["lora_target_modules"] == ["q_proj", "v_proj"] and v["lora_mlp_kernel"] is False
    with pytest.raises(ConfigError) as e:
        render(
            RenderRequest(
                "rg",
                DATA,
                "a100-80gb",
                RUN,
                base_model=str(d),
                overrides=("quantize_moe_experts=true", "model_config.router_aux_loss_coef=0.01"),
            )
        )
    assert e.value.errors == [
        f"{key}: only applies to mixture-of-experts models; the base model is llama (dense; model_type 'llama' "
        f"in {d / 'config.json'})"
        for key in ("quantize_moe_experts", "model_config.router_aux_loss_coef")
    ]


def test_base_model_set_with_set_is_detected_too(tmp_path):
    d = model_dir(tmp_path, "qwen2")
    v = render(RenderRequest("tc", DATA, "cpu", RUN, overrides=(f"base_model={d}",))).values
    assert "quantize_moe_experts" not in v and v["lora_target_modules"] == ALL_LINEAR


def test_show_and_the_rendered_file_say_what_the_family_decided(tmp_path, capsys):
    d = model_dir(tmp_path, "mistral")
    rc = main(
        [
            "config",
            "show",
            "rg",
            "--data",
            str(tmp_path),
            "--profile",
            "h100-80gb",
            "--no-validate",
            "--base-model",
            str(d),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    keyed = {line.split(":")[0]: line for line in out if not line.startswith((" ", "-", "#"))}
    assert keyed["lora_target_modules"].endswith("# model-family")
    assert keyed["lora_mlp_kernel"].endswith("# model-family")
    assert keyed["lora_r"].endswith("# base")
    assert "quantize_moe_experts" not in keyed and "model_config" not in keyed
    assert out[-2] == f"# model family: mistral (dense; model_type 'mistral' in {d / 'config.json'})"
    assert out[-1] == (
        "# removed for a dense model: quantize_moe_experts (from base), "
        "model_config.output_router_logits (from base), model_config.router_aux_loss_coef (from base)"
    )
    target = tmp_path / "axolotl.yml"
    assert (
        main(
            [
                "config",
                "render",
                "rg",
                "--data",
                str(tmp_path),
                "--profile",
                "cpu",
                "--no-validate",
                "--base-model",
                str(d),
                "--out",
                str(target),
            ]
        )
        == 0
    )
    assert "# model family: mistral (dense;" in target.read_text()


def test_unknown_family_is_a_one_line_cli_error(tmp_path, capsys):
    d = model_dir(tmp_path, "phi3")
    out = tmp_path / "axolotl.yml"
    rc = main(
        [
            "config",
            "render",
            "rg",
            "--data",
            str(tmp_path),
            "--profile",
            "cpu",
            "--base-model",
            str(d),
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {d / 'config.json'}: model_type: 'phi3' is not a family mixft has configs for")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_family_table_matches_the_transformers_model_classes(family):
    """Every LoRA target is an nn.Linear of that architecture, and only MoE families have a router: checked on
    transformers' own classes, built from their default configs shrunk to a tiny size on the meta device."""
    torch = pytest.importorskip("torch")
    from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING

    fam = family_named(family)
    config_cls = CONFIG_MAPPING[fam.model_types[0]]
    config = config_cls(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    with torch.device("meta"):
        model = MODEL_FOR_CAUSAL_LM_MAPPING[config_cls]._from_config(config)
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    params = {name for name, _ in model.named_parameters()}
    assert set(fam.lora_target_modules) <= linear
    has_router = hasattr(config, "router_aux_loss_coef")
    assert has_router is fam.moe
    if fam.moe:  # fused 3-D experts, no nn.Linear MLP to target
        assert not set(DENSE_MLP) & linear
        assert any(p.endswith("mlp.experts.gate_up_proj") for p in params)
    else:
        assert set(DENSE_MLP) <= linear


def test_router_aux_loss_coef_is_a_float_or_an_error():
    """transformers' strict MixtralConfig rejects an int coefficient, but only after Axolotl has started."""
    v = render(RenderRequest("rg", DATA, "cpu", RUN, overrides=("model_config.router_aux_loss_coef=1",))).values
    assert v["model_config"]["router_aux_loss_coef"] == 1.0 and isinstance(
        v["model_config"]["router_aux_loss_coef"], float
    )
    with pytest.raises(
        ConfigError,
        match=r"model_config.router_aux_loss_coef: expected a number >= 0 such as 0.02, "
        r"got 'high'",
    ):
        render(RenderRequest("rg", DATA, "cpu", RUN, overrides=("model_config.router_aux_loss_coef=high",)))


def test_tiny_dense_builders_cover_every_dense_family():
    from mixtral_ft.models.tiny import DENSE_ARCHS

    assert set(DENSE_ARCHS) == {t for f in FAMILIES if not f.moe for t in f.model_types}
