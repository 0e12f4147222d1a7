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


def read_summary(output_dir: Path) -> TrainSummary:
    """Adapter location and the last logged losses, from the newest ``trainer_state.json``."""
    candidates = [p / "trainer_state.json" for p in reversed(checkpoints(output_dir))]
    candidates.insert(0, output_dir / "trainer_state.json")
    states = [p for p in candidates if p.exists()]
    state_path = max(states, key=lambda p: json.loads(p.read_text()).get("global_step", 0)) if states else None
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
