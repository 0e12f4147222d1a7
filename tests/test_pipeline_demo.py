"""`mixft demo --model tiny` (what CI runs) through `mixft run`, end to end, once per session:

1. the first run is stopped by SIGINT in the middle of `generate` (exit 130, one line naming the
   stage and the command that continues); meanwhile a second `mixft run` on the same output exits
   75 and `--status` shows the running stage;
2. the same command again finishes: no generated row lost or duplicated;
3. again: every stage is skipped;
4. `mixft run demo-cpu` with another RG input (an edited copy of the bundled Q&A, and smaller
   settings of the RG-side stages to keep the test short): exactly the stages that depend on it
   run, none upstream or beside it. (Content changes under the same path: tests/test_pipeline.py.)

Then the demo's outputs are checked as before: every stage's artefacts, every eval, the report and
its banner. `--plan` refusing a stage that does not fit runs on the same tiny model.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
    "eval_tc_raw",
    "eval_tc_ft",
    "eval_pipeline",
    "eval_rg_raw",
    "eval_rg_ft",
    "eval_compare_rg",
    "eval_compare_tc",
    "report",
]
RG_SIDE = [
    "prepare_rg",
    "train_rg",
    "generate_raw",
    "generate_ft",
    "judge_raw",
    "judge_ft",
    "eval_rg_raw",
    "eval_rg_ft",
    "eval_compare_rg",
    "report",
]
EVALS = ["compare-rg", "compare-tc", "pipeline", "rg-fine-tuned", "rg-raw", "tc-fine-tuned-checker", "tc-raw-checker"]


def mixft(args: list[str], cwd: Path) -> list[str]:
    return [sys.executable, "-m", "mixtral_ft.cli", *args]


def env() -> dict[str, str]:
    return dict(os.environ, MIXFT_PROGRESS="0")


def call(args: list[str], cwd: Path, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(mixft(args, cwd), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def ran(err: str) -> list[str]:
    return re.findall(r"^\[\d+/\d+\] (\S+)(?: \(.*?\))?: runs, ", err, re.MULTILINE)


def skipped(err: str) -> list[str]:
    return re.findall(r"^\[\d+/\d+\] (\S+): skipped, up to date", err, re.MULTILINE)


def rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert not text or text.endswith("\n"), "torn last line"
    return [json.loads(line) for line in text.splitlines()]


@dataclass
class Runs:
    out: Path
    first: subprocess.CompletedProcess | None = None
    rows_at_signal: int = 0
    concurrent: subprocess.CompletedProcess | None = None
    status_meanwhile: subprocess.CompletedProcess | None = None
    pid: int = 0
    generated: dict[str, tuple[list[dict], dict]] = field(default_factory=dict)  # rows and manifest after the resume
    runs: list[subprocess.CompletedProcess] = field(default_factory=list)


def _state_of(out: Path, stage: str) -> str | None:
    try:
        return json.loads((out / "mixft-run.json").read_text())["stages"].get(stage, {}).get("status")
    except (OSError, ValueError, KeyError):
        return None


def _wait(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 1500
    while not ready():
        assert proc.poll() is None, f"the demo ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _interrupt_in_generate(out: Path, cwd: Path, result: Runs) -> None:
    """Start the demo; while it trains, a second run and --status; once `generate_raw` has written
    its first batch, SIGINT."""
    demo = ["demo", "--model", "tiny", "--out", str(out)]
    proc = subprocess.Popen(
        mixft(demo, cwd), cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait(proc, lambda: _state_of(out, "train_rg") == "running", "train_rg")
    result.concurrent = call(["run", "demo-cpu", "--var", "model=tiny", "--out", str(out)], cwd, timeout=300)
    result.status_meanwhile = call(["run", "demo-cpu", "--var", "model=tiny", "--out", str(out), "--status"], cwd)
    gens = out / "generations" / "raw.jsonl"
    _wait(proc, lambda: gens.exists() and gens.read_text().count("\n") >= 1, "generate_raw")
    proc.send_signal(signal.SIGINT)
    result.rows_at_signal = gens.read_text().count("\n")
    result.first = subprocess.CompletedProcess(proc.args, *_communicate(proc))
    result.pid = proc.pid
    assert result.rows_at_signal < 24, "generate_raw finished before the signal"


def _communicate(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Runs:
    cwd = tmp_path_factory.mktemp("demo")
    out = cwd / "out"
    result = Runs(out)
    _interrupt_in_generate(out, cwd, result)
    assert result.first is not None and result.first.returncode == 130, result.first and result.first.stderr[-3000:]
    demo = ["demo", "--model", "tiny", "--out", str(out)]
    result.runs.append(call(demo, cwd))  # finishes
    for name in ("raw", "fine-tuned"):  # as the resumed run left them (the last run below rewrites them)
        gens = out / "generations" / f"{name}.jsonl"
        result.generated[name] = (rows(gens), json.loads(gens.with_name(gens.name + ".manifest.json").read_text()))
    result.runs.append(call(demo, cwd))  # skips everything
    from mixtral_ft.resources import data_dir

    qa = cwd / "qa-edited.jsonl"
    lines = (data_dir() / "sample_qa.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["answer"] = first["answer"] + " (edited)"
    qa.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n", encoding="utf-8")
    # Another RG input, and smaller RG-side settings (they change only RG-side stages) to keep it short.
    rg_side = ["--var", "generate_limit=8", "--var", "generate_tokens=16", "--var", "rg_steps=2"]
    result.runs.append(
        call(["run", "demo-cpu", "--var", "model=tiny", "--var", f"qa={qa}", *rg_side, "--out", str(out)], cwd)
    )
    return result


def test_sigint_in_generate_stops_with_one_line_and_the_command_that_continues(demo):
    err = demo.first.stderr
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("interrupted (SIGINT): [4/19] generate_raw stopped by SIGINT after "), lines[-1]
    assert lines[-1].endswith(f"continue with: mixft demo --model tiny --out {demo.out}")
    assert "the 15 stage(s) after it did not run" in lines[-1]
    assert re.search(r"^interrupted \(SIGINT\): \d+ of 24 row\(s\) done in ", err, re.MULTILINE)  # generate's own line
    assert skipped(err) == [] and ran(err) == STAGES[:4]


def test_the_same_command_again_finishes_with_every_row_once(demo):
    again = demo.runs[0]
    assert again.returncode == 0, again.stderr[-3000:]
    assert skipped(again.stderr) == STAGES[:3]
    assert ran(again.stderr) == STAGES[3:]
    assert (
        "generate_raw (raw model (rg prompt) on 24 test questions): runs, its last attempt was interrupted (SIGINT)"
        in again.stderr
    )
    assert re.search(r"^resumed: \d+ of 24 rows were already done", again.stderr, re.MULTILINE)
    for name in ("raw", "fine-tuned"):
        got, manifest = demo.generated[name]
        ids = [r["id"] for r in got]
        assert len(ids) == 24 == len(set(ids)) and all(r["error"] is None for r in got)
        assert manifest["summary"]["done"] == 24 and manifest["summary"]["stopped"] is None
        assert manifest["outputs"][f"{name}.jsonl"]["rows"] == 24
    assert f"report: {demo.out / 'report' / 'report.md'}" in again.stdout


def test_a_second_run_on_the_same_output_exits_75_and_status_reads_meanwhile(demo):
    second, status = demo.concurrent, demo.status_meanwhile
    assert second is not None and second.returncode == 75, second and second.stderr[-2000:]
    assert f"in use by pid {demo.pid}" in second.stderr and "(mixft demo --model tiny" in second.stderr
    assert status is not None and status.returncode == 0, status and status.stderr
    assert re.search(rf"^train_rg\s+running\s+\S+\s+pid {demo.pid}, started ", status.stdout, re.MULTILINE), (
        status.stdout
    )
    assert re.search(r"^prepare_rg\s+done", status.stdout, re.MULTILINE)
    assert re.search(r"^generate_raw\s+pending", status.stdout, re.MULTILINE)
    assert f"running now: pid {demo.pid} on " in status.stdout


def test_a_second_run_skips_every_stage(demo):
    third = demo.runs[1]
    assert third.returncode == 0, third.stderr[-2000:]
    assert skipped(third.stderr) == STAGES and ran(third.stderr) == []


def test_another_rg_input_reruns_exactly_what_depends_on_it(demo):
    """An edited copy of the Q&A (and smaller RG-side settings): the RG side runs, the TC side and
    the base model are skipped."""
    fourth = demo.runs[2]
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert ran(fourth.stderr) == RG_SIDE
    assert skipped(fourth.stderr) == [s for s in STAGES if s not in RG_SIDE]
    # The training run it replaced is kept aside, never deleted.
    assert list((demo.out / "runs").glob("rg.replaced-*")), sorted(p.name for p in (demo.out / "runs").iterdir())
    assert "train_rg: the earlier run" in fourth.stderr


def test_the_demo_writes_every_stage_and_the_report(demo):
    out = demo.out
    state = json.loads((out / "mixft-run.json").read_text())
    assert sorted(state["stages"]) == sorted(STAGES)
    assert {r["status"] for r in state["stages"].values()} == {"done"}
    assert (out / "runs" / "rg" / "output" / "adapter_model.safetensors").exists()
    assert (out / "runs" / "tc" / "output" / "adapter_model.safetensors").exists()
    for name in ("raw", "fine-tuned"):
        generated = {r["id"] for r in rows(out / "generations" / f"{name}.jsonl")}
        judged = [r["id"] for r in rows(out / "judgements" / f"{name}.jsonl")]
        assert set(judged) == generated and len(judged) == len(generated)
    tc_test = (out / "tc-data" / "test.jsonl").read_text().splitlines()
    assert len(rows(out / "judgements" / "tc-test-fine-tuned-checker.jsonl")) == len(tc_test)
    assert sorted(p.name for p in (out / "eval").iterdir()) == EVALS
    results = {name: json.loads((out / "eval" / name / "results.json").read_text()) for name in EVALS}
    assert all(r["schema"] == "mixft.eval/1" for r in results.values())
    for name in ("rg-raw", "rg-fine-tuned", "compare-rg"):  # corrected with the trained checker's error
        assert results[name]["checker_eval"]["path"] == str(out / "eval" / "tc-fine-tuned-checker" / "results.json")
    for name in ("report.md", "report.html", "report.json", "loss_curves.png", "tc_accuracy.png"):
        assert (out / "report" / name).stat().st_size > 0, name


def test_the_report_says_it_shows_mechanics_not_quality(demo):
    text = (demo.out / "report" / "report.md").read_text()
    assert "**What this demo shows and what it does not.**" in text and "says nothing about the quality" in text
    assert "tiny random Mixtral (2 layers, 4 experts; random weights)" in text
    assert "Not measured" not in text
    assert "| Corrected for the judge's error |" in text
    rg_rows = [line for line in text.splitlines() if line.startswith(("| raw model |", "| fine-tuned model |"))]
    assert len(rg_rows) >= 2 and all("not corrected" not in row for row in rg_rows)
    assert "## Training" in text


def test_plan_refuses_a_stage_that_does_not_fit(demo, tmp_path):
    """`--plan` and a normal run plan the generate stage for the GPU memory there is (here forced
    to 0.001 GiB) and refuse with the planner's parts; the run starts nothing."""
    pipeline = tmp_path / "one.yml"
    model, data = demo.out / "model", demo.out / "rg-data" / "test.jsonl"
    pipeline.write_text(
        "vars: {out: OUT}\nstages:\n  - name: gen\n"
        f"    run: generate --model {model} --data {data} --out ${{out}}/g.jsonl --max-new-tokens 8 --limit 2\n"
    )
    os.environ["MIXFT_PLAN_FREE_GIB"] = "0.001"
    try:
        planned = call(["run", str(pipeline), "--plan"], tmp_path)
        started = call(["run", str(pipeline)], tmp_path)
    finally:
        del os.environ["MIXFT_PLAN_FREE_GIB"]
    for proc in (planned, started):
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "stage gen does not fit (mixft plan generate" in proc.stderr
        assert "CUDA context + allocator" in proc.stderr and "DOES NOT FIT" in proc.stderr
        assert "give --skip-plan-check to run anyway" in proc.stderr
    assert re.search(r"^gen\s+plan generate\s+custom-0.001gib \(0.0 GiB\)\s+[\d.]+\s+NO", planned.stdout, re.MULTILINE)
    assert not (tmp_path / "OUT").exists()
