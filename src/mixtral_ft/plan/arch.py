"""The base model's architecture: its ``config.json``, found without a download.

``base_model`` may be a local model directory, a path to a ``config.json``, a ``dict`` or a
``transformers.PretrainedConfig``. A Hub id is read from the local Hugging Face cache when it is
there; the default Mixtral ids need nothing, because their ``config.json`` is written out below.

Reading and fingerprinting a config is pure Python (no torch, no transformers), so a plan on a
warm cache stays fast; :func:`to_transformers_config` builds the real config object when a
measurement needs the model class.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError

# mistralai/Mixtral-8x7B-Instruct-v0.1 and mistralai/Mixtral-8x7B-v0.1 config.json, as published
# on the Hub. transformers 5.20.1's MixtralConfig() defaults have the same shapes (hidden 4096,
# intermediate 14336, 32 layers, 32/8 heads, 8 experts, top-2, vocab 32000, rope_theta 1e6, no
# sliding window, untied head; models/mixtral/configuration_mixtral.py:44-88); they differ only in
# max_position_embeddings (131072) and router_aux_loss_coef (0.001), neither of which changes memory.
# tests/test_plan_weights.py checks it.
MIXTRAL_8X7B_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32000,
}
# Older config.json names of the keys the planner reads (transformers maps them with each config's attribute_map).
KEY_ALIASES = {
    "num_hidden_layers": ("n_layer", "num_layers"),
    "hidden_size": ("n_embd", "d_model"),
    "num_attention_heads": ("n_head", "num_heads"),
    "num_key_value_heads": ("num_kv_heads",),
}
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": MIXTRAL_8X7B_CONFIG,
    "mistralai/Mixtral-8x7B-v0.1": MIXTRAL_8X7B_CONFIG,
}


@dataclass(frozen=True)
class ModelArch:
    """A model's ``config.json`` content plus where it came from."""

    config: dict[str, Any]
    source: str  # "dir:PATH", "file:PATH", "builtin:ID", "hf-cache:PATH", "object"
    name: str  # what the user asked for

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type") or "")

    @property
    def is_moe(self) -> bool:
        c = self.config
        return any((c.get(k) or 0) > 1 for k in ("num_local_experts", "num_experts", "n_routed_experts"))

    def get(self, key: str, default: Any = None) -> Any:
        text = self.config.get("text_config")
        if key not in self.config and isinstance(text, dict):
            return text.get(key, default)
        if key not in self.config:
            for alias in KEY_ALIASES.get(key, ()):  # GPT-2-style names (Bloom, Falcon): the config's attribute_map
                if alias in self.config:
                    return self.config[alias]
        return self.config.get(key, default)

    @property
    def num_layers(self) -> int:
        return int(self.get("num_hidden_layers"))

    @property
    def hidden_size(self) -> int:
        return int(self.get("hidden_size"))

    @property
    def vocab_size(self) -> int:
        return int(self.get("vocab_size"))

    @property
    def head_dim(self) -> int:
        return int(self.get("head_dim") or self.hidden_size // int(self.get("num_attention_heads")))

    @property
    def num_kv_heads(self) -> int:
        return int(self.get("num_key_value_heads") or self.get("num_attention_heads"))

    def fingerprint(self, overrides: dict[str, Any] | None = None) -> str:
        """A short hash of everything in the config that can change the model's tensors."""
        ignore = {
            "transformers_version",
            "_name_or_path",
            "architectures",
            "torch_dtype",
            "dtype",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
            "use_cache",
            "auto_map",
        }
        body = {k: v for k, v in self.config.items() if k not in ignore}
        body.update(overrides or {})
        text = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hf_cache_config(repo_id: str) -> Path | None:
    """``config.json`` of ``repo_id`` in the local Hugging Face cache (read only, nothing fetched)."""
    home = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )
    snapshots = home / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: cannot read the model config: {e}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise UsageError(f"{path}: not a transformers config.json (no model_type)")
    return data


def load_arch(base_model: Any) -> ModelArch:
    """The architecture of ``base_model`` (directory, config.json path, Hub id, dict or PretrainedConfig)."""
    if isinstance(base_model, ModelArch):
        return base_model
    if isinstance(base_model, dict):
        if "model_type" not in base_model:
            raise UsageError("model config: no model_type")
        return ModelArch(dict(base_model), "object", str(base_model.get("_name_or_path") or base_model["model_type"]))
    if hasattr(base_model, "to_dict") and hasattr(base_model, "model_type"):
        data = base_model.to_dict()
        data["model_type"] = base_model.model_type
        return ModelArch(data, "object", str(getattr(base_model, "name_or_path", "") or base_model.model_type))
    name = str(base_model)
    path = Path(name).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.exists():
            raise UsageError(f"{path}: no config.json in the model directory")
        return ModelArch(_read_json(cfg), f"dir:{path.resolve()}", name)
    if path.is_file():
        return ModelArch(_read_json(path), f"file:{path.resolve()}", name)
    if name in BUILTIN_CONFIGS:
        return ModelArch(dict(BUILTIN_CONFIGS[name]), f"builtin:{name}", name)
    cached = _hf_cache_config(name)
    if cached is not None:
        return ModelArch(_read_json(cached), f"hf-cache:{cached}", name)
    raise UsageError(
        f"base model {name!r}: no local directory, config.json or Hugging Face cache entry; "
        "give --base-model a local model directory or a path to its config.json (nothing is downloaded)"
    )


def to_transformers_config(arch: ModelArch, overrides: dict[str, Any] | None = None):
    """The ``transformers`` config object for ``arch`` (imports transformers)."""
    from transformers import AutoConfig

    data = {k: v for k, v in arch.config.items() if k not in ("transformers_version", "_name_or_path")}
    model_type = data.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **data)
    except (KeyError, ValueError) as e:
        raise UsageError(
            f"{arch.name}: model_type {model_type!r} is not known to the installed transformers ({e})"
        ) from None
    for key, value in (overrides or {}).items():
        setattr(config, key, value)
    return config
