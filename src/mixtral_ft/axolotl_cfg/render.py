"""Render an Axolotl config: base (``configs/rg.yml``/``tc.yml``) + hardware profile + ``--set`` overrides.

Layers are deep-merged (mappings merge, everything else replaces); ``null`` in a later layer
removes the key. The base model's family then adapts the result (``families.py``: LoRA targets,
MoE-only keys) as a "model-family" layer that sits right after the base config. Every leaf
remembers which layer set it, for ``mixft config show``. Unknown keys are refused with a
suggestion, since Axolotl would silently ignore them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixtral_ft.axolotl_cfg.deepspeed import check_deepspeed
from mixtral_ft.axolotl_cfg.families import apply_family
from mixtral_ft.axolotl_cfg.keys import known_keys
from mixtral_ft.errors import ConfigError, UsageError, did_you_mean, suggest
from mixtral_ft.resources import configs_dir as shipped_or_env
from mixtral_ft.util.provenance import refuse_secret_setting
from mixtral_ft.util.yamlsafe import safe_load

TASKS = ("rg", "tc")
_VAR = re.compile(r"\$\{([a-z_]+)\}")
_SCI_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def configs_dir() -> Path:
    """The shipped ``configs/`` folder, as package data (``MIXFT_CONFIGS_DIR`` overrides it)."""
    return shipped_or_env()


def profile_names(cfg_dir: Path | None = None) -> list[str]:
    """The hardware profiles of ``cfg_dir`` (default ``configs_dir()``): ``profiles/*.yml``."""
    cfg_dir = cfg_dir or configs_dir()
    return sorted(p.stem for p in (cfg_dir / "profiles").glob("*.yml"))


@dataclass(frozen=True)
class RenderRequest:
    """Everything that decides a rendered config (recorded in the run manifest)."""

    task: str
    data_dir: Path
    profile: str
    run_dir: Path
    base_model: str | None = None
    overrides: tuple[str, ...] = ()
    extra: tuple[tuple[str, Any], ...] = ()  # settings mixft itself adds (e.g. resume_from_checkpoint)


@dataclass
class RenderedConfig:
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)  # dotted key path -> layer name
    notes: list[str] = field(default_factory=list)  # what the model-family layer decided (families.py)

    def to_yaml(self, header: str | None = None) -> str:
        body = yaml.safe_dump(self.values, sort_keys=False, allow_unicode=True, width=100)
        lines = [*(header.splitlines() if header else []), *self.notes]
        return "".join(f"# {line}\n" if line else "#\n" for line in lines) + body

    def source_of(self, key: str) -> str:
        """The layers that set ``key`` or anything inside it, in order of first appearance."""
        seen: list[str] = []
        for path, src in self.sources.items():
            if (path == key or path.startswith(key + ".")) and src not in seen:
                seen.append(src)
        return ", ".join(seen) or "?"

    def show(self) -> str:
        """The resolved YAML, each top-level key annotated with the layer(s) it came from."""
        width = max((len(k) for k in self.values), default=0)
        out = []
        for key, value in self.values.items():
            text = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, width=100).rstrip("\n")
            lines = text.splitlines()
            pad = " " * max(1, width + 40 - len(lines[0]))
            lines[0] = f"{lines[0]}{pad}# {self.source_of(key)}"
            out.extend(lines)
        out.extend(f"# {note}" for note in self.notes)
        return "\n".join(out) + "\n"


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = safe_load(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of Axolotl keys at the top level")
    return data


def _merge(dst: dict, src: dict, layer: str, sources: dict[str, str], prefix: str = "") -> None:
    for key, value in src.items():
        path = f"{prefix}{key}"
        if value is None:
            dst.pop(key, None)
            for p in [p for p in sources if p == path or p.startswith(path + ".")]:
                del sources[p]
            continue
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, layer, sources, path + ".")
            continue
        dst[key] = copy.deepcopy(value)
        for p in [p for p in sources if p.startswith(path + ".")]:
            del sources[p]
        _record(value, path, layer, sources)


def _record(value: Any, path: str, layer: str, sources: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _record(v, f"{path}.{k}", layer, sources)
    else:
        sources[path] = layer


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.sub=value`` -> (["key", "sub"], YAML-typed value). ``key=`` or ``key=null`` removes the key."""

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected key=value (for example --set micro_batch_size=2)")
    refuse_secret_setting(key, raw)  # a secret here would be written to axolotl.yml and the manifest
    parts = key.split(".")
    if any(not p for p in parts):
        raise UsageError(f"--set {text!r}: empty part in dotted key {key!r}")
    try:
        value = safe_load(raw, f"--set {key}") if raw.strip() else None
    except yaml.YAMLError as e:
        raise UsageError(f"--set {text!r}: value is not valid YAML: {getattr(e, 'problem', e)}") from None
    if isinstance(value, str) and _SCI_FLOAT.fullmatch(value):
        value = float(value)  # YAML 1.1 reads 1e-4 as a string; every user means the number
    return parts, value


def _override_as_layer(parts: list[str], value: Any, current: dict) -> dict:
    """Turn a dotted override into a mapping to merge; numeric parts index existing lists."""
    if len(parts) == 1:
        return {parts[0]: value}
    head, rest = parts[0], parts[1:]
    node = current.get(head)
    if isinstance(node, list):
        if not rest[0].isdigit() or int(rest[0]) >= len(node):
            raise UsageError(
                f"--set {'.'.join(parts)}: '{head}' is a list of {len(node)}; use an index such as {head}.0.…"
            )
        items = copy.deepcopy(node)
        idx = int(rest[0])
        if len(rest) == 1:
            items[idx] = value
        else:
            if not isinstance(items[idx], dict):
                raise UsageError(f"--set {'.'.join(parts)}: {head}.{idx} is not a mapping")
            _merge(items[idx], _override_as_layer(rest[1:], value, items[idx]), "override", {})
            items = [x for x in items]
        return {head: items}
    sub = node if isinstance(node, dict) else {}
    return {head: _override_as_layer(rest, value, sub)}


def _substitute(value: Any, variables: dict[str, str], path: str, errors: list[str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match) -> str:
            name = m.group(1)
            if name not in variables:
                errors.append(f"{path}: unknown variable ${{{name}}}; available: {', '.join(sorted(variables))}")
                return m.group(0)
            return variables[name]

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{path}.{k}" if path else k, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, f"{path}.{i}", errors) for i, v in enumerate(value)]
    return value


def check_keys(values: dict[str, Any], keys=None) -> list[str]:
    """Every key Axolotl would silently drop, with a suggestion."""
    keys = keys or known_keys()
    errors = []
    for key in values:
        if key not in keys.top_level:
            errors.append(f"{key}: {_unknown(key, keys.top_level, 'Axolotl key')}")
    for list_key in ("datasets", "test_datasets"):
        entries = values.get(list_key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            for key in entry:
                if key not in keys.dataset:
                    errors.append(f"{list_key}.{i}.{key}: {_unknown(key, keys.dataset, 'dataset key')}")
            if isinstance(entry.get("type"), dict):
                for key in entry["type"]:
                    if key not in keys.prompter_type:
                        errors.append(
                            f"{list_key}.{i}.type.{key}: {_unknown(key, keys.prompter_type, 'dataset type key')}"
                        )
    return errors


def _unknown(key: str, choices: frozenset[str], what: str) -> str:
    return f"unknown {what} '{key}' (Axolotl would silently ignore it).{did_you_mean(key, choices)}"


# A profile's ``tasks:`` section: per-task values (for example a smaller micro batch for TC's
# 8192-token sequences) laid over the profile's own lines for that task only. mixft consumes it.
PROFILE_TASKS_KEY = "tasks"


def split_profile(profile: dict[str, Any], task: str, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A profile's common values and the values of its ``tasks: {task: ...}`` entry for ``task``."""
    common = {k: v for k, v in profile.items() if k != PROFILE_TASKS_KEY}
    tasks = profile.get(PROFILE_TASKS_KEY) or {}
    if not isinstance(tasks, dict) or any(not isinstance(v, dict) for v in tasks.values()):
        raise ConfigError(f"{path}: {PROFILE_TASKS_KEY}: expected a mapping of task name to Axolotl keys")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ConfigError(f"{path}: {PROFILE_TASKS_KEY}.{unknown[0]}: {suggest(unknown[0], TASKS, 'task')}")
    return common, dict(tasks.get(task) or {})


def refused_settings(values: dict[str, Any]) -> list[str]:
    """Settings mixft refuses although Axolotl would accept them, one line each with the reason."""
    return check_deepspeed(values.get("deepspeed"))


def render(req: RenderRequest, cfg_dir: Path | None = None, keys=None) -> RenderedConfig:
    """Merge the layers for ``req``; raise ``ConfigError`` listing every problem found.

    ``keys``: the known Axolotl keys to check against (default: the installed schema, which
    imports Axolotl; ``mixft plan`` passes the checked-in snapshot to stay fast)."""
    cfg_dir = cfg_dir or configs_dir()
    if req.task not in TASKS:
        raise UsageError(suggest(req.task, TASKS, "task"))
    base_path = cfg_dir / f"{req.task}.yml"
    if not base_path.exists():
        raise ConfigError(f"{base_path}: base config not found; set MIXFT_CONFIGS_DIR to the mixft configs/ folder")
    profiles = profile_names(cfg_dir)
    if req.profile not in profiles:
        raise UsageError(suggest(req.profile, profiles, "profile"))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _merge(values, _load_yaml(base_path), "base", sources)
    profile_path = cfg_dir / "profiles" / f"{req.profile}.yml"
    profile, per_task = split_profile(_load_yaml(profile_path), req.task, profile_path)
    _merge(values, profile, f"profile:{req.profile}", sources)
    _merge(values, per_task, f"profile:{req.profile}/{req.task}", sources)
    if req.base_model:
        _merge(values, {"base_model": req.base_model}, "--base-model", sources)
    for key, value in req.extra:
        _merge(values, {key: value}, "mixft", sources)
    for text in req.overrides:
        parts, value = parse_override(text)
        _merge(values, _override_as_layer(parts, value, values), "override", sources)

    errors: list[str] = []
    notes = apply_family(values, sources, errors)  # the "model-family" layer: targets, MoE-only keys
    variables = {
        "data_dir": str(Path(req.data_dir).resolve()),
        "run_dir": str(Path(req.run_dir).resolve()),
        "configs_dir": str(cfg_dir.resolve()),
    }
    values = _substitute(values, variables, "", errors)
    errors += check_keys(values, keys)
    errors += refused_settings(values)
    if errors:
        raise ConfigError(errors)
    return RenderedConfig(values=values, sources=sources, notes=notes)
