"""Gradient accumulation and Mixtral's router aux loss, through Axolotl's own trainer (slow tier).

One optimizer step with each shipped GPU profile's (micro batch, accumulation) must give the LoRA
gradients of accumulation 1 on the combined batch. Each step here is a real ``trainer.train()`` of the
tiny Mixtral with ``max_steps: 1``: the rendered ``cpu`` profile with the micro batch and accumulation
set, loaded by Axolotl's ``load_cfg``, ``load_datasets`` and ``setup_model_and_trainer`` in-process, so
Axolotl's trainer makes its own ``model_accepts_loss_kwargs`` decision (``core/trainers/base.py:178-180``)
and transformers' training loop its own division (``trainer.py:2083-2091``). The gradients are read in
``on_pre_optimizer_step`` (clipping off, LoRA dropout 0 so every run sees the same forward).

Two exact comparisons, each isolating one term of the loss:

- cross-entropy only (``output_router_logits: false``), four different rows: the label-count
  normalisation over the accumulated batch makes the micro-batched step equal the combined one;
- with the aux loss, four identical rows: every micro batch then has the routing statistics of the
  combined batch, so the aux term of a step equals the combined batch's exactly when it is weighed by
  the coefficient once per step. (With different rows the micro-batch aux losses average to a value
  close to, not equal to, the combined batch's: the loss is a product of two batch means.)

And one pin of the problem the plugin fixes: without it, Axolotl 0.21 keeps ``model_accepts_loss_kwargs``
and the step's logged loss carries the aux term ``gradient_accumulation_steps`` times.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixtral_ft.axolotl_cfg.families import AUX_LOSS_PLUGIN
from mixtral_ft.axolotl_cfg.keys import snapshot_keys
from mixtral_ft.axolotl_cfg.render import TASKS, RenderRequest, profile_names, render
from support.fixtures_models import rg_rows, write_split

pytestmark = pytest.mark.slow

COEF = 0.02  # configs/rg.yml and tc.yml


def profile_accumulations() -> list[tuple[int, int]]:
    """The (micro batch, accumulation) pairs with accumulation > 1 of every shipped profile x task."""
    pairs = set()
    for task in TASKS:
        for profile in profile_names():
            values = render(RenderRequest(task, Path("/data"), profile, Path("/run")), keys=snapshot_keys()).values
            if values["gradient_accumulation_steps"] > 1:
                pairs.add((values["micro_batch_size"], values["gradient_accumulation_steps"]))
    return sorted(pairs)


ACCUMULATIONS = profile_accumulations()


@dataclass
class Step:
    grads: dict  # LoRA parameter name -> gradient of the step
    loss: float  # the step's logged training loss
    accepts_loss_kwargs: bool  # the trainer's decision


@contextlib.contextmanager
def _axolotl_process_state():
    """Axolotl's config loading sets environment variables and registers plugins process-wide."""
    from axolotl.integrations.base import PluginManager

    env = dict(os.environ)
    PluginManager.get_instance().plugins.clear()
    try:
        yield
    finally:
        PluginManager.get_instance().plugins.clear()
        os.environ.clear()
        os.environ.update(env)


def one_step(model_dir: Path, data: Path, run: Path, micro: int, accumulation: int, aux: bool, plugin: bool) -> Step:
    import torch
    import yaml
    from transformers import TrainerCallback

    overrides = [
        f"micro_batch_size={micro}",
        f"gradient_accumulation_steps={accumulation}",
        "max_steps=1",
        "max_grad_norm=0",  # no clipping: the gradient as accumulated
        "lora_dropout=0",
    ]
    if not aux:
        overrides.append("model_config.output_router_logits=false")
    values = render(RenderRequest("rg", data, "cpu", run, base_model=str(model_dir), overrides=tuple(overrides))).values
    assert (AUX_LOSS_PLUGIN in values.get("plugins", [])) == aux  # the family layer lists it with the aux loss
    if not plugin:
        values.pop("plugins")
    run.mkdir(parents=True)
    (run / "axolotl.yml").write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")

    captured: dict = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            captured.update(
                {
                    n: p.grad.detach().clone()
                    for n, p in model.named_parameters()
                    if p.requires_grad and p.grad is not None
                }
            )

    with _axolotl_process_state():
        from axolotl.cli.args import TrainerCliArgs
        from axolotl.cli.config import load_cfg
        from axolotl.common.datasets import load_datasets
        from axolotl.train import setup_model_and_trainer

        cfg = load_cfg(str(run / "axolotl.yml"))
        trainer, *_ = setup_model_and_trainer(cfg, load_datasets(cfg=cfg, cli_args=TrainerCliArgs()))
        assert len(trainer.train_dataset) == micro * accumulation  # the step sees every row
        trainer.add_callback(Capture())
        out = trainer.train()
    assert captured and all(torch.isfinite(g).all() for g in captured.values())
    return Step(captured, out.training_loss, trainer.model_accepts_loss_kwargs)


def _rel_diff(a: Step, b: Step) -> float:
    import torch

    assert a.grads.keys() == b.grads.keys()
    x = torch.cat([a.grads[k].flatten() for k in sorted(a.grads)])
    y = torch.cat([b.grads[k].flatten() for k in sorted(b.grads)])
    return float((x - y).norm() / y.norm())


@pytest.fixture(scope="module")
def steps(tiny_mixtral_dir, tmp_path_factory):
    """Runs on demand, each once: ``steps(rows, micro, accumulation, aux, plugin)``."""
    root = tmp_path_factory.mktemp("accumulation")
    same = [dict(rg_rows("train", 1)[0], id=f"train-{i}") for i in range(4)]
    data = {
        "different": write_split(root / "data-different", rg_rows("train", 4), rg_rows("test", 2)),
        "identical": write_split(root / "data-identical", same, rg_rows("test", 2)),
    }
    done: dict = {}

    def get(rows: str, micro: int, accumulation: int, aux: bool = True, plugin: bool = True) -> Step:
        key = (rows, micro, accumulation, aux, plugin)
        if key not in done:
            run = root / "-".join(str(k) for k in key)
            done[key] = one_step(tiny_mixtral_dir, data[rows], run, micro, accumulation, aux, plugin)
        return done[key]

    return get


def test_shipped_profiles_accumulate():
    assert ACCUMULATIONS == [(1, 4), (2, 2)]  # TC on a100-40gb; TC on 80 GB cards and RG on a100-40gb
    assert {m * a for m, a in ACCUMULATIONS} == {4}  # 4 sequences a step, as the 80 GB RG run


@pytest.mark.parametrize("micro,accumulation", ACCUMULATIONS)
def test_cross_entropy_is_normalised_over_the_accumulated_batch(steps, micro, accumulation):
    combined = steps("different", 4, 1, aux=False)
    step = steps("different", micro, accumulation, aux=False)
    assert step.accepts_loss_kwargs and combined.accepts_loss_kwargs  # label-count normalisation, Axolotl 0.21
    assert _rel_diff(step, combined) < 1e-5
    assert step.loss == pytest.approx(combined.loss, rel=1e-5)


@pytest.mark.parametrize("micro,accumulation", ACCUMULATIONS)
def test_aux_loss_keeps_its_coefficient_under_accumulation(steps, micro, accumulation):
    combined = steps("identical", 4, 1)
    step = steps("identical", micro, accumulation)
    assert _rel_diff(step, combined) < 1e-5
    assert step.loss == pytest.approx(combined.loss, rel=1e-5)


def test_without_the_plugin_the_aux_weight_grows_with_accumulation(steps):
    """What Axolotl 0.21 does without mixft's plugin: the flag stays True, so the Trainer skips the
    division and the aux term (~coef x 2 at near-balanced top-2 routing) counts once per micro batch."""
    micro, accumulation = 2, 2
    combined = steps("identical", 4, 1)
    fixed = steps("identical", micro, accumulation)
    unfixed = steps("identical", micro, accumulation, plugin=False)
    assert unfixed.accepts_loss_kwargs  # core/trainers/base.py:178-180 keeps it for Mixtral
    assert unfixed.loss - combined.loss == pytest.approx((accumulation - 1) * COEF * 2.0, rel=0.01)
    assert _rel_diff(unfixed, combined) > 100 * max(_rel_diff(fixed, combined), 1e-7)
