"""An Axolotl plugin that keeps a MoE model's router aux loss at its configured weight under gradient
accumulation and data parallelism: ``plugins: [mixtral_ft.train.accumulation.AuxLossAccumulationPlugin]``.

The Trainer normalises the cross-entropy over the whole accumulated batch but sums the aux term over the
micro batches and ranks of a step; the plugin divides the model's coefficient by what the Trainer
multiplies. Why, with file and line: docs/design/training-decisions.md. Axolotl imports this module by
name; nothing else imports it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from axolotl.integrations.base import BasePlugin

LOG = logging.getLogger(__name__)
PLUGIN = "mixtral_ft.train.accumulation.AuxLossAccumulationPlugin"


def aux_loss_model(model: Any) -> Any | None:
    """The transformers model under ``model`` (PEFT or accelerate wrappers) when its forward adds a
    router aux loss (``output_router_logits`` on, non-zero ``router_aux_loss_coef``), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    # forward() multiplies by the attribute, copied from the config in __init__ (modeling_mixtral.py:555).
    if getattr(config, "output_router_logits", False) and getattr(base, "router_aux_loss_coef", 0):
        return base
    return None


def trainer_multiplier(trainer: Any, num_items_in_batch: Any) -> int:
    """How many times one optimizer step counts a loss term that ``num_items_in_batch`` does not
    normalise: 1 when the Trainer divides the loss by the accumulation steps itself."""
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)  # transformers >= 5.20 lets a subclass say
    if scaled is None:
        scaled = (trainer.model_accepts_loss_kwargs and num_items_in_batch is not None) or bool(
            trainer.compute_loss_func
        )
    if not scaled:
        return 1
    factor = int(trainer.current_gradient_accumulation_steps)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        factor *= max(1, trainer.accelerator.num_processes // trainer.get_tp_size())
    return factor


@contextlib.contextmanager
def aux_coefficient(model: Any, coef: float) -> Iterator[None]:
    saved = model.router_aux_loss_coef
    model.router_aux_loss_coef = coef
    try:
        yield
    finally:
        model.router_aux_loss_coef = saved


def keep_aux_weight(trainer: Any) -> bool:
    """Wrap ``trainer.compute_loss`` so training losses weigh the aux term by the configured coefficient
    per optimizer step; returns False (and changes nothing) for a model without an aux term."""
    base = aux_loss_model(trainer.accelerator.unwrap_model(trainer.model))
    if base is None:
        return False
    inner = trainer.compute_loss

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        factor = trainer_multiplier(trainer, num_items_in_batch) if model.training else 1
        if factor == 1:
            return inner(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        with aux_coefficient(base, base.router_aux_loss_coef / factor):
            return inner(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    trainer.compute_loss = compute_loss
    return True


class AuxLossAccumulationPlugin(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        if keep_aux_weight(trainer):
            LOG.info(
                "mixft: router aux loss weighed by router_aux_loss_coef per optimizer step "
                "(gradient_accumulation_steps=%s, model_accepts_loss_kwargs=%s)",
                trainer.args.gradient_accumulation_steps,
                trainer.model_accepts_loss_kwargs,
            )
