"""`mixft demo --model tiny`: the whole pipeline on a CPU, as CI runs it on every submission."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_ft.demo import QUALITY_NOTE, SCALES

pytestmark = [pytest.mark.slow, pytest.mark.demo]

STAGES = [
    "model",
    "prepare_rg",
    "train_rg",
    "generate_raw",
    "generate_ft",
    "prepare_tc",
    "train_tc",
    "judge_tc_raw",
    "judge_tc_ft",
    "judge_raw",
    "judge_ft",
    "eval",
    "report",
]
EVALS = ["compare-rg", "compare-tc", "pipeline", "rg-fine-tuned", "rg-raw", "tc-fine-tuned-checker", "tc-raw-checker"]


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
    # Every eval, none skipped: a failed eval fails the demo instead of being left out.
    assert sorted(p.name for p in (out / "eval").iterdir()) == EVALS
    assert sorted(state["stages"]["eval"]["written"]) == EVALS and "skipped" not in state["stages"]["eval"]
    kinds = {}
    for name in EVALS:
        results = json.loads((out / "eval" / name / "results.json").read_text())
        assert results["schema"] == "mixft.eval/1" and (out / "eval" / name / "report.md").exists()
        kinds[name] = results
    # The judged RG rates carry the trained checker's measured error (same judge), never a bare rate.
    for name in ("rg-raw", "rg-fine-tuned", "compare-rg"):
        ce = kinds[name]["checker_eval"]
        assert ce["path"] == str(out / "eval" / "tc-fine-tuned-checker" / "results.json")
    # The tiny random checker (6 CPU steps) never writes a verdict that parses: no judged rate is defined,
    # none can be corrected, and each says why instead of showing a number.
    for name in ("rg-raw", "rg-fine-tuned"):
        corrected = kinds[name]["metrics"]["hallucination_rate_corrected"]
        assert corrected == {"value": None, "ci": None, "note": "undefined: every item is unparsed"}
        assert kinds[name]["checker_eval"]["identifiable"] is False
        assert kinds[name]["checker_eval"]["not_identifiable_reason"] == (
            f"every one of the checker's {len(tc_test)} outputs on the gold set is unparsed"
        )
    report = out / "report"
    for name in ("report.md", "report.html", "report.json", "loss_curves.png", "tc_accuracy.png"):
        assert (report / name).stat().st_size > 0, name


def test_demo_report_says_it_shows_mechanics_not_quality(demo_run):
    out, _ = demo_run
    text = (out / "report" / "report.md").read_text()
    assert QUALITY_NOTE.format(model=SCALES["tiny"].description) in text
    assert "Not measured" not in text  # nothing was skipped
    # Every judged rate says what the judge can see: corrected, or why it cannot be.
    assert "| Corrected for the judge's error |" in text
    rg_rows = [line for line in text.splitlines() if line.startswith(("| raw model |", "| fine-tuned model |"))]
    assert len(rg_rows) == 4  # the Summary's two rows, then those of "Hallucination rates"

    def cells(row: str) -> list[str]:
        return [c.strip() for c in row.strip().strip("|").split("|")]

    # Nothing the tiny checker wrote parses (see the test above): the corrected cell says so.
    assert [cells(r)[2] for r in rg_rows[:2]] == ["undefined: every item is unparsed"] * 2
    assert [cells(r)[-1] for r in rg_rows[2:]] == ["undefined: every item is unparsed"] * 2
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


def test_unknown_demo_model_is_refused_with_the_choices(tmp_path):
    proc = _mixft("demo", "--model", "smol", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Invalid value for '--model': Unknown demo model 'smol'. Did you mean 'smollm2'?" in proc.stderr
    assert not (tmp_path / "x").exists()
