"""``mixft prepare rg``: raw grounded Q&A -> Axolotl ``context_qa.load_v2`` train/test files.

Three passes, memory flat in the input size:

1. *read*: stream every input once; check, normalize and key each row; write it to the
   key-ordered bucket of its split key, its content key to a duplicate finder and its id to
   another (all inside the output's staging directory). Bad rows become problems (or, with
   ``--skip-invalid``, lines of ``rejected.jsonl``).
2. *check*: find exact duplicates (keep the representative with the smallest record hash, so
   the choice does not depend on input order) and duplicate ids (an error naming both places).
3. *write*: read the buckets in key order, assign groups to test/train, write the files,
   measure lengths, keep preview examples; then the manifest, then rename the staging
   directory onto ``--out``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zlib import crc32

import orjson

from mixtral_ft.data import manifest as manifest_mod
from mixtral_ft.data.buckets import (
    DuplicateFinder,
    KeyedBuckets,
    bucket_count,
    find_duplicates,
    iter_sorted_bucket_lines,
)
from mixtral_ft.data.lengths import AXOLOTL_LONG_ROWS, LengthStats, char_estimate_from_count
from mixtral_ft.data.normalize import DEFAULT_SNIPPET_SEPARATOR, content_key, join_snippets, normalize_many
from mixtral_ft.data.prompts import CONTEXT_QA_V2, context_qa_v2_prompt, context_qa_v2_response
from mixtral_ft.data.readers import (
    InputSpec,
    crlf_problem,
    decode_item,
    estimate_size,
    iter_chunks,
    iter_jsonl_range,
    split_jsonl,
)
from mixtral_ft.data.split import SplitAssigner, TestSize, split_key
from mixtral_ft.data.validate import (
    DEFAULT_PROBLEM_CAP,
    MISSING,
    FieldSpec,
    ProblemCollector,
    check_key,
    check_text,
    check_text_or_list,
    get_path,
    missing_message,
)
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.util.atomic import check_output_dir, staged_dir
from mixtral_ft.util.progress import ProgressBar

TRAIN, TEST, REJECTED = "train.jsonl", "test.jsonl", "rejected.jsonl"
LENGTH_BATCH = 256
_WRITE_BATCH = 2000  # output lines gathered before a write
_MIN_RANGE_BYTES = 16 << 20  # JSONL inputs above twice this are read in parallel byte ranges
_AUTO_PARALLEL_BYTES = 64 << 20  # --workers 0: use several processes above this input size
# len(context_qa_v2_prompt(c, q)) + len(context_qa_v2_response(a)) - len(c + q + a)
_TEMPLATE_CHARS = len(context_qa_v2_prompt("", "")) + len(context_qa_v2_response(""))


@dataclass(frozen=True)
class RgFields:
    """Input columns (dotted paths allowed) for each canonical RG field."""

    question: str = "question"
    context: str = "context"
    answer: str = "answer"
    id: str = "id"
    source: str = "source"  # "" = never read a source from the rows


@dataclass(frozen=True)
class RgPrepareOptions:
    inputs: list[InputSpec]
    out: Path
    fields: RgFields = RgFields()
    group_by: str | None = None
    test_size: TestSize = TestSize(fraction=0.1)
    seed: int = 42
    skip_invalid: bool = False
    force: bool = False
    context_separator: str = DEFAULT_SNIPPET_SEPARATOR
    number_snippets: bool = False
    tokenizer: Path | None = None
    sequence_len: int = 4096
    preview: int = 0
    max_problems: int = DEFAULT_PROBLEM_CAP
    workers: int = 0  # 0 = automatic


@dataclass
class RgPrepareResult:
    out: Path
    counts: dict[str, int]
    per_source: dict[str, dict[str, int]]
    lengths: dict[str, Any]
    preview: list[dict[str, Any]] = field(default_factory=list)
    test_size: TestSize | None = None
    seed: int = 42
    group_by: str | None = None
    skipped_problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- pass 1: one row at a time
@dataclass(frozen=True)
class _RowRules:
    """What a worker needs to turn raw rows into bucket lines (picklable)."""

    fields: RgFields
    group_by: str | None
    seed: int
    separator: str
    numbered: bool
    n_buckets: int
    skip_invalid: bool
    n_parts: int = 1

    def specs(self) -> dict[str, FieldSpec]:
        f = self.fields
        return {
            "question": FieldSpec("question", f.question, "--question-field"),
            "context": FieldSpec("context", f.context, "--context-field"),
            "answer": FieldSpec("answer", f.answer, "--answer-field"),
            "id": FieldSpec("id", f.id, "--id-field", required=False),
        }


@dataclass
class _ChunkResult:
    file_idx: int  # the writer's index (a read task), which with the line identifies a row
    n_read: int = 0
    bucket_lines: dict[int, list[bytes]] = field(default_factory=dict)
    content_keys: dict[int, list[bytes]] = field(default_factory=dict)  # partition -> lines
    ids: dict[int, list[bytes]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    rejected: list[bytes] = field(default_factory=list)
    n_invalid: int = 0
    sources: Counter = field(default_factory=Counter)


def _rejected_line(display: str, line: int, problems: list[Problem], obj: Any, raw: str | None) -> bytes:
    """A rejected.jsonl record; ``problems`` as ``[field, message]`` pairs until the main
    process knows the absolute line and renders them (``_render_rejected``)."""
    rec: dict[str, Any] = {"file": display, "line": line, "problems": [[p.field, p.message] for p in problems]}
    if obj is not None:
        rec["row"] = obj
    else:
        rec["raw"] = raw
    return orjson.dumps(rec, default=str) + b"\n"


def _process_chunk(rules: _RowRules, file_idx: int, display: str, default_source: str, tagged: bool,
                   kind: str, items: list[tuple[int, Any]]) -> _ChunkResult:
    """Check, normalize and key every row of one chunk (pure: safe in a worker process)."""
    res = _ChunkResult(file_idx)
    specs = rules.specs()
    q_spec, c_spec, a_spec, id_spec = specs["question"], specs["context"], specs["answer"], specs["id"]
    group_col = rules.group_by
    source_col = rules.fields.source
    shift = 64 - (rules.n_buckets.bit_length() - 1)
    n_parts = rules.n_parts
    seed = rules.seed
    dumps = orjson.dumps
    for line, item in items:
        res.n_read += 1
        row = decode_item(display, kind, line, item)
        obj = row.obj
        if obj is None:
            res.n_invalid += 1
            res.problems.append(row.problem)
            res.sources[default_source] += 1
            if rules.skip_invalid:
                res.rejected.append(_rejected_line(display, line, [row.problem], None, row.raw))
            continue
        problems: list[Problem] = []
        raw: dict[str, Any] = {}
        for spec in (q_spec, c_spec, a_spec):
            value = get_path(obj, spec.column)
            if value is MISSING:
                problems.append(Problem(display, line, spec.label, missing_message(spec)))
                continue
            value, err = check_text_or_list(value) if spec is c_spec else check_text(value)
            if err is not None:
                problems.append(Problem(display, line, spec.label, err))
            else:
                raw[spec.name] = value
        texts: dict[str, str] = {}
        if raw:
            # normalize the whole row at once (fast path for clean rows), then split it back
            names = [n for n in ("question", "answer") if n in raw]
            context = raw.get("context")
            snippets = [] if context is None else context if isinstance(context, list) else [context]
            normal = normalize_many([*(raw[n] for n in names), *snippets])
            texts.update(zip(names, normal))
            if isinstance(context, list):
                texts["context"] = join_snippets(normal[len(names):], rules.separator, rules.numbered,
                                                 normalized=True)
            elif context is not None:
                texts["context"] = normal[len(names)]
            for spec in (q_spec, c_spec, a_spec):
                if spec.name in texts and not texts[spec.name]:
                    problems.append(Problem(display, line, spec.label,
                                            "empty (nothing left after whitespace normalization)"))
        row_id = None
        raw_id = get_path(obj, id_spec.column)
        if raw_id is not MISSING:
            row_id, err = check_key(raw_id)
            if err:
                problems.append(Problem(display, line, id_spec.label, err))
        group = None
        if group_col:
            raw_group = get_path(obj, group_col)
            if raw_group is MISSING:
                problems.append(Problem(display, line, group_col, "missing; --group-by needs a group on every row"))
            else:
                group, err = check_key(raw_group)
                if err:
                    problems.append(Problem(display, line, group_col, err))
        source = default_source
        if source_col and not tagged:
            raw_source = get_path(obj, source_col)
            if raw_source is not MISSING and raw_source is not None:
                if isinstance(raw_source, str) and raw_source.strip():
                    source = raw_source.strip()
                else:
                    problems.append(Problem(display, line, source_col,
                                            "expected a non-empty string; use --source-field to map another "
                                            "column or tag the input as TAG=PATH"))
        res.sources[source] += 1
        if problems:
            res.n_invalid += 1
            res.problems.extend(problems)
            if rules.skip_invalid:
                res.rejected.append(_rejected_line(display, line, problems, obj, None))
            continue
        question, context, answer = texts["question"], texts["context"], texts["answer"]
        ckey = content_key(question, context, answer)
        if row_id is None:
            row_id = "rg-" + ckey[:16]
        payload = dumps({"id": row_id, "source": source, "group": group, "context": context,
                         "question": question, "answer": answer})
        # tie-break / representative key: the whole record, hashed from its small parts
        rep = hashlib.sha256(dumps((ckey, row_id, source, group))).hexdigest()[:16].encode()
        key = split_key(("g:" + group) if group_col else ("c:" + ckey), seed)
        chars = len(context) + len(question) + len(answer) + _TEMPLATE_CHARS
        bucket = key >> shift if shift < 64 else 0
        bucket_line = b"%016x%s %d %d %d\t%s\t%s\n" % (key, rep, file_idx, line, chars, dumps(source), payload)
        lines = res.bucket_lines.get(bucket)
        if lines is None:
            res.bucket_lines[bucket] = [bucket_line]
        else:
            lines.append(bucket_line)
        ckey_b = ckey.encode()
        res.content_keys.setdefault(crc32(ckey_b) % n_parts, []).append(
            b"%s\t%s %d %d\n" % (ckey_b, rep, file_idx, line))
        id_b = dumps(row_id)
        res.ids.setdefault(crc32(id_b) % n_parts, []).append(b"%s\t%d %d\n" % (id_b, file_idx, line))
    return res


@dataclass(frozen=True)
class _ReadTask:
    """One unit of the read pass: a whole input file, or a byte range of a JSONL file. Each
    task writes its own bucket / duplicate-finder / rejected files (prefix ``t<index>``)."""

    index: int
    file_idx: int
    spec: InputSpec
    byte_range: tuple[int, int] | None = None

    @property
    def prefix(self) -> str:
        return f"t{self.index}"


@dataclass
class _TaskSummary:
    index: int
    file_idx: int
    n_read: int = 0
    n_invalid: int = 0
    lines: int = 0  # physical lines (byte-range tasks), for line offsets of later ranges
    crlf: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)  # first `cap`, lines relative to the range
    fatal: list[Problem] = field(default_factory=list)
    hidden: int = 0  # problems found beyond the cap
    sources: Counter = field(default_factory=Counter)


_progress_counter = None  # a shared multiprocessing.Value in worker processes


def _init_worker(counter) -> None:
    global _progress_counter
    _progress_counter = counter


def _run_read_task(rules: _RowRules, task: _ReadTask, work: Path, n_parts: int, cap: int,
                   on_rows=None) -> _TaskSummary:
    """Read, check, normalize and key one task's rows into its own files (runs in workers;
    progress goes to ``on_rows(n)`` in-process, or to the shared counter in a worker)."""
    spec = task.spec
    summary = _TaskSummary(task.index, task.file_idx)
    buckets = KeyedBuckets(work, rules.n_buckets, prefix=f"{task.prefix}-bucket")
    contents = DuplicateFinder(work, n_parts, prefix=f"{task.prefix}-content")
    ids = DuplicateFinder(work, n_parts, prefix=f"{task.prefix}-id")
    chunks = (iter_jsonl_range(spec, *task.byte_range) if task.byte_range is not None else iter_chunks(spec))
    try:
        with open(work / f"{task.prefix}-rejected", "wb") as rejected:
            for chunk in chunks:
                summary.fatal.extend(chunk.problems)
                summary.lines = max(summary.lines, chunk.lines)
                summary.crlf = chunk.crlf or summary.crlf
                if not chunk.items:
                    continue
                res = _process_chunk(rules, task.index, spec.display, spec.default_source, spec.tag is not None,
                                     chunk.kind, chunk.items)
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
                # keys are checked even after a bad row, so duplicate ids are reported too
                for part, lines in res.content_keys.items():
                    contents.add_lines(part, lines)
                for part, lines in res.ids.items():
                    ids.add_lines(part, lines)
                if on_rows is not None:
                    on_rows(res.n_read)
                elif _progress_counter is not None:
                    with _progress_counter.get_lock():
                        _progress_counter.value += res.n_read
    finally:
        buckets.close()
        contents.close()
        ids.close()
    return summary


def _task_entry(args: tuple) -> _TaskSummary:
    return _run_read_task(*args)


def _plan_tasks(inputs: list[InputSpec], workers: int) -> list[_ReadTask]:
    """One task per input; big JSONL inputs are cut into 2 ranges per worker."""
    tasks: list[_ReadTask] = []
    for file_idx, spec in enumerate(inputs):
        ranges: list[tuple[int, int] | None] = [None]
        if workers > 1 and spec.format == "jsonl" and spec.path.is_file() \
                and spec.path.stat().st_size > _MIN_RANGE_BYTES * 2:
            ranges = list(split_jsonl(spec.path, workers * 2))
        for r in ranges:
            tasks.append(_ReadTask(len(tasks), file_idx, spec, r))
    return tasks


def _run_tasks(tasks: list[_ReadTask], rules: _RowRules, work: Path, n_parts: int, cap: int, workers: int,
               bar: ProgressBar):
    """Yield task summaries in task order, from worker processes when ``workers > 1``."""
    args = [(rules, t, work, n_parts, cap) for t in tasks]
    if workers <= 1 or len(tasks) == 1:
        for a in args:
            yield _run_read_task(*a, on_rows=bar.update)
        return
    import multiprocessing as mp

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


# ---------------------------------------------------------------- the whole command
def prepare_rg(opts: RgPrepareOptions) -> RgPrepareResult:
    """Run the three passes and return what the summary prints (raises MixftError)."""
    if opts.test_size.count is not None and opts.test_size.count < 1:
        raise UsageError("--test-size must be at least 1 row")
    if opts.sequence_len < 1:
        raise UsageError("--sequence-len must be positive")
    if not opts.inputs:
        raise UsageError("give at least one INPUT file")
    check_output_dir(opts.out, opts.force)  # before the slow parts
    tokenizer = None
    if opts.tokenizer is not None:
        from mixtral_ft.data.lengths import AxolotlInstructionTokenizer

        tokenizer = AxolotlInstructionTokenizer(opts.tokenizer, opts.sequence_len)

    est = estimate_size(opts.inputs)
    n_buckets = bucket_count(est)
    n_parts = max(1, n_buckets // 8)
    rules = _RowRules(opts.fields, opts.group_by, opts.seed, opts.context_separator, opts.number_snippets,
                      n_buckets, opts.skip_invalid, n_parts)
    workers = opts.workers or (min(4, os.cpu_count() or 1) if est > _AUTO_PARALLEL_BYTES else 1)
    tasks = _plan_tasks(opts.inputs, workers)
    displays = [s.display for s in opts.inputs]
    collector = ProblemCollector(opts.max_problems)
    counts: Counter = Counter()
    read_by_source: Counter = Counter()
    rows_per_input = [0] * len(opts.inputs)
    offsets = [0] * len(tasks)  # line offset of each task within its file
    timer = _PhaseTimer()

    with staged_dir(opts.out, force=opts.force) as stage:
        work = stage / ".work"
        work.mkdir()
        prefixes = [t.prefix for t in tasks]

        def where(task_idx: int, rel_line: int) -> tuple[str, int]:
            return displays[tasks[task_idx].file_idx], rel_line + offsets[task_idx]

        # ---- pass 1: read every input once, in parallel byte ranges when big
        n_fatal = 0
        crlf: dict[int, tuple[int, int]] = {}
        with ProgressBar(desc="reading", unit=" rows", unit_scale=True) as bar:
            lines_so_far: dict[int, int] = {}
            for summary in _run_tasks(tasks, rules, work, n_parts, opts.max_problems, workers, bar):
                t = tasks[summary.index]
                offsets[t.index] = lines_so_far.get(t.file_idx, 0) if t.byte_range is not None else 0
                lines_so_far[t.file_idx] = offsets[t.index] + summary.lines
                shift = offsets[t.index]
                n_fatal += len(summary.fatal)
                for p in summary.fatal + summary.problems:
                    collector.add(replace(p, line=p.line + shift) if p.line else p)
                collector.count_hidden(summary.hidden)
                if summary.crlf:
                    first, n = crlf.get(t.file_idx, (summary.crlf[0] + shift, 0))
                    crlf[t.file_idx] = (first, n + summary.crlf[1])
                counts["read"] += summary.n_read
                counts["invalid"] += summary.n_invalid
                rows_per_input[t.file_idx] += summary.n_read
                read_by_source.update(summary.sources)
        for file_idx, (first, n) in sorted(crlf.items()):
            n_fatal += 1
            collector.add(crlf_problem(displays[file_idx], first, n))
        if n_fatal:
            raise collector.error()  # file-level problems cannot be skipped
        timer.mark("read")
        # input SHA-256s in a thread while passes 2-3 run (started after the fork of pass 1's workers)
        wait_input_hashes = manifest_mod.hash_files_in_background([s.path for s in opts.inputs])

        # ---- pass 2: exact duplicates, then duplicate ids among the rows kept
        dropped: set[tuple[int, int]] = set()
        for _key, records in find_duplicates(work, n_parts, [f"{p}-content" for p in prefixes]):
            parsed = sorted((rep, int(t), int(ln)) for rep, t, ln in (r.split(b" ") for r in records))
            for _rep, t, ln in parsed[1:]:  # keep the smallest record hash: independent of input order
                dropped.add((t, ln))
        counts["duplicates"] = len(dropped)
        id_rejects: dict[tuple[int, int], str] = {}
        id_problems: list[tuple[int, int, Problem]] = []
        id_label = opts.fields.id
        for key, records in find_duplicates(work, n_parts, [f"{p}-id" for p in prefixes]):
            places = {(int(t), int(ln)) for t, ln in (r.split(b" ") for r in records)} - dropped
            if len(places) < 2:
                continue
            row_id = orjson.loads(key)
            located = sorted((tasks[t].file_idx, where(t, ln)[1], (t, ln)) for t, ln in places)
            f0, l0, _ = located[0]
            for f, ln, _place in located[1:]:
                id_problems.append((f, ln, Problem(displays[f], ln, id_label,
                                                   f"duplicate id '{row_id}' (also at {displays[f0]}:{l0})")))
            for f, ln, place in located:
                id_rejects[place] = f"{displays[f]}:{ln}: {id_label}: duplicate id '{row_id}'"
        id_problems.sort(key=lambda x: (x[0], x[1]))
        if (collector or id_problems) and not opts.skip_invalid:
            collector.extend(p for _, _, p in id_problems)
            raise collector.error()
        skipped_messages = [str(p) for p in collector.shown] + [str(p) for _, _, p in id_problems]
        counts["invalid"] += len(id_rejects)
        kept = counts["read"] - counts["invalid"] - counts["duplicates"]
        if kept == 0:
            raise InputError([Problem(", ".join(displays), None, None,
                                      f"no valid rows to prepare ({counts['read']} read, {counts['invalid']} invalid)")])
        if opts.test_size.count is not None and opts.test_size.count >= kept:
            raise UsageError(f"--test-size {opts.test_size.count} leaves no training rows: only {kept} valid, "
                             "unique rows; use a smaller count or a fraction")
        timer.mark("check")

        rejected_fh = open(stage / REJECTED, "wb") if opts.skip_invalid else None
        try:
            if rejected_fh is not None:
                for t in tasks:
                    _copy_rejected(work / f"{t.prefix}-rejected", rejected_fh, offsets[t.index])
            # ---- pass 3
            assigner = SplitAssigner(opts.test_size)
            split_by_source: dict[bytes, Counter] = defaultdict(Counter)
            token_stats = LengthStats()
            char_stats = LengthStats()
            preview: list[dict[str, Any]] = []
            pending: list[tuple[str, str]] = []

            def flush_lengths() -> None:
                for n in tokenizer.lengths(pending):
                    token_stats.add(n)
                pending.clear()

            char_counts: Counter = Counter()  # raw character counts (as bytes), estimated at the end
            source_sides: Counter = Counter()  # (source JSON, side) -> rows
            need_rows = tokenizer is not None or opts.preview > 0
            # places (b"task line") to leave out, matched against the bucket line's meta
            skip_places = {b"%d %d" % p for p in dropped} | {b"%d %d" % p for p in id_rejects}

            with manifest_mod.HashingWriter(stage / TRAIN) as train_fh, \
                    manifest_mod.HashingWriter(stage / TEST) as test_fh, \
                    ProgressBar(total=n_buckets, desc="writing", unit=" buckets") as bar:
                out_lines = {"train": [], "test": []}
                chars_seen: list[bytes] = []
                sides_seen: list[tuple[bytes, str]] = []

                def emit_group(key_hex: bytes, members: list[tuple[bytes, bytes]]) -> None:
                    side = assigner.assign(int(key_hex, 16), len(members))
                    out = out_lines[side]
                    for source_json, payload in members:
                        out.append(payload)
                        sides_seen.append((source_json, side))
                        if need_rows:
                            row = orjson.loads(payload)
                            prompt = context_qa_v2_prompt(row["context"], row["question"])
                            response = context_qa_v2_response(row["answer"])
                            if tokenizer is not None:
                                pending.append((prompt, response))
                                if len(pending) >= LENGTH_BATCH:
                                    flush_lengths()
                            if len(preview) < opts.preview:
                                preview.append({"split": side, "id": row["id"], "source": row["source"],
                                                "prompt": prompt, "response": response})

                def write_out() -> None:
                    """Write the gathered output lines and fold the gathered statistics."""
                    for side, fh in (("train", train_fh), ("test", test_fh)):
                        if out_lines[side]:
                            out_lines[side].append(b"")
                            fh.write(b"\n".join(out_lines[side]))
                            out_lines[side].clear()
                    char_counts.update(chars_seen)
                    source_sides.update(sides_seen)
                    chars_seen.clear()
                    sides_seen.clear()

                for lines in iter_sorted_bucket_lines(work, n_buckets, [f"{p}-bucket" for p in prefixes]):
                    bar.update(1)
                    group_hex = None
                    members: list[tuple[bytes, bytes]] = []
                    for line in lines:
                        meta, source_json, payload = line[33:].split(b"\t", 2)  # after b"<key:16><tie:16> "
                        if skip_places:
                            place = meta.rsplit(b" ", 1)[0]
                            if place in skip_places:
                                t, ln = map(int, place.split(b" "))
                                if (t, ln) in id_rejects:
                                    display, lineno = where(t, ln)
                                    rejected_fh.write(orjson.dumps({"file": display, "line": lineno,
                                                                    "problems": [id_rejects[(t, ln)]],
                                                                    "row": orjson.loads(payload)}) + b"\n")
                                continue
                        key_hex = line[:16]
                        if key_hex != group_hex:
                            if members:
                                emit_group(group_hex, members)
                                members = []
                            group_hex = key_hex
                        members.append((source_json, payload))
                        chars_seen.append(meta[meta.rfind(b" ") + 1:])
                        if len(chars_seen) >= _WRITE_BATCH:
                            write_out()
                    if members:
                        emit_group(group_hex, members)
                    write_out()
                if pending:
                    flush_lengths()
                for chars, n in char_counts.items():
                    char_stats.add(char_estimate_from_count(int(chars)), n)
                for (source_json, side), n in source_sides.items():
                    split_by_source[source_json][side] += n
                out_hashes = {TRAIN: train_fh.close(), TEST: test_fh.close()}
            if rejected_fh is not None:
                rejected_fh.close()
            shutil.rmtree(work)
            timer.mark("write")

            counts["train"], counts["test"] = assigner.n_train, assigner.n_test
            if opts.skip_invalid:
                counts["rejected"] = counts["invalid"]
            split_by_source = {orjson.loads(k): v for k, v in split_by_source.items()}
            per_source = {}
            for src in sorted(set(read_by_source) | set(split_by_source)):
                sc = split_by_source.get(src, Counter())
                per_source[src] = {"read": read_by_source.get(src, 0), "train": sc["train"], "test": sc["test"]}
            lengths = _length_report(opts, tokenizer, token_stats, char_stats)
            out_rows = {TRAIN: counts["train"], TEST: counts["test"]}
            if opts.skip_invalid:
                out_rows[REJECTED] = counts["invalid"]
            input_hashes = wait_input_hashes()
            inputs = [manifest_mod.file_entry(s.path, rows_per_input[i], sha256=input_hashes.get(s.path),
                                              format=s.format, source_tag=s.tag)
                      for i, s in enumerate(opts.inputs)]
            for entry, spec in zip(inputs, opts.inputs):
                entry["path"] = spec.display
            manifest = manifest_mod.build_manifest(
                "prepare rg",
                arguments=_arguments(opts),
                inputs=inputs,
                outputs=manifest_mod.output_entries(stage, out_rows, out_hashes),
                counts=dict(counts),
                per_source=per_source,
                split={"seed": opts.seed, "test_size": opts.test_size.to_json(), "group_by": opts.group_by,
                       "achieved_test_rows": counts["test"], "method": "sha256(seed, group) key; test = key prefix"},
                format={"axolotl_type": CONTEXT_QA_V2, "fields": ["id", "source", "group", "context", "question",
                                                                   "answer"]},
                lengths=lengths,
            )
            manifest_mod.save(stage, manifest)
            timer.mark("manifest")
        finally:
            if rejected_fh is not None and not rejected_fh.closed:
                rejected_fh.close()
    return RgPrepareResult(opts.out, dict(counts), per_source, lengths, preview, opts.test_size, opts.seed,
                           opts.group_by, skipped_messages)


def _copy_rejected(path: Path, out, offset: int) -> None:
    """Append a task's rejected records to rejected.jsonl with absolute lines and rendered problems."""
    with open(path, "rb") as fh:
        for raw in fh:
            rec = orjson.loads(raw)
            rec["line"] += offset
            rec["problems"] = [str(Problem(rec["file"], rec["line"], f, m)) for f, m in rec["problems"]]
            out.write(orjson.dumps(rec) + b"\n")


class _PhaseTimer:
    """Phase timings on stderr when MIXFT_TIMING=1 (for scripts/bench_prepare.py)."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._last = self._clock()
        self.enabled = os.environ.get("MIXFT_TIMING") == "1"

    def mark(self, phase: str) -> None:
        now = self._clock()
        if self.enabled:
            import sys

            print(f"timing: {phase} {now - self._last:.2f} s", file=sys.stderr)
        self._last = now


def _length_report(opts, tokenizer, token_stats: LengthStats, char_stats: LengthStats) -> dict[str, Any]:
    if tokenizer is not None:
        return {
            "kind": "tokens",
            "tokenizer": str(opts.tokenizer),
            "sequence_len": opts.sequence_len,
            **token_stats.summary(opts.sequence_len),
            "long_rows": AXOLOTL_LONG_ROWS,
        }
    return {
        "kind": "estimate",
        "method": "characters / 4 + 2 (no --tokenizer given)",
        "sequence_len": opts.sequence_len,
        **char_stats.summary(opts.sequence_len),
        "long_rows": AXOLOTL_LONG_ROWS,
    }


def _arguments(opts: RgPrepareOptions) -> dict[str, Any]:
    return {
        "inputs": [{"path": s.display, "format": s.format, "tag": s.tag} for s in opts.inputs],
        "out": str(opts.out),
        "fields": vars(opts.fields),
        "group_by": opts.group_by,
        "test_size": opts.test_size.to_json(),
        "seed": opts.seed,
        "skip_invalid": opts.skip_invalid,
        "context_separator": opts.context_separator,
        "number_snippets": opts.number_snippets,
        "tokenizer": str(opts.tokenizer) if opts.tokenizer else None,
        "sequence_len": opts.sequence_len,
    }


# ---------------------------------------------------------------- what the CLI prints
def _n(x: int) -> str:
    return f"{x:,}"


def format_summary(result: RgPrepareResult) -> str:
    """The end-of-run summary: counts, per-source split, lengths, where the files are, next step."""
    c, out = result.counts, result.out
    ts = result.test_size
    rule = (f"{ts.count}" if ts and ts.count is not None else f"fraction {ts.fraction}") if ts else ""
    lines = [
        f"Prepared RG data ({CONTEXT_QA_V2}) in {out}/",
        f"  read        {_n(c.get('read', 0))} rows",
        f"  invalid     {_n(c.get('invalid', 0))}" + ("  (skipped; see rejected.jsonl)" if "rejected" in c else ""),
        f"  duplicates  {_n(c.get('duplicates', 0))} removed (same question + context + answer)",
        f"  train       {_n(c.get('train', 0))}  {out / TRAIN}",
        f"  test        {_n(c.get('test', 0))}  {out / TEST}  (test size {rule}, seed {result.seed}"
        + (f", grouped by '{result.group_by}'" if result.group_by else "") + ")",
    ]
    for src, sc in result.per_source.items():
        lines.append(f"  source      {src}: {_n(sc['read'])} read, {_n(sc['train'])} train, {_n(sc['test'])} test")
    L = result.lengths
    if L.get("n"):
        what = (f"tokens ({L['tokenizer']})" if L["kind"] == "tokens"
                else "tokens, ESTIMATED from characters (pass --tokenizer for exact counts)")
        lines.append(f"  lengths     {what}: p50 {_n(L['p50'])}, p95 {_n(L['p95'])}, max {_n(L['p100'])}")
        over = L.get("over_sequence_len", 0)
        lines.append(f"              {_n(over)} row(s) longer than sequence_len {_n(L['sequence_len'])}"
                     + (f": {AXOLOTL_LONG_ROWS}" if over else ""))
    lines.append(f"  manifest    {out / manifest_mod.MANIFEST_NAME}")
    lines.append("")
    lines.append(f"Next: mixft train rg --data {out} --profile PROFILE")
    return "\n".join(lines)


TRAINED_START, TRAINED_END = "[TRAINED]", "[/TRAINED]"


def format_preview(examples: list[dict[str, Any]], color: bool = False, eos: str = "<EOS>") -> str:
    """Formatted examples with the trained part (response + EOS) marked: green when ``color``,
    else between ``[TRAINED]`` and ``[/TRAINED]``."""
    blocks = []
    for i, ex in enumerate(examples, 1):
        trained = ex["response"] + eos
        mark = f"\x1b[32m{trained}\x1b[0m" if color else f"{TRAINED_START}{trained}{TRAINED_END}"
        blocks.append(f"--- example {i} ({ex['split']}, id {ex['id']}, source {ex['source']}) ---\n"
                      f"{ex['prompt']}{mark}")
    legend = ("(green = trained on; the rest is masked, train_on_inputs: false)" if color
              else f"({TRAINED_START}...{TRAINED_END} = trained on; the rest is masked, train_on_inputs: false)")
    return "\n\n".join([legend, *blocks])
