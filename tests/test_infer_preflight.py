"""The inference runner's preflight: the command hands it in (``JobOptions.preflight``), the runner
calls it with the requests of the rows left to do before any backend is built, and a refusal leaves
nothing behind. ``generate`` and ``judge`` pass the memory plan's check for the hf backend only.
(The refusal of a real run by the plan: tests/test_plan_check.py, slow tier.)"""

from __future__ import annotations

import json

import pytest

from mixtral_ft.backends.base import GenerationParams, Request
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.cli._backend_options import plan_preflight
from mixtral_ft.errors import UsageError
from mixtral_ft.generate.prompts import rg_prompt
from mixtral_ft.generate.run import GenerateConfig, generate
from mixtral_ft.tc.judge import JudgeConfig, judge

ROWS = [
    {"id": f"q{i}", "context": f"Fact {i}.", "question": f"What is fact {i}?", "response": f"Fact {i}."}
    for i in range(3)
]
# A model that does not exist: building the hf backend would fail with another error than the refusal.
NO_MODEL = BackendOptions(model="no/such-model")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


class Refuse:
    """A preflight that records what it was given and refuses, as the memory plan does."""

    def __init__(self) -> None:
        self.calls: list[list[Request]] = []

    def __call__(self, requests: list[Request]) -> None:
        self.calls.append(requests)
        raise UsageError("generate needs more GPU memory than is free")


def test_generate_refused_by_its_preflight_before_a_backend_is_built(data, tmp_path):
    refuse, out = Refuse(), tmp_path / "gen.jsonl"
    with pytest.raises(UsageError, match="needs more GPU memory"):
        generate(GenerateConfig(data=data, out=out, backend=NO_MODEL), preflight=refuse)
    (requests,) = refuse.calls
    assert [(r.key, r.prompt) for r in requests] == [(r["id"], rg_prompt(r["context"], r["question"])) for r in ROWS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # no output, manifest or lock left


def test_the_preflight_sees_only_the_rows_this_run_does(data, tmp_path):
    refuse = Refuse()
    with pytest.raises(UsageError):
        generate(GenerateConfig(data=data, out=tmp_path / "gen.jsonl", backend=NO_MODEL, limit=2), preflight=refuse)
    assert [r.key for r in refuse.calls[0]] == ["q0", "q1"]


def test_judge_refused_by_its_preflight_too(data, tmp_path):
    refuse, out = Refuse(), tmp_path / "verdicts.jsonl"
    with pytest.raises(UsageError):
        judge(JudgeConfig(responses=data, out=out, backend=NO_MODEL), preflight=refuse)
    assert [r.key for r in refuse.calls[0]] == ["q0", "q1", "q2"]
    assert not out.exists()


def test_generate_and_judge_hand_the_plan_check_to_hf_runs_only(monkeypatch):
    params = GenerationParams(max_new_tokens=8)
    endpoint = BackendOptions(name="openai", model="m", base_url="http://127.0.0.1:1/v1")
    assert plan_preflight(endpoint, params, "generate") is None
    assert plan_preflight(BackendOptions(model="m", skip_plan_check=True), params, "judge") is None
    check = plan_preflight(NO_MODEL, params, "generate")
    assert check is not None
    assert check.keywords == {"max_new_tokens": 8, "what": "generate"} and check.args == (NO_MODEL,)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from mixtral_ft.plan.check import FREE_GIB_ENV

    monkeypatch.delenv(FREE_GIB_ENV, raising=False)
    assert check([Request("q0", prompt="x")]) is None  # no GPU memory to check: nothing is planned
