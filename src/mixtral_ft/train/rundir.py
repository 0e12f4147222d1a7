"""The run directory and what is read back from it: checkpoints, trainer state, the end summary.

Layout::

    RUN_DIR/axolotl.yml      the rendered config Axolotl ran with
    RUN_DIR/manifest.json    versions, hashes, command, times, exit status (one entry per attempt)
    RUN_DIR/train.log        everything Axolotl printed, all attempts appended
    RUN_DIR/prepared/        Axolotl's tokenized dataset (dataset_prepared_path)
    RUN_DIR/output/          adapter (adapter_model.safetensors) and checkpoint-N/ folders
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem

CONFIG_NAME = "axolotl.yml"
MANIFEST_NAME = "manifest.json"
LOG_NAME = "train.log"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def output(self) -> Path:
        return self.root / OUTPUT_NAME


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def newest_checkpoint(output_dir: Path) -> Path | None:
    done = [p for p in checkpoints(output_dir) if (p / "trainer_state.json").exists()]
    return done[-1] if done else None


@dataclass
class TrainSummary:
    adapter_dir: str | None
    global_step: int | None
    max_steps: int | None
    train_loss: float | None
    eval_loss: float | None
    trainer_state: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _output_dirs(run_dir: Path) -> list[Path]:
    """Where a run's trainer states can be: the dir itself, the ``output_dir`` its
    ``axolotl.yml`` names (relative to the run dir or the working directory), and ``output/``."""
    dirs = [run_dir]
    cfg = run_dir / CONFIG_NAME
    if cfg.is_file():
        import yaml

        try:
            values = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise InputError([Problem(str(cfg), None, None, f"invalid YAML: {e}")]) from None
        out = values.get("output_dir") if isinstance(values, dict) else None
        if out:
            out = Path(str(out))
            dirs += [out] if out.is_absolute() else [run_dir / out, Path.cwd() / out]
    dirs.append(run_dir / OUTPUT_NAME)
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and all(d.resolve() != u.resolve() for u in unique):
            unique.append(d)
    return unique


def _global_step(path: Path) -> int:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError([Problem(str(path), None, None, f"invalid JSON: {e}")]) from None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else -1


def find_trainer_state(run_dir: Path) -> Path | None:
    """The ``trainer_state.json`` with the longest history for a run dir (or an output dir), or None.

    Candidates: in each of the run's output dirs (``_output_dirs``), the final
    ``trainer_state.json`` and the one in its highest ``checkpoint-N``. The highest
    ``global_step`` wins; on a tie the first in that order (dirs in the order above, a final
    state before a checkpoint). ``mixft train``'s summary and ``mixft report``'s loss curves
    both read the state this returns.
    """
    candidates: list[Path] = []
    for d in _output_dirs(Path(run_dir)):
        if (d / "trainer_state.json").is_file():
            candidates.append(d / "trainer_state.json")
        done = [c for c in checkpoints(d) if (c / "trainer_state.json").is_file()]
        if done:
            candidates.append(done[-1] / "trainer_state.json")
    if not candidates:
        return None
    steps = [_global_step(p) for p in candidates]
    return candidates[steps.index(max(steps))]


def read_summary(output_dir: Path) -> TrainSummary:
    """Adapter location and the last logged losses, from the newest ``trainer_state.json``."""
    state_path = find_trainer_state(output_dir)
    step = max_steps = train_loss = eval_loss = None
    if state_path is not None:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        step = state.get("global_step")
        max_steps = state.get("max_steps")
        for entry in state.get("log_history", []):
            if "loss" in entry:
                train_loss = entry["loss"]
            if "eval_loss" in entry:
                eval_loss = entry["eval_loss"]
    adapter = output_dir if (output_dir / "adapter_config.json").exists() else None
    return TrainSummary(
        adapter_dir=str(adapter) if adapter else None,
        global_step=step,
        max_steps=max_steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        trainer_state=str(state_path) if state_path else None,
    )
