"""Plan vs published measurements (issue 11, item 5; the table goes in docs/planning.md).

Runs `mixft plan`'s library on every point of scripts/plan_points.yaml - LoRA/QLoRA peak GPU memory
that others measured (or claimed) on Hugging Face / PEFT stacks - and compares:

    .venv/bin/python scripts/bench_plan.py --out runs/bench-plan
    .venv/bin/python scripts/bench_plan.py --only fsdp-qlora-llama2-7b-qlora-ddp-bs8,peft-readme-bloomz-7b1-lora-fp32

For each point: the measured peak (GiB), the planned peak, the error in percent, the plan's fits
verdict for the card the source used against what happened (right / wrong), and whether the number
is a measurement, a boundary of a sweep or a claim. The summary is the median absolute error over
the fully known measured points (the issue's target: within 15%, and the right verdict everywhere).
A point the planner cannot plan (e.g. FSDP, which mixft does not run) is a row with the reason.

Writes OUT/results.json, OUT/results.md and OUT/manifest.json (versions, the points file's hash, the
command line); prints the table. The planner measures each new architecture once on the CPU and
caches it ($MIXFT_CACHE/plan), so the first run takes minutes and later ones seconds.

The points file alone can be checked without planning anything: --check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POINTS = REPO / "scripts" / "plan_points.yaml"

KINDS = ("measured", "boundary", "claim")
METRICS = ("max_memory_allocated", "max_memory_reserved", "nvidia-smi", "unstated", "estimate", "capacity")
UNITS = {"GiB": 1.0, "GB": 1.0, "MiB": 1 / 1024}  # "GB" readings of nvidia-smi/W&B are GiB (see the file header)
PARALLEL = {
    "single": "one GPU",
    "ddp": "data parallel: a full replica per GPU",
    "fsdp_no_shard": "FSDP NO_SHARD: a full replica per GPU, planned as data parallel",
    "fsdp_full_shard": "FSDP FULL_SHARD: weights split over the GPUs; mixft runs no FSDP",
    "fsdp_full_shard_cpu_offload": "FSDP with parameters offloaded to the CPU; mixft runs no FSDP",
}
NOT_PLANNED_PARALLEL = {"fsdp_full_shard", "fsdp_full_shard_cpu_offload"}
# Keys in a point's `train` block that are not Axolotl's (the file header explains them).
EXTRA_TRAIN_KEYS = ("tokens_per_micro_batch", "base_dtype", "lora_dtype", "parallel")
ATTENTION_KEYS = ("flash_attention", "attn_implementation", "xformers_attention", "sdp_attention")
MODEL_SHAPE_KEYS = ("model_type", "hidden_size", "vocab_size")
TARGET_ERROR_PCT = 15.0


class PointsError(Exception):
    """The points file is malformed; ``problems`` lists every problem found."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


# --------------------------------------------------------------------------------------------------
# the points file
# --------------------------------------------------------------------------------------------------

def _layers(config: dict[str, Any]) -> Any:
    return config.get("num_hidden_layers", config.get("n_layer"))


def validate(data: Any) -> list[str]:
    """Every schema problem of a loaded points file, as ``point-id: field: what is wrong``."""
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("points"), list) or not isinstance(data.get("models"), dict):
        return ["top level: needs a `models:` mapping and a `points:` list"]
    models: dict[str, Any] = data["models"]
    for name, model in models.items():
        cfg = model.get("config") if isinstance(model, dict) else None
        if not isinstance(cfg, dict):
            problems.append(f"models.{name}: config: missing")
            continue
        for key in MODEL_SHAPE_KEYS:
            if not cfg.get(key):
                problems.append(f"models.{name}: config.{key}: missing")
        if not _layers(cfg):
            problems.append(f"models.{name}: config.num_hidden_layers: missing")
        if not model.get("hf_id"):
            problems.append(f"models.{name}: hf_id: missing")
    seen: set[str] = set()
    for i, point in enumerate(data["points"]):
        pid = point.get("id") if isinstance(point, dict) else None
        where = f"points[{i}]" if not pid else pid
        if not isinstance(point, dict) or not pid:
            problems.append(f"{where}: id: missing")
            continue
        if pid in seen:
            problems.append(f"{where}: id: duplicate")
        seen.add(pid)
        src = point.get("source")
        if not isinstance(src, dict) or not all(src.get(k) for k in ("title", "url", "where")):
            problems.append(f"{where}: source: needs title, url and where")
        if point.get("kind") not in KINDS:
            problems.append(f"{where}: kind: {point.get('kind')!r} is not one of {', '.join(KINDS)}")
        if not isinstance(point.get("fully_known"), bool):
            problems.append(f"{where}: fully_known: must be true or false")
        if point.get("model") not in models:
            problems.append(f"{where}: model: {point.get('model')!r} is not under models:")
        train = point.get("train")
        if not isinstance(train, dict):
            problems.append(f"{where}: train: missing")
            continue
        problems += _validate_train(where, train)
        m = point.get("measured")
        if not isinstance(m, dict):
            problems.append(f"{where}: measured: missing")
            continue
        problems += _validate_measured(where, point, m)
        assumed = point.get("assumed") or []
        unknowns = point.get("unknowns")
        if point.get("fully_known"):
            if assumed:
                problems.append(f"{where}: assumed: a fully known point assumes nothing ({', '.join(assumed)})")
            if point.get("kind") == "boundary":
                problems.append(f"{where}: fully_known: a boundary point's peak is the card, not a reading")
        elif not unknowns:
            problems.append(f"{where}: unknowns: a point that is not fully known says what is unknown")
        for key in assumed:
            if key not in train:
                problems.append(f"{where}: assumed: {key!r} is not a key of train")
    return problems


def _validate_train(where: str, train: dict[str, Any]) -> list[str]:
    out = []
    for key in ("adapter", "lora_r", "sequence_len", "micro_batch_size", "tokens_per_micro_batch", "optimizer"):
        if train.get(key) in (None, ""):
            out.append(f"{where}: train.{key}: missing")
    if train.get("adapter") not in ("lora", "qlora"):
        out.append(f"{where}: train.adapter: {train.get('adapter')!r} is not lora or qlora")
    if not (train.get("lora_target_modules") or train.get("lora_target_linear")):
        out.append(f"{where}: train.lora_target_modules: none, and lora_target_linear is not set")
    if "gradient_checkpointing" not in train:
        out.append(f"{where}: train.gradient_checkpointing: missing (true or false)")
    if not any(train.get(k) for k in ATTENTION_KEYS):
        out.append(f"{where}: train: no attention kernel ({' / '.join(ATTENTION_KEYS)})")
    if not (train.get("bf16") or train.get("fp16") or train.get("base_dtype")):
        out.append(f"{where}: train: no precision (bf16, fp16 or base_dtype)")
    if train.get("adapter") == "qlora" and not train.get("load_in_4bit"):
        out.append(f"{where}: train.load_in_4bit: a qlora point loads in 4-bit")
    par = train.get("parallel")
    if not isinstance(par, dict) or par.get("kind") not in PARALLEL or not int(par.get("gpus") or 0) >= 1:
        out.append(f"{where}: train.parallel: needs kind ({', '.join(PARALLEL)}) and gpus >= 1")
    try:
        slots = int(train["micro_batch_size"]) * int(train["sequence_len"])
        if int(train["tokens_per_micro_batch"]) != slots:
            out.append(f"{where}: train.tokens_per_micro_batch: {train['tokens_per_micro_batch']} is not "
                       f"micro_batch_size x sequence_len = {slots} (the planner plans full rows)")
    except (KeyError, TypeError, ValueError):
        pass
    return out


def _validate_measured(where: str, point: dict[str, Any], m: dict[str, Any]) -> list[str]:
    out = []
    peak, fits = m.get("peak"), m.get("fits")
    if peak is None and fits is None:
        out.append(f"{where}: measured: neither a peak nor a fits verdict")
    if fits not in (True, False, None):
        out.append(f"{where}: measured.fits: true, false or null")
    if peak is not None:
        unit = m.get("unit")
        if unit not in UNITS:
            out.append(f"{where}: measured.unit: {unit!r} is not one of {', '.join(UNITS)}")
        elif not isinstance(m.get("peak_gib"), (int, float)):
            out.append(f"{where}: measured.peak_gib: missing")
        elif abs(float(peak) * UNITS[unit] - float(m["peak_gib"])) > 0.01 and point.get("kind") != "boundary":
            out.append(f"{where}: measured.peak_gib: {m['peak_gib']} is not {peak} {unit}")
        if m.get("metric") not in METRICS:
            out.append(f"{where}: measured.metric: {m.get('metric')!r} is not one of {', '.join(METRICS)}")
    if fits is not None and not isinstance(m.get("gpu_memory_gib"), (int, float)):
        out.append(f"{where}: measured.gpu_memory_gib: a fits verdict needs the card's memory")
    if point.get("kind") == "boundary" and (peak is None or fits is not True):
        out.append(f"{where}: measured: a boundary point fits and its peak is the card's memory")
    if point.get("fully_known") and point.get("kind") == "measured" and peak is None and fits is None:
        out.append(f"{where}: measured: a fully known measurement needs a peak or a verdict")
    return out


def load_points(path: Path = POINTS) -> dict[str, Any]:
    """The points file, checked (raises :class:`PointsError` listing every problem)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PointsError(Path(path), [f"cannot read: {e}"]) from None
    problems = validate(data)
    if problems:
        raise PointsError(Path(path), problems)
    return data


def axolotl_config(point: dict[str, Any], config_json: Path) -> dict[str, Any]:
    """The point's ``train`` block as the Axolotl config the planner reads (``base_model`` = the config file)."""
    cfg = {k: v for k, v in point["train"].items() if k not in EXTRA_TRAIN_KEYS}
    cfg["base_model"] = str(config_json)
    return cfg


def world_size(point: dict[str, Any]) -> int:
    return int(point["train"]["parallel"]["gpus"])


def write_model_configs(models: dict[str, Any], directory: Path) -> dict[str, Path]:
    """One ``config.json`` per model of the points file (what ``base_model`` points at)."""
    paths = {}
    for name, model in models.items():
        path = directory / name / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = dict(model["config"])
        cfg.setdefault("_name_or_path", model["hf_id"])
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths[name] = path
    return paths
