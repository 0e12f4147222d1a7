"""Plans of the (task, profile) pairs mixft ships, for the golden plans in ``tests/golden/plans/``.

Each GPU profile is planned for the card it is sized for (``multi-gpu``: two A100-40GB ranks under
ZeRO-2) with the configs' base model, Mixtral-8x7B-Instruct; the ``cpu`` profile is for tiny models,
so it is planned with the tiny Mixtral of ``mixft models tiny-mixtral`` (default shape).
"""

from __future__ import annotations

from pathlib import Path

from mixtral_ft.models.tiny import TinyMixtralSpec

DATA_PLACEHOLDER = Path("/data/prepared")
RUN_PLACEHOLDER = Path("/runs/plan")


def tiny_mixtral_config(spec: TinyMixtralSpec | None = None) -> dict:
    """``config.json`` content of the default tiny Mixtral (vocabulary at its 1,024-token target)."""
    spec = spec or TinyMixtralSpec()
    return {
        "model_type": "mixtral",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "num_local_experts": spec.num_local_experts,
        "num_experts_per_tok": spec.num_experts_per_tok,
        "max_position_embeddings": spec.max_position_embeddings,
        "tie_word_embeddings": False,
        "_name_or_path": "tiny-mixtral",
    }


def shipped_pairs() -> list[tuple[str, str]]:
    from mixtral_ft.axolotl_cfg.render import TASKS, profile_names

    return [(task, profile) for task in TASKS for profile in profile_names()]


def shipped_plan(task: str, profile: str, use_cache: bool = True):
    from mixtral_ft.axolotl_cfg.keys import snapshot_keys
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.plan.gpus import gpu_for_profile
    from mixtral_ft.plan.training import plan_training

    rendered = render(
        RenderRequest(task=task, data_dir=DATA_PLACEHOLDER, profile=profile, run_dir=RUN_PLACEHOLDER),
        keys=snapshot_keys(),
    )
    model = tiny_mixtral_config() if profile == "cpu" else None
    gpus = 2 if profile == "multi-gpu" else 1
    return plan_training(
        rendered, None, gpu_for_profile(profile), task=task, gpus=gpus, model=model, use_cache=use_cache
    )


def golden_view(plan) -> dict:
    """The plan's JSON without what changes from machine to machine (cache keys, versions)."""
    d = plan.to_dict()
    d.pop("measurement", None)
    return d
