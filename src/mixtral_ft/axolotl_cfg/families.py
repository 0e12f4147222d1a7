"""Model families: what a base model's architecture changes in the rendered config (pure; no torch).

The renderer asks which family the base model is (from its local ``config.json``, or assumed from a Hub
id's name) and adapts the LoRA targets, ``lora_mlp_kernel`` and the MoE-only keys; the decisions are the
"model-family" layer that ``mixft config show`` prints. The rules: docs/design/training-decisions.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.errors import ConfigError

LAYER = "model-family"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
DENSE_MLP = ("gate_proj", "up_proj", "down_proj")

# Keys that only mean something for a mixture-of-experts model (dotted paths into the config).
MOE_ONLY_KEYS = (
    "quantize_moe_experts",  # Axolotl: quantize fused expert tensors on load
    "experts_implementation",  # transformers: how fused experts are computed
    "model_config.output_router_logits",  # router load-balancing loss on/off
    "model_config.router_aux_loss_coef",  # its weight
)
# The Axolotl plugin that keeps the router aux loss at its coefficient under gradient accumulation
# (src/mixtral_ft/train/accumulation.py; docs/training.md, "Router auxiliary loss"). Added for a MoE
# model whose config turns the aux loss on; named here as a string so rendering imports no Axolotl.
AUX_LOSS_PLUGIN = "mixtral_ft.train.accumulation.AuxLossAccumulationPlugin"


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json "model_type" values of this family
    moe: bool
    mlp_modules: tuple[str, ...]  # nn.Linear MLP projections LoRA targets (none for fused experts)
    attention_modules: tuple[str, ...] = ATTENTION
    examples: str = ""

    @property
    def lora_target_modules(self) -> list[str]:
        return [*self.attention_modules, *self.mlp_modules]


FAMILIES: tuple[Family, ...] = (
    Family("mixtral", ("mixtral",), moe=True, mlp_modules=(), examples="Mixtral-8x7B, Mixtral-8x22B"),
    Family("mistral", ("mistral",), moe=False, mlp_modules=DENSE_MLP, examples="Mistral-7B, Mistral-Nemo"),
    Family("llama", ("llama",), moe=False, mlp_modules=DENSE_MLP, examples="Llama-2, Llama-3.x, SmolLM2"),
    Family("qwen2", ("qwen2",), moe=False, mlp_modules=DENSE_MLP, examples="Qwen2, Qwen2.5"),
    Family("qwen3", ("qwen3",), moe=False, mlp_modules=DENSE_MLP, examples="Qwen3 dense (not -A3B MoE)"),
)

# For Hub ids without a local directory: the last path component, lower-cased, matched in order.
# Only names whose model_type is unambiguous; MoE, vision and other variants of these names are left out.
NAME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("mixtral", re.compile(r"^mixtral-8x(7|22)b")),
    ("mistral", re.compile(r"^mistral-(7b|nemo)")),
    ("llama", re.compile(r"^(meta-)?llama-(2|3(\.[0-3])?)-\d+b(?!.*vision)")),
    ("qwen2", re.compile(r"^qwen2(\.5)?-(?!.*(vl|audio|omni|moe|-a\d+b))")),
    ("qwen3", re.compile(r"^qwen3-(?!.*(vl|omni|next|moe|-a\d+b))")),
)


def family_named(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def family_for_model_type(model_type: str) -> Family | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


@dataclass(frozen=True)
class FamilyDecision:
    family: Family
    base_model: str
    evidence: str  # how the family was found, for `config show` and error messages
    assumed: bool  # True when read from the name, not from a config.json

    def describe(self) -> str:
        kind = "MoE" if self.family.moe else "dense"
        return f"{self.family.name} ({kind}; {self.evidence})"


def _known() -> str:
    return ", ".join(f"{f.name} ({f.examples})" for f in FAMILIES)


def detect_family(base_model: str, base_model_config: str | None = None) -> FamilyDecision:
    """The family of ``base_model`` (its ``config.json`` is read from ``base_model_config`` when set, as Axolotl does)."""
    source = str(base_model_config or base_model)
    path = Path(source).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ConfigError(f"{cfg}: not found; a local base model must be a Hugging Face model directory")
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{cfg}: cannot read it as JSON: {e}") from None
        model_type = data.get("model_type") if isinstance(data, dict) else None
        if not isinstance(model_type, str):
            raise ConfigError(f"{cfg}: model_type: missing; cannot tell the model family")
        family = family_for_model_type(model_type)
        if family is None:
            raise ConfigError(
                f"{cfg}: model_type: '{model_type}' is not a family mixft has configs for; known: {_known()}"
            )
        return FamilyDecision(family, str(base_model), f"model_type '{model_type}' in {cfg}", assumed=False)
    if path.exists():
        raise ConfigError(f"{source}: base model is a file; pass a Hugging Face model directory or a Hub id")
    # A Hub id, or a directory that exists only on another machine (rendering for a GPU box elsewhere).
    name = source.rstrip("/").rsplit("/", 1)[-1].lower()
    for family_name, pattern in NAME_PATTERNS:
        if pattern.search(name):
            return FamilyDecision(
                family_named(family_name),
                str(base_model),
                f"assumed from the name '{source}': no local config.json",
                assumed=True,
            )
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise ConfigError(
            f"base_model: {source}: no such directory, and its name does not tell the model "
            f"family; pass a Hugging Face model directory. Known families: {_known()}"
        )
    raise ConfigError(
        f"base_model: '{source}' is not a local model directory and its name does not tell the "
        f"model family; download it (hf download {source} --local-dir DIR) and pass "
        f"--base-model DIR. Known families: {_known()}"
    )


def decisions(family: Family) -> dict[str, Any]:
    """The keys the model-family layer sets (it sits right after the base config)."""
    return {"lora_target_modules": family.lora_target_modules, "lora_mlp_kernel": bool(family.mlp_modules)}


def _get(values: dict, path: str) -> tuple[bool, Any]:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _pop(values: dict, path: str) -> None:
    *parents, leaf = path.split(".")
    node = values
    for part in parents:
        node = node[part]
    del node[leaf]
    if parents and not node:  # an emptied mapping (model_config: {}) goes too
        _pop(values, ".".join(parents))


def apply_family(values: dict[str, Any], sources: dict[str, str], errors: list[str]) -> list[str]:
    """Adapt merged ``values`` to the base model's family in place; return notes for the rendered file.

    A key set by the base config takes the family's decision; one set by a profile, ``--set`` or mixft
    keeps its value. MoE-only keys are removed for dense models, except those given with ``--set``,
    which become an error in ``errors``.
    """
    if "base_model" not in values:
        errors.append("base_model: missing; set it in the base config or with --base-model")
        return []
    try:
        decision = detect_family(str(values["base_model"]), values.get("base_model_config"))
    except ConfigError as e:
        errors.extend(e.errors)
        return []
    family = decision.family
    for key, value in decisions(family).items():
        if key not in values or sources.get(key) == "base":
            values[key] = value
            sources[key] = LAYER
    notes = [f"model family: {decision.describe()}"]
    present, coef = _get(values, "model_config.router_aux_loss_coef")
    if present and family.moe:
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
            errors.append(f"model_config.router_aux_loss_coef: expected a number >= 0 such as 0.02, got {coef!r}")
        elif isinstance(coef, int):
            # YAML reads "1" as an int, which transformers' strict config rejects only once training has
            # started (StrictDataclassFieldValidationError); the user means the number.
            values["model_config"]["router_aux_loss_coef"] = float(coef)
    notes += _add_aux_loss_plugin(values, sources, family)
    if not family.moe:
        removed = []
        for path in MOE_ONLY_KEYS:
            present, _ = _get(values, path)
            if not present:
                continue
            layer = sources.get(path, "?")
            if layer == "override":
                errors.append(
                    f"{path}: only applies to mixture-of-experts models; the base model is {decision.describe()}"
                )
                continue
            _pop(values, path)
            sources.pop(path, None)
            removed.append(f"{path} (from {layer})")
        if removed:
            notes.append(f"removed for a dense model: {', '.join(removed)}")
    return notes


def _add_aux_loss_plugin(values: dict[str, Any], sources: dict[str, str], family: Family) -> list[str]:
    """List :data:`AUX_LOSS_PLUGIN` under ``plugins`` when a MoE model adds the router aux loss."""
    _, on = _get(values, "model_config.output_router_logits")
    if not (family.moe and on is True):
        return []
    plugins = values.get("plugins") or []
    plugins = [plugins] if isinstance(plugins, str) else list(plugins)
    if AUX_LOSS_PLUGIN in plugins:
        return []
    values["plugins"] = [*plugins, AUX_LOSS_PLUGIN]
    sources["plugins"] = ", ".join(x for x in (sources.get("plugins"), LAYER) if x)
    return ["plugins: the router aux loss keeps its coefficient under gradient accumulation (docs/training.md)"]
