"""Refusing a run that does not fit: the message, the exit status, the fix; and the probe's
planned-vs-measured line."""

from __future__ import annotations

import pytest

from mixtral_ft.plan.check import PlanRefused, check_inference_plan, check_training_plan, planned_vs_measured
from mixtral_ft.plan.gpus import GPUS
from mixtral_ft.plan.inference import InferencePlan
from mixtral_ft.plan.shipped import shipped_plan
from test_plan_golden import warm_cache  # noqa: F401  (fixture)

GIB = 2**30


def test_training_refusal_message(warm_cache):  # noqa: F811
    plan = shipped_plan("tc", "a100-40gb")  # 43 GiB planned at micro batch 2 x 8192
    with pytest.raises(PlanRefused) as err:
        check_training_plan(plan, 38.0, profile="a100-40gb")
    assert err.value.exit_code == 2
    text = str(err.value)
    lines = text.splitlines()
    assert lines[0] == (f"this training run needs {plan.peak_gib:.1f} GiB per GPU by plan, but the GPU has 38.0 GiB "
                        f"free ({plan.peak_gib - 38.0:.1f} GiB short):")
    for label in ("weights: experts", "activations", "dequantization buffers", "CUDA context + allocator", "peak"):
        assert any(line.strip().startswith(label) for line in lines), label
    fix = lines[-1]
    assert fix.startswith("fix: ")
    assert "--set micro_batch_size=1 --set gradient_accumulation_steps=4 (same effective batch)" in fix
    assert f"--set sequence_len={plan.longest_sequence}" in fix
    assert fix.endswith("--skip-plan-check to run anyway")
    check_training_plan(plan, 60.0, profile="a100-40gb")  # enough memory: no error
    check_training_plan(plan, None)  # no CUDA: nothing to check


def test_training_refusal_suggests_the_smaller_profile(warm_cache):  # noqa: F811
    plan = shipped_plan("tc", "a100-80gb")
    with pytest.raises(PlanRefused, match=r"--profile a100-40gb"):
        check_training_plan(plan, 30.0, profile="a100-80gb")


def _inference_plan(**kw) -> InferencePlan:
    parts = {"weights_experts": 21.7 * GIB, "kv_cache": 6.0 * GIB, "activations": 2.0 * GIB,
             "dequant_buffers": 2.6 * GIB, "cuda_overhead": 1.6 * GIB}
    base = dict(gpu=GPUS["a100-40gb"], model="m", load_in_4bit=True, batch_size=8, max_new_tokens=1024,
                longest_prompt=6000, rows=300, parts=parts, peak_phase="decode", phases={}, tokens_per_s=50.0,
                decode_step_s=0.16, prefill_s=1.0, hours=0.5, largest_batch_size=3)
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
    assert text.splitlines()[-1] == ("fix: --batch-size 3; or a smaller --max-new-tokens; or --backend openai with a "
                                     "server that has the memory (docs/inference.md); or --skip-plan-check to run anyway")
    bf16 = _inference_plan(load_in_4bit=False, largest_batch_size=None)
    with pytest.raises(PlanRefused, match="a smaller --batch-size; or --load-in-4bit"):
        check_inference_plan(bf16, 30.0)
    check_inference_plan(plan, 40.0)


def test_train_preflight_skips_the_cpu_profile():
    from mixtral_ft.plan.check import preflight_training

    assert preflight_training({"base_model": "x"}, "cpu", 1, 1) is None


def test_probe_prints_planned_beside_measured(warm_cache):  # noqa: F811
    from mixtral_ft.train.probe_report import ProbeSummary, format_lines

    plan = shipped_plan("rg", "a100-80gb")
    s = ProbeSummary(device="cuda", layers=32, measured_steps=3, step_s=15.0, token_slots_per_s=1000.0,
                     trainable_tokens_per_s=100.0, peak_gib=40.0, peak_reserved_gib=44.0, after_load_gib=23.0)
    s.planned = planned_vs_measured(plan, s.peak_gib, s.peak_reserved_gib)
    allocated = plan.peak_gib - 1.6
    assert s.planned["planned_allocated_gib"] == round(allocated, 2)
    assert s.planned["error_allocated"] == round((allocated - 40.0) / 40.0, 4)
    line = format_lines(s)[1]
    assert line.startswith(f"memory planned: peak allocated {allocated:.2f} GiB (error {(allocated - 40) / 40:+.1%})")
    assert "vs reserved" in line
    assert s.as_dict()["planned"]["peak_phase"] == "layers_backward"
