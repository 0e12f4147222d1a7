"""Mixtral's router aux loss and gradient checkpointing (issue 10 item 5), measured on the tiny Mixtral.

Pins the finding behind ``gradient_checkpointing_kwargs: {use_reentrant: false}`` in configs/rg.yml and
tc.yml: under reentrant checkpointing the aux loss has no autograd graph (a constant added to the loss),
under non-reentrant checkpointing its gradient reaches the LoRA weights exactly as without checkpointing.
If a transformers or torch upgrade changes this, these tests say so.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mixtral_ft.axolotl_cfg.render import RenderRequest, render

pytestmark = pytest.mark.slow


def _rendered(task: str, profile: str, model: Path, tmp_path: Path) -> dict:
    return render(
        RenderRequest(task=task, data_dir=tmp_path, profile=profile, run_dir=tmp_path, base_model=str(model))
    ).values


@pytest.fixture(scope="module")
def measured(tiny_mixtral_dir, tmp_path_factory):
    from bench.router_aux import measure, setup_from_config

    lora, coef = setup_from_config(_rendered("rg", "a100-80gb", tiny_mixtral_dir, tmp_path_factory.mktemp("r")))
    return measure(tiny_mixtral_dir, coef, lora), coef


def test_aux_loss_gradient_per_checkpointing_mode(measured):
    m, coef = measured
    r = m.by_mode()
    assert coef == 0.02 and m.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    # no checkpointing and non-reentrant: the aux loss is differentiable and reaches the LoRA weights
    for mode in ("none", "non-reentrant"):
        assert r[mode].aux_has_graph and r[mode].aux_grad_norm > 1e-4, mode
    assert r["non-reentrant"].aux_grad_norm == pytest.approx(r["none"].aux_grad_norm, rel=1e-5)
    assert r["non-reentrant"].loss_grad_diff_vs_none == pytest.approx(0.0, abs=1e-7)
    # reentrant: recorded in the no-grad forward, so a constant; the training gradient lacks exactly coef * d aux
    assert not r["reentrant"].aux_has_graph and r["reentrant"].aux_grad_norm == 0.0
    assert r["reentrant"].loss_grad_diff_vs_none == pytest.approx(coef * r["none"].aux_grad_norm, rel=1e-3)
    # the value is the same in every mode: what the aux term adds to each logged loss
    for mode in r:
        assert r[mode].loss == pytest.approx(r["none"].loss, rel=1e-6)
        assert r[mode].loss - r[mode].cross_entropy == pytest.approx(coef * r[mode].aux_loss, rel=1e-6)
    assert r["none"].aux_loss == pytest.approx(2.0, abs=0.05)  # top-2 routing near balance gives ~top_k
    assert r["reentrant"].logged_offset == pytest.approx(0.04, abs=0.001)


@pytest.mark.parametrize("task", ["rg", "tc"])
def test_shipped_configs_reach_the_trainer_non_reentrant(task, tiny_mixtral_dir, tmp_path):
    """Axolotl 0.19 fills in {use_reentrant: True} only when the key is absent (utils/config/__init__.py
    ~395-401); the shipped configs' explicit false survives validation and normalization."""
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    values = _rendered(task, "a100-80gb", tiny_mixtral_dir, tmp_path)
    assert values["gradient_checkpointing"] is True
    assert values["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert values["model_config"] == {"output_router_logits": True, "router_aux_loss_coef": 0.02}
    cfg = validate_config(DictDefault(copy.deepcopy(values)))
    normalize_config(cfg)
    assert cfg.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert cfg.overrides_of_model_config == {"output_router_logits": True, "router_aux_loss_coef": 0.02}
    without = copy.deepcopy(values)
    del without["gradient_checkpointing_kwargs"]
    cfg = validate_config(DictDefault(without))
    normalize_config(cfg)
    assert cfg.gradient_checkpointing_kwargs == {"use_reentrant": True}  # Axolotl's default: the problem
