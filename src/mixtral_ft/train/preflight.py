"""Checks before a long run; each failure is one line saying how to fix it."""

from __future__ import annotations

import shutil
from pathlib import Path

from mixtral_ft.errors import InputError, MissingDependencyError, PreflightError, Problem, UsageError

# Fields each dataset type reads (docs/formats.md §1 and §4).
REQUIRED_FIELDS = {"rg": ("context", "question", "answer"), "tc": ("prompt", "completion")}

# Smallest per-GPU memory (GiB as torch reports it) each GPU profile is sized for. ZeRO-2 shards
# optimizer state and gradients but not the frozen 4-bit weights, so a multi-gpu card needs what
# the single-GPU 80 GB run needs (docs/training.md, "Micro batch per task and profile").
PROFILE_MIN_GPU_GIB = {"a100-80gb": 70.0, "h100-80gb": 70.0, "a100-40gb": 37.0, "multi-gpu": 70.0}

# What to install when a config needs a package that is missing (docs/training.md).
DEEPSPEED_INSTALL = "pip install 'mixtral-ft[deepspeed]' (axolotl[deepspeed]==0.19.0: deepspeed>=0.18.6,<0.19)"
FLASH_ATTN_INSTALL = "pip install flash-attn==2.8.3 --no-build-isolation (docs/training.md, \"Flash attention\")"
# attn_implementation values served by the flash-attn package (transformers' flash_attention_2 path).
FLASH_ATTN_IMPLS = ("flash_attention_2",)

# Free disk wanted under the run dir: QLoRA checkpoints (adapter + optimizer state) x save_total_limit.
MIN_FREE_DISK_GIB = {"cpu": 0.2}
DEFAULT_MIN_FREE_DISK_GIB = 10.0


def check_axolotl() -> None:
    import importlib.util

    from mixtral_ft.axolotl_cfg.validate import INSTALL_HINT

    if importlib.util.find_spec("axolotl") is None:
        raise MissingDependencyError(f"Axolotl is not installed; {INSTALL_HINT}")


def check_data(task: str, data_dir: Path, max_problems: int = 20) -> dict[str, int]:
    """Both split files exist and every row has the fields the dataset type reads, as strings."""
    from mixtral_ft.util.jsonl import read_jsonl

    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: data directory not found; create it with `mixft prepare {task}`")
    counts: dict[str, int] = {}
    problems: list[Problem] = []
    for split in ("train", "test"):
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            raise UsageError(f"{path}: not found; `mixft prepare {task} --out {data_dir}` writes train.jsonl and test.jsonl")
        n = 0
        for n, row in enumerate(read_jsonl(path), 1):
            for name in REQUIRED_FIELDS[task]:
                value = row.get(name)
                if not isinstance(value, str) or not value:
                    what = "is missing" if value is None else "must be a non-empty string"
                    problems.append(Problem(str(path), n, name, f"{what} (needed by the {task} dataset type)"))
        if n == 0:
            problems.append(Problem(str(path), None, None, "no rows"))
        counts[split] = n
    if problems:
        raise InputError(problems[:max_problems], total=len(problems), cap=max_problems)
    return counts


def check_gpus(profile: str, gpus: int) -> None:
    """GPU profiles need ``gpus`` CUDA devices with the memory the profile is sized for."""
    if profile == "cpu":
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus:
        raise PreflightError(
            f"profile '{profile}' needs {gpus} CUDA GPU(s), found {found}; "
            "use --profile cpu with a tiny model for a CPU smoke run, or lower --gpus"
        )
    need = PROFILE_MIN_GPU_GIB.get(profile)
    if need is None:
        return
    for i in range(gpus):
        total = torch.cuda.get_device_properties(i).total_memory / 2**30
        if total < need:
            if profile == "multi-gpu":
                smaller = " (ZeRO-2 keeps the whole 4-bit model on every GPU; see docs/training.md, \"Multi-GPU\")"
            else:
                smaller = " (try --profile a100-40gb)" if need > 40 else ""
            raise PreflightError(
                f"GPU {i} has {total:.0f} GiB; profile '{profile}' is sized for {need:.0f} GiB or more{smaller}"
            )


def check_disk(run_dir: Path, profile: str) -> None:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    need = MIN_FREE_DISK_GIB.get(profile, DEFAULT_MIN_FREE_DISK_GIB)
    if free < need:
        raise PreflightError(f"{probe}: {free:.1f} GiB free, checkpoints need about {need:.0f} GiB; free space or use --run-dir elsewhere")


def check_run_dir(run_dir: Path, resume: bool, machine_rank: int = 0) -> None:
    """Refuse a run directory this command may not use, from the run's state (``train.rundir``:
    new, interrupted before its first checkpoint, resumable, finished), with the way on."""
    from mixtral_ft.train.rundir import start_decision

    start_decision(run_dir, resume, machine_rank)


def _import_error(module: str) -> str | None:
    """Why ``import module`` fails (its last line), or None when it imports.

    A real import, not a lookup: a flash-attn or DeepSpeed build made for another torch is
    installed but fails to import (an undefined symbol), and that is the usual failure.
    """
    import importlib

    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError from a compiled extension, ...
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")
    return None


def check_deepspeed(values: dict) -> None:
    """A config that names a DeepSpeed JSON needs ``import deepspeed`` to work (an extra of Axolotl's)."""
    if not values.get("deepspeed"):
        return
    why = _import_error("deepspeed")
    if why:
        raise MissingDependencyError(f"the config uses DeepSpeed (deepspeed: {values['deepspeed']}) but "
                                     f"`import deepspeed` failed ({why}); install it: {DEEPSPEED_INSTALL}")


def requested_attention(values: dict) -> str | None:
    """The attention implementation a config asks for, reading the deprecated flags as Axolotl does."""
    if values.get("attn_implementation"):
        return str(values["attn_implementation"])
    if values.get("flash_attention"):  # Axolotl rewrites it (utils/schemas/config.py, normalize_attn_implementation)
        return "flash_attention_2"
    return None


def check_flash_attn(values: dict) -> None:
    """``attn_implementation: flash_attention_2`` needs an importable flash-attn, checked before the model loads.

    Without it transformers falls back to a kernel from the Hugging Face Hub, which fails offline
    (``modeling_flash_attention_utils.py``, ``_lazy_imports``) after Axolotl has prepared the data.
    """
    attn = requested_attention(values)
    if attn not in FLASH_ATTN_IMPLS:
        return
    why = _import_error("flash_attn")
    if why:
        raise MissingDependencyError(f"attn_implementation: {attn} needs flash-attn, but `import flash_attn` "
                                     f"failed ({why}); install it: {FLASH_ATTN_INSTALL}, or run with "
                                     "--set attn_implementation=sdpa")
