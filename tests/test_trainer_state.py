"""One rule finds a run's trainer_state.json, for `mixft train`'s summary and `mixft report`'s curves."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.errors import InputError
from mixtral_ft.report.sources import discover
from mixtral_ft.train.rundir import find_trainer_state, read_summary


def _state(path, step, loss):
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(
        json.dumps({"global_step": step, "max_steps": 8, "log_history": [{"step": step, "loss": loss}]})
    )


def test_train_and_report_read_the_same_state(tmp_path, monkeypatch):
    """A resumed run: the final state (step 4, first run) and a later checkpoint (step 8). Report
    used to take the first dir's final state, train the newest checkpoint; both now take step 8."""
    run = tmp_path / "run"
    _state(run / "output", 4, 2.0)
    _state(run / "output" / "checkpoint-4", 4, 2.0)
    _state(run / "output" / "checkpoint-8", 8, 1.0)
    monkeypatch.chdir(tmp_path)
    found = find_trainer_state(run)
    assert found == run / "output" / "checkpoint-8" / "trainer_state.json"
    assert read_summary(run / "output").global_step == 8
    _, runs = discover([run])
    assert runs[0].trainer_state == found and runs[0].train_loss == [(8, 1.0)]


def test_output_dir_named_by_the_config_and_ties(tmp_path, monkeypatch):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    (run / "axolotl.yml").write_text(f"output_dir: {elsewhere}\n")
    _state(elsewhere / "checkpoint-3", 3, 1.5)
    _state(elsewhere, 3, 1.4)  # the final state of the same step wins the tie
    monkeypatch.chdir(tmp_path)
    assert find_trainer_state(run) == elsewhere / "trainer_state.json"
    assert find_trainer_state(tmp_path / "empty") is None


def test_a_broken_state_names_its_file(tmp_path):
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "trainer_state.json").write_text('{"global_step": 4, ')
    with pytest.raises(InputError, match="output/trainer_state.json: invalid JSON"):
        find_trainer_state(tmp_path)
