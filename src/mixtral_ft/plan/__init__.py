"""``mixft plan``: peak GPU memory and wall time of a training or inference run, before it runs.

Python API (nothing here imports torch until a measurement is needed; a plan whose measurements
are cached reads JSON only):

- ``plan_training(config, data_dir, gpu, *, task=None, gpus=1, model=None) -> TrainingPlan``:
  ``config`` is a rendered Axolotl config (``RenderedConfig`` or its ``values`` dict, e.g.
  ``render(RenderRequest(...))`` as ``mixft train`` renders it); ``data_dir`` the prepared split
  (``None``: no hours); ``gpu`` a name from ``GPUS`` (``a100-40gb``, ``a100-80gb``, ``h100-80gb``,
  ``h200``, ``l40s``, ``rtx-4090``, ``a10g``), a ``Gpu`` or a memory size in GiB; ``model``
  overrides the config's ``base_model`` with a model directory, a ``config.json`` path, a dict or
  a ``transformers`` config (dense models such as Llama or Mistral work as well as Mixtral).
  ``TrainingPlan.to_dict()`` has ``peak_gib``, ``peak_high_gib`` (the peak raised by the planner's error
  band, ``band``), ``gpu_memory_gib``, ``fits`` (on the high figure), ``margin_gib``, ``parts`` (name ->
  GiB), ``hours`` and the basis of every number. ``casts`` plans another stack's post-load dtype casts.
- ``plan_inference(model, gpu, *, adapter=None, load_in_4bit=False, batch_size=8, max_new_tokens=256,
  prompt_lengths=None) -> InferencePlan``: weights, KV cache at the longest batch, logits,
  prefill activations, overhead; fits or not; decode tokens/s (memory-bandwidth bound).
- ``check_training_plan(plan, free_gib)`` / ``check_inference_plan(plan, free_gib)``: raise
  ``PlanRefused`` (exit 2) with the parts table and the fix when the high figure (training) or the peak
  (inference) exceeds free memory;
  ``preflight_training(...)`` / ``preflight_inference(...)`` do the whole check on a CUDA machine
  (free memory, plan, refusal) and return None elsewhere; ``preflight_requests(backend_options,
  requests, max_new_tokens, what)`` is the preflight ``generate`` and ``judge`` hand the inference runner. The free
  memory is NVML's (``plan.freemem``: no CUDA context in mixft's process), or ``$MIXFT_PLAN_FREE_GIB`` when set.
- ``GPUS``, ``gpu_by_name``: the GPU table with its sources.

How each number is obtained, the constants and their bounds: docs/planning.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "plan_training": "mixtral_ft.plan.training",
    "TrainingPlan": "mixtral_ft.plan.training",
    "report_calibration": "mixtral_ft.plan.training",
    "plan_inference": "mixtral_ft.plan.inference",
    "InferencePlan": "mixtral_ft.plan.inference",
    "check_training_plan": "mixtral_ft.plan.check",
    "check_inference_plan": "mixtral_ft.plan.check",
    "preflight_inference": "mixtral_ft.plan.check",
    "preflight_training": "mixtral_ft.plan.check",
    "preflight_requests": "mixtral_ft.plan.check",
    "PlanRefused": "mixtral_ft.plan.check",
    "GPUS": "mixtral_ft.plan.gpus",
    "Gpu": "mixtral_ft.plan.gpus",
    "gpu_by_name": "mixtral_ft.plan.gpus",
    "load_arch": "mixtral_ft.plan.arch",
}

__all__ = [
    "GPUS",
    "Gpu",
    "InferencePlan",
    "PlanRefused",
    "TrainingPlan",
    "check_inference_plan",
    "check_training_plan",
    "gpu_by_name",
    "load_arch",
    "plan_inference",
    "plan_training",
    "preflight_inference",
    "preflight_requests",
    "preflight_training",
    "report_calibration",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mixtral_ft.plan' has no attribute {name!r}")

    return getattr(importlib.import_module(_EXPORTS[name]), name)
