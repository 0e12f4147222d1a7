"""Run states and who owns a run directory (issue 13 item 6, issue 10 item 7), from the files a run
leaves: the decisions `mixft train` makes in each state, `--set output_dir` outside the run, and
multi-node runs (machine rank 0 owns the run directory; other ranks write `nodes/rank-K/`).

Real Axolotl walks every transition in `test_reliability_slow.py`; here the states are built
from files so each decision is checked on its own, and multi-node launches (no second machine
here) go through the launch-command builder and the run-dir logic with a runner that records
the command instead of starting accelerate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.errors import LockedError, UsageError
from mixtral_ft.train.rundir import RunState, asks_for_more, run_status, start_decision
from support.fixtures_models import rg_rows, write_split
from support.reliability_helpers import hold_lock, kill


def _attempt(outcome: str | None, exit_status: int | None) -> dict:
    return {"outcome": outcome, "exit_status": exit_status, "started_at": "t"}


def _run(
    root: Path, attempts: list[dict], checkpoints: tuple[int, ...] = (), max_steps: int = 4, adapter: bool = False
) -> Path:
    (root / "output").mkdir(parents=True)
    (root / "axolotl.yml").write_text("output_dir: x\n")
    (root / "manifest.json").write_text(json.dumps({"attempts": attempts}))
    (root / "output" / "adapter_config.json").write_text("{}")  # Axolotl pre-saves it at the start
    for step in checkpoints:
        ck = root / "output" / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "max_steps": max_steps, "epoch": step / max_steps, "log_history": []})
        )
    if adapter:
        (root / "output" / "adapter_model.safetensors").write_bytes(b"w")
    return root


@pytest.mark.parametrize(
    "build, state, plain, resumed",
    [
        (lambda p: p, RunState.NEW, "start", "no run to resume"),
        (
            lambda p: (p.mkdir(), (p / "nodes" / "rank-1").mkdir(parents=True))[0] or p,
            RunState.NEW,
            "start",
            "no run to resume",
        ),
        (
            lambda p: _run(p, [_attempt("interrupted by SIGINT", 130)]),
            RunState.INTERRUPTED,
            "use --resume to restart it from step 0",
            "restart",
        ),
        (lambda p: _run(p, [_attempt(None, None)]), RunState.INTERRUPTED, "use --resume to restart it", "restart"),
        (lambda p: _run(p, [_attempt("failed (exit status 1)", 1)]), RunState.INTERRUPTED, "use --resume", "restart"),
        (
            lambda p: _run(p, [_attempt("interrupted by SIGTERM", 143)], (2,)),
            RunState.RESUMABLE,
            "use --resume to continue it",
            "continue",
        ),
        # Axolotl saves the adapter on Ctrl-C: an adapter alone is not a finished run
        (
            lambda p: _run(p, [_attempt("interrupted by SIGINT", 130)], (2,), adapter=True),
            RunState.RESUMABLE,
            "use --resume to continue it",
            "continue",
        ),
        (
            lambda p: _run(p, [_attempt("finished", 0)], (2, 4), adapter=True),
            RunState.FINISHED,
            "use --resume with a higher max_steps",
            "finished",
        ),
        # mixft killed after Axolotl's last save: the files say finished
        (
            lambda p: _run(p, [_attempt(None, None)], (2, 4), adapter=True),
            RunState.FINISHED,
            "exists and finished",
            "finished",
        ),
        (
            lambda p: (p.mkdir(), (p / "notes.txt").write_text("x"))[0] or p,
            RunState.FOREIGN,
            "not a mixft run directory",
            "not a mixft run directory",
        ),
    ],
)
def test_each_state_and_what_train_does_in_it(tmp_path, build, state, plain, resumed):
    run_dir = build(tmp_path / "run")
    assert run_status(run_dir).state is state
    for resume, expect in ((False, plain), (True, resumed)):
        if expect in ("start", "restart", "continue", "finished"):
            decision = start_decision(run_dir, resume)
            assert decision.action == expect
            if expect == "continue":
                assert decision.resume_from == run_status(run_dir).checkpoint
        else:
            with pytest.raises(UsageError, match=expect):
                start_decision(run_dir, resume)


def test_a_finished_run_trains_again_only_when_the_config_asks_for_more(tmp_path):
    status = run_status(_run(tmp_path / "run", [_attempt("finished", 0)], (2, 4), adapter=True))
    assert not asks_for_more({"max_steps": 4}, status)  # the case: --resume used to add steps
    assert asks_for_more({"max_steps": 6}, status)
    assert not asks_for_more({"max_steps": None, "num_epochs": 1}, status)
    assert asks_for_more({"max_steps": None, "num_epochs": 2}, status)


def _mixft(args: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_resume_of_a_finished_run_says_so_and_trains_nothing(tmp_path, capsys):
    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    run_dir = _run(tmp_path / "run", [_attempt("finished", 0)], (2, 4), adapter=True)
    before = (run_dir / "manifest.json").read_text()
    base = tmp_path / "base"  # a model directory only as far as the family check reads it: no weights load
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
    rc, out, err = _mixft(
        ["train", "rg", "--data", data, "--profile", "cpu", "--base-model", base, "--run-dir", run_dir, "--resume"],
        capsys,
    )
    assert rc == 0, err
    assert f"run {run_dir} is already finished: step 4" in out and "nothing to do" in out
    assert (run_dir / "manifest.json").read_text() == before  # no attempt: Axolotl never started


def test_output_dir_outside_the_run_is_refused(tmp_path, capsys):
    """The issue: it trained into the other folder, then reported "adapter: not written, steps: None", exit 0."""
    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    rc, _, err = _mixft(
        [
            "train",
            "rg",
            "--data",
            data,
            "--profile",
            "cpu",
            "--run-dir",
            tmp_path / "run",
            "--set",
            f"output_dir={tmp_path / 'elsewhere'}",
            "--dry-run",
        ],
        capsys,
    )
    assert rc == 2 and "must be the run directory's output/" in err
    assert "--run-dir instead of --set output_dir" in err
    rc, _, err = _mixft(
        [
            "train",
            "rg",
            "--data",
            data,
            "--profile",
            "cpu",
            "--run-dir",
            tmp_path / "run",
            "--set",
            f"output_dir={tmp_path / 'run' / 'output'}",
            "--dry-run",
        ],
        capsys,
    )
    assert rc == 0, err


# ------------------------------------------------------------------ multi-node (issue 10 item 7)

MULTI = [
    "--profile",
    "a100-80gb",
    "--num-machines",
    "2",
    "--main-process-ip",
    "10.0.0.1",
    "--main-process-port",
    "29500",
]


def test_rank_1_does_not_refuse_the_shared_run_dir_rank_0_has_filled(tmp_path, capsys):
    """The issue: every node ran the run-dir check, so with a shared run dir the second node refused."""
    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    shared = _run(tmp_path / "shared", [_attempt(None, None)])  # rank 0 started a moment ago
    rc, out, err = _mixft(
        ["train", "rg", "--data", data, *MULTI, "--machine-rank", "1", "--run-dir", shared, "--dry-run"], capsys
    )
    assert rc == 0, err
    assert "--machine_rank 1" in out
    assert str((shared / "nodes" / "rank-1" / "axolotl.yml").resolve()) in out
    assert f"output_dir: {(shared / 'output').resolve()}" in out  # checkpoints land in the shared output/
    rc, _, err = _mixft(
        ["train", "rg", "--data", data, *MULTI, "--machine-rank", "0", "--run-dir", shared, "--dry-run"], capsys
    )
    assert rc == 2 and "use --resume" in err  # rank 0 owns the run and judges its state


@pytest.fixture()
def no_gpu_check(monkeypatch):
    """This machine has no GPU: skip the device count check (the rest of preflight runs)."""
    import mixtral_ft.train.preflight as pf

    monkeypatch.setattr(pf, "check_gpus", lambda profile, gpus: None)


def _request(data: Path, run_dir: Path, rank: int, resume: bool = False):
    from mixtral_ft.train.api import TrainRequest
    from mixtral_ft.train.launch import LaunchOptions

    # sdpa: this machine has no flash-attn, which preflight would (rightly) ask for
    return TrainRequest(
        task="rg",
        data_dir=data,
        profile="a100-80gb",
        run_dir=run_dir,
        resume=resume,
        overrides=("attn_implementation=sdpa",),
        launch=LaunchOptions(
            gpus=1, num_machines=2, machine_rank=rank, main_process_ip="10.0.0.1", main_process_port=29500
        ),
    )


def test_rank_1_writes_only_its_node_folder_while_rank_0_holds_the_run(tmp_path, no_gpu_check):
    from mixtral_ft.train.api import run as train_run

    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    shared = _run(tmp_path / "shared", [_attempt(None, None)])
    manifest_before = (shared / "manifest.json").read_text()
    launched: list[tuple[list[str], Path]] = []

    def runner(cmd, log, env=None):
        launched.append((cmd, log))
        return 0

    rank0 = hold_lock(shared, tmp_path)  # a real process holding the run directory, as rank 0's mixft does
    try:
        result = train_run(_request(data, shared, 1), runner=runner)
        assert result.exit_status == 0
        with pytest.raises(LockedError, match=f"in use by pid {rank0.pid}"):
            train_run(_request(data, shared, 0), runner=runner)  # a second rank 0 on the same run refuses
        node = hold_lock(shared / "nodes" / "rank-1", tmp_path)  # a second rank-1 process on this machine
        try:
            with pytest.raises(LockedError, match=f"in use by pid {node.pid}"):
                train_run(_request(data, shared, 1), runner=runner)
        finally:
            kill(node)
    finally:
        kill(rank0)
    ((cmd, log),) = launched
    node_dir = shared / "nodes" / "rank-1"
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[-1] == str((node_dir / "axolotl.yml").resolve())
    assert log == node_dir / "train.log"
    assert f"output_dir: {(shared / 'output').resolve()}" in (node_dir / "axolotl.yml").read_text()
    assert (shared / "manifest.json").read_text() == manifest_before  # rank 0's record, untouched


def test_rank_1_resumes_from_the_shared_checkpoint_or_says_why_it_cannot(tmp_path):
    from mixtral_ft.train.api import plan

    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    local = _run(tmp_path / "local", [_attempt(None, None)])  # node-local dir: rank 0's checkpoints are elsewhere
    with pytest.raises(UsageError, match="needs the run directory on a filesystem every machine shares"):
        plan(_request(data, local, 1, resume=True))
    shared = _run(tmp_path / "shared", [_attempt("interrupted by SIGTERM", 143)], (2, 4))
    p0, p1 = plan(_request(data, shared, 0, resume=True)), plan(_request(data, shared, 1, resume=True))
    assert p0.resume_from == p1.resume_from == shared / "output" / "checkpoint-4"
    assert p1.config.values["resume_from_checkpoint"] == str((shared / "output" / "checkpoint-4").resolve())
    assert p1.command[-1].endswith("nodes/rank-1/axolotl.yml") and p0.command[-1].endswith("shared/axolotl.yml")


def test_merge_refuses_a_run_that_is_not_finished(tmp_path, capsys):
    """Axolotl saves a partly trained adapter on Ctrl-C: merging it would pass it off as the result."""
    run_dir = _run(tmp_path / "run", [_attempt("interrupted by SIGINT", 130)], (2,), adapter=True)
    base = tmp_path / "base"  # read only for its config: the refusal comes before any weight is loaded
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
    rc, _, err = _mixft(["merge", run_dir, "--base-model", base], capsys)
    assert rc == 2 and "has checkpoint-2 (step 2 of 4" in err and "its adapter is not the finished one" in err
    assert not (run_dir / "merged").exists()
