"""``mixft train``: render, preflight, launch Axolotl, record the run, summarise it."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.axolotl_cfg.render import RenderedConfig, RenderRequest, render
from mixtral_ft.axolotl_cfg.validate import validate_with_axolotl
from mixtral_ft.errors import ExternalCommandError, MixftError, UsageError
from mixtral_ft.plan.check import planned_vs_measured, preflight_training
from mixtral_ft.train import preflight as pf
from mixtral_ft.train.launch import LaunchOptions, build_launch_command
from mixtral_ft.train.probe_report import PROBE_FILE, PROBE_PLUGIN, read_probe, summarize
from mixtral_ft.train.rundir import (
    RunPaths,
    RunState,
    RunStatus,
    TrainSummary,
    asks_for_more,
    paths_for,
    read_summary,
    run_status,
    start_decision,
)
from mixtral_ft.train.runner import axolotl_env, run_streaming
from mixtral_ft.train.tracking import run_locations, tracking_record, wandb_requested
from mixtral_ft.util.atomic import atomic_write_text, guard_destination
from mixtral_ft.util.hashing import sha256_text
from mixtral_ft.util.interrupt import Interrupted, keeping, shielded
from mixtral_ft.util.lock import output_lock
from mixtral_ft.util.manifest import Manifest, file_entry, read_manifest
from mixtral_ft.util.provenance import command_line, now_iso


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
class RunStart:
    """How a run starts: the decision from its state, the config and the command; ``--dry-run``
    prints it and stops."""

    request: TrainRequest
    config: RenderedConfig
    config_yaml: str
    command: list[str]
    resume_from: Path | None
    # start | restart (interrupted before any checkpoint: from step 0) | continue | extend (a finished
    # run asked for more steps) | nothing (--resume on a finished run: no training)
    action: str = "start"
    status: RunStatus | None = None


@dataclass
class TrainResult:
    run_dir: Path
    exit_status: int
    wall_s: float
    summary: TrainSummary
    probe: Any = None  # a probe_report.ProbeSummary when the run was probed
    already_finished: bool = False  # --resume on a finished run: nothing was trained


def _with_probe(rendered: RenderedConfig) -> None:
    """Append the probe plugin to whatever plugins the config already lists."""
    plugins = list(rendered.values.get("plugins") or [])
    if PROBE_PLUGIN not in plugins:
        plugins.append(PROBE_PLUGIN)
    rendered.values["plugins"] = plugins
    rendered.sources["plugins"] = ", ".join(x for x in (rendered.sources.get("plugins"), "--probe") if x)


def resolve_start(req: TrainRequest) -> RunStart:
    """Decide from the run's state, render and validate the config, build the command; writes nothing."""
    paths = paths_for(req.run_dir, req.launch.machine_rank)
    decision = start_decision(req.run_dir, req.resume, req.launch.machine_rank)
    action, resume_from = decision.action, decision.resume_from

    def rendered_with(checkpoint: Path | None) -> RenderedConfig:
        extra = (("resume_from_checkpoint", str(checkpoint.resolve())),) if checkpoint else ()
        return render(
            RenderRequest(
                task=req.task,
                data_dir=req.data_dir,
                profile=req.profile,
                run_dir=req.run_dir,
                base_model=req.base_model,
                overrides=req.overrides,
                extra=extra,
            )
        )

    rendered = rendered_with(resume_from if action == "continue" else None)
    if action == "finished":
        status = decision.status
        assert status is not None
        if not asks_for_more(rendered.values, status):
            action = "nothing"
        elif status.checkpoint is None:
            raise UsageError(
                f"{req.run_dir}: {status.describe()} and saved no checkpoint to extend it from; "
                "start a new run with another --run-dir"
            )
        else:
            action = "extend"
            rendered = rendered_with(status.checkpoint)
    _check_output_dir(rendered, req.run_dir)
    if req.probe:
        _with_probe(rendered)
    validate_with_axolotl(rendered.values)
    header = f"Rendered by mixft for `train {req.task}` with profile '{req.profile}'." + (
        f"\nOverrides: {', '.join(req.overrides)}" if req.overrides else ""
    )
    if req.profile == "cpu" and req.launch.world_size > 1:
        # Tried: accelerate --cpu without mpirun silently starts one process, and under torchrun
        # Axolotl's normalize_config sets device_map={"": LOCAL_RANK} (0.21: utils/config/__init__.py:255-256),
        # which transformers reads as an accelerator index ("Cannot access accelerator device when none is available").
        raise UsageError(
            "--gpus > 1 with --profile cpu: Axolotl 0.21 cannot train with several "
            "processes on CPU (it places each rank on CUDA device LOCAL_RANK); use --gpus 1"
        )
    return RunStart(
        request=req,
        config=rendered,
        config_yaml=rendered.to_yaml(header),
        command=build_launch_command(paths.config.resolve(), req.launch),
        resume_from=resume_from if action in ("continue", "extend") else None,
        action=action,
        status=decision.status,
    )


def _check_output_dir(rendered: RenderedConfig, run_dir: Path) -> None:
    """``output_dir`` is the run's ``output/``: mixft finds checkpoints, the adapter and the run's
    state there, so an override that points elsewhere is refused (use ``--run-dir``)."""
    value = rendered.values.get("output_dir")
    expected = (Path(run_dir) / "output").resolve()
    if not value or Path(str(value)).expanduser().resolve() != expected:
        raise UsageError(
            f"output_dir {value}: must be the run directory's output/ ({expected}), where mixft reads "
            "checkpoints and the adapter; choose the place with --run-dir instead of --set output_dir"
        )


def preflight(req: TrainRequest) -> dict[str, int]:
    pf.check_run_dir(req.run_dir, req.resume, req.launch.machine_rank)
    pf.check_axolotl()
    counts = pf.check_data(req.task, req.data_dir)
    pf.check_gpus(req.profile, req.launch.gpus)
    pf.check_disk(req.run_dir, req.profile)
    return counts


def preflight_config(values: dict[str, Any]) -> None:
    """Checks that need the rendered config: the packages it asks for import (before the model loads)."""
    pf.check_deepspeed(values)
    pf.check_attention(values)


def _data_inputs(data_dir: Path, counts: dict[str, int]) -> list[dict[str, Any]]:
    """Manifest entries for the prepared split (and its own manifest) the run trains on."""
    entries = []
    for role, name in (("train", "train.jsonl"), ("test", "test.jsonl"), ("data manifest", "manifest.json")):
        p = data_dir / name
        if p.exists():
            entries.append(file_entry(p.resolve(), rows=counts.get(role), role=role))
    return entries


def _adapter_outputs(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries for the adapter a finished run leaves in ``output/`` (none before that)."""
    found = sorted(output_dir.glob("adapter_model.*")) + sorted(output_dir.glob("adapter_config.json"))
    return {f"output/{p.name}": file_entry(p) for p in found}


def run(req: TrainRequest, runner: Callable[..., int] | None = None) -> TrainResult:
    """Preflight, write the run dir, launch Axolotl, record the outcome. Raises on a non-zero exit.

    Machine rank 0 holds the run directory's lock (``util.lock``) from the state check to the
    last manifest write; a second ``mixft train`` on the same run refuses, naming it. Other
    machines of a multi-node run lock and write only ``RUN/nodes/rank-K/``. An interruption
    (Ctrl-C, SIGTERM) stops Axolotl's process group, records the attempt and says how to resume."""
    runner = runner or run_streaming
    rank = req.launch.machine_rank
    base = Path(req.base_model) if req.base_model and Path(req.base_model).exists() else None
    guard_destination(req.run_dir, [req.data_dir, base], option="--run-dir")
    paths = paths_for(req.run_dir, rank)
    owned = req.run_dir if rank == 0 else paths.node_dir  # type: ignore[attr-defined]
    Path(owned).parent.mkdir(parents=True, exist_ok=True)
    with (
        output_lock(owned, "run directory" if rank == 0 else f"machine rank {rank}'s folder of this run"),
        keeping(lambda: _kept(req)),
    ):
        return _run_locked(req, runner, paths)


def resume_command(run_dir: Path) -> str:
    """The command line that continues ``run_dir``: this one, with ``--run-dir`` and ``--resume``."""

    argv = command_line()
    if not any(a == "--run-dir" or a.startswith("--run-dir=") for a in argv):
        argv += ["--run-dir", str(run_dir)]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(argv)


def _kept(req: TrainRequest) -> str:
    """What an interrupted ``mixft train`` keeps, and the command that goes on from there."""
    if req.launch.machine_rank > 0:
        return (
            f"machine rank {req.launch.machine_rank} stopped; machine rank 0 owns {req.run_dir} and its "
            f"checkpoints; continue every machine with: {resume_command(req.run_dir)}"
        )
    status = run_status(req.run_dir)
    if status.state is RunState.NEW:
        return f"nothing was kept in {req.run_dir}; run the same command again"
    if status.checkpoint is not None:
        return (
            f"run {req.run_dir} kept with {status.checkpoint.name} (step {status.step} of {status.max_steps}); "
            f"continue with: {resume_command(req.run_dir)}"
        )
    return f"run {req.run_dir} kept, no checkpoint saved yet; restart it with: {resume_command(req.run_dir)}"


def _clear_dead_attempt(paths: RunPaths) -> None:
    """Before restarting a run that saved no checkpoint: remove what its dead attempt left in
    ``output/`` (pre-saved configs, maybe a partial adapter) and ``prepared/`` (maybe a torn
    dataset cache); ``train.log`` and the manifest's attempts stay."""

    with shielded():
        for d in (paths.output, paths.prepared):
            if d.is_dir():
                shutil.rmtree(d)


def _outcome(rc: int, summary: TrainSummary) -> str:
    if rc != 0:
        return f"failed (exit status {rc})"
    if not summary.global_step:
        return "no step"
    return "finished" if summary.adapter_dir else "no adapter"


@dataclass
class _Attempt:
    """This attempt's entry in the run's manifest, and the manifest it is written in (by machine
    rank 0 only: other machines of a multi-node run write nothing there)."""

    manifest: Manifest
    entry: dict[str, Any]
    owner: bool
    log_offset: int  # where this attempt's part of train.log begins

    def write(self, paths: RunPaths) -> None:
        if self.owner:
            self.manifest.write(paths.manifest)


def _run_locked(req: TrainRequest, runner: Callable[..., int], paths: RunPaths) -> TrainResult:
    counts = preflight(req)
    start = resolve_start(req)
    if start.action == "nothing":
        summary = read_summary(paths.output)  # the run's output/, on every machine
        return TrainResult(run_dir=paths.root, exit_status=0, wall_s=0.0, summary=summary, already_finished=True)
    memory_plan = _preflight_start(req, start)
    if start.action == "restart":
        _clear_dead_attempt(paths)
    attempt = _record_start(req, start, paths, counts)
    rc, wall = _launch(start, paths, runner, attempt)
    result = _record_end(req, paths, attempt, rc, wall, memory_plan)
    _check_trained(req, start, paths, attempt, result, counts)
    return result


def _preflight_start(req: TrainRequest, start: RunStart) -> Any:
    """What the rendered config needs, before anything is written or loaded: its packages, and
    its GPU memory (the planner's ``TrainingPlan``, unless ``--skip-plan-check``)."""
    preflight_config(start.config.values)
    if req.skip_plan_check:
        return None

    return preflight_training(start.config.values, req.profile, req.launch.gpus, req.launch.world_size)


def _record_start(req: TrainRequest, start: RunStart, paths: RunPaths, counts: dict[str, int]) -> _Attempt:
    """Write the config and the manifest with this attempt begun (earlier attempts kept on --resume)."""
    owner = req.launch.machine_rank == 0
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = (read_manifest(paths.manifest) or {}) if owner and req.resume else {}
    attempts = list(previous.get("attempts", []))
    atomic_write_text(paths.config, start.config_yaml)
    entry: dict[str, Any] = {
        "started_at": now_iso(),
        "ended_at": None,
        "exit_status": None,
        "outcome": None,
        "action": start.action,
        "command": start.command,
        "mixft_command_line": command_line(),
        "config_sha256": sha256_text(start.config_yaml),
        "resumed_from": str(start.resume_from) if start.resume_from else None,
    }
    manifest = Manifest(
        kind="train",
        settings={
            "task": req.task,
            "profile": req.profile,
            "base_model": start.config.values.get("base_model"),
            "overrides": list(req.overrides),
            "launch": dict(req.launch.__dict__),
            "probe": req.probe,
        },
        inputs=_data_inputs(req.data_dir, counts),
        extra={
            "config_sha256": entry["config_sha256"],
            "tracking": tracking_record(start.config.values),  # W&B / MLflow, when --set asks for them
            "attempts": attempts + [entry],
        },
    )
    manifest.started = previous.get("started") or entry["started_at"]
    log_offset = paths.log.stat().st_size if paths.log.exists() else 0
    attempt = _Attempt(manifest, entry, owner, log_offset)
    attempt.write(paths)
    return attempt


def _launch(start: RunStart, paths: RunPaths, runner: Callable[..., int], attempt: _Attempt) -> tuple[int, float]:
    """Run Axolotl; return its exit status and the wall time. An interruption (or a full disk
    under the log) is recorded in the manifest, then raised on."""
    started = time.monotonic()
    values = start.config.values
    try:
        rc = runner(start.command, paths.log, env=axolotl_env(values.get("base_model"), wandb=wandb_requested(values)))
    except BaseException as e:
        # Interrupted (or the log's disk filled): the runner stopped Axolotl's process group; record it.
        with shielded():
            signal_name = (
                e.signal_name if isinstance(e, Interrupted) else "SIGINT" if isinstance(e, KeyboardInterrupt) else None
            )
            attempt.entry.update(
                ended_at=now_iso(),
                wall_s=round(time.monotonic() - started, 1),
                exit_status=e.exit_code if isinstance(e, Interrupted) else 130 if signal_name else None,
                outcome=f"interrupted by {signal_name}" if signal_name else f"stopped: {type(e).__name__}",
            )
            if attempt.owner:
                # a full disk or a torn trainer state must not hide the interruption itself
                with contextlib.suppress(OSError, MixftError):
                    attempt.manifest.summary = read_summary(paths.output).as_dict()
                    attempt.write(paths)
        raise
    return rc, time.monotonic() - started


def _record_end(
    req: TrainRequest, paths: RunPaths, attempt: _Attempt, rc: int, wall: float, memory_plan: Any
) -> TrainResult:
    """Read what the attempt left (summary, adapter, probe) into the manifest; the result to return."""
    output = paths.output
    attempt.entry["logged_to"] = run_locations(paths.log, attempt.log_offset)  # URLs / offline runs trackers printed
    summary = read_summary(output)
    probe = _probe_summary(output) if req.probe else None
    if probe is not None and memory_plan is not None and probe.device == "cuda":
        probe.planned = planned_vs_measured(memory_plan, probe.peak_gib, probe.peak_reserved_gib)
    attempt.entry.update(ended_at=now_iso(), exit_status=rc, wall_s=round(wall, 1), outcome=_outcome(rc, summary))
    attempt.manifest.summary = summary.as_dict()
    attempt.manifest.outputs = _adapter_outputs(output)
    if probe is not None:
        attempt.manifest.extra["probe"] = probe.as_dict()
    attempt.write(paths)
    return TrainResult(run_dir=paths.root, exit_status=rc, wall_s=wall, summary=summary, probe=probe)


def _check_trained(
    req: TrainRequest, start: RunStart, paths: RunPaths, attempt: _Attempt, result: TrainResult, counts: dict[str, int]
) -> None:
    """Raise unless Axolotl exited 0 and (on machine rank 0) trained and wrote an adapter."""
    rc, summary = result.exit_status, result.summary
    if rc != 0:
        raise ExternalCommandError(f"Axolotl exited with status {rc}; see {paths.log} (continue with --resume)", rc)
    if not attempt.owner:
        return
    if summary.global_step == 0 or _no_sample_logged(paths.log, attempt.log_offset):
        # Seen with sample packing: 12 short rows fill one packed sequence, less than a batch of
        # micro_batch_size, and Axolotl exits 0 having trained nothing.
        v = start.config.values
        raise ExternalCommandError(
            f"Axolotl exited 0 but made no optimizer step: {counts.get('train')} training rows give no full "
            f"batch of micro_batch_size {v.get('micro_batch_size')}"
            + (f" packed {v.get('sequence_len')}-token sequences" if v.get("sample_packing") else "")
            + "; add rows, or lower micro_batch_size or sequence_len (--set); see "
            + str(paths.log),
            1,
        )
    if summary.adapter_dir is None:
        raise ExternalCommandError(f"Axolotl exited 0 but wrote no adapter to {paths.output}; see {paths.log}", 1)


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
    path = output_dir / PROBE_FILE
    return summarize(read_probe(path)) if path.exists() else None
