"""Checks before a long run; each failure is one line saying how to fix it."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path

from mixtral_ft.axolotl_cfg.validate import INSTALL_HINT
from mixtral_ft.errors import InputError, MissingDependencyError, PreflightError, Problem, UsageError
from mixtral_ft.train.hubkernel import fallback_kernel, is_hub_kernel, kernel_unavailable, offline_reason
from mixtral_ft.train.rundir import start_decision
from mixtral_ft.util.jsonl import read_jsonl

# Fields each dataset type reads (docs/formats.md §1 and §4).
REQUIRED_FIELDS = {"rg": ("context", "question", "answer"), "tc": ("prompt", "completion")}

# What to install when a config needs a package that is missing (docs/training.md).
DEEPSPEED_INSTALL = "pip install 'mixtral-ft[deepspeed]' (axolotl[deepspeed]==0.21.0: deepspeed>=0.18.6,<0.20)"
FLASH_ATTN_INSTALL = 'pip install flash-attn==2.8.3 --no-build-isolation (docs/training.md, "Flash attention")'

# Free disk wanted under the run dir: QLoRA checkpoints (adapter + optimizer state) x save_total_limit.
MIN_FREE_DISK_GIB = {"cpu": 0.2}
DEFAULT_MIN_FREE_DISK_GIB = 10.0


def check_axolotl() -> None:

    if importlib.util.find_spec("axolotl") is None:
        raise MissingDependencyError(f"Axolotl is not installed; {INSTALL_HINT}")


def check_data(task: str, data_dir: Path, max_problems: int = 20) -> dict[str, int]:
    """Both split files exist and every row has the fields the dataset type reads, as strings."""
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: data directory not found; create it with `mixft prepare {task}`")
    counts: dict[str, int] = {}
    problems: list[Problem] = []
    for split in ("train", "test"):
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            raise UsageError(
                f"{path}: not found; `mixft prepare {task} --out {data_dir}` writes train.jsonl and test.jsonl"
            )
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
    """GPU profiles need ``gpus`` CUDA devices. Whether the run fits their memory is the memory plan's
    check (``mixtral_ft.plan.check.preflight_training``: the planned peak against each device's free
    memory, with the parts and the fix), not a per-profile threshold here."""
    if profile == "cpu":
        return
    import torch

    # No CUDA context in mixft's process (Axolotl's ranks need the cards): device_count asks NVML,
    # else cudaGetDeviceCount, and caches nothing before CUDA is initialised (torch/cuda/__init__.py,
    # device_count); is_available would always call cudaGetDeviceCount (cuInit).
    found = torch.cuda.device_count()
    if found < gpus:
        raise PreflightError(
            f"profile '{profile}' needs {gpus} CUDA GPU(s), found {found}; "
            "use --profile cpu with a tiny model for a CPU smoke run, or lower --gpus"
        )


def check_disk(run_dir: Path, profile: str) -> None:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    need = MIN_FREE_DISK_GIB.get(profile, DEFAULT_MIN_FREE_DISK_GIB)
    if free < need:
        raise PreflightError(
            f"{probe}: {free:.1f} GiB free, checkpoints need about {need:.0f} GiB; free space or use --run-dir elsewhere"
        )


def check_run_dir(run_dir: Path, resume: bool, machine_rank: int = 0) -> None:
    """Refuse a run directory this command may not use, from the run's state (``train.rundir``:
    new, interrupted before its first checkpoint, resumable, finished), with the way on."""
    start_decision(run_dir, resume, machine_rank)


def _import_error(module: str) -> str | None:
    """Why ``import module`` fails (its last line), or None when it imports.

    A real import, not a lookup: a flash-attn or DeepSpeed build made for another torch is
    installed but fails to import (an undefined symbol), and that is the usual failure.
    """
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
        raise MissingDependencyError(
            f"the config uses DeepSpeed (deepspeed: {values['deepspeed']}) but "
            f"`import deepspeed` failed ({why}); install it: {DEEPSPEED_INSTALL}"
        )


def requested_attention(values: dict) -> str | None:
    """The attention implementation a config asks for, reading the deprecated flags as Axolotl does."""
    if values.get("attn_implementation"):
        return str(values["attn_implementation"])
    if values.get("flash_attention"):  # Axolotl rewrites it (utils/schemas/config.py, normalize_attn_implementation)
        return "flash_attention_2"
    return None


# attn_implementation values that need a package beyond torch: (import name, how to install it).
ATTN_PACKAGES = {
    "flash_attention_2": ("flash_attn", FLASH_ATTN_INSTALL),
    "flash_attention_3": (
        "flash_attn_interface",
        "the flash-attention 3 build (hopper/ of the flash-attention repository)",
    ),
    "xformers": ("xformers", "pip install xformers"),
    "sage": ("sageattention", "pip install sageattention"),
}
HUB_KERNEL_DOCS = 'docs/training.md, "Flash attention without flash-attn"'


def check_attention(values: dict) -> None:
    """The attention implementation the config asks for can load where Axolotl will run, checked
    before anything is written or loaded (:class:`MissingDependencyError`, one line):

    - a package-backed one (:data:`ATTN_PACKAGES`, e.g. ``flash_attention_2``) needs ``import`` of its
      package to work, or, for the flash-attention ones, transformers' Hub kernel fallback
      (``modeling_utils.py``, ``_check_and_adjust_attn_implementation``) loadable offline;
    - a Hub kernel (``org/name[@rev][:fn]``, transformers' ``hub_kernels.is_kernel``) needs the
      ``kernels`` package, and, when the run is offline (``HF_HUB_OFFLINE``, which mixft sets for a
      local ``--base-model``: ``train.runner.axolotl_env``), the kernel loadable without the network.
    Without either, transformers fails at model load, after Axolotl has prepared the data.
    """
    attn = requested_attention(values)
    if attn is None:
        return

    if is_hub_kernel(attn):
        _check_hub_kernel(attn, values)
        return
    if attn not in ATTN_PACKAGES:
        return
    module, install = ATTN_PACKAGES[attn]
    why = _import_error(module)
    if not why:
        return

    fallback = fallback_kernel(attn)
    if fallback is not None and kernel_unavailable(fallback) is None:
        return  # transformers loads its Hub kernel instead, from LOCAL_KERNELS or the cache
    hub = f", and its Hub kernel {fallback} is not available offline" if fallback else ""
    raise MissingDependencyError(
        f"attn_implementation: {attn} needs {module.replace('_', '-')}, but `import {module}` failed ({why}){hub}; "
        f"install it: {install}, or run with --set attn_implementation=sdpa"
        + (f" (or the Hub kernel: {HUB_KERNEL_DOCS})" if fallback else "")
    )


def _check_hub_kernel(attn: str, values: dict) -> None:
    if _import_error("kernels"):
        raise MissingDependencyError(
            f"attn_implementation: {attn} is a Hugging Face Hub kernel, which needs the kernels package "
            "(pip install kernels), or run with --set attn_implementation=sdpa"
        )
    offline = offline_reason(values.get("base_model"))
    if offline is None:
        return  # transformers downloads it at model load
    why = kernel_unavailable(attn)
    if why is not None:
        raise MissingDependencyError(
            f"attn_implementation: {attn} is a Hugging Face Hub kernel and this run is offline ({offline}), "
            f"but {why}; make it loadable offline ({HUB_KERNEL_DOCS}), or run with --set attn_implementation=sdpa"
        )
