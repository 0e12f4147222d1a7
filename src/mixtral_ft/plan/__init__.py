"""``mixft plan``: peak GPU memory and wall time of a training or inference run, before it runs.

The Python API, exported lazily (nothing imports torch until a measurement is needed; a plan whose
measurements are cached reads JSON only): ``plan_training`` -> ``TrainingPlan``, ``plan_inference`` ->
``InferencePlan``, ``check_training_plan`` / ``check_inference_plan`` (raise ``PlanRefused``), the
preflights ``generate``, ``judge`` and ``train`` run, and the GPU table (``GPUS``, ``gpu_by_name``). Each
function's docstring gives its arguments; docs/planning.md the method, docs/design/planner.md each number.
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
