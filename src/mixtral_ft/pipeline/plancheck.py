"""Cost before the first GPU-hour: ``mixft plan`` for every train, generate and judge stage, with
the stage's own resolved arguments and data, and the refusal when one does not fit.

Which GPU each stage is planned for:

- this machine's free GPU memory when it has one (``torch.cuda.mem_get_info``, asked in a child
  process so that the runner never holds a CUDA context), or ``$MIXFT_PLAN_FREE_GIB``; the same
  number ``train``, ``generate`` and ``judge`` check themselves before they load a model;
- without one (planning on a laptop before renting the GPU): a training stage is planned for the
  card its hardware profile is sized for, and a generate/judge stage for the card of the
  pipeline's first GPU training profile.

Not planned: training with the ``cpu`` profile (no GPU), generate/judge with an endpoint
(``--backend openai``: the memory is the server's), and generate/judge of a pipeline that has no
GPU profile on a machine without a GPU (the CPU demo). A stage whose input does not exist yet
(the data a previous stage prepares) is planned for memory only, and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from mixtral_ft.pipeline.child import capture
from mixtral_ft.pipeline.resolve import Stage
from mixtral_ft.plan.check import FREE_GIB_ENV, free_gpu_memory_gib
from mixtral_ft.plan.gpus import gpu_for_profile

_NO_GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd")
_FREE = "from mixtral_ft.plan.check import free_gpu_memory_gib as f; print(f())"


@dataclass
class StagePlan:
    stage: Stage
    argv: list[str] | None = None  # the `mixft plan` command; None when the stage is not planned
    note: str = ""
    result: dict[str, Any] | None = None
    with_data: bool = False
    error: str | None = None
    refusal: list[str] = field(default_factory=list)  # the planner's own lines, when it does not fit

    @property
    def hours(self) -> float | None:
        value = (self.result or {}).get("hours")
        return float(value) if self.with_data and isinstance(value, (int, float)) else None


def free_gpu_gib(env: dict[str, str]) -> float | None:
    """Free memory of GPU 0 (GiB), None without one; never imports torch into the runner."""

    if os.environ.get(FREE_GIB_ENV):
        return free_gpu_memory_gib()
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in _NO_GPU_DEVICES):
        return None  # no GPU driver on this machine: nothing to ask torch
    proc = subprocess.run([sys.executable, "-c", _FREE], env=env, capture_output=True, text=True, check=False)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _plan_argv(stage: Stage) -> tuple[list[str], bool]:
    spec = stage.spec
    argv = ["plan", stage.argv[1] if spec.plan == "train" else str(spec.plan)]
    for option, value in stage.args.options:
        if option in spec.plan_copy:
            argv += [option] if value is None else [option, value]
    data = stage.args.value(spec.plan_data) if spec.plan_data else None
    if data and os.path.exists(data):
        return [*argv, str(spec.plan_data), data], True
    return argv, False


def _gpu_card(stages: list[Stage]) -> str | None:
    for s in stages:
        profile = s.args.value("--profile") if s.spec.plan == "train" else None
        if profile and profile != "cpu":
            return gpu_for_profile(profile).name
    return None


def choose(stages: list[Stage], free: float | None, all_stages: list[Stage]) -> list[StagePlan]:
    """What to plan, and for which GPU (see the module docstring)."""
    card = _gpu_card(all_stages)
    plans = []
    for s in stages:
        if s.spec.plan is None:
            continue
        p = StagePlan(s)
        argv, p.with_data = _plan_argv(s)
        target = ["--gpu-memory", f"{free:.6g}"] if free is not None else []
        if s.spec.plan == "train" and s.args.value("--profile") == "cpu":
            p.note = "profile cpu: trains on the CPU"
        elif s.spec.plan != "train" and (s.args.value("--backend") or "hf") != "hf":
            p.note = "served by an endpoint: its memory is the server's"
        elif s.spec.plan != "train" and free is None and card is None:
            p.note = "no GPU here and no GPU profile in the pipeline: runs on the CPU"
        else:
            if s.spec.plan != "train" and free is None:
                target = ["--gpu", str(card)]
            p.argv = argv + target
            if not p.with_data and s.spec.plan_data:
                p.note = f"memory only: {s.args.value(str(s.spec.plan_data))} does not exist yet"
        plans.append(p)
    return plans


def run_plans(plans: list[StagePlan], env: dict[str, str], log, mixft: tuple[str, ...]) -> None:
    """Run ``mixft plan --json`` for each planned stage; the planner's own lines for any that does not fit."""

    for p in plans:
        if p.argv is None:
            continue
        log(f"planning {p.stage.name}: mixft {subprocess.list2cmdline(p.argv)}")
        proc = capture([*mixft, *p.argv, "--json"], env)
        try:
            p.result = json.loads(proc.stdout) if proc.returncode == 0 else None
        except ValueError:
            p.result = None
        if p.result is None:
            lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
            p.error = lines[-1] if lines else f"mixft plan exited {proc.returncode}"
            continue
        if not p.result.get("fits", True):
            human = capture([*mixft, *p.argv], env)
            p.refusal = human.stdout.rstrip("\n").splitlines()


def _fmt(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:,.2f}{unit}"


def table(plans: list[StagePlan]) -> list[str]:
    """One row per train/generate/judge stage, then the totals."""
    rows = [("stage", "plan", "gpu", "peak GiB", "fits", "hours", "note")]
    for p in plans:
        r = p.result or {}
        gpu = r.get("gpu") or {}
        where = f"{gpu.get('name', '?')} ({r.get('gpu_memory_gib', 0):.1f} GiB)" if r else "—"
        fits = "—" if not r else ("yes" if r.get("fits") else "NO")
        what = " ".join(p.argv[:2]) if p.argv else "—"
        note = p.error and f"no plan: {p.error}" or p.note
        rows.append((p.stage.name, what, where, _fmt(r.get("peak_gib")), fits, _fmt(p.hours), note))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    known = [p.hours for p in plans if p.hours is not None]
    planned = [p for p in plans if p.result]
    peak = max(planned, key=lambda p: p.result["peak_gib"]) if planned else None  # type: ignore[index]
    unknown = sum(1 for p in plans if p.result and p.hours is None)
    total = f"total: {sum(known):,.2f} GPU-hours over {len(known)} stage(s)"
    if unknown:
        total += f"; {unknown} more planned for memory only (their input does not exist yet: plan again after it does)"
    if peak is not None:
        total += f"; largest peak {peak.result['peak_gib']:.1f} GiB ({peak.stage.name})"  # type: ignore[index]
    return [*lines, total]


def refusal(plans: list[StagePlan]) -> str | None:
    """The message for the stages that do not fit (None when all fit)."""
    bad = [p for p in plans if p.result and not p.result.get("fits", True)]
    if not bad:
        return None
    parts = []
    for p in bad:
        parts += [f"stage {p.stage.name} does not fit (mixft {subprocess.list2cmdline(p.argv or [])}):", *p.refusal]
    parts.append("nothing was started; fix the stage's arguments, or give --skip-plan-check to run anyway")
    return "\n".join(parts)
