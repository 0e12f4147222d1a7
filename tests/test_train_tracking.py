"""Experiment tracking: Axolotl's wandb_* / mlflow_* keys pass through --set, W&B stays off unless
the config asks for it, and the run manifest records where the run was logged."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.train.runner import axolotl_env
from mixtral_ft.train.tracking import run_locations, tracking_record, wandb_requested
from support.fixtures_models import run_mixft


def test_telemetry_off_unless_the_config_asks(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    env = axolotl_env(None)
    assert env["WANDB_MODE"] == "disabled" and env["AXOLOTL_DO_NOT_TRACK"] == "1"
    asked = axolotl_env(None, wandb=wandb_requested({"wandb_project": "rg"}))
    assert "WANDB_MODE" not in asked and asked["AXOLOTL_DO_NOT_TRACK"] == "1"  # W&B on, Axolotl's telemetry off
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert axolotl_env(None)["WANDB_MODE"] == "offline"  # the user's own setting wins


def test_tracking_record_and_locations(tmp_path):
    assert tracking_record({"learning_rate": 1e-4}) == {"wandb": None, "mlflow": None}
    values = {
        "wandb_project": "rg",
        "wandb_entity": "team",
        "mlflow_experiment_name": "exp",
        "mlflow_tracking_uri": "http://127.0.0.1:5000",
    }
    assert tracking_record(values) == {
        "wandb": {"wandb_project": "rg", "wandb_entity": "team"},
        "mlflow": {"mlflow_tracking_uri": "http://127.0.0.1:5000", "mlflow_experiment_name": "exp"},
    }
    log = tmp_path / "train.log"
    log.write_text(
        "old: wandb: View run a at: https://wandb.ai/t/rg/runs/old\n"
        "wandb: 🚀 View run b at: https://wandb.ai/t/rg/runs/x1\n"
        "🏃 View run c at: http://127.0.0.1:5000/#/experiments/1/runs/9\n",
        encoding="utf-8",
    )
    offset = len(log.read_bytes().split(b"\n")[0]) + 1
    assert run_locations(log, offset) == [
        "https://wandb.ai/t/rg/runs/x1",
        "http://127.0.0.1:5000/#/experiments/1/runs/9",
    ]


@pytest.mark.slow
def test_set_wandb_project_logs_the_run_and_the_manifest_says_where(
    tiny_mixtral_dir, rg_data_dir, tmp_path, monkeypatch
):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # as for a user: nothing but the config decides
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = tmp_path / "run"
    rc = run_mixft(
        [
            "train",
            "rg",
            "--data",
            str(rg_data_dir),
            "--profile",
            "cpu",
            "--base-model",
            str(tiny_mixtral_dir),
            "--run-dir",
            str(run),
            "--set",
            "max_steps=2",
            "--set",
            "eval_steps=2",
            "--set",
            "wandb_project=mixft-test",
            "--set",
            "wandb_mode=offline",
            "--set",
            "wandb_name=tiny-rg",
        ]
    )
    assert rc == 0, (run / "train.log").read_text()[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["tracking"] == {
        "wandb": {"wandb_project": "mixft-test", "wandb_name": "tiny-rg", "wandb_mode": "offline"},
        "mlflow": None,
    }
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any((offline_runs[0] / "files").iterdir())
    logged = manifest["attempts"][-1]["logged_to"]
    assert logged and offline_runs[0].name in logged[0]
