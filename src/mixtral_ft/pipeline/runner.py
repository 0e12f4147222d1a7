"""``mixft run``: a pipeline file's stages in order, each the mixft command itself in its own
process, skipping what is up to date, continuing what stopped, one runner per output folder.

Before anything runs: the file is checked (every problem ``FILE:LINE: what``), each stage's
arguments are parsed by the command's own parser (``RunRequest.check_argv``, given by the CLI),
inputs that no stage writes must exist, the output folder's lock is taken (exit 75 naming the
holder), and the stages that will run are planned (``plancheck``). Then, per stage, one line as
it starts (why it runs, the exact command) and one as it ends (done, with its duration), or one
line saying it is up to date and skipped. A failed stage ends the run with its own message and
exit status; Ctrl-C (SIGTERM, SIGHUP) is passed to the running stage, which stops as it does by
hand, and the run ends with 128 + N and one line naming the stage and the command that continues.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mixtral_ft import __version__
from mixtral_ft.errors import ExternalCommandError, UsageError, suggest
from mixtral_ft.pipeline import plancheck
from mixtral_ft.pipeline.child import run_stage_process
from mixtral_ft.pipeline.commands import unfinished
from mixtral_ft.pipeline.decide import Decision, argv_sha256, decide, fingerprints, runner_flags
from mixtral_ft.pipeline.resolve import ArgvCheck, Pipeline, Stage, resolve
from mixtral_ft.pipeline.schema import read_pipeline
from mixtral_ft.pipeline.state import LOCK_TARGET, Hasher, State
from mixtral_ft.plan.check import PlanRefused
from mixtral_ft.resources import pipelines_dir
from mixtral_ft.util.interrupt import Interrupted, keeping
from mixtral_ft.util.lock import output_lock
from mixtral_ft.util.provenance import command_line, now_iso, scrub_argv


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class RunRequest:
    pipeline: str  # a file, or the name of a shipped pipeline (report, demo-cpu, rg-only)
    mixft: tuple[str, ...]  # the command that runs mixft (the CLI gives it: the library never names the CLI)
    vars: dict[str, str] = field(default_factory=dict)
    out: str | None = None
    start: str | None = None  # --from
    until: str | None = None
    only: tuple[str, ...] = ()
    force: bool = False
    skip_plan_check: bool = False
    check_argv: ArgvCheck | None = None
    log: Callable[[str], None] = _stderr  # progress lines (stderr)
    echo: Callable[[str], None] = print  # results (stdout)


@dataclass
class RunResult:
    pipeline: Pipeline
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def find_pipeline(name: str) -> Path:
    """``name`` as a file, else a shipped pipeline (``report`` or ``report.yml``)."""
    path = Path(name)
    if path.is_file():
        return path

    shipped = {p.stem: p for p in sorted(pipelines_dir().glob("*.yml"))}
    stem = path.name.removesuffix(".yml").removesuffix(".yaml")
    if path.parent == Path(".") and stem in shipped:
        return shipped[stem]
    raise UsageError(f"{name}: no such pipeline file. " + suggest(stem, shipped, "shipped pipeline").split(". ", 1)[1])


def load(req: RunRequest) -> Pipeline:
    return resolve(read_pipeline(find_pipeline(req.pipeline)), req.vars, req.out, req.check_argv)


def select(p: Pipeline, req: RunRequest) -> list[Stage]:
    """The stages ``--from``/``--until``/``--only`` choose, in file order."""
    names = [s.name for s in p.stages]
    for option, value in [("--from", req.start), ("--until", req.until), *(("--only", o) for o in req.only)]:
        if value is not None and value not in names:
            raise UsageError(f"{option} {value}: " + suggest(value, names, "stage"))
    if req.only and (req.start or req.until):
        raise UsageError("--only with --from/--until: give one or the other")
    if req.only:
        return [s for s in p.stages if s.name in req.only]
    first = names.index(req.start) if req.start else 0
    last = names.index(req.until) if req.until else len(names) - 1
    if first > last:
        raise UsageError(f"--from {req.start} comes after --until {req.until}")
    return p.stages[first : last + 1]


def version() -> str:
    return __version__


def continue_command() -> str:
    return shlex.join(command_line())


def stage_env(p: Pipeline) -> dict[str, str]:
    """The stages' environment: the caller's, plus the pipeline's ``env`` where the caller has none."""
    env = dict(os.environ)
    for key, value in p.env.items():
        env.setdefault(key, value)
    return env


def decisions(p: Pipeline, stages: list[Stage], state: State, hasher: Hasher, force: bool) -> dict[str, Decision]:
    """Each stage's decision, as if the stages before it ran first (``--status``, ``--dry-run``, the plan)."""
    out: dict[str, Decision] = {}
    will_run: set[str] = set()
    for s in stages:
        d = decide(s, state, hasher, version(), force, frozenset(will_run))
        out[s.name] = d
        if d.runs:
            will_run.add(s.name)
    return out


def check_ready(p: Pipeline, stages: list[Stage], state: State) -> None:
    """Refuse before anything runs: an input no stage writes is missing, or a chosen stage reads from
    an unchosen one that has not finished here."""
    chosen = {s.name for s in stages}
    written = [os.path.abspath(o) for s in p.stages for o in s.outputs.values()]
    problems = []
    for s in stages:
        for label, path in s.paths:
            a = os.path.abspath(path)
            made = any(a == w or a.startswith(w + os.sep) for w in written)
            if not made and not os.path.exists(path):
                problems.append(
                    f"{p.file.where(s.line)}: stage {s.name}: {label} {path}: not found, and no stage writes it"
                )
        for dep in s.deps:
            if dep not in chosen and state.run_id(dep) is None:
                problems.append(
                    f"stage {s.name} reads from stage {dep}, which has not finished here: run it first "
                    f"(--from {dep}, or without --only/--from/--until)"
                )
    if problems:
        raise UsageError("\n".join(problems))


# ----------------------------------------------------------------------------- running


class _Run:
    """One ``mixft run``: the lock is held, ``state`` is this output's, stages run one by one."""

    def __init__(self, p: Pipeline, stages: list[Stage], req: RunRequest, state: State):
        self.p, self.stages, self.req, self.state = p, stages, req, state
        self.hasher = Hasher(state.data["hashes"], req.log)
        self.env = stage_env(p)
        self.result = RunResult(p)
        self.current: str | None = None

    def note(self) -> str:
        """What an interruption between stages keeps (the runner's one line)."""
        where = f"before stage {self.current} ran" if self.current else "before any stage ran"
        return f"pipeline {self.p.file.name} stopped {where}; continue with: {continue_command()}"

    def preflight(self) -> None:
        """Before the first stage: what would stop a stage later (a run directory this pipeline did
        not start) stops the run now, and the stages that will run are planned (``plancheck``)."""

        ds = decisions(self.p, self.stages, self.state, self.hasher, self.req.force)
        for s in self.stages:
            if ds[s.name].runs:
                runner_flags(s, ds[s.name], self.state.stage(s.name))
        runs = [s for s in self.stages if ds[s.name].runs and s.spec.plan]
        if not runs or self.req.skip_plan_check:
            return
        plans = [q for q in plancheck.choose(runs, plancheck.free_gpu_gib(self.env), self.p.stages) if q.argv]
        if not plans:
            return
        plancheck.run_plans(plans, self.env, self.req.log, self.req.mixft)
        for line in plancheck.table(plans):
            self.req.log(line)
        message = plancheck.refusal(plans)
        if message:
            raise PlanRefused(message)

    def run_all(self) -> RunResult:
        started = time.monotonic()
        for i, stage in enumerate(self.stages, 1):
            self.current = stage.name
            self.run_one(stage, f"[{i}/{len(self.stages)}] {stage.name}")
        self.current = None
        self.state.data["last_run"] = {"ended": _now(), "stopped_at": None, "exit_status": 0}
        self.state.save()
        self.result.wall_s = time.monotonic() - started
        return self.result

    def run_one(self, stage: Stage, head: str) -> None:
        d = decide(stage, self.state, self.hasher, version(), self.req.force)
        if not d.runs:
            self.req.log(f"{head}: skipped, {d.reason}")
            self.result.skipped.append(stage.name)
            self.state.save()  # the hashes just read stay cached
            return
        flags, aside = runner_flags(stage, d, self.state.stage(stage.name))
        if (
            self.req.skip_plan_check
            and "--skip-plan-check" in stage.spec.flags
            and not stage.args.has("--skip-plan-check")
        ):
            flags.append("--skip-plan-check")  # the stage's own check too: the user asked to run anyway
        if aside is not None:
            with output_lock(stage.output, "run directory"):  # never from under a `mixft train` writing it
                stage.output.rename(aside)
            self.req.log(
                f"{head}: the earlier run {stage.output} is kept as {aside} (delete it when you no longer need it)"
            )
        argv = [*stage.argv, *flags]
        about = f" ({stage.about})" if stage.about else ""
        self.req.log(f"{head}{about}: runs, {d.reason}: mixft {shown(argv)}")
        record = self.start_record(stage, flags, d)
        t0 = time.monotonic()
        self.finish(stage, head, record, argv, t0)

    def start_record(self, stage: Stage, flags: list[str], d: Decision) -> dict:
        record = {
            "status": "running",
            "argv": scrub_argv(["mixft", *stage.argv]),
            "argv_sha256": argv_sha256(stage),
            "flags": flags,
            "reason": d.reason,
            "inputs": fingerprints(stage, self.hasher),
            "upstream": {dep: self.state.run_id(dep) for dep in stage.deps},
            "mixft_version": version(),
            "started": _now(),
            "pid": os.getpid(),
        }
        self.state.put(stage.name, record)
        return record

    def finish(self, stage: Stage, head: str, record: dict, argv: list[str], t0: float) -> None:
        rc, interrupted = run_stage_process([*self.req.mixft, *argv], self.env)
        wall = round(time.monotonic() - t0, 1)
        record.update(ended=_now(), wall_s=wall, exit_status=rc)
        if interrupted is not None or rc in (129, 130, 143):
            self.stopped(stage, head, record, interrupted.signum if interrupted else rc - 128)
        why = unfinished(stage.spec, stage.outputs) if rc == 0 else None
        if rc != 0 or why:
            self.failed(stage, head, record, rc or 1, why)
        record.update(status="done", run_id=uuid.uuid4().hex[:16])
        self.state.put(stage.name, record)
        self.result.ran.append(stage.name)
        self.req.log(f"{head}: done in {duration(wall)}")

    def _after(self, stage: Stage) -> str:
        later = [s.name for s in self.stages if s.index > stage.index]
        if not later:
            return "it was the last stage"
        return f"the {len(later)} stage(s) after it did not run" if len(later) > 1 else f"{later[0]} did not run"

    def stopped(self, stage: Stage, head: str, record: dict, signum: int):
        name = signal.Signals(signum).name
        record.update(status="interrupted", stopped_by=name)
        self.state.put(stage.name, record)
        self.state.data["last_run"] = {"ended": _now(), "stopped_at": stage.name, "exit_status": 128 + signum}
        self.state.save()
        self.current = None
        err = Interrupted(signum)
        err.kept = (
            f"{head} stopped by {name} after {duration(record['wall_s'])} (what it kept is on the line above); "
            f"{self._after(stage)}; continue with: {continue_command()}"
        )
        raise err

    def failed(self, stage: Stage, head: str, record: dict, rc: int, why: str | None):
        record.update(status="failed", exit_status=rc)
        self.state.put(stage.name, record)
        self.state.data["last_run"] = {"ended": _now(), "stopped_at": stage.name, "exit_status": rc}
        self.state.save()
        self.current = None
        what = f"exited 0 but {why}" if why else f"failed with exit status {rc} (its own message is above)"
        raise ExternalCommandError(
            f"{head} {what}; {self._after(stage)}; after fixing it, continue with: {continue_command()}", rc
        )


def _now() -> str:
    return now_iso()


def shown(argv: list[str], limit: int = 80) -> str:
    """The command for a progress line: an argument longer than ``limit`` is cut (the state file
    and ``--dry-run`` have it whole)."""
    cut = [a if len(a) <= limit else f"{a[: limit - 20]}...[{len(a):,} characters]" for a in argv]
    return shlex.join(cut)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run(req: RunRequest) -> RunResult:
    """Run the chosen stages (see the module docstring); raises ``MixftError``s and ``Interrupted``."""

    p = load(req)
    stages = select(p, req)
    created = not p.out.exists()
    p.out.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(p.out / LOCK_TARGET, "pipeline output folder"):
            state = State(p.out)
            check_ready(p, stages, state)
            job = _Run(p, stages, req, state)
            with keeping(job.note):
                job.preflight()
                return job.run_all()
    finally:
        if created and p.out.is_dir() and not any(p.out.iterdir()):
            p.out.rmdir()  # refused before any stage ran: leave nothing behind
