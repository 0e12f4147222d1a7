"""The read pass of every ``prepare`` task: stream every input once, check and key each row,
write it to disk; memory flat in the input size.

A task supplies ``RowRules`` (picklable: they run in worker processes) that turn one chunk of raw items
into a ``ChunkResult``: key-ordered bucket lines, hash-partition lines, problems and rejected records.
:func:`read_inputs` plans the work (a big JSONL input in byte ranges), runs it, and gathers counts and
problems with absolute line numbers; file-level problems stop the command here.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

from mixtral_ft.errors import Problem
from mixtral_ft.prepare.buckets import KeyedBuckets, Layout, Partitions, Place
from mixtral_ft.prepare.fields import ProblemCollector
from mixtral_ft.prepare.readers import InputSpec, crlf_problem, iter_chunks, iter_jsonl_range, split_jsonl
from mixtral_ft.util.interrupt import worker_defaults
from mixtral_ft.util.progress import ProgressBar

_MIN_RANGE_BYTES = 16 << 20  # JSONL inputs above twice this are read in parallel byte ranges
_AUTO_PARALLEL_BYTES = 64 << 20  # workers=0: use several processes above this input size


@dataclass(frozen=True)
class ReadTask:
    """One unit of the read pass: a whole input file, or a byte range of a JSONL file."""

    index: int
    file_idx: int  # which input
    spec: InputSpec
    byte_range: tuple[int, int] | None = None

    @property
    def prefix(self) -> str:
        return f"t{self.index}"


@dataclass
class ChunkResult:
    """What one chunk of rows produced; ``(task index, line)`` identifies a row everywhere."""

    task_index: int
    n_read: int = 0
    n_invalid: int = 0
    bucket_lines: dict[int, list[bytes]] = field(default_factory=dict)
    partitions: dict[str, dict[int, list[bytes]]] = field(default_factory=dict)  # name -> partition -> lines
    problems: list[Problem] = field(default_factory=list)
    rejected: list[bytes] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)

    def bucket_line(self, bucket: int, line: bytes) -> None:
        lines = self.bucket_lines.get(bucket)
        if lines is None:
            self.bucket_lines[bucket] = [line]
        else:
            lines.append(line)

    def partition_line(self, name: str, part: int, line: bytes) -> None:
        self.partitions.setdefault(name, {}).setdefault(part, []).append(line)

    def reject(self, display: str, line: int, problems: list[Problem], obj: Any, raw: str | None = None) -> None:
        """An invalid row: its problems, and its ``rejected.jsonl`` record (``obj``, else ``raw``)."""
        self.n_invalid += 1
        self.problems.extend(problems)
        self.rejected.append(rejected_line(display, line, problems, obj, raw))


class RowRules(Protocol):
    """What a prepare command tells the read pass (must pickle: it goes to worker processes)."""

    # read-only: the rules are frozen dataclasses
    @property
    def layout(self) -> Layout: ...
    @property
    def skip_invalid(self) -> bool: ...
    @property
    def partition_names(self) -> tuple[str, ...]: ...

    def process_chunk(self, task: ReadTask, kind: str, items: list[tuple[int, Any]]) -> ChunkResult: ...


def rejected_line(display: str, line: int, problems: list[Problem], obj: Any, raw: str | None) -> bytes:
    """A rejected.jsonl record; ``problems`` as ``[field, message]`` pairs until the main process
    knows the absolute line and renders them (``ReadPass.iter_rejected``)."""
    rec: dict[str, Any] = {"file": display, "line": line, "problems": [[p.field, p.message] for p in problems]}
    if obj is not None:
        rec["row"] = obj
    else:
        rec["raw"] = raw
    return orjson.dumps(rec, default=str) + b"\n"


@dataclass
class _TaskSummary:
    index: int
    n_read: int = 0
    n_invalid: int = 0
    lines: int = 0  # physical lines (byte-range tasks), for line offsets of later ranges
    crlf: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)  # the first `cap`, lines relative to the range
    fatal: list[Problem] = field(default_factory=list)
    hidden: int = 0  # problems found beyond the cap
    sources: Counter = field(default_factory=Counter)


_progress_counter = None  # a shared multiprocessing.Value in worker processes


def _init_worker(counter) -> None:
    global _progress_counter
    _progress_counter = counter
    worker_defaults()  # Ctrl-C reaches the whole terminal group: the parent decides and stops the pool


def _run_read_task(
    rules: RowRules, task: ReadTask, work: Path, cap: int, on_rows: Callable[[int], None] | None = None
) -> _TaskSummary:
    """Read, check and key one task's rows into its own files (runs in workers; progress goes to
    ``on_rows(n)`` in-process, or to the shared counter in a worker)."""
    spec = task.spec
    summary = _TaskSummary(task.index)
    buckets = KeyedBuckets(work, rules.layout.n_buckets, prefix=f"{task.prefix}-bucket")
    parts = {
        name: Partitions(work, rules.layout.n_parts, prefix=f"{task.prefix}-{name}") for name in rules.partition_names
    }
    chunks = iter_jsonl_range(spec, *task.byte_range) if task.byte_range is not None else iter_chunks(spec)
    try:
        with open(work / f"{task.prefix}-rejected", "wb") as rejected:
            for chunk in chunks:
                summary.fatal.extend(chunk.problems)
                summary.lines = max(summary.lines, chunk.lines)
                summary.crlf = chunk.crlf or summary.crlf
                if not chunk.items:
                    continue
                res = rules.process_chunk(task, chunk.kind, chunk.items)
                summary.n_read += res.n_read
                summary.n_invalid += res.n_invalid
                summary.sources.update(res.sources)
                room = cap - len(summary.problems)
                summary.problems.extend(res.problems[:room])
                summary.hidden += max(0, len(res.problems) - room)
                rejected.writelines(res.rejected)
                if rules.skip_invalid or not (summary.problems or summary.fatal):
                    for b, lines in res.bucket_lines.items():
                        buckets.add_lines(b, lines)
                # keys are kept even after a bad row, so duplicate ids are reported too
                for name, by_part in res.partitions.items():
                    for part, lines in by_part.items():
                        parts[name].add_lines(part, lines)
                if on_rows is not None:
                    on_rows(res.n_read)
                elif _progress_counter is not None:
                    with _progress_counter.get_lock():
                        _progress_counter.value += res.n_read
    finally:
        buckets.close()
        for p in parts.values():
            p.close()
    return summary


def _task_entry(args: tuple) -> _TaskSummary:
    return _run_read_task(*args)


def choose_workers(requested: int, estimated_bytes: int) -> int:
    """``requested`` processes, or for 0 several only when the input is big enough to gain."""
    return requested or (min(4, os.cpu_count() or 1) if estimated_bytes > _AUTO_PARALLEL_BYTES else 1)


def plan_tasks(inputs: list[InputSpec], workers: int) -> list[ReadTask]:
    """One task per input; big JSONL inputs are cut into 2 ranges per worker."""
    tasks: list[ReadTask] = []
    for file_idx, spec in enumerate(inputs):
        ranges: list[tuple[int, int] | None] = [None]
        if (
            workers > 1
            and spec.format == "jsonl"
            and spec.path.is_file()
            and spec.path.stat().st_size > _MIN_RANGE_BYTES * 2
        ):
            ranges = list(split_jsonl(spec.path, workers * 2))
        for r in ranges:
            tasks.append(ReadTask(len(tasks), file_idx, spec, r))
    return tasks


def _run_tasks(
    tasks: list[ReadTask], rules: RowRules, work: Path, cap: int, workers: int, bar: ProgressBar
) -> Iterator[_TaskSummary]:
    """Task summaries in task order, from worker processes when ``workers > 1``."""
    args = [(rules, t, work, cap) for t in tasks]
    if workers <= 1 or len(tasks) == 1:
        for a in args:
            yield _run_read_task(*a, on_rows=bar.update)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    counter = ctx.Value("q", 0)
    shown = 0
    with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(counter,)) as pool:
        results = pool.imap(_task_entry, args)
        done = 0
        while done < len(tasks):
            try:
                summary = results.next(timeout=0.5)
            except mp.TimeoutError:
                summary = None
            now = counter.value
            bar.update(now - shown)
            shown = now
            if summary is not None:
                done += 1
                yield summary


class Where(NamedTuple):
    """A row's input (its index in ``ReadPass.inputs``), that input as the user named it, and the
    row's absolute line there."""

    input: int
    file: str
    line: int

    def problem(self, field: str | None, message: str) -> RowProblem:
        return RowProblem(self.input, self.line, Problem(self.file, self.line, field, message))


class RowProblem(NamedTuple):
    """A problem found after the read pass (a duplicate id, a missing judgement), and its row's
    input and line (problems are listed in that order)."""

    input: int
    line: int
    problem: Problem


class Rejected(NamedTuple):
    """A ``rejected.jsonl`` record, and its row's input and line (the file's order)."""

    input: int
    line: int
    record: dict[str, Any]


@dataclass
class ReadPass:
    """What the read pass found: counts, problems (absolute lines), and where its files are."""

    inputs: list[InputSpec]
    tasks: list[ReadTask]
    work: Path
    collector: ProblemCollector
    offsets: list[int]  # line offset of each task within its file
    counts: Counter = field(default_factory=Counter)  # "read", "invalid"
    rows_per_input: list[int] = field(default_factory=list)
    read_by_source: Counter = field(default_factory=Counter)

    def locate(self, place: Place) -> Where:
        """Which input a row came from, and its absolute line there."""
        file_idx = self.tasks[place.task].file_idx
        return Where(file_idx, self.inputs[file_idx].display, place.line + self.offsets[place.task])

    def bucket_prefixes(self) -> list[str]:
        return [f"{t.prefix}-bucket" for t in self.tasks]

    def partition_prefixes(self, name: str) -> list[str]:
        return [f"{t.prefix}-{name}" for t in self.tasks]

    def iter_rejected(self) -> Iterator[Rejected]:
        """The records of every row rejected while reading, in input and line order, with
        problems rendered as ``file:line: field: message``."""
        for t in self.tasks:
            path = self.work / f"{t.prefix}-rejected"
            with open(path, "rb") as fh:
                for raw in fh:
                    rec = orjson.loads(raw)
                    rec["line"] += self.offsets[t.index]
                    rec["problems"] = [str(Problem(rec["file"], rec["line"], f, m)) for f, m in rec["problems"]]
                    yield Rejected(t.file_idx, rec["line"], rec)


def read_inputs(rules: RowRules, inputs: list[InputSpec], work: Path, workers: int, max_problems: int) -> ReadPass:
    """Run the read pass into ``work``; raise the problems at once when a file-level one is found."""
    tasks = plan_tasks(inputs, workers)
    result = ReadPass(
        inputs, tasks, work, ProblemCollector(max_problems), [0] * len(tasks), rows_per_input=[0] * len(inputs)
    )
    n_fatal = 0
    crlf: dict[int, tuple[int, int]] = {}
    lines_so_far: dict[int, int] = {}
    with ProgressBar(desc="reading", unit=" rows", unit_scale=True) as bar:
        for summary in _run_tasks(tasks, rules, work, max_problems, workers, bar):
            t = tasks[summary.index]
            shift = lines_so_far.get(t.file_idx, 0) if t.byte_range is not None else 0
            result.offsets[t.index] = shift
            lines_so_far[t.file_idx] = shift + summary.lines
            n_fatal += len(summary.fatal)
            for p in summary.fatal + summary.problems:
                result.collector.add(replace(p, line=p.line + shift) if p.line else p)
            result.collector.count_hidden(summary.hidden)
            if summary.crlf:
                first, n = crlf.get(t.file_idx, (summary.crlf[0] + shift, 0))
                crlf[t.file_idx] = (first, n + summary.crlf[1])
            result.counts["read"] += summary.n_read
            result.counts["invalid"] += summary.n_invalid
            result.rows_per_input[t.file_idx] += summary.n_read
            result.read_by_source.update(summary.sources)
    for file_idx, (first, n) in sorted(crlf.items()):
        n_fatal += 1
        result.collector.add(crlf_problem(inputs[file_idx].display, first, n))
    if n_fatal:
        raise result.collector.error()  # file-level problems cannot be skipped
    return result
