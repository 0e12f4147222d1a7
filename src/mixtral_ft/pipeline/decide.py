"""Up to date or not, and why: the one rule ``run``, ``--dry-run`` and ``--status`` share.

A stage is **up to date**, and skipped, when its last attempt finished (``done``), its command
(after substitution) is the same, every input has the same SHA-256 as when it ran, every stage it
reads from still has the run it read, the mixft version is the same, its output exists and the
command's own manifest says it finished. Otherwise it runs, and so does every stage downstream
of it (they read a stage that ran again); nothing upstream does.

How it runs again (``runner_flags``): an existing output is replaced with the command's
``--force`` (``prepare``, ``eval``, ``report``, ``models``, ``merge`` rebuild a folder atomically;
``generate``/``judge`` start their file over), except when the stage's last attempt stopped
(interrupted, or failed) and nothing about it changed: then ``generate``/``judge`` keep their
rows (the command redoes only the missing and failed ones) and ``train`` continues with
``--resume`` (the run-state rules of ``mixft train``). A training run whose inputs or arguments
changed is moved aside (``RUN.replaced-TIME``, never deleted) and started again; one this
pipeline has no record of is never touched: the run stops and says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.pipeline.commands import infer_manifest, unfinished
from mixtral_ft.pipeline.resolve import Stage
from mixtral_ft.pipeline.state import Hasher, State
from mixtral_ft.util.hashing import sha256_json


@dataclass
class Decision:
    state: str  # done | pending | stale | failed | interrupted
    reason: str
    changed: list[str] = field(default_factory=list)  # input labels whose content or source changed
    same_command: bool = False  # same arguments and mixft version as the last attempt
    forced: bool = False

    @property
    def runs(self) -> bool:
        return self.state != "done"


def argv_sha256(stage: Stage) -> str:
    return sha256_json(stage.argv)


def fingerprints(stage: Stage, hasher: Hasher) -> list[list[Any]]:
    """``[label, path, sha256 or None]`` for each input path of the stage."""
    return [[label, path, hasher.fingerprint(path)] for label, path in stage.paths]


def _changed_inputs(old: list, new: list) -> list[tuple[str, str]]:
    """``(label, what)`` for each input whose SHA-256 differs from the last attempt's."""
    before = {(row[0], row[1]): row[2] for row in old if isinstance(row, list) and len(row) == 3}
    now = {(row[0], row[1]): row[2] for row in new}
    changed = [
        (label, f"{path} {'is missing' if sha is None else 'changed'}")
        for (label, path), sha in now.items()
        if before.get((label, path), "?") != sha
    ]
    changed += [(label, f"{path} is no longer read") for label, path in before if (label, path) not in now]
    return changed


def _attempt(record: dict[str, Any]) -> tuple[str, str]:
    status = record.get("status")
    if status == "failed":
        return "failed", f"its last attempt failed (exit status {record.get('exit_status')})"
    if status in ("interrupted", "running"):
        how = record.get("stopped_by") or "the runner was stopped"
        return "interrupted", f"its last attempt was interrupted ({how})"
    return "", ""


def decide(
    stage: Stage,
    state: State,
    hasher: Hasher,
    version: str,
    force: bool = False,
    will_run: frozenset[str] = frozenset(),
) -> Decision:
    """Decide for ``stage``; ``will_run``: earlier stages that run before it in this run."""
    record = state.stage(stage.name)
    if record is None:
        return Decision("pending", "it never ran here")
    same_argv = record.get("argv_sha256") == argv_sha256(stage)
    same_version = record.get("mixft_version") == version
    inputs = _changed_inputs(record.get("inputs") or [], fingerprints(stage, hasher))
    upstream = record.get("upstream") or {}
    moved = [d for d in stage.deps if d in will_run or state.run_id(d) != upstream.get(d)]
    changed = [label for label, _ in inputs]
    changed += [label for label, source in stage.sources.items() if source in moved and label not in changed]
    same = same_argv and same_version
    failed_state, failed_why = _attempt(record)
    if force:
        return Decision("stale", "--force", changed, same, forced=True)
    if failed_state:
        return Decision(failed_state, failed_why, changed, same)
    if not same_argv:
        why: str | None = "its command changed"
    elif not same_version:
        why = f"the mixft version changed ({record.get('mixft_version')} -> {version})"
    elif inputs:
        why = f"input {inputs[0][0]} {inputs[0][1]}"
    elif moved:
        why = f"it reads from {moved[0]}, which {'runs again first' if moved[0] in will_run else 'ran again since'}"
    else:
        why = unfinished(stage.spec, stage.outputs)
    if why:
        return Decision("stale", why, changed, same)
    return Decision("done", f"up to date (done {record.get('ended', '?')})", changed, same)


# ----------------------------------------------------------------------------- how it runs again


def _has_run(run_dir: Path) -> bool:
    return (run_dir / "axolotl.yml").exists() or (run_dir / "manifest.json").exists()


def aside_path(run_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")


def runner_flags(stage: Stage, decision: Decision, record: dict[str, Any] | None) -> tuple[list[str], Path | None]:
    """The flags the runner adds to ``stage``'s command, and a run directory to move aside first."""
    out = stage.output
    family = stage.spec.family
    stopped = decision.state in ("failed", "interrupted")
    if family == "train":
        if not _has_run(out):
            return [], None
        if record is None:
            raise UsageError(
                f"{out}: holds a training run this pipeline did not start; move it away (or delete it) "
                "so that the pipeline trains its own, or choose another --out"
            )
        if stopped and decision.same_command and not decision.changed and not decision.forced:
            return ["--resume"], None
        return [], aside_path(out)
    if not out.exists():
        return [], None
    if family == "infer" and record is not None and stopped and decision.same_command and not decision.changed:
        if "--force" in (record.get("flags") or []) and not _began_again(out, record):
            return ["--force"], None  # stopped before it started the file over: start it over now
        return [], None  # the command resumes: it keeps the rows done and redoes the missing and failed ones
    return ["--force"], None


def _began_again(out: Path, record: dict[str, Any]) -> bool:
    """Did the stopped ``--force`` attempt start the file over (its manifest is from that attempt)?"""

    try:
        started = json.loads(infer_manifest(out).read_text(encoding="utf-8")).get("started")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(started, str) and started >= str(record.get("started"))
