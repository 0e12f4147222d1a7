"""``run_prepare(PrepareOptions, Task)``: the one pipeline behind ``mixft prepare rg`` and
``mixft prepare tc``. A task (``prepare.rg.RgTask``, ``prepare.tc.TcTask``) supplies its rules;
the pipeline runs the passes (read, check, write), memory flat in the input size, in a staging
directory that replaces ``--out`` only when everything succeeded (:func:`run_prepare`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mixtral_ft.data import manifest as manifest_mod
from mixtral_ft.data.lengths import LengthReport
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.prepare.buckets import Layout
from mixtral_ft.prepare.fields import FieldSpec
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.readers import InputSpec, estimate_size
from mixtral_ft.prepare.readpass import ReadPass, RowRules, choose_workers, read_inputs
from mixtral_ft.prepare.split import TestSize
from mixtral_ft.prepare.summary import PrepareResult, Tally
from mixtral_ft.prepare.writepass import REJECTED, TEST, TRAIN, Checked, GroupWriter, WritePass, Written, write_rejected
from mixtral_ft.util.atomic import check_output_dir, guard_destination, staged_dir

SKIP_HINT = Problem("hint", None, None, "fix the rows or pass --skip-invalid to reject them into rejected.jsonl")


@dataclass
class Finished:
    """What a run wrote, for the task's summary and manifest (``Task.finish``)."""

    opts: PrepareOptions
    read: ReadPass
    checked: Checked
    writer: GroupWriter  # the task's, with what it counted
    written: Written
    lengths: dict[str, Any]  # ``LengthReport.to_json()``
    n_rejected: int | None  # rows in rejected.jsonl; None when it is not written
    stage: Path  # the staging directory (files the task adds go here)
    input_hashes: dict[Path, str]


@dataclass
class Report:
    """A task's account of a run: the manifest's parts and what its summary prints."""

    settings: dict[str, Any]  # the manifest's settings (the options as the task records them)
    inputs: list[dict[str, Any]]  # the manifest's input entries
    counts: dict[str, Any]  # the manifest's summary
    summary: dict[str, Any] = field(default_factory=dict)  # what the task's summary prints
    outputs: dict[str, int | None] = field(default_factory=dict)  # files the task wrote (name -> rows)
    extra: dict[str, Any] = field(default_factory=dict)  # the task's own manifest keys


class Task(Protocol):
    """What a ``prepare`` task adds to the pipeline: its rules."""

    name: ClassVar[str]  # "rg" | "tc": the command is "prepare <name>"
    fields: ClassVar[tuple[FieldSpec, ...]]  # canonical fields and their default columns
    default_test_size: ClassVar[TestSize]
    default_sequence_len: ClassVar[int]
    rows_grow: ClassVar[int]  # bucket bytes per input byte (TC rows gain a verdict)
    always_rejected: ClassVar[bool]  # rejected.jsonl is written without --skip-invalid too

    def check(self, opts: PrepareOptions) -> None:
        """The task's own option checks (raise ``UsageError``)."""
        ...

    def inputs(self, opts: PrepareOptions) -> list[InputSpec]:
        """What the read pass reads: the inputs (and TC's ``--augment`` files)."""
        ...

    def other_paths(self, opts: PrepareOptions) -> list[str | os.PathLike | None]:
        """Other files the run reads (``--out`` may not replace them)."""
        ...

    def begin(self, opts: PrepareOptions, work: Path, layout: Layout) -> RowRules:
        """Set up the run's own work files (TC: the judgements) and return the read pass's rules."""
        ...

    def check_pass(self, read: ReadPass, opts: PrepareOptions, layout: Layout) -> Checked: ...

    def writer(
        self, read: ReadPass, checked: Checked, opts: PrepareOptions, layout: Layout, needs_text: bool
    ) -> GroupWriter:
        """How groups become rows; ``needs_text``: rows carry their prompt and response."""
        ...

    def tally(self) -> Tally: ...

    def rejected_row(self, payload: bytes) -> Any:
        """What ``rejected.jsonl`` shows of a row the check left out (its bucket payload)."""
        ...

    def dumps(self, record: Any) -> bytes:
        """The JSON line (no newline) of a ``rejected.jsonl`` record."""
        ...

    def finish(self, run: Finished) -> Report: ...


def run_prepare(opts: PrepareOptions, task: Task) -> PrepareResult:
    """Run ``task`` on ``opts``; raise ``MixftError`` on bad input, with nothing written then.

    The passes, in order:

    1. what needs no data: the options, the output (``--force``, never over an input), the
       tokenizer (loaded now, so a bad one fails before any work);
    2. *read* (``prepare.readpass``): every input streamed once; the task's ``RowRules`` check,
       normalize and key each row into key-ordered buckets (its group's split key) and hash
       partitions, in a staging directory beside ``--out``;
    3. *check* (``Task.check_pass``): what the partitions tell (RG: exact duplicates and duplicate
       ids; TC: judgements and duplicate ids). Then any problem stops the run unless
       ``--skip-invalid``, and so do an empty data set and a test size that leaves no training row;
    4. *write* (``prepare.writepass``): the groups in key order, to test until the target is met,
       then to train, as the rows the task builds; lengths, preview and tallies on the way; then
       ``rejected.jsonl``;
    5. the task's summary and the manifest; the staging directory then replaces ``--out`` (on any
       error, signal or full disk nothing is left behind).
    """
    opts = opts.with_defaults(task.default_test_size, task.default_sequence_len)
    opts.check()
    task.check(opts)
    specs = task.inputs(opts)
    paths = [*(s.path for s in specs), *task.other_paths(opts), opts.tokenizer]  # --out may not replace them
    guard_destination(opts.out, paths)  # before the slow parts
    check_output_dir(opts.out, opts.force)
    lengths = LengthReport(opts.max_len, opts.tokenizer)  # loads the tokenizer: fails early
    est = estimate_size(specs)
    layout = Layout.for_size(est * task.rows_grow, opts.bucket_bytes)
    timer = _PhaseTimer()
    # peak space: the work files plus the output, each about the size of the input (measured 1.5x)
    with staged_dir(opts.out, force=opts.force, inputs=paths, needed=2 * est) as stage:
        work = stage / ".work"
        work.mkdir()
        rules = task.begin(opts, work, layout)
        read = read_inputs(rules, specs, work, choose_workers(opts.workers, est), opts.max_problems)
        timer.mark("read")
        # input SHA-256s in a thread while the other passes run (started after the fork of the read pass's workers)
        wait_input_hashes = manifest_mod.hash_files_in_background([s.path for s in specs])
        checked = _check(read, opts, task, layout)
        timer.mark("check")
        writer = task.writer(read, checked, opts, layout, lengths.exact or opts.preview > 0)
        written, n_rejected = _write(read, checked, opts, task, writer, layout, stage, lengths)
        shutil.rmtree(work)
        timer.mark("write")
        hashes = wait_input_hashes()
        run = Finished(opts, read, checked, writer, written, lengths.to_json(), n_rejected, stage, hashes)
        result = _finish(run, task)
        timer.mark("manifest")
    return result


def _check(read: ReadPass, opts: PrepareOptions, task: Task, layout: Layout) -> Checked:
    """The task's check pass; then every problem so far stops the run unless ``--skip-invalid``."""
    checked = task.check_pass(read, opts, layout)
    collector = read.collector
    collector.extend(p.problem for p in sorted(checked.problems, key=lambda p: (p.input, p.line)))
    if collector and not opts.skip_invalid:
        shown = collector.error().problems
        raise InputError(shown + [SKIP_HINT], total=collector.total + 1, cap=opts.max_problems + 1)
    n = checked.n_split
    if n == 0:
        n_read = sum(read.rows_per_input[: len(opts.inputs)])
        displays = ", ".join(s.display for s in opts.inputs)
        raise InputError([Problem(displays, None, None, f"no valid rows to prepare ({n_read} read, {n_read} invalid)")])
    test_size = opts.split_size
    if test_size.target(n) >= n:
        raise UsageError(
            f"--test-size {test_size.text} leaves no training rows: only {n} valid, unique row(s); "
            "use a smaller count or fraction"
        )
    return checked


def _write(
    read: ReadPass,
    checked: Checked,
    opts: PrepareOptions,
    task: Task,
    writer: GroupWriter,
    layout: Layout,
    stage: Path,
    lengths: LengthReport,
) -> tuple[Written, int | None]:
    """The write pass, then ``rejected.jsonl`` (with ``--skip-invalid``, or always for a task that says so)."""
    write = WritePass(read, checked, lengths, task.tally(), task.rejected_row, opts.preview)
    written = write.run(layout, opts.split_size, writer, stage)
    if not written.rows["train"]:  # whole groups: the closest prefix can take them all
        raise UsageError(
            f"--test-size {opts.split_size.text} puts every group in test ({checked.n_split} rows); "
            "use a smaller count or fraction"
        )
    n_rejected = None
    if opts.skip_invalid or task.always_rejected:
        late = checked.rejected + written.rejected
        n_rejected = write_rejected(stage / REJECTED, read, late, task.dumps)
    return written, n_rejected


def _finish(run: Finished, task: Task) -> PrepareResult:
    """The task's report, then the manifest; the result the command prints."""
    report = task.finish(run)
    rows = run.written.rows
    outputs: dict[str, int | None] = {TRAIN: rows["train"], TEST: rows["test"]}
    if run.n_rejected is not None:
        outputs[REJECTED] = run.n_rejected
    outputs.update(report.outputs)
    manifest = manifest_mod.build_manifest(
        f"prepare {task.name}",
        arguments=report.settings,
        inputs=report.inputs,
        outputs=manifest_mod.output_entries(run.stage, outputs, run.written.hashes),
        counts=report.counts,
        **report.extra,
    )
    manifest_mod.save(run.stage, manifest)
    opts = run.opts
    return PrepareResult(
        opts.out,
        report.counts,
        report.summary,
        run.lengths,
        opts.split_size,
        opts.seed,
        opts.group_by,
        run.written.preview,
        [str(p) for p in run.read.collector.shown],
    )


def file_entries(
    specs: Sequence[InputSpec], input_hashes: dict[Path, str], entry: Callable[[int, InputSpec], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Manifest input entries: ``entry(i, spec)`` gives each one's own keys; path as the user named it."""
    out = []
    for i, spec in enumerate(specs):
        item = manifest_mod.file_entry(spec.path, sha256=input_hashes.get(spec.path), **entry(i, spec))
        item["path"] = spec.display
        out.append(item)
    return out


class _PhaseTimer:
    """Phase timings on stderr when MIXFT_TIMING=1 (for scripts/bench_prepare.py)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.enabled = os.environ.get("MIXFT_TIMING") == "1"

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        if self.enabled:
            print(f"timing: {phase} {now - self._last:.2f} s", file=sys.stderr)
        self._last = now
