"""``run_job``: the one inference runner behind ``mixft generate`` and ``mixft judge``.

A job is the runner's options (``JobOptions``: input, output, backend, decoding, limit, force, and the
command's preflight) plus a ``RowBuilder`` that knows the job's rows (the fields it needs, its settings,
the request for an input row, the output row for a result). The runner does the rest, in the order
:func:`run_job` gives: rows checked, output taken, preflight, backend, rows appended, manifest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mixtral_ft.backends.base import Backend, GenerationParams, Request, Result
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.errors import MixftError, NoSpaceError, UsageError
from mixtral_ft.infer.output import INPUT_SHA256, ResumableOutput, ResumePlan
from mixtral_ft.infer.rows import Field, load_rows, row_input_sha256
from mixtral_ft.util.hashing import adapter_sha256, sha256_json
from mixtral_ft.util.interrupt import Interrupted, keeping, shielded
from mixtral_ft.util.jsonl import read_jsonl
from mixtral_ft.util.manifest import Manifest, file_entry
from mixtral_ft.util.progress import ProgressBar

# Called with the requests of the rows left to do, before the backend is built; raises to refuse.
Preflight = Callable[[list[Request]], object]


@dataclass(frozen=True)
class JobOptions:
    """What every inference job takes."""

    input: Path
    out: Path
    backend: BackendOptions
    params: GenerationParams = field(default_factory=GenerationParams)
    limit: int | None = None
    force: bool = False
    # The command's check before a backend is built for the rows left to do (``mixft generate`` and
    # ``judge`` pass the memory plan's preflight); it raises to refuse the run. None: no check.
    preflight: Preflight | None = None


class RowBuilder(Protocol):
    """What a job adds to the runner: its rows and its settings."""

    kind: str  # the manifest kind and progress label: "generate" | "judge"
    input_role: str  # what the input file is, in the manifest: "data" | "responses"
    fields: Sequence[Field]  # input fields checked on every row (``id`` always is)
    # The input keys an output row is made from (its ``input_sha256`` covers them); None = the whole row.
    input_keys: Sequence[str] | None

    def settings(self) -> dict[str, Any]:
        """Settings of this job beyond the backend's and the decoding's; a resumed run must match them."""
        ...

    def prepare_backend(self, backend: Backend) -> Backend:
        """The backend the requests go to (judge wraps it to score verdicts)."""
        ...

    def request(self, row: dict[str, Any]) -> Request: ...

    def output_row(self, row: dict[str, Any], result: Result) -> dict[str, Any]: ...

    def summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Kind-specific counts over the successful output rows of this input's ids (earlier runs included)."""
        ...

    def manifest_extra(self) -> dict[str, Any]:
        """Kind-specific manifest keys (judge: the template, whether it scores)."""
        ...


@dataclass
class RunStats:
    """This run's requests (not the rows earlier runs wrote)."""

    written: int = 0
    failed: int = 0
    new_tokens: int = 0
    wall_s: float = 0.0
    first_error: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class JobResult:
    out: Path
    manifest: Path
    total: int  # input rows this job covers (after --limit)
    skipped: int  # already done by an earlier run
    retried: int  # rows of earlier runs that recorded a failure, sent again
    stats: RunStats
    summary: dict[str, Any]  # the builder's summary over the whole output
    changed: int = 0  # rows of earlier runs whose input row changed since, done again
    done: int = 0  # successful rows the file holds for this input's ids, after this run
    stopped: str | None = None  # why the run ended early (SIGINT, no space, an error); None if it ran through

    def as_dict(self) -> dict[str, Any]:
        """The manifest's ``summary``: the run's counts, then the builder's."""
        return {
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "retried": self.retried,
            "changed": self.changed,
            "stopped": self.stopped,
            "written": self.stats.written,
            "failed": self.stats.failed,
            "new_tokens": self.stats.new_tokens,
            "wall_s": round(self.stats.wall_s, 3),
            "tokens_per_s": round(self.stats.tokens_per_s, 2),
            "first_error": self.stats.first_error,
            **self.summary,
        }


def job_settings(opts: JobOptions, builder: RowBuilder) -> dict[str, Any]:
    """Everything that shapes the output rows; its hash guards resuming."""
    b = opts.backend
    return {
        "backend": b.name,
        "model": b.model,
        "adapter": b.adapter,
        "adapter_sha256": adapter_sha256(b.adapter),
        "generation": opts.params.to_dict(),
        "endpoint_mode": b.mode,
        **builder.settings(),
    }


def run_job(opts: JobOptions, builder: RowBuilder, backend: Backend | None = None) -> JobResult:
    """Run ``builder``'s job for every input row not yet in ``opts.out``; return the counts.

    ``backend`` may be passed in (tests, benchmarks); otherwise ``opts.backend`` builds it,
    and only when some row is left to do. Everything from taking the output to the last
    manifest write happens inside ``with ResumableOutput(...)``: while the run holds its output.
    In this order:

    1. load and check every input row (``rows.load_rows``), before any model is loaded;
    2. take the output (``ResumableOutput.open``: its lock, for the whole run) and find what is left
       (``ResumableOutput.resume``: rows already done from the input rows as they are now);
    3. if something is left: the command's preflight on its requests (``generate`` and ``judge`` pass
       the memory plan's check, which refuses a run the GPU cannot hold), then build the backend and
       write the manifest (``summary`` null);
    4. send the requests (the backend batches or fans them out) and append one row per result,
       stamped with the SHA-256 of the input row it was made from (``input_sha256``);
    5. read the output back and write the manifest with its summary and the output's SHA-256. This
       also happens when the run is stopped part-way (a signal, a full disk, a backend error): the
       manifest then describes the rows the file really holds, and ``summary.stopped`` says why.
    """
    if opts.limit is not None and opts.limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {opts.limit})")
    inputs = load_rows(opts.input, builder.fields, opts.limit)
    manifest = Manifest(
        kind=builder.kind,
        settings=job_settings(opts, builder),
        inputs=[file_entry(opts.input, rows=inputs.rows_in_file, role=builder.input_role, limit=opts.limit)],
    )
    ended: list[JobResult] = []
    with (
        keeping(lambda: _kept(opts.out, ended)),
        ResumableOutput(opts.out, manifest.settings_sha256, force=opts.force, inputs=[opts.input]) as output,
    ):
        run = _Run(opts, builder, manifest, output, inputs.rows)
        if run.plan.pending and opts.preflight is not None:
            opts.preflight([builder.request(r) for r in run.plan.pending])  # refuses before the model loads
        try:
            run.send(backend)
        except BaseException as e:
            with shielded():
                ended.extend(run.record_stop(e))
            raise
        finally:
            run.close_backend()
        return run.finish()


def _kept(out: Path, ended: list[JobResult]) -> str:
    """What an interrupted run leaves behind, for the message a signal prints."""
    if not ended:
        return f"the complete rows already in {out} are kept; run the same command again to continue"
    r = ended[0]
    return (
        f"{r.done} of {r.total} row(s) done in {out} (manifest updated); run the same command again "
        f"to do the other {r.total - r.done}"
    )


@dataclass
class _Run:
    """One run of a job while it holds its output: what is left to do, the backend once built, the counts."""

    opts: JobOptions
    builder: RowBuilder
    manifest: Manifest
    output: ResumableOutput
    inputs: list[dict[str, Any]]
    stats: RunStats = field(default_factory=RunStats)
    backend: Backend | None = None

    def __post_init__(self) -> None:
        self.plan = self.output.resume(self.inputs, self.digest)
        previous = self.output.previous or {}
        self.manifest.started = previous.get("started") or self.manifest.started
        self.identity: dict[str, Any] | None = previous.get("backend")

    def digest(self, row: dict[str, Any]) -> str:
        return row_input_sha256(row, self.builder.input_keys)

    def send(self, backend: Backend | None) -> None:
        """Build the backend (only when rows are left), write the manifest, send every pending row."""
        pending = self.plan.pending
        if not pending:
            return
        self.backend = self.builder.prepare_backend(backend if backend is not None else self.opts.backend.create())
        self.identity = self.backend.identity()
        _set_extra(self.manifest, self.builder, self.identity)
        self.manifest.write(self.output.manifest_path)
        by_id = {row["id"]: row for row in pending}

        def stamped(result: Result) -> dict[str, Any]:
            row = by_id[result.key]
            return {**self.builder.output_row(row, result), INPUT_SHA256: self.digest(row)}

        requests = [self.builder.request(r) for r in pending]
        _drive(self.backend, requests, self.opts.params, self.output, stamped, self.builder.kind, self.stats)

    def record_stop(self, error: BaseException) -> list[JobResult]:
        """Stopped part-way: the manifest still says what the file holds now, and why it stopped."""
        if not (self.opts.out.exists() or self.output.manifest_path.exists()):
            return []
        # a full disk or an unreadable file must not hide why the run stopped
        with contextlib.suppress(OSError, MixftError):
            return [self.finish(stopped=_why(error))]
        return []

    def close_backend(self) -> None:
        if self.backend is not None:
            with shielded():
                self.backend.close()

    def finish(self, stopped: str | None = None) -> JobResult:
        _set_extra(self.manifest, self.builder, self.identity)
        return _finish(
            self.opts, self.builder, self.manifest, self.output, self.inputs, self.plan, self.stats, stopped=stopped
        )


def _why(error: BaseException) -> str:
    """What stopped a run, for the manifest's ``summary.stopped``."""
    if isinstance(error, Interrupted):
        return error.signal_name
    if isinstance(error, NoSpaceError) or NoSpaceError.matches(error):
        return "no space left on device"
    if isinstance(error, KeyboardInterrupt):
        return "SIGINT"
    return f"error: {type(error).__name__}"


def _finish(
    opts: JobOptions,
    builder: RowBuilder,
    manifest: Manifest,
    output: ResumableOutput,
    inputs: list[dict[str, Any]],
    plan: ResumePlan,
    stats: RunStats,
    stopped: str | None = None,
) -> JobResult:
    """Read the output back, and write the manifest with what the file holds and the summary.

    ``outputs[FILE]`` records the file's SHA-256 and rows, and what they were made from:
    ``rows_for_input`` successful rows for this input's ids, ``input_rows_sha256`` (the SHA-256
    of the canonical JSON list of ``[id, input_sha256]`` of those rows, sorted by id) and
    ``rows_other`` (rows for ids not in this input, e.g. beyond ``--limit``).
    """
    output.close()
    written = _read_output(opts.out)
    wanted = {row["id"] for row in inputs}
    done = [r for r in written if r.get("id") in wanted and r.get("error") is None]
    result = JobResult(
        out=opts.out,
        manifest=output.manifest_path,
        total=len(inputs),
        skipped=plan.done,
        retried=plan.retried,
        stats=stats,
        summary=builder.summary(done),
        changed=plan.changed,
        done=len(done),
        stopped=stopped,
    )
    if opts.out.exists():
        pairs = sorted([r["id"], r.get(INPUT_SHA256)] for r in done)
        manifest.outputs = {
            opts.out.name: file_entry(
                opts.out,
                rows=len(written),
                rows_for_input=len(done),
                input_rows_sha256=sha256_json(pairs),
                rows_other=sum(r.get("id") not in wanted for r in written),
            )
        }
    manifest.summary = result.as_dict()
    manifest.write(output.manifest_path)
    return result


def _set_extra(manifest: Manifest, builder: RowBuilder, identity: dict[str, Any] | None) -> None:
    manifest.extra = {
        "backend": identity,
        # HFBackend.identity() reports which tensors were loaded in 4-bit.
        "quantization": (identity or {}).get("quantization"),
        **builder.manifest_extra(),
    }


def _read_output(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path, torn_tail_ok=True)) if path.exists() else []


def _drive(
    backend: Backend,
    requests: list[Request],
    params: GenerationParams,
    output: ResumableOutput,
    make_row: Callable[[Result], dict[str, Any]],
    desc: str,
    stats: RunStats,
) -> RunStats:
    """Send ``requests`` through ``backend`` and append ``make_row(result)`` as each result
    arrives, counting into ``stats`` (which keeps its counts when the run is stopped part-way)."""
    t0 = time.perf_counter()
    try:
        with ProgressBar(total=len(requests), desc=desc, unit="item") as bar:
            for result in backend.run(requests, params):
                output.append(make_row(result))
                stats.written += 1
                if result.ok:
                    stats.new_tokens += result.n_new_tokens or 0
                else:
                    stats.failed += 1
                    stats.first_error = stats.first_error or f"{result.key}: {result.error}"
                bar.update(1)
                elapsed = time.perf_counter() - t0
                bar.set_postfix(tok_s=f"{stats.new_tokens / elapsed:.1f}" if elapsed else "0", failed=stats.failed)
    finally:
        stats.wall_s = time.perf_counter() - t0
    return stats
