"""Refusing a run whose planned peak exceeds the GPU's free memory (``train``, ``generate``, ``judge``).

The refusal is :class:`PlanRefused` (exit status 2): the peak, the free memory, the parts table
and the fix. ``--skip-plan-check`` is the caller's way around it.
"""

from __future__ import annotations

import logging
import os

from mixtral_ft.errors import MixftError, UsageError
from mixtral_ft.plan.freemem import free_bytes
from mixtral_ft.plan.gpus import PROFILE_GPU, gpu_for_profile
from mixtral_ft.plan.inference import INFERENCE_PART_LABELS, plan_inference
from mixtral_ft.plan.prompts import request_lengths
from mixtral_ft.plan.report import parts_table, peak_words
from mixtral_ft.plan.training import PART_LABELS, plan_training

GIB = 2**30
# Plan against this many GiB instead of the device's free memory. For testing the refusal path on a
# machine without CUDA (tests/test_plan_check.py), and for a GPU shared with another process that will
# grow; the device query is the only thing it replaces.
FREE_GIB_ENV = "MIXFT_PLAN_FREE_GIB"


class PlanRefused(MixftError):
    """The plan does not fit the GPU; the message carries the parts and the fix."""

    exit_code = 2


def free_gpu_memory_gib(device: int = 0) -> float | None:
    """Free memory of CUDA device ``device``, None without CUDA; ``$MIXFT_PLAN_FREE_GIB`` when set
    (:data:`FREE_GIB_ENV`). Read through NVML, or a short-lived child process, never with a CUDA
    context in this process (:mod:`mixtral_ft.plan.freemem`)."""
    forced = os.environ.get(FREE_GIB_ENV)
    if forced:
        try:
            value = float(forced)
        except ValueError:
            raise UsageError(f"${FREE_GIB_ENV}={forced!r}: not a number of GiB") from None
        if value <= 0:
            raise UsageError(f"${FREE_GIB_ENV}={forced!r}: must be positive")
        return value

    free = free_bytes(device)
    return None if free is None else free / GIB


def _fix_training(plan, profile: str | None, free_gib: float) -> str:
    s = plan.setup
    options = []
    if profile in PROFILE_GPU and profile != "a100-40gb" and free_gib < gpu_for_profile(profile).memory_gib * 0.75:
        # a card smaller than the one the profile is sized for
        options.append("a profile for a smaller card (--profile a100-40gb)")
    if plan.largest_micro_batch:
        accum = s.gradient_accumulation_steps * s.micro_batch_size // plan.largest_micro_batch
        options.append(
            f"--set micro_batch_size={plan.largest_micro_batch} --set gradient_accumulation_steps={accum} "
            "(same effective batch)"
        )
    elif s.micro_batch_size > 1:
        options.append("--set micro_batch_size=1 (and raise gradient_accumulation_steps to keep the effective batch)")
    if plan.longest_sequence:
        options.append(f"--set sequence_len={plan.longest_sequence} (rows longer than that are dropped)")
    if s.checkpointing_mode == "none":
        options.append("--set gradient_checkpointing=true")
    options.append("--skip-plan-check to run anyway")
    return "fix: " + "; or ".join(options)


def needed_gib(plan) -> float:
    """What a plan is checked on: the high figure of a training plan (peak raised by its error band), the
    peak of an inference plan."""
    return getattr(plan, "peak_high_gib", plan.peak_gib)


def refusal_message(plan, free_gib: float, what: str, fix: str, labels: dict[str, str]) -> str:
    need = needed_gib(plan)
    by_plan = "by plan" if need == plan.peak_gib else f"by plan ({peak_words(plan)})"
    head = (
        f"{what} needs {need:.1f} GiB per GPU {by_plan}, but the GPU has {free_gib:.1f} GiB free "
        f"({need - free_gib:.1f} GiB short):"
    )
    return "\n".join([head, *parts_table(plan.parts, labels), fix])


def check_training_plan(plan, free_gib: float | None, profile: str | None = None) -> None:
    """Raise :class:`PlanRefused` when ``plan`` (a :class:`TrainingPlan`) needs more than ``free_gib``: when
    its high figure (the peak raised by the planner's error band) exceeds it.

    The fix names the plan's own largest micro batch and longest sequence, found for the memory it
    was planned for: plan it for ``free_gib`` (as :func:`preflight_training` does) to have them fit it."""
    if free_gib is None or plan.peak_high_gib <= free_gib:
        return
    raise PlanRefused(
        refusal_message(plan, free_gib, "this training run", _fix_training(plan, profile, free_gib), PART_LABELS)
    )


def check_inference_plan(plan, free_gib: float | None, what: str = "this run") -> None:
    """Raise :class:`PlanRefused` when ``plan`` (an :class:`InferencePlan`) needs more than ``free_gib``.

    Call it after the model, adapter and prompts are known and before the model is loaded:
    ``check_inference_plan(plan_inference(model, free_gib, adapter=..., load_in_4bit=...,
    batch_size=..., max_new_tokens=..., prompt_lengths=...), free_gpu_memory_gib())``.
    """
    if free_gib is None or plan.peak_gib <= free_gib:
        return
    options = []
    if plan.largest_batch_size:
        options.append(f"--batch-size {plan.largest_batch_size}")
    elif plan.batch_size > 1:
        options.append("a smaller --batch-size")
    if not plan.load_in_4bit:
        options.append("--load-in-4bit")
    options.append("a smaller --max-new-tokens")
    options.append("--backend openai with a server that has the memory (docs/inference.md)")
    options.append("--skip-plan-check to run anyway")
    raise PlanRefused(refusal_message(plan, free_gib, what, "fix: " + "; or ".join(options), INFERENCE_PART_LABELS))


def preflight_training(config_values: dict, profile: str, gpus: int, world_size: int):
    """``mixft train``'s memory check: on CUDA, plan the run for the least free memory among the
    ``gpus`` local devices and raise :class:`PlanRefused` when it does not fit. Returns the plan
    (for ``--probe`` to compare with what it measures), or None on the CPU profile / without CUDA."""
    if profile == "cpu":
        return None
    free = [free_gpu_memory_gib(i) for i in range(gpus)]
    if not free or free[0] is None:
        return None
    least = min(f for f in free if f is not None)  # every device has a value: CUDA is there (free[0])

    try:
        plan = plan_training(config_values, None, least, gpus=world_size)
    except MixftError as e:  # e.g. a Hub id whose config is not on this machine: no plan, no refusal
        logging.getLogger(__name__).warning("mixft: no memory plan for this run (%s); launching without the check", e)
        return None
    check_training_plan(plan, least, profile)
    return plan


def planned_vs_measured(plan, measured_peak_gib: float | None, measured_reserved_gib: float | None) -> dict:
    """What ``train --probe`` prints beside its measurement: the plan's allocated peak (without the CUDA
    context and the allocator's overhead, which ``max_memory_allocated`` does not see) and its reserved
    peak (the allocator replay's, comparable to ``max_memory_reserved``), with the relative errors."""
    allocated = plan.allocated_peak_gib
    reserved = plan.reserved_peak_gib

    def err(measured, planned):
        return None if not measured else round((planned - measured) / measured, 4)

    return {
        "planned_allocated_gib": round(allocated, 2),
        "planned_reserved_gib": round(reserved, 2),
        "error_allocated": err(measured_peak_gib, allocated),
        "error_reserved": err(measured_reserved_gib, reserved),
        "peak_phase": plan.peak_phase,
    }


def preflight_inference(
    model: str,
    *,
    adapter: str | None,
    load_in_4bit: bool,
    batch_size: int,
    max_new_tokens: int,
    prompt_lengths: list[int],
    what: str = "this run",
):
    """``generate``/``judge`` (hf backend) on CUDA: plan for the free memory of device 0 and raise
    :class:`PlanRefused` when the run does not fit. Returns the plan, or None without CUDA or
    when the model's config is not on this machine (then the run goes ahead unchecked)."""
    free = free_gpu_memory_gib(0)
    if free is None:
        return None

    try:
        plan = plan_inference(
            model,
            free,
            adapter=adapter,
            load_in_4bit=load_in_4bit,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            prompt_lengths=prompt_lengths,
        )
    except MixftError as e:
        logging.getLogger(__name__).warning("mixft: no memory plan for this run (%s); running without the check", e)
        return None
    check_inference_plan(plan, free, what)
    return plan


def preflight_requests(backend, requests, max_new_tokens: int, what: str):
    """The preflight ``generate`` and ``judge`` hand the inference runner (``cli/_backend_options.py``,
    ``plan_preflight``): the hf backend's model, adapter, 4-bit and batch
    size from ``backend`` (a :class:`~mixtral_ft.backends.options.BackendOptions`), prompt lengths of the
    runner's ``requests`` tokenized as the backend will. Without CUDA (and without
    ``$MIXFT_PLAN_FREE_GIB``) there is no GPU memory to check, and nothing is planned."""
    if free_gpu_memory_gib(0) is None:
        return None

    lengths, _method = request_lengths(requests, backend.model, backend.adapter)
    return preflight_inference(
        backend.model,
        adapter=backend.adapter,
        load_in_4bit=backend.load_in_4bit,
        batch_size=backend.batch_size,
        max_new_tokens=max_new_tokens,
        prompt_lengths=lengths,
        what=what,
    )
