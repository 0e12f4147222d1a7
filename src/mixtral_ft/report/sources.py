"""Find what a report is built from: eval result dirs and training run dirs.

- An eval dir holds ``results.json`` written by ``mixft eval`` (schema ``mixft.eval/1``).
- A training run dir holds Axolotl's ``trainer_state.json`` (the HF Trainer's log history),
  found by ``mixtral_ft.train.rundir.find_trainer_state`` (the same rule ``mixft train``
  uses for its summary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.eval.result import RESULTS_SCHEMA
from mixtral_ft.train.rundir import find_trainer_state


@dataclass
class EvalRun:
    path: Path
    results: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.results["kind"]

    @property
    def label(self) -> str:
        return self.results.get("label") or self.path.name


@dataclass
class TrainRun:
    path: Path
    trainer_state: Path
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.name


def read_trainer_state(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train loss, eval loss) as (step, value) lists from ``log_history``."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError([Problem(str(path), None, None, f"invalid JSON: {e}")]) from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise InputError([Problem(str(path), None, "log_history", "missing or not a list")])
    train, evals = [], []
    for entry in history:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        if isinstance(entry.get("loss"), int | float):
            train.append((entry["step"], float(entry["loss"])))
        if isinstance(entry.get("eval_loss"), int | float):
            evals.append((entry["step"], float(entry["eval_loss"])))
    return train, evals


def discover(paths: list[Path]) -> tuple[list[EvalRun], list[TrainRun]]:
    """Sort the given dirs into eval results and training runs; anything else is an error."""
    evals: list[EvalRun] = []
    runs: list[TrainRun] = []
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise UsageError(f"{p}: not a directory (give mixft eval --out dirs or training run dirs)")
        results = p / "results.json"
        if results.is_file():
            try:
                data = json.loads(results.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise InputError([Problem(str(results), e.lineno, None, f"invalid JSON: {e.msg}")]) from None
            if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
                raise InputError(
                    [
                        Problem(
                            str(results),
                            None,
                            "schema",
                            f"not a mixft eval result (expected schema {RESULTS_SCHEMA!r})",
                        )
                    ]
                )
            evals.append(EvalRun(p, data))
            continue
        state = find_trainer_state(p)
        if state is None:
            raise UsageError(
                f"{p}: neither an eval result dir (results.json) nor a training run dir "
                "(no trainer_state.json in it, its axolotl.yml output_dir, output/ or checkpoint-*/)"
            )
        train, ev = read_trainer_state(state)
        runs.append(TrainRun(p, state, train, ev))
    return evals, runs
