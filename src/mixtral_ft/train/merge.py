"""``mixft merge``: fold a run's LoRA adapter into its base model with Axolotl's merge-lora."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mixtral_ft.errors import ExternalCommandError, PreflightError, UsageError
from mixtral_ft.train.rundir import RunPaths

MERGED_NAME = "merged"


@dataclass
class MergeResult:
    merged_dir: Path
    wall_s: float


def _load_config(paths: RunPaths) -> dict:
    import yaml

    if not paths.config.exists():
        raise UsageError(f"{paths.root}: not a mixft run directory (no axolotl.yml)")
    return yaml.safe_load(paths.config.read_text(encoding="utf-8")) or {}


def prequantized_4bit(base_model: str) -> bool:
    """True when a local base model is stored already quantized to 4-bit (bitsandbytes)."""
    cfg_path = Path(base_model) / "config.json"
    if not cfg_path.exists():
        return base_model.lower().endswith(("-bnb-4bit", "-4bit"))
    qc = json.loads(cfg_path.read_text(encoding="utf-8")).get("quantization_config") or {}
    return bool(qc.get("load_in_4bit") or qc.get("quant_method") in ("bitsandbytes_4bit",) or
                (qc.get("quant_method") == "bitsandbytes" and not qc.get("load_in_8bit")))


def check_mergeable(cfg: dict) -> None:
    """Refuse a merge that cannot work here, with the fix."""
    base = str(cfg.get("base_model", ""))
    if prequantized_4bit(base):
        import torch

        if not torch.cuda.is_available():
            raise PreflightError(
                f"base model {base} is stored in 4-bit; dequantizing it for a merge needs a CUDA GPU. "
                "Merge on a GPU machine, or train against the full-precision base and merge that"
            )


def merge(run_dir: Path, out: Path | None = None, force: bool = False, runner=None) -> MergeResult:
    """Write the merged model to ``out`` (default ``RUN_DIR/merged``) atomically.

    Holds the run directory's lock (no ``train`` may write the adapter meanwhile) and ``out``'s."""
    from mixtral_ft.train.preflight import check_axolotl
    from mixtral_ft.train.runner import run_streaming
    from mixtral_ft.util.atomic import check_output_dir, guard_destination, remove_leftovers
    from mixtral_ft.util.interrupt import keeping
    from mixtral_ft.util.lock import output_lock

    runner = runner or run_streaming
    paths = RunPaths(Path(run_dir))
    cfg = _load_config(paths)
    if not (paths.output / "adapter_config.json").exists():
        raise UsageError(f"{paths.output}: no LoRA adapter (adapter_config.json); has the run finished?")
    out = Path(out) if out else paths.root / MERGED_NAME
    base = Path(str(cfg.get("base_model", "")))
    guard_destination(out, [paths.root, base if base.exists() else None])  # never the run or the base model
    check_output_dir(out, force)
    check_axolotl()
    check_mergeable(cfg)

    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(paths.root, "run directory"), output_lock(out, "merged model folder"), \
            keeping(f"nothing was written to {out}; run the same command again"):
        remove_leftovers(out)
        check_output_dir(out, force)
        _check_finished(paths)
        return _merge_locked(paths, cfg, out, runner)


def _check_finished(paths: RunPaths) -> None:
    """Merge only a finished run: Axolotl pre-saves adapter_config.json at the start and saves a
    partly trained adapter on Ctrl-C, so an adapter in output/ alone does not mean it is done."""
    from mixtral_ft.train.rundir import RunState, run_status

    status = run_status(paths.root)
    if status.state is not RunState.FINISHED:
        raise UsageError(f"{paths.root}: {status.describe()}; its adapter is not the finished one. Finish the run "
                         f"first (`mixft train … --run-dir {paths.root} --resume`), then merge")


def _merge_locked(paths: RunPaths, cfg: dict, out: Path, runner) -> MergeResult:
    """``merge``'s work while it holds ``out``'s lock: Axolotl writes into a staging sibling
    (named with this pid), which replaces ``out`` at the end and is removed on any failure."""
    import os

    from mixtral_ft.train.launch import build_merge_command
    from mixtral_ft.train.runner import axolotl_env
    from mixtral_ft.util.manifest import Manifest, file_entry

    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    try:
        cmd = build_merge_command(paths.config.resolve(), paths.output.resolve()) + [f"--output_dir={stage}"]
        started = time.monotonic()
        rc = runner(cmd, paths.root / "merge.log", env=axolotl_env(str(cfg.get("base_model", ""))))
        wall = time.monotonic() - started
        if rc != 0:
            raise ExternalCommandError(f"Axolotl merge-lora exited with status {rc}; see {paths.root / 'merge.log'}", rc)
        merged = stage / "merged"
        if not (merged / "config.json").exists():
            raise ExternalCommandError(f"Axolotl merge-lora wrote no model to {merged}; see {paths.root / 'merge.log'}", 1)
        # The merged weights are not hashed (tens of GB); their config.json, the adapter and the config are.
        base_config = Path(str(cfg.get("base_model"))) / "config.json"
        Manifest(
            kind="merge",
            settings={"run_dir": str(paths.root.resolve()), "base_model": cfg.get("base_model"),
                      "adapter": str(paths.output.resolve())},
            inputs=[file_entry(paths.config.resolve(), role="axolotl config")]
            + [file_entry(p.resolve(), role="adapter") for p in sorted(paths.output.glob("adapter_model.*"))]
            + ([file_entry(base_config.resolve(), role="base model config")] if base_config.exists() else []),
            outputs={"config.json": file_entry(merged / "config.json")},
            summary={"wall_s": round(wall, 1)},
        ).write(merged / "mixft_merge.json")
        if out.exists():
            shutil.rmtree(out)
        merged.replace(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return MergeResult(merged_dir=out, wall_s=wall)
