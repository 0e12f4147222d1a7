"""Refusing a run that does not fit: the message, the exit status, the fix; and the probe's
planned-vs-measured line."""

from __future__ import annotations

import pytest

from mixtral_ft.plan.check import PlanRefused, check_inference_plan, check_training_plan, planned_vs_measured
from mixtral_ft.plan.gpus import GPUS
from mixtral_ft.plan.inference import InferencePlan
from mixtral_ft.plan.shipped import shipped_plan
from support.fixtures_plan import refusal_plan

GIB = 2**30


def test_training_refusal_message(warm_cache):
    plan = refusal_plan()  # TC's 80 GB profile (2 x 8192 tokens) planned for a 36 GiB device: does not fit
    free = 36.0
    with pytest.raises(PlanRefused) as err:
        check_training_plan(plan, free, profile="a100-80gb")
    assert err.value.exit_code == 2
    text = str(err.value)
    lines = text.splitlines()
    assert lines[0] == (
        f"this training run needs {plan.peak_gib:.1f} GiB per GPU by plan, but the GPU has 36.0 GiB "
        f"free ({plan.peak_gib - free:.1f} GiB short):"
    )
    for label in ("weights: experts", "activations", "dequantization buffers", "CUDA context + allocator", "peak"):
        assert any(line.strip().startswith(label) for line in lines), label
    fix = lines[-1]
    assert fix.startswith("fix: a profile for a smaller card (--profile a100-40gb); ")  # 36 GiB: not an 80 GB card
    assert "--set micro_batch_size=1 --set gradient_accumulation_steps=4 (same effective batch)" in fix
    assert f"--set sequence_len={plan.longest_sequence}" in fix
    assert fix.endswith("--skip-plan-check to run anyway")
    check_training_plan(plan, 60.0, profile="a100-80gb")  # enough memory: no error
    check_training_plan(plan, None)  # no CUDA: nothing to check
    with pytest.raises(PlanRefused) as smallest:  # already the 40 GB profile: no smaller one to suggest
        check_training_plan(plan, free, profile="a100-40gb")
    assert "--profile" not in str(smallest.value).splitlines()[-1]


def test_training_refusal_suggests_the_smaller_profile(warm_cache):
    plan = shipped_plan("tc", "a100-80gb")
    with pytest.raises(PlanRefused, match=r"--profile a100-40gb"):
        check_training_plan(plan, 30.0, profile="a100-80gb")


def _inference_plan(**kw) -> InferencePlan:
    parts = {
        "weights_experts": 21.7 * GIB,
        "kv_cache": 6.0 * GIB,
        "activations": 2.0 * GIB,
        "dequant_buffers": 2.6 * GIB,
        "cuda_overhead": 1.6 * GIB,
    }
    base = {
        "gpu": GPUS["a100-40gb"],
        "model": "m",
        "load_in_4bit": True,
        "batch_size": 8,
        "max_new_tokens": 1024,
        "longest_prompt": 6000,
        "rows": 300,
        "parts": parts,
        "peak_phase": "decode",
        "phases": {},
        "tokens_per_s": 50.0,
        "decode_step_s": 0.16,
        "prefill_s": 1.0,
        "hours": 0.5,
        "largest_batch_size": 3,
    }
    base.update(kw)
    return InferencePlan(**base)


def test_inference_refusal_message():
    plan = _inference_plan()
    with pytest.raises(PlanRefused) as err:
        check_inference_plan(plan, 30.0, what="judge")
    text = str(err.value)
    assert err.value.exit_code == 2
    assert text.splitlines()[0].startswith("judge needs 33.9 GiB per GPU by plan, but the GPU has 30.0 GiB free")
    assert "KV cache" in text and "dequantization buffers" in text
    assert text.splitlines()[-1] == (
        "fix: --batch-size 3; or a smaller --max-new-tokens; or --backend openai with a "
        "server that has the memory (docs/inference.md); or --skip-plan-check to run anyway"
    )
    bf16 = _inference_plan(load_in_4bit=False, largest_batch_size=None)
    with pytest.raises(PlanRefused, match="a smaller --batch-size; or --load-in-4bit"):
        check_inference_plan(bf16, 30.0)
    check_inference_plan(plan, 40.0)


def test_preflights_without_cuda_plan_nothing():
    from mixtral_ft.plan.check import preflight_inference, preflight_training

    assert preflight_training({"base_model": "x"}, "cpu", 1, 1) is None  # the cpu profile is never checked
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert preflight_training({"base_model": "x"}, "a100-80gb", 1, 1) is None
    assert (
        preflight_inference("x", adapter=None, load_in_4bit=True, batch_size=8, max_new_tokens=8, prompt_lengths=[10])
        is None
    )


def test_probe_prints_planned_beside_measured(warm_cache):
    from mixtral_ft.train.probe_report import ProbeSummary, format_lines

    plan = shipped_plan("rg", "a100-80gb")
    s = ProbeSummary(
        device="cuda",
        layers=32,
        measured_steps=3,
        step_s=15.0,
        token_slots_per_s=1000.0,
        trainable_tokens_per_s=100.0,
        peak_gib=40.0,
        peak_reserved_gib=44.0,
        after_load_gib=23.0,
    )
    s.planned = planned_vs_measured(plan, s.peak_gib, s.peak_reserved_gib)
    allocated = plan.peak_gib - 1.6
    assert s.planned["planned_allocated_gib"] == round(allocated, 2)
    assert s.planned["error_allocated"] == round((allocated - 40.0) / 40.0, 4)
    line = format_lines(s)[1]
    assert line.startswith(f"memory planned: peak allocated {allocated:.2f} GiB (error {(allocated - 40) / 40:+.1%})")
    assert "vs reserved" in line
    assert s.as_dict()["planned"]["peak_phase"] == "layers_backward"


# --- the inference runner's preflight (generate, judge; infer/job.py) --------------------------------------


def _generate(model, data, out, *extra):
    from mixtral_ft.cli.main import main

    return main(
        [
            "generate",
            "--data",
            str(data),
            "--out",
            str(out),
            "-m",
            str(model),
            "--max-new-tokens",
            "4",
            "--batch-size",
            "4",
            *extra,
        ]
    )


@pytest.mark.slow
def test_generate_refuses_a_run_the_free_memory_cannot_hold(
    tiny_mixtral_dir, rg_data_dir, tmp_path, monkeypatch, capsys
):
    """With a free-memory figure (what ``torch.cuda.mem_get_info`` gives on a GPU; ``$MIXFT_PLAN_FREE_GIB`` here)
    the runner plans the hf run before loading the model and refuses it: exit 2, the parts and the fix, and
    nothing written. ``--skip-plan-check`` runs it anyway; enough free memory passes the check."""
    from mixtral_ft.plan.check import FREE_GIB_ENV

    monkeypatch.setenv("MIXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(FREE_GIB_ENV, "0.01")
    out = tmp_path / "gen.jsonl"
    assert _generate(tiny_mixtral_dir, rg_data_dir / "test.jsonl", out) == 2
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: generate needs ") and "GiB per GPU by plan, but the GPU has 0.0 GiB free" in first
    assert "KV cache" in err and "fix: " in err and "--skip-plan-check to run anyway" in err
    assert not out.exists() and not (tmp_path / "gen.jsonl.manifest.json").exists()

    assert _generate(tiny_mixtral_dir, rg_data_dir / "test.jsonl", out, "--skip-plan-check") == 0
    assert len(out.read_text().splitlines()) == 4
    monkeypatch.setenv(FREE_GIB_ENV, "100")
    out2 = tmp_path / "gen2.jsonl"
    assert _generate(tiny_mixtral_dir, rg_data_dir / "test.jsonl", out2) == 0  # planned, fits
    assert len(out2.read_text().splitlines()) == 4


@pytest.mark.slow
def test_judge_refuses_too(tiny_mixtral_dir, tc_data_dir, tmp_path, monkeypatch, capsys):
    from mixtral_ft.cli.main import main
    from mixtral_ft.plan.check import FREE_GIB_ENV

    monkeypatch.setenv("MIXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(FREE_GIB_ENV, "0.01")
    out = tmp_path / "verdicts.jsonl"
    assert (
        main(
            [
                "judge",
                "--responses",
                str(tc_data_dir / "test.jsonl"),
                "--out",
                str(out),
                "-m",
                str(tiny_mixtral_dir),
                "--max-new-tokens",
                "4",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines()[0].startswith("error: judge needs ")
    assert not out.exists()


def test_skip_plan_check_is_an_hf_option():
    from mixtral_ft.backends.options import BackendOptions
    from mixtral_ft.errors import UsageError

    assert BackendOptions(model="m", skip_plan_check=True).skip_plan_check
    with pytest.raises(UsageError, match="--skip-plan-check is for the hf backend"):
        BackendOptions(name="openai", model="m", base_url="http://127.0.0.1:1/v1", skip_plan_check=True)


def test_no_cuda_no_inference_plan(monkeypatch):
    """On a CPU there is no GPU memory to check: the runner's preflight plans nothing."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from mixtral_ft.backends.base import Request
    from mixtral_ft.backends.options import BackendOptions
    from mixtral_ft.plan.check import FREE_GIB_ENV, free_gpu_memory_gib, preflight_requests

    monkeypatch.delenv(FREE_GIB_ENV, raising=False)
    assert free_gpu_memory_gib() is None
    assert preflight_requests(BackendOptions(model="no/such-model"), [Request("a", prompt="x")], 8, "generate") is None
    monkeypatch.setenv(FREE_GIB_ENV, "12.5")
    assert free_gpu_memory_gib() == 12.5
    monkeypatch.setenv(FREE_GIB_ENV, "lots")
    from mixtral_ft.errors import UsageError

    with pytest.raises(UsageError, match="MIXFT_PLAN_FREE_GIB"):
        free_gpu_memory_gib()
