"""Does Mixtral's router auxiliary loss reach the LoRA weights? Measured per gradient-checkpointing mode.

transformers v5 records Mixtral's router logits with forward hooks (``OutputRecorder`` in
``models/mixtral/modeling_mixtral.py``). Under reentrant checkpointing each decoder layer's forward
runs inside ``torch.no_grad()``, so the recorded logits, and the load-balancing loss built from them,
have no autograd graph: ``output_router_logits`` then adds a number to the loss and nothing to the
gradient. Non-reentrant checkpointing records them with their graph. This module measures that on a
real model with the LoRA set-up Axolotl builds (``peft.get_peft_model`` with the config's r, alpha
and target modules; ``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)``, which
is what Axolotl's loader and the transformers Trainer call). ``scripts/measure_router_aux.py``
prints the table; ``tests/test_router_aux_slow.py`` pins the result.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

# mode name -> gradient_checkpointing_kwargs (None: checkpointing off)
MODES: dict[str, dict | None] = {
    "none": None,
    "reentrant": {"use_reentrant": True},
    "non-reentrant": {"use_reentrant": False},
}

SAMPLE_TEXTS = (
    (
        "Context: The museum opens at 9 am and closes at 5 pm.\nQuestion: When does the museum open?\n"
        "Answer: The museum opens at 9 am."
    ),
    (
        "Context: Refunds are possible within 30 days with a receipt.\nQuestion: How long is the refund window?\n"
        "Answer: Refunds are possible within 30 days."
    ),
)


@dataclass(frozen=True)
class LoraSetup:
    """The adapter Axolotl would build; defaults are configs/rg.yml's (dropout off so every mode sees one forward)."""

    r: int = 32
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class ModeResult:
    mode: str
    gradient_checkpointing_kwargs: dict | None
    loss: float  # what the trainer logs: cross-entropy + coef * aux
    cross_entropy: float
    aux_loss: float
    aux_coef: float
    aux_has_graph: bool  # False: the aux term is a constant for autograd
    aux_grad_norm: float  # || d aux / d LoRA ||, 0.0 when it has no graph
    loss_grad_norm: float  # || d loss / d LoRA ||
    loss_grad_diff_vs_none: float | None = None  # || g_loss(mode) - g_loss(no checkpointing) ||

    @property
    def logged_offset(self) -> float:
        """What the aux term adds to every logged loss value (train and eval): coef * aux."""
        return self.aux_coef * self.aux_loss


@dataclass
class AuxMeasurement:
    model: str
    lora: LoraSetup
    tokens: int
    results: list[ModeResult] = field(default_factory=list)

    def by_mode(self) -> dict[str, ModeResult]:
        return {r.mode: r for r in self.results}

    def table(self) -> str:
        head = (
            "| checkpointing | gradient_checkpointing_kwargs | loss | cross-entropy | aux loss | coef x aux "
            "| aux has graph | ‖∂aux/∂LoRA‖ | ‖∂loss/∂LoRA‖ | ‖Δ∂loss/∂LoRA‖ vs none |"
        )
        rows = [head, "|" + "---|" * 10]
        for r in self.results:
            kwargs = "-" if r.gradient_checkpointing_kwargs is None else str(r.gradient_checkpointing_kwargs)
            diff = "-" if r.loss_grad_diff_vs_none is None else f"{r.loss_grad_diff_vs_none:.3e}"
            rows.append(
                f"| {r.mode} | {kwargs} | {r.loss:.6f} | {r.cross_entropy:.6f} | {r.aux_loss:.6f} "
                f"| {r.logged_offset:.6f} | {'yes' if r.aux_has_graph else 'no'} | {r.aux_grad_norm:.3e} "
                f"| {r.loss_grad_norm:.6e} | {diff} |"
            )
        return "\n".join(rows)


def _grad_vector(params):
    import torch

    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def measure(
    model_dir: str | os.PathLike,
    coef: float,
    lora: LoraSetup = LoraSetup(),
    modes: tuple[str, ...] = tuple(MODES),
    seed: int = 0,
) -> AuxMeasurement:
    """Load ``model_dir`` afresh per mode, add LoRA, enable the mode's checkpointing, run one forward on
    a fixed batch in training mode and take the gradients of the aux loss and of the whole loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = tok(list(SAMPLE_TEXTS), return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = AuxMeasurement(model=str(model_dir), lora=lora, tokens=int(batch["attention_mask"].sum()))
    reference = None
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown checkpointing mode {mode!r}; choose from {', '.join(MODES)}")
        torch.manual_seed(seed)
        # As Axolotl applies model_config: on the config, before the model is built. (Setting
        # model.config.router_aux_loss_coef afterwards would not change the coefficient: the model
        # copies it in __init__.)
        config = AutoConfig.from_pretrained(model_dir)
        config.output_router_logits = True
        config.router_aux_loss_coef = coef
        base = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32)
        if base.router_aux_loss_coef != coef:
            raise RuntimeError(f"{model_dir}: the model did not take router_aux_loss_coef={coef}")
        model = get_peft_model(
            base,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        checkpointing = MODES[mode]
        if checkpointing is not None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(checkpointing))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]

        # 1) the aux loss alone (a separate forward: reentrant checkpointing supports .backward() only)
        fwd = model(**batch)
        aux = fwd.aux_loss
        aux_has_graph = bool(aux.requires_grad)
        if aux_has_graph:
            aux.backward()
            aux_grad_norm = float(_grad_vector(params).norm())
        else:
            aux_grad_norm = 0.0
        model.zero_grad(set_to_none=True)

        # 2) the loss the trainer optimizes
        fwd = model(**batch)
        fwd.loss.backward()
        grad = _grad_vector(params).detach().clone()
        loss, aux_value = float(fwd.loss.detach()), float(fwd.aux_loss.detach())
        result = ModeResult(
            mode=mode,
            gradient_checkpointing_kwargs=MODES[mode],
            loss=loss,
            cross_entropy=loss - coef * aux_value,
            aux_loss=aux_value,
            aux_coef=coef,
            aux_has_graph=aux_has_graph,
            aux_grad_norm=aux_grad_norm,
            loss_grad_norm=float(grad.norm()),
        )
        if mode == "none":
            reference = grad
        if reference is not None:
            result.loss_grad_diff_vs_none = float((grad - reference).norm())
        if not math.isfinite(result.loss):
            raise RuntimeError(f"{model_dir}: non-finite loss under checkpointing mode {mode}")
        out.results.append(result)
        del model
    return out


def setup_from_config(values: dict) -> tuple[LoraSetup, float]:
    """The LoRA set-up and aux-loss coefficient of a rendered mixft config (dropout kept at 0, see LoraSetup)."""
    model_config = values.get("model_config") or {}
    if "router_aux_loss_coef" not in model_config:
        raise ValueError("the rendered config sets no model_config.router_aux_loss_coef")
    lora = LoraSetup(
        r=int(values["lora_r"]), alpha=int(values["lora_alpha"]), target_modules=tuple(values["lora_target_modules"])
    )
    return lora, float(model_config["router_aux_loss_coef"])
