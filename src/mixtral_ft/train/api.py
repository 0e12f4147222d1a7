"""``mixft train``: render, preflight, launch Axolotl, record the run, summarise it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mixtral_ft.axolotl_cfg.render import RenderedConfig, RenderRequest, render
from mixtral_ft.errors import ExternalCommandError, UsageError
from mixtral_ft.train.launch import LaunchOptions, build_launch_command
from mixtral_ft.train.rundir import RunPaths, TrainSummary, newest_checkpoint, read_summary


@dataclass(frozen=True)
class TrainRequest:
    task: str
    data_dir: Path
    profile: str
    run_dir: Path
    base_model: str | None = None
    overrides: tuple[str, ...] = ()
    launch: LaunchOptions = field(default_factory=LaunchOptions)
    resume: bool = False
    probe: bool = False  # add mixft's probe plugin: what took effect, memory and throughput per step
    skip_plan_check: bool = False  # launch even when the memory plan says the run does not fit (mixft plan)


@dataclass
class TrainPlan:
    """What a run will do; ``--dry-run`` prints it and stops."""

    request: TrainRequest
    config: RenderedConfig
    config_yaml: str
    command: list[str]
    resume_from: Path | None


@dataclass
class TrainResult:
    run_dir: Path
    exit_status: int
    wall_s: float
    summary: TrainSummary
    probe: Any = None  # a probe_report.ProbeSummary when the run was probed


def _with_probe(rendered: RenderedConfig) -> None:
    """Append the probe plugin to whatever plugins the config already lists."""
    from mixtral_ft.train.probe_report import PROBE_PLUGIN

    plugins = list(rendered.values.get("plugins") or [])
    if PROBE_PLUGIN not in plugins:
        plugins.append(PROBE_PLUGIN)
    rendered.values["plugins"] = plugins
    rendered.sources["plugins"] = ", ".join(x for x in (rendered.sources.get("plugins"), "--probe") if x)


def plan(req: TrainRequest) -> TrainPlan:
    """Render and validate the config and build the command; writes nothing."""
    from mixtral_ft.axolotl_cfg.validate import validate_with_axolotl

    paths = RunPaths(req.run_dir)
    resume_from = None
    extra: tuple[tuple[str, Any], ...] = ()
    if req.resume:
        resume_from = newest_checkpoint(paths.output)
        if resume_from is None:
            raise UsageError(f"{paths.output}: no checkpoint with trainer_state.json to resume from; start a new run")
        extra = (("resume_from_checkpoint", str(resume_from.resolve())),)
    rendered = render(RenderRequest(
        task=req.task, data_dir=req.data_dir, profile=req.profile, run_dir=req.run_dir,
        base_model=req.base_model, overrides=req.overrides, extra=extra,
    ))
    if req.probe:
        _with_probe(rendered)
    validate_with_axolotl(rendered.values)
    header = (f"Rendered by mixft for `train {req.task}` with profile '{req.profile}'."
              + (f"\nOverrides: {', '.join(req.overrides)}" if req.overrides else ""))
    if req.profile == "cpu" and req.launch.world_size > 1:
        # Tried: accelerate --cpu without mpirun silently starts one process, and under torchrun
        # Axolotl 0.19's normalize_config sets device_map={"": LOCAL_RANK}, which transformers
        # reads as an accelerator index ("Cannot access accelerator device when none is available").
        raise UsageError("--gpus > 1 with --profile cpu: Axolotl 0.19 cannot train with several "
                         "processes on CPU (it places each rank on CUDA device LOCAL_RANK); use --gpus 1")
    return TrainPlan(
        request=req,
        config=rendered,
        config_yaml=rendered.to_yaml(header),
        command=build_launch_command(paths.config.resolve(), req.launch),
        resume_from=resume_from,
    )


def preflight(req: TrainRequest) -> dict[str, int]:
    from mixtral_ft.train import preflight as pf

    pf.check_run_dir(req.run_dir, req.resume)
    pf.check_axolotl()
    counts = pf.check_data(req.task, req.data_dir)
    pf.check_gpus(req.profile, req.launch.gpus)
    pf.check_disk(req.run_dir, req.profile)
    return counts


def _data_record(data_dir: Path, counts: dict[str, int]) -> dict[str, Any]:
    from mixtral_ft.util.hashing import sha256_file

    record: dict[str, Any] = {"dir": str(data_dir.resolve()), "rows": counts}
    for name in ("train.jsonl", "test.jsonl", "manifest.json"):
        p = data_dir / name
        record[name.replace(".", "_") + "_sha256"] = sha256_file(p) if p.exists() else None
    return record


def run(req: TrainRequest, runner: Callable[..., int] | None = None) -> TrainResult:
    """Preflight, write the run dir, launch Axolotl, record the outcome. Raises on a non-zero exit."""
    from mixtral_ft.train.runner import axolotl_env, run_streaming
    from mixtral_ft.util.atomic import atomic_write_text
    from mixtral_ft.util.hashing import sha256_text
    from mixtral_ft.util.provenance import command_line, environment, now_iso, write_manifest

    runner = runner or run_streaming
    counts = preflight(req)
    the_plan = plan(req)
    memory_plan = None
    if not req.skip_plan_check:
        from mixtral_ft.plan.check import preflight_training

        memory_plan = preflight_training(the_plan.config.values, req.profile, req.launch.gpus, req.launch.world_size)
    paths = RunPaths(req.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)

    previous: dict[str, Any] = {}
    if req.resume and paths.manifest.exists():
        previous = json.loads(paths.manifest.read_text(encoding="utf-8"))
    attempts = list(previous.get("attempts", []))
    atomic_write_text(paths.config, the_plan.config_yaml)
    attempt: dict[str, Any] = {
        "started_at": now_iso(),
        "ended_at": None,
        "exit_status": None,
        "command": the_plan.command,
        "mixft_command_line": command_line(),
        "config_sha256": sha256_text(the_plan.config_yaml),
        "resumed_from": str(the_plan.resume_from) if the_plan.resume_from else None,
    }
    manifest: dict[str, Any] = {
        "kind": "mixft-train-run",
        "task": req.task,
        "profile": req.profile,
        "base_model": the_plan.config.values.get("base_model"),
        "overrides": list(req.overrides),
        "launch": req.launch.__dict__,
        "data": _data_record(req.data_dir, counts),
        "config_sha256": attempt["config_sha256"],
        "environment": environment(),
        "attempts": attempts + [attempt],
        "summary": None,
    }
    write_manifest(paths.manifest, manifest)

    log_offset = paths.log.stat().st_size if paths.log.exists() else 0
    started = time.monotonic()
    rc = runner(the_plan.command, paths.log, env=axolotl_env(the_plan.config.values.get("base_model")))
    wall = time.monotonic() - started
    summary = read_summary(paths.output)
    probe = _probe_summary(paths.output) if req.probe else None
    if probe is not None and memory_plan is not None and probe.device == "cuda":
        from mixtral_ft.plan.check import planned_vs_measured

        probe.planned = planned_vs_measured(memory_plan, probe.peak_gib, probe.peak_reserved_gib)
    attempt.update(ended_at=now_iso(), exit_status=rc, wall_s=round(wall, 1))
    manifest["summary"] = summary.as_dict()
    if probe is not None:
        manifest["probe"] = probe.as_dict()
    write_manifest(paths.manifest, manifest)
    if rc != 0:
        what = "interrupted" if rc == 130 else f"exited with status {rc}"
        raise ExternalCommandError(f"Axolotl {what}; see {paths.log} (continue with --resume)", rc)
    if summary.global_step == 0 or _no_sample_logged(paths.log, log_offset):
        # Seen with sample packing: 12 short rows fill one packed sequence, less than a batch of
        # micro_batch_size, and Axolotl exits 0 having trained nothing.
        v = the_plan.config.values
        raise ExternalCommandError(
            f"Axolotl exited 0 but made no optimizer step: {counts.get('train')} training rows give no full "
            f"batch of micro_batch_size {v.get('micro_batch_size')}"
            + (f" packed {v.get('sequence_len')}-token sequences" if v.get("sample_packing") else "")
            + "; add rows, or lower micro_batch_size or sequence_len (--set); see " + str(paths.log), 1)
    return TrainResult(run_dir=paths.root, exit_status=rc, wall_s=wall, summary=summary, probe=probe)


# transformers' Trainer logs this when the data loader yields no batch at all; it then exits cleanly.
NO_SAMPLE_MESSAGE = "There seems not to be a single sample in your epoch_iterator"


def _no_sample_logged(log: Path, offset: int) -> bool:
    """Did this attempt's part of the run log (from byte ``offset``) report an empty data loader?"""
    if not log.exists():
        return False
    with open(log, "rb") as fh:
        fh.seek(offset)
        return NO_SAMPLE_MESSAGE.encode() in fh.read()


def _probe_summary(output_dir: Path):
    from mixtral_ft.train.probe_report import PROBE_FILE, read_probe, summarize

    path = output_dir / PROBE_FILE
    return summarize(read_probe(path)) if path.exists() else None
