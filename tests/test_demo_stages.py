"""The demo's stage runner: a failed stage stops the demo with its name and message (fast tier)."""

from __future__ import annotations

import pytest

from mixtral_ft.demo import SCALES, DemoStageError, _State, run_stages
from mixtral_ft.errors import InputError, Problem, UsageError


def test_a_failed_stage_stops_the_demo_with_its_message(tmp_path):
    state = _State(tmp_path, {"model": "x"})
    ran: list[str] = []

    def fail():
        ran.append("eval")
        raise UsageError("no item is parsed in both files")

    stages = [
        ("prepare", "prepare rg", lambda: ran.append("prepare") or {"rows": 3}),
        ("eval", "eval rg, eval tc", fail),
        ("report", "report", lambda: ran.append("report") or {}),
    ]
    logged: list[str] = []
    with pytest.raises(DemoStageError) as err:
        run_stages(stages, state, logged.append)
    assert str(err.value) == "demo stage 2/3 'eval' (eval rg, eval tc) failed: no item is parsed in both files"
    assert err.value.exit_code == 2  # the cause's exit code
    assert ran == ["prepare", "eval"]  # nothing after the failure runs
    assert state.done("prepare") and not state.done("eval") and not state.done("report")
    # Running again retries the failed stage and skips the finished one.
    ran.clear()
    stages[1] = ("eval", "eval rg, eval tc", lambda: ran.append("eval") or {})
    run_stages(stages, _State(tmp_path, {"model": "x"}), logged.append)
    assert ran == ["eval", "report"] and any("done earlier, skipped" in line for line in logged)


def test_a_failed_input_keeps_its_file_and_line(tmp_path):
    state = _State(tmp_path, {"model": "x"})

    def bad():
        raise InputError([Problem("judgements/raw.jsonl", 7, "verdict", "no label")])

    message = r"'judge_raw' \(judge\) failed: .*judgements/raw.jsonl:7: verdict: no label"
    with pytest.raises(DemoStageError, match=message):
        run_stages([("judge_raw", "judge", bad)], state, lambda _: None)


def test_the_cli_choices_are_the_demo_scales():
    from mixtral_ft.cli.demo_cmd import DemoModel

    assert [m.value for m in DemoModel] == list(SCALES)
