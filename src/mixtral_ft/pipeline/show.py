"""What ``mixft run`` shows without running anything: ``--dry-run`` (every resolved command, and
whether it would run and why), ``--status`` (each stage: done, stale and why, pending, failed,
interrupted, running) and ``--plan`` (``mixft plan`` for every train, generate and judge stage,
and the totals). None of them takes the lock or writes a file, so ``--status`` works while another
``mixft run`` holds the output folder.
"""

from __future__ import annotations

import fcntl
import os
import shlex

from mixtral_ft.errors import MixftError, UsageError
from mixtral_ft.pipeline import plancheck
from mixtral_ft.pipeline.decide import runner_flags
from mixtral_ft.pipeline.runner import RunRequest, check_ready, decisions, duration, load, select, stage_env
from mixtral_ft.pipeline.state import LOCK_TARGET, STATE_NAME, Hasher, State
from mixtral_ft.plan.check import PlanRefused
from mixtral_ft.util.lock import lock_path, read_holder


def _read_state(out) -> State:
    return State(out)  # reading only: nothing here calls save()


def dry_run(req: RunRequest) -> None:
    """Print the commands in order: those that would run as they are, skipped ones commented out."""
    p = load(req)
    stages = select(p, req)
    state = _read_state(p.out)
    ds = decisions(p, stages, state, Hasher(dict(state.data["hashes"])), req.force)
    req.echo(f"# pipeline {p.file.name} ({p.file.path}), output folder {p.out}")
    for i, s in enumerate(stages, 1):
        d = ds[s.name]
        head = f"# {i}/{len(stages)} {s.name}"
        if not d.runs:
            req.echo(f"{head}: skipped, {d.reason}")
            req.echo(f"# mixft {shlex.join(s.argv)}")
            continue
        try:
            flags, aside = runner_flags(s, d, state.stage(s.name))
        except MixftError as e:  # a refusal the run would make: shown, not raised
            req.echo(f"{head}: would stop: {e}")
            continue
        req.echo(f"{head}: runs, {d.reason}" + (f"; {s.output} would be kept as {aside}" if aside else ""))
        req.echo(f"mixft {shlex.join([*s.argv, *flags])}")
    try:
        check_ready(p, stages, state)
    except MixftError as e:  # missing inputs: the run would refuse them before starting
        for line in str(e).splitlines():
            req.echo(f"# note: {line}")


def _lock_holder(out) -> dict | None:
    """The record of the ``mixft run`` holding ``out`` now, or None (the lock is only looked at)."""
    path = lock_path(out / LOCK_TARGET)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_holder(out / LOCK_TARGET) or {"pid": "?"}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def status(req: RunRequest) -> None:
    """One row per stage: state, when, and why."""
    p = load(req)
    stages = select(p, req)
    state = _read_state(p.out)
    holder = _lock_holder(p.out)
    ds = decisions(p, stages, state, Hasher(dict(state.data["hashes"])), False)
    rows = [("stage", "state", "since", "why")]
    for s in stages:
        d, record = ds[s.name], state.stage(s.name) or {}
        label = d.state
        if holder and record.get("status") == "running":
            label, why = "running", f"pid {holder.get('pid')}, started {record.get('started')}"
        elif d.state == "done":
            why = f"took {duration(record.get('wall_s') or 0)}"
        else:
            why = d.reason
        rows.append((s.name, label, record.get("ended") or record.get("started") or "", why))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    req.echo(f"pipeline {p.file.name} ({p.file.path}), output folder {p.out} ({STATE_NAME})")
    for r in rows:
        req.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    last = state.data.get("last_run") or {}
    if last.get("stopped_at"):
        req.echo(
            f"the last run stopped at stage {last['stopped_at']} (exit status {last.get('exit_status')}, "
            f"{last.get('ended')}): the stages after it did not run"
        )
    if holder:
        command = " ".join(str(a) for a in holder.get("command") or [])
        req.echo(
            f"running now: pid {holder.get('pid')} on {holder.get('host')} ({command}), since {holder.get('started')}"
        )


def plan(req: RunRequest) -> None:
    """``mixft plan`` for every chosen train/generate/judge stage; ``PlanRefused`` (exit 2) when one
    does not fit and ``--skip-plan-check`` is not given."""

    p = load(req)
    stages = select(p, req)
    env = stage_env(p)
    plans = plancheck.choose(stages, plancheck.free_gpu_gib(env), p.stages)
    plancheck.run_plans(plans, env, req.log, req.mixft)
    req.echo(f"plan of pipeline {p.file.name}: peak GPU memory per device and hours, per stage (mixft plan)")
    for line in plancheck.table(plans):
        req.echo(line)
    message = plancheck.refusal(plans)
    if message and not req.skip_plan_check:
        raise PlanRefused(message)
    failed = [q.stage.name for q in plans if q.error]
    if failed:  # asked for a plan and did not get one: say so in the exit status too
        raise UsageError(
            f"{len(failed)} stage(s) could not be planned ({', '.join(failed)}): the note of each says why"
        )
