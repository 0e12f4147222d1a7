"""LoRA on Mixtral's fused experts is planned with what it materialises, and refused where it does not fit.

``tests/golden/expert_lora.json`` is ``scripts/measure_expert_lora.py --experts 2,3``: the real PEFT
layer (peft 0.21.2's ParamWrapper, Axolotl 0.21.0's patch, nf4 experts) at Mixtral widths on the CPU,
the layer's peak with and without LoRA on the experts. The slow test measures it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_ft.plan.check import FREE_GIB_ENV, PlanRefused, preflight_training
from mixtral_ft.plan.expert_lora import EXTRA_PER_EXPERT, expert_targets, simulated_setup

GIB = 2**30
REPO = Path(__file__).resolve().parents[1]
MEASURED = json.loads((REPO / "tests" / "golden" / "expert_lora.json").read_text())
EXPERT_TARGETS = "lora_target_parameters=[mlp.experts.gate_up_proj, mlp.experts.down_proj]"
MIXTRAL_LORA_VALUES = 32 * 8 * 32 * (2 * 4096 + 3 * 14336)  # layers x experts x r x (in + out of both tensors)


def _values(profile: str, *overrides: str) -> dict:
    from mixtral_ft.axolotl_cfg.keys import snapshot_keys
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    req = RenderRequest(
        task="rg", data_dir=Path("/data/prepared"), profile=profile, run_dir=Path("/runs/plan"), overrides=overrides
    )
    return render(req, keys=snapshot_keys()).values


def _measured_extra_per_expert() -> float:
    """The largest measured extra peak per expert (bytes), after checking it is linear in the expert count."""
    per_expert = [row["extra_bytes"] / row["experts"] for row in MEASURED["rows"]]
    assert len(per_expert) >= 2 and max(per_expert) / min(per_expert) < 1.01  # linear, through the origin
    return max(per_expert)


def test_expert_targets_are_split_from_the_rest():
    assert expert_targets(["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]) == (
        frozenset({"gate_up_proj", "down_proj"}),
        (),
    )
    assert expert_targets(["experts.gate_proj", "self_attn.sinks"]) == (
        frozenset({"gate_up_proj"}),
        ("self_attn.sinks",),
    )


def test_the_term_is_at_least_what_was_measured():
    row = MEASURED["rows"][0]
    assert row["lora"]["targets"] == ["gate_up_proj", "down_proj"] and row["lora"]["quantized"] is True
    per_expert_tensors = row["lora"]["expert_tensor_bytes"] / row["experts"]
    factor = EXTRA_PER_EXPERT[(True, frozenset({"gate_up_proj", "down_proj"}))]
    assert factor * per_expert_tensors >= _measured_extra_per_expert()
    # what the measurement says it is: W + dW evaluated twice per tensor and the layer's dequantized copy
    assert 1.3 < _measured_extra_per_expert() / per_expert_tensors < 1.4


def test_the_simulator_runs_without_the_expert_targets():
    from mixtral_ft.plan.setup import setup_from_config

    setup = setup_from_config(_values("a100-80gb", EXPERT_TARGETS, "lora_dropout=0"), on_gpu=True)
    sim = simulated_setup(setup)
    assert setup.lora.target_parameters and sim.lora.target_parameters == ()
    assert sim.lora.target_modules == setup.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")


def test_expert_lora_plan_exceeds_the_attention_only_plan_by_the_measured_size(warm_cache):
    from mixtral_ft.plan.training import plan_training

    attention = plan_training(_values("a100-80gb"), None, "a100-80gb", task="rg", search=False)
    experts = plan_training(_values("a100-80gb", EXPERT_TARGETS), None, "a100-80gb", task="rg", search=False)
    in_flight = 8 * _measured_extra_per_expert()  # Mixtral-8x7B: 8 experts per layer, one layer at a time
    factors = MIXTRAL_LORA_VALUES * 4 * 2  # float32 factors and their gradients, before any optimizer state
    assert (experts.peak_bytes - attention.peak_bytes) >= in_flight + factors
    assert experts.parts["expert_lora_transient"] >= in_flight
    assert 3.4 < in_flight / GIB < 3.6 and 3.1 < factors / GIB < 3.2


def test_preflight_refuses_expert_lora_where_it_does_not_fit(warm_cache, monkeypatch):
    monkeypatch.setenv(FREE_GIB_ENV, "39.4")  # an A100 40GB, as the a100-40gb profile is planned for
    assert preflight_training(_values("a100-40gb"), "a100-40gb", 1, 1) is not None  # attention-only fits
    with pytest.raises(PlanRefused) as refused:
        preflight_training(_values("a100-40gb", EXPERT_TARGETS, "lora_dropout=0"), "a100-40gb", 1, 1)
    lines = str(refused.value).splitlines()
    assert lines[0].startswith("this training run needs ") and "but the GPU has 39.4 GiB free" in lines[0]
    assert any(line.strip().startswith("expert LoRA: W + dW of one layer in flight") for line in lines)
    assert any(line.strip().startswith("expert LoRA: parameters, gradients, optimizer") for line in lines)


@pytest.mark.slow
def test_the_measurement_reproduces():
    """The real layer at Mixtral widths, 2 experts (~5 GB of RAM): the extra peak is the checked-in one."""
    pytest.importorskip("axolotl")
    script = REPO / "scripts" / "measure_expert_lora.py"

    def peak(targets: str) -> int:
        out = subprocess.run(
            [sys.executable, str(script), "--one", "2", "--targets", targets],
            capture_output=True,
            text=True,
            check=True,
            timeout=1200,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]

    extra = peak("gate_up_proj,down_proj") - peak("")
    golden = next(row["extra_bytes"] for row in MEASURED["rows"] if row["experts"] == 2)
    assert abs(extra - golden) / golden < 0.01
