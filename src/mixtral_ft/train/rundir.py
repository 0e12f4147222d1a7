"""The run directory, its state, and what is read back from it: checkpoints, trainer state, the
end summary.

``RunPaths`` is the layout; ``run_status`` reads the state (``new``, ``interrupted``, ``resumable``,
``finished``, ``foreign``) from the files alone, and ``start_decision`` says what ``mixft train`` does
in each (docs/training.md, "Run states").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.util.manifest import read_manifest
from mixtral_ft.util.yamlsafe import safe_load

CONFIG_NAME = "axolotl.yml"
MANIFEST_NAME = "manifest.json"
LOG_NAME = "train.log"
OUTPUT_NAME = "output"
NODES_NAME = "nodes"
PREPARED_NAME = "prepared"


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its files.

    Layout::

        RUN_DIR/axolotl.yml      the rendered config Axolotl ran with
        RUN_DIR/manifest.json    versions, hashes, command, times, exit status (one entry per attempt)
        RUN_DIR/train.log        everything Axolotl printed, all attempts appended
        RUN_DIR/prepared/        Axolotl's tokenized dataset (dataset_prepared_path)
        RUN_DIR/output/          adapter (adapter_model.safetensors) and checkpoint-N/ folders
        RUN_DIR/nodes/rank-K/    multi-node runs: machine rank K's own axolotl.yml and train.log (K > 0)
        PARENT/.RUN_DIR.lock     held by machine rank 0's `mixft train` while it runs (util.lock)
    """

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

    @property
    def prepared(self) -> Path:
        return self.root / PREPARED_NAME


@dataclass(frozen=True)
class NodePaths(RunPaths):
    """Where machine rank K > 0 of a multi-node run writes: its own ``axolotl.yml`` and
    ``train.log`` under ``RUN/nodes/rank-K/``; checkpoints go to the run's ``output/`` like rank 0's."""

    rank: int = 1

    @property
    def node_dir(self) -> Path:
        return self.root / NODES_NAME / f"rank-{self.rank}"

    @property
    def config(self) -> Path:
        return self.node_dir / CONFIG_NAME

    @property
    def log(self) -> Path:
        return self.node_dir / LOG_NAME

    @property
    def manifest(self) -> Path:
        return self.node_dir / MANIFEST_NAME


def paths_for(run_dir: Path, machine_rank: int = 0) -> RunPaths:
    """The paths machine ``machine_rank`` writes: the run dir itself on rank 0, ``nodes/rank-K`` else."""
    return RunPaths(Path(run_dir)) if machine_rank == 0 else NodePaths(Path(run_dir), machine_rank)


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def newest_checkpoint(output_dir: Path) -> Path | None:
    done = [p for p in checkpoints(output_dir) if (p / "trainer_state.json").exists()]
    return done[-1] if done else None


def adapter_written(output_dir: Path) -> bool:
    """The adapter's weights are in ``output_dir`` (Axolotl pre-saves only ``adapter_config.json``
    at the start; the weights come at the end, or when Axolotl saves on Ctrl-C)."""
    return any(Path(output_dir).glob("adapter_model.*"))


class RunState(StrEnum):
    NEW = "new"
    INTERRUPTED = "interrupted"  # started, no checkpoint saved yet
    RESUMABLE = "resumable"
    FINISHED = "finished"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class RunStatus:
    """What a run directory holds, read from its files (``run_status``)."""

    state: RunState
    run_dir: Path
    checkpoint: Path | None = None  # newest checkpoint with a trainer_state.json
    step: int | None = None  # its global_step
    max_steps: int | None = None  # its max_steps
    epoch: float | None = None  # its epoch
    adapter: bool = False  # output/adapter_model.* exists
    attempts: int = 0
    last_outcome: str | None = None  # finished | interrupted (SIGINT...) | failed (exit N) | no step | None
    last_exit: int | None = None

    def describe(self) -> str:
        """``interrupted before its first checkpoint (last attempt: interrupted by SIGTERM)``, etc."""
        last = f"last attempt: {self.last_outcome}" if self.last_outcome else "last attempt: ended without a record"
        if self.state is RunState.INTERRUPTED:
            return f"stopped before its first checkpoint ({last})"
        if self.state is RunState.RESUMABLE:
            name = self.checkpoint.name if self.checkpoint else "?"
            return f"has {name} (step {self.step} of {self.max_steps}; {last})"
        if self.state is RunState.FINISHED:
            return (
                f"finished (step {self.step} of {self.max_steps}"
                + (f"; adapter in {self.run_dir / OUTPUT_NAME}" if self.adapter else "")
                + ")"
            )
        if self.state is RunState.FOREIGN:
            return "is not empty and is not a mixft run directory (no axolotl.yml or manifest.json)"
        return "holds no run"


def _state_numbers(checkpoint: Path | None) -> tuple[int | None, int | None, float | None]:
    if checkpoint is None:
        return None, None, None
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None, None
    if not isinstance(state, dict):
        return None, None, None
    step, max_steps, epoch = state.get("global_step"), state.get("max_steps"), state.get("epoch")
    return (
        step if isinstance(step, int) else None,
        max_steps if isinstance(max_steps, int) else None,
        float(epoch) if isinstance(epoch, (int, float)) else None,
    )


def run_status(run_dir: Path) -> RunStatus:
    """The state of ``run_dir``, from its files alone.

    The states, and what ``mixft train`` does in each (docs/training.md, "Run states"):

    - ``new``: no run here (missing, empty, or only ``nodes/``): ``train`` starts one; ``--resume``
      refuses (nothing to resume).
    - ``interrupted``: a run started (``axolotl.yml``/``manifest.json``) but saved no checkpoint (killed,
      interrupted or failed before its first save): ``train`` refuses and names ``--resume``;
      ``--resume`` restarts it cleanly from step 0 (``output/`` and ``prepared/`` of the dead
      attempt are removed; ``train.log`` and the manifest's attempts are kept).
    - ``resumable``: a checkpoint with ``trainer_state.json``, training not finished (killed,
      interrupted or failed later): ``train`` refuses and names ``--resume``; ``--resume`` continues
      from the newest checkpoint.
    - ``finished``: the last attempt ended the training (``outcome: finished``), or the adapter is
      in ``output/`` and the newest checkpoint reached its ``max_steps``: ``train`` refuses;
      ``--resume`` says it is finished and exits 0 without training, unless the config now asks for
      more steps or epochs than were trained (then it continues from the newest checkpoint).
    - ``foreign``: a non-empty folder that is not a mixft run: both refuse.

    A run that *failed* (Axolotl exited non-zero) is ``interrupted`` or ``resumable`` by what it
    saved; the state's ``last_outcome`` says how the last attempt ended.
    """
    root = Path(run_dir)
    paths = RunPaths(root)
    if not root.exists() or not any(p.name != NODES_NAME for p in root.iterdir()):
        return RunStatus(RunState.NEW, root)
    if not (paths.config.exists() or paths.manifest.exists()):
        return RunStatus(RunState.FOREIGN, root)
    manifest = read_manifest(paths.manifest) or {}
    attempts = manifest.get("attempts")
    if not isinstance(attempts, list):
        attempts = []
    last = attempts[-1] if attempts and isinstance(attempts[-1], dict) else {}
    checkpoint = newest_checkpoint(paths.output) if paths.output.is_dir() else None
    step, max_steps, epoch = _state_numbers(checkpoint)
    adapter = adapter_written(paths.output)
    outcome = last.get("outcome")
    reached = step is not None and max_steps is not None and max_steps != 0 and step >= max_steps
    if outcome == "finished" or (adapter and reached):
        state = RunState.FINISHED
    elif checkpoint is not None:
        state = RunState.RESUMABLE
    else:
        state = RunState.INTERRUPTED
    if outcome is None and last and last.get("exit_status") is not None:
        code = last["exit_status"]
        outcome = "ended with exit status 0" if code == 0 else f"failed (exit status {code})"
    return RunStatus(
        state, root, checkpoint, step, max_steps, epoch, adapter, len(attempts), outcome, last.get("exit_status")
    )


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
        try:
            values = safe_load(cfg.read_text(encoding="utf-8"), str(cfg)) or {}
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
    adapter = output_dir if (output_dir / "adapter_config.json").exists() and adapter_written(output_dir) else None
    return TrainSummary(
        adapter_dir=str(adapter) if adapter else None,
        global_step=step,
        max_steps=max_steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        trainer_state=str(state_path) if state_path else None,
    )


@dataclass(frozen=True)
class StartDecision:
    """What ``mixft train`` does with a run directory (before the config asks for more steps).

    ``action``: ``start`` (a new run), ``restart`` (an interrupted run with no checkpoint: from
    step 0), ``continue`` (from ``resume_from``), ``finished`` (``--resume`` on a finished run:
    nothing to do unless the config asks for more steps; ``mixtral_ft.train.api.resolve_start`` decides)."""

    action: str
    status: RunStatus | None = None
    resume_from: Path | None = None


def start_decision(run_dir: Path, resume: bool, machine_rank: int = 0) -> StartDecision:
    """Decide, or refuse with the reason and the way on (``UsageError``), from the run's state.

    Only machine rank 0 owns the run directory and judges its state: other machines of a
    multi-node run never refuse a run directory rank 0 has already filled; with ``--resume`` they
    take the newest checkpoint of the shared ``output/``, as rank 0 does."""
    run_dir = Path(run_dir)
    if machine_rank > 0:
        if not resume:
            return StartDecision("start")
        checkpoint = newest_checkpoint(run_dir / OUTPUT_NAME) if (run_dir / OUTPUT_NAME).is_dir() else None
        if checkpoint is None:
            raise UsageError(
                f"{run_dir / OUTPUT_NAME}: no checkpoint here for machine rank {machine_rank}: a multi-node --resume "
                "needs the run directory on a filesystem every machine shares (rank 0 saves the checkpoints), or "
                "--set save_on_each_node=true so that every machine saves its own; see docs/training.md"
            )
        return StartDecision("continue", resume_from=checkpoint)
    status = run_status(run_dir)
    state = status.state
    if state is RunState.FOREIGN:
        raise UsageError(f"{run_dir}: {status.describe()}; choose another --run-dir")
    if not resume:
        if state is RunState.NEW:
            return StartDecision("start", status)
        way = {
            RunState.INTERRUPTED: "use --resume to restart it from step 0",
            RunState.RESUMABLE: "use --resume to continue it",
            RunState.FINISHED: "use --resume with a higher max_steps or num_epochs to extend it",
        }[state]
        raise UsageError(f"{run_dir}: run directory exists and {status.describe()}; {way}, or choose another --run-dir")
    if state is RunState.NEW:
        raise UsageError(f"{run_dir}: no run to resume (no axolotl.yml); drop --resume to start a new run")
    if state is RunState.INTERRUPTED:
        return StartDecision("restart", status)
    if state is RunState.RESUMABLE:
        return StartDecision("continue", status, status.checkpoint)
    return StartDecision("finished", status, status.checkpoint)


def asks_for_more(values: dict[str, Any], status: RunStatus) -> bool:
    """Does a rendered config train past what a finished run did? ``max_steps`` (when set) above
    its step, else ``num_epochs`` above its epoch."""
    max_steps = values.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        return status.step is not None and max_steps > status.step
    epochs = values.get("num_epochs")
    return isinstance(epochs, (int, float)) and status.epoch is not None and float(epochs) > status.epoch + 1e-6
