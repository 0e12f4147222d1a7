"""`mixft demo --model tiny`: the whole pipeline on a CPU, as CI runs it on every submission."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.demo]

STAGES = ["model", "prepare_rg", "train_rg", "generate_raw", "generate_ft", "prepare_tc", "train_tc",
          "judge_tc_raw", "judge_tc_ft", "judge_raw", "judge_ft", "eval", "report"]


def _mixft(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    mixft = Path(sys.executable).with_name("mixft")
    env = dict(os.environ, MIXFT_PROGRESS="0")
    return subprocess.run([str(mixft), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = _mixft("demo", "--model", "tiny", "--out", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_demo_runs_every_stage_and_ends_with_the_report(demo_run):
    out, proc = demo_run
    report = out / "report" / "report.md"
    assert f"report: {report}" in proc.stdout
    state = json.loads((out / "demo_state.json").read_text())
    assert sorted(state["stages"]) == sorted(STAGES)
    # Real artefacts of each stage, not just state entries.
    assert (out / "runs" / "rg" / "output" / "adapter_model.safetensors").exists()
    assert (out / "runs" / "tc" / "output" / "adapter_model.safetensors").exists()
    for name in ("raw", "fine-tuned"):
        rows = [json.loads(x) for x in (out / "generations" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 24 and all(r["error"] is None for r in rows)
        judged = [json.loads(x) for x in (out / "judgements" / f"{name}.jsonl").read_text().splitlines()]
        assert {r["id"] for r in judged} == {r["id"] for r in rows}
    tc_test = (out / "tc-data" / "test.jsonl").read_text().splitlines()
    assert len((out / "judgements" / "tc-test-fine-tuned-checker.jsonl").read_text().splitlines()) == len(tc_test)
    evals = sorted(p.name for p in (out / "eval").iterdir())
    assert {"tc-raw-checker", "tc-fine-tuned-checker", "pipeline"} <= set(evals)
    for name in evals:
        results = json.loads((out / "eval" / name / "results.json").read_text())
        assert results["schema"] == "mixft.eval/1"


def test_demo_report_says_it_shows_mechanics_not_quality(demo_run):
    out, _ = demo_run
    text = (out / "report" / "report.md").read_text()
    assert "show the mechanics, not the quality" in text or "says nothing about the quality" in text
    assert "## Training" in text and (out / "report" / "loss_curves.png").stat().st_size > 1000
    assert (out / "report" / "report.html").exists()


def test_demo_run_again_continues_instead_of_redoing(demo_run):
    out, _ = demo_run
    proc = _mixft("demo", "--model", "tiny", "--out", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("done earlier, skipped") == len(STAGES)


def test_demo_refuses_other_settings_in_the_same_directory(demo_run):
    out, _ = demo_run
    proc = _mixft("demo", "--model", "smollm2", "--out", str(out), cwd=out.parent)
    assert proc.returncode == 2
    assert "holds a demo run with other settings; use --force to start over" in proc.stderr


def test_unknown_demo_model_is_a_one_line_error(tmp_path):
    proc = _mixft("demo", "--model", "smol", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: Unknown demo model 'smol'. Did you mean 'smollm2'? Available: smollm2, tiny"
    assert not (tmp_path / "x").exists()
