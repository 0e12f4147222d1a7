"""Experiment tracking (W&B, MLflow) through Axolotl's own keys, and telemetry kept off otherwise.

``wandb_*`` / ``mlflow_*`` keys pass through ``--set`` to Axolotl; W&B is disabled for Axolotl's
processes unless the config (or the user's environment) asks for it, Axolotl's usage telemetry always;
the run manifest records where a run was logged (``tracking_record``). How Axolotl turns the keys into
trackers: docs/design/training-decisions.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

WANDB_KEYS = ("wandb_project", "wandb_entity", "wandb_name", "wandb_run_id", "wandb_mode", "wandb_log_model")
MLFLOW_KEYS = ("mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name", "hf_mlflow_log_artifacts")
# Online, wandb and mlflow print "View run NAME at: URL"; offline, wandb prints "wandb sync RUN_DIR".
_RUN_AT = re.compile(r"View run (?:\S+ )?at:? (\S+)|wandb sync (\S+)")


def wandb_requested(values: dict[str, Any]) -> bool:
    """Does the rendered config make Axolotl log to W&B?"""
    return bool(values.get("wandb_project")) or values.get("use_wandb") is True


def mlflow_requested(values: dict[str, Any]) -> bool:
    """Does the rendered config make Axolotl log to MLflow?"""
    return bool(values.get("mlflow_experiment_name")) or values.get("use_mlflow") is True


def tracking_record(values: dict[str, Any]) -> dict[str, Any]:
    """Where the run is logged, from the rendered config: ``{"wandb": {...} | None, "mlflow": {...} | None}``."""
    return {
        "wandb": {k: values[k] for k in WANDB_KEYS if values.get(k) is not None} if wandb_requested(values) else None,
        "mlflow": {k: values[k] for k in MLFLOW_KEYS if values.get(k) is not None}
        if mlflow_requested(values)
        else None,
    }


def run_locations(log: Path, offset: int = 0) -> list[str]:
    """Where the trackers said this attempt was logged (run URLs, or an offline W&B run directory),
    from its part of the log (from byte ``offset``)."""
    if not log.exists():
        return []
    with open(log, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    return list(dict.fromkeys(url or run_dir for url, run_dir in _RUN_AT.findall(text)))
