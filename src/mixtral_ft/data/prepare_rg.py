"""``mixft prepare rg``: raw grounded Q&A -> Axolotl ``context_qa.load_v2`` train/test files.

Three passes, memory flat in the input size, each a function below:

1. ``read_inputs`` (``data.readpass``, shared with ``prepare tc``) with ``RgRules``: stream every
   input once; check, normalize and key each row; write it to the key-ordered bucket of its
   split key, and its content key and id to hash partitions (all inside the output's staging
   directory). Bad rows become problems (or, with ``--skip-invalid``, lines of ``rejected.jsonl``).
2. ``_check_pass``: find exact duplicates (keep the representative with the smallest record hash,
   so the choice does not depend on input order) and duplicate ids (an error naming both places).
3. ``_write_pass``: read the buckets in key order, assign groups to test/train, write the files,
   measure lengths, keep preview examples; then ``_manifest``, then the staging directory is
   renamed onto ``--out``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from mixtral_ft.data import manifest as manifest_mod
from mixtral_ft.data.buckets import (
    TARGET_BUCKET_BYTES,
    bucket_count,
    bucket_shift,
    find_duplicates,
    iter_sorted_bucket_lines,
    partition_of,
)
from mixtral_ft.data.lengths import LengthReport, format_lengths
from mixtral_ft.data.normalize import DEFAULT_SNIPPET_SEPARATOR, content_key, join_snippets, normalize_many
from mixtral_ft.data.prompts import CONTEXT_QA_V2, context_qa_v2_prompt, context_qa_v2_response
from mixtral_ft.data.readers import InputSpec, decode_item, estimate_size
from mixtral_ft.data.readpass import ChunkResult, ReadPass, ReadTask, choose_workers, read_inputs, rejected_line
from mixtral_ft.data.split import SplitAssigner, TestSize, split_key
from mixtral_ft.data.validate import (
    DEFAULT_PROBLEM_CAP,
    MISSING,
    FieldSpec,
    check_id,
    check_text,
    check_text_or_list,
    get_path,
    missing_message,
    row_group,
    row_source,
)
from mixtral_ft.data.writepass import REJECTED, TEST, TRAIN, SplitWriter, iter_groups
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.util.atomic import check_output_dir, guard_destination, staged_dir
from mixtral_ft.util.progress import ProgressBar

# len(context_qa_v2_prompt(c, q)) + len(context_qa_v2_response(a)) - len(c + q + a)
_TEMPLATE_CHARS = len(context_qa_v2_prompt("", "")) + len(context_qa_v2_response(""))
_BATCH = 2000  # statistics gathered before they are folded into counters


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
    fields: RgFields = field(default_factory=RgFields)
    group_by: str | None = None
    test_size: TestSize = TestSize(fraction=0.125)
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
    bucket_bytes: int = TARGET_BUCKET_BYTES  # size of one external-sort bucket (tests make it small)


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
class RgRules:
    """How pass 1 turns raw rows into bucket and partition lines (picklable, for workers).

    A bucket line is ``<key:016x><record hash:16> <task> <line> <chars>\\t<source JSON>\\t<row JSON>``:
    the split key orders it, the record hash breaks ties, ``task line`` is the row's place and
    ``chars`` its prompt + response length for the estimate.
    """

    fields: RgFields
    group_by: str | None
    seed: int
    separator: str
    numbered: bool
    n_buckets: int
    skip_invalid: bool
    n_parts: int = 1
    partition_names: tuple[str, ...] = ("content", "id")

    def specs(self) -> dict[str, FieldSpec]:
        f = self.fields
        return {
            "question": FieldSpec("question", f.question, "--question-field"),
            "context": FieldSpec("context", f.context, "--context-field"),
            "answer": FieldSpec("answer", f.answer, "--answer-field"),
            "id": FieldSpec("id", f.id, "--id-field", required=False),
        }

    def process_chunk(self, task: ReadTask, kind: str, items: list[tuple[int, Any]]) -> ChunkResult:
        """Check, normalize and key every row of one chunk (pure: safe in a worker process)."""
        res = ChunkResult(task.index)
        specs = self.specs()
        q_spec, c_spec, a_spec, id_spec = specs["question"], specs["context"], specs["answer"], specs["id"]
        display, default_source, tag = task.spec.display, task.spec.default_source, task.spec.tag
        shift = bucket_shift(self.n_buckets)
        n_parts, seed, group_col, dumps = self.n_parts, self.seed, self.group_by, orjson.dumps
        for line, item in items:
            res.n_read += 1
            row = decode_item(display, kind, line, item)
            obj = row.obj
            if obj is None:
                assert row.problem is not None  # a RawRow without obj carries its problem
                res.n_invalid += 1
                res.problems.append(row.problem)
                res.sources[default_source] += 1
                if self.skip_invalid:
                    res.rejected.append(rejected_line(display, line, [row.problem], None, row.raw))
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
            texts = self._normalize(raw) if raw else {}
            for spec in (q_spec, c_spec, a_spec):
                if spec.name in texts and not texts[spec.name]:
                    problems.append(
                        Problem(display, line, spec.label, "empty (nothing left after whitespace normalization)")
                    )
            row_id = None
            raw_id = get_path(obj, id_spec.column)
            if raw_id is not MISSING:
                row_id, err = check_id(raw_id)
                if err:
                    problems.append(Problem(display, line, id_spec.label, err))
            group = None
            if group_col:
                group, err = row_group(obj, group_col)
                if err:
                    problems.append(Problem(display, line, group_col, err))
            source, err = row_source(obj, self.fields.source, tag, default_source)
            if err:
                problems.append(Problem(display, line, self.fields.source, err))
            res.sources[source] += 1
            if problems:
                res.n_invalid += 1
                res.problems.extend(problems)
                if self.skip_invalid:
                    res.rejected.append(rejected_line(display, line, problems, obj, None))
                continue
            question, context, answer = texts["question"], texts["context"], texts["answer"]
            ckey = content_key(question, context, answer)
            if row_id is None:
                row_id = "rg-" + ckey[:16]
            payload = dumps(
                {
                    "id": row_id,
                    "source": source,
                    "group": group,
                    "context": context,
                    "question": question,
                    "answer": answer,
                }
            )
            # tie-break / representative key: the whole record, hashed from its small parts
            rep = hashlib.sha256(dumps((ckey, row_id, source, group))).hexdigest()[:16].encode()
            # a row without problems has a group exactly when --group-by is given
            key = split_key(("g:" + group) if group is not None else ("c:" + ckey), seed)
            chars = len(context) + len(question) + len(answer) + _TEMPLATE_CHARS
            res.bucket_line(
                key >> shift,
                b"%016x%s %d %d %d\t%s\t%s\n" % (key, rep, task.index, line, chars, dumps(source), payload),
            )
            ckey_b = ckey.encode()
            res.partition_line(
                "content", partition_of(ckey_b, n_parts), b"%s\t%s %d %d\n" % (ckey_b, rep, task.index, line)
            )
            id_b = dumps(row_id)
            res.partition_line("id", partition_of(id_b, n_parts), b"%s\t%d %d\n" % (id_b, task.index, line))
        return res

    def _normalize(self, raw: dict[str, Any]) -> dict[str, str]:
        """Normalize the row's texts in one call (fast for clean rows), joining context snippets."""
        names: list[str] = [n for n in ("question", "answer") if n in raw]
        context = raw.get("context")
        snippets = [] if context is None else context if isinstance(context, list) else [context]
        normal = normalize_many([*(raw[n] for n in names), *snippets])
        texts = dict(zip(names, normal))
        if isinstance(context, list):
            texts["context"] = join_snippets(normal[len(names) :], self.separator, self.numbered, normalized=True)
        elif context is not None:
            texts["context"] = normal[len(names)]
        return texts


# ---------------------------------------------------------------- pass 2: duplicates
@dataclass
class _Checked:
    """What pass 2 decided: rows to leave out, and how many remain."""

    dropped: set[tuple[int, int]]  # exact duplicates: (task, line)
    id_rejects: dict[tuple[int, int], str]  # rows sharing an id (with --skip-invalid): place -> reason
    skipped_messages: list[str]
    kept: int


def _check_pass(read: ReadPass, opts: RgPrepareOptions, n_parts: int) -> _Checked:
    """Exact duplicates, then duplicate ids among the rows kept; raise unless ``--skip-invalid``."""
    counts, collector = read.counts, read.collector
    dropped: set[tuple[int, int]] = set()
    for _key, records in find_duplicates(read.work, n_parts, read.partition_prefixes("content")):
        parsed = sorted((rep, int(t), int(ln)) for rep, t, ln in (r.split(b" ") for r in records))
        for _rep, t, ln in parsed[1:]:  # keep the smallest record hash: independent of input order
            dropped.add((t, ln))
    counts["duplicates"] = len(dropped)
    id_rejects: dict[tuple[int, int], str] = {}
    id_problems: list[tuple[int, int, Problem]] = []
    id_label = opts.fields.id
    for key, records in find_duplicates(read.work, n_parts, read.partition_prefixes("id")):
        places = {(int(t), int(ln)) for t, ln in (r.split(b" ") for r in records)} - dropped
        if len(places) < 2:
            continue
        row_id = orjson.loads(key)
        located = sorted((read.input_of(t), read.where(t, ln)[1], (t, ln)) for t, ln in places)
        f0, l0, _ = located[0]
        for f, ln, _place in located[1:]:
            id_problems.append(
                (
                    f,
                    ln,
                    Problem(
                        read.inputs[f].display,
                        ln,
                        id_label,
                        f"duplicate id '{row_id}' (also at {read.inputs[f0].display}:{l0})",
                    ),
                )
            )
        for f, ln, place in located:
            id_rejects[place] = f"{read.inputs[f].display}:{ln}: {id_label}: duplicate id '{row_id}'"
    id_problems.sort(key=lambda x: (x[0], x[1]))
    if (collector or id_problems) and not opts.skip_invalid:
        collector.extend(p for _, _, p in id_problems)
        raise collector.error()
    skipped = [str(p) for p in collector.shown] + [str(p) for _, _, p in id_problems]
    counts["invalid"] += len(id_rejects)
    kept = counts["read"] - counts["invalid"] - counts["duplicates"]
    displays = ", ".join(s.display for s in opts.inputs)
    if kept == 0:
        raise InputError(
            [
                Problem(
                    displays,
                    None,
                    None,
                    f"no valid rows to prepare ({counts['read']} read, {counts['invalid']} invalid)",
                )
            ]
        )
    if opts.test_size.target(kept) >= kept:
        raise UsageError(
            f"--test-size {_rule(opts.test_size)} leaves no training rows: only {kept} valid, unique "
            "row(s); use a smaller count or fraction"
        )
    return _Checked(dropped, id_rejects, skipped, kept)


# ---------------------------------------------------------------- pass 3: the split, in key order
@dataclass
class _Written:
    hashes: dict[str, str]
    rows: dict[str, int]
    by_source: dict[str, dict[str, int]]  # source -> side -> rows
    preview: list[dict[str, Any]]


class _Tally:
    """Per-row statistics of pass 3, gathered in batches and folded into counters (``Counter``
    counts a list in C): rows per (source, side), and the estimated lengths."""

    def __init__(self, lengths: LengthReport):
        self.lengths = lengths
        self.source_sides: Counter = Counter()  # (source JSON, side) -> rows
        self._sides: list[tuple[bytes, str]] = []
        self._chars: dict[str, list[bytes]] = {"train": [], "test": []}
        # a row can be over sequence_len only with at least as many digits in its character count
        self._long_digits = len(str(int(lengths.char_limit)))

    def add(self, side: str, members: list[tuple[bytes, bytes, bytes]]) -> None:
        """A group's ``(meta, source JSON, row JSON)`` members, written to ``side``."""
        self._sides.extend((m[1], side) for m in members)
        if not self.lengths.exact:
            chars = self._chars[side]
            for meta, _source, payload in members:
                n_chars = meta[meta.rfind(b" ") + 1 :]
                if len(n_chars) >= self._long_digits and int(n_chars) > self.lengths.char_limit:
                    self.lengths.add_chars(side, int(n_chars), orjson.loads(payload)["id"])  # named in the report
                else:
                    chars.append(n_chars)
        if len(self._sides) >= _BATCH:
            self.fold()

    def fold(self) -> None:
        for side, seen in self._chars.items():
            for n_chars, n in Counter(seen).items():
                self.lengths.add_chars(side, int(n_chars), count=n)
            seen.clear()
        self.source_sides.update(self._sides)
        self._sides.clear()

    def by_source(self) -> dict[str, dict[str, int]]:
        self.fold()
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"train": 0, "test": 0})
        for (source_json, side), n in self.source_sides.items():
            out[orjson.loads(source_json)][side] += n
        return dict(out)


def _write_pass(
    read: ReadPass,
    checked: _Checked,
    opts: RgPrepareOptions,
    n_buckets: int,
    stage: Path,
    lengths: LengthReport,
    rejected: IO[bytes] | None,
) -> _Written:
    """Stream the buckets in key order; write each group's rows to its side."""
    assigner = SplitAssigner(opts.test_size, checked.kept)
    skip = {b"%d %d" % p for p in checked.dropped} | {b"%d %d" % p for p in checked.id_rejects}
    need_rows = lengths.exact or opts.preview > 0
    preview: list[dict[str, Any]] = []
    tally = _Tally(lengths)
    buckets = iter_sorted_bucket_lines(read.work, n_buckets, read.bucket_prefixes())
    with SplitWriter(stage) as out, ProgressBar(total=n_buckets, desc="writing", unit=" buckets") as bar:
        for _key, lines in iter_groups(_counted(buckets, bar)):
            members = []
            for line in lines:
                meta, source_json, payload = line[33:].split(b"\t", 2)  # after b"<key:16><tie:16> "
                if skip:
                    place = meta.rsplit(b" ", 1)[0]
                    if place in skip:
                        _left_out(read, checked, place, payload, rejected)
                        continue
                members.append((meta, source_json, payload))
            if not members:
                continue
            side = assigner.assign(len(members))
            out.write_many(side, [m[2] for m in members])
            tally.add(side, members)
            if need_rows:
                for _meta, _source, payload in members:
                    row = orjson.loads(payload)
                    prompt = context_qa_v2_prompt(row["context"], row["question"])
                    response = context_qa_v2_response(row["answer"])
                    if lengths.exact:
                        lengths.add_text(side, row["id"], prompt, response)
                    if len(preview) < opts.preview:
                        preview.append(
                            {
                                "split": side,
                                "id": row["id"],
                                "source": row["source"],
                                "prompt": prompt,
                                "response": response,
                            }
                        )
        hashes = out.close()
        rows = dict(out.rows)
    return _Written(hashes, rows, tally.by_source(), preview)


def _counted(buckets, bar: ProgressBar):
    for lines in buckets:
        bar.update(1)
        yield lines


def _left_out(read: ReadPass, checked: _Checked, place: bytes, payload: bytes, rejected: IO[bytes] | None) -> None:
    """A row left out in pass 3: an exact duplicate (counted, not listed), or, with
    ``--skip-invalid``, a row sharing its id with another, which goes to rejected.jsonl."""
    t, ln = map(int, place.split(b" "))
    reason = checked.id_rejects.get((t, ln))
    if reason is not None and rejected is not None:
        display, lineno = read.where(t, ln)
        rejected.write(
            orjson.dumps({"file": display, "line": lineno, "problems": [reason], "row": orjson.loads(payload)}) + b"\n"
        )


# ---------------------------------------------------------------- the whole command
def prepare_rg(opts: RgPrepareOptions) -> RgPrepareResult:
    """Run the three passes and return what the summary prints (raises MixftError)."""
    if opts.sequence_len < 1:
        raise UsageError("--sequence-len must be positive")
    if not opts.inputs:
        raise UsageError("give at least one INPUT file")
    guard_destination(opts.out, [s.path for s in opts.inputs] + [opts.tokenizer])  # before the slow parts
    check_output_dir(opts.out, opts.force)
    lengths = LengthReport(opts.sequence_len, opts.tokenizer)  # loads the tokenizer: fails early

    est = estimate_size(opts.inputs)
    n_buckets = bucket_count(est, opts.bucket_bytes)
    n_parts = max(1, n_buckets // 8)
    rules = RgRules(
        opts.fields,
        opts.group_by,
        opts.seed,
        opts.context_separator,
        opts.number_snippets,
        n_buckets,
        opts.skip_invalid,
        n_parts,
    )
    timer = _PhaseTimer()
    # peak space: the work buckets plus the output, each about the size of the input (measured 1.5x)
    inputs = [s.path for s in opts.inputs] + [opts.tokenizer]
    with staged_dir(opts.out, force=opts.force, inputs=inputs, needed=2 * est) as stage:
        work = stage / ".work"
        work.mkdir()
        read = read_inputs(rules, opts.inputs, work, choose_workers(opts.workers, est), opts.max_problems)
        timer.mark("read")
        # input SHA-256s in a thread while passes 2-3 run (started after the fork of pass 1's workers)
        wait_input_hashes = manifest_mod.hash_files_in_background([s.path for s in opts.inputs])
        checked = _check_pass(read, opts, n_parts)
        timer.mark("check")
        rejected = open(stage / REJECTED, "wb") if opts.skip_invalid else None
        try:
            if rejected is not None:
                read.copy_rejected(rejected)
            written = _write_pass(read, checked, opts, n_buckets, stage, lengths, rejected)
        finally:
            if rejected is not None:
                rejected.close()
        shutil.rmtree(work)
        timer.mark("write")
        if not written.rows["train"]:  # whole groups: the closest prefix can take them all
            raise UsageError(
                f"--test-size {_rule(opts.test_size)} puts every group in test ({checked.kept} rows); "
                "use a smaller count or fraction"
            )
        counts = dict(read.counts)
        counts["train"], counts["test"] = written.rows["train"], written.rows["test"]
        if opts.skip_invalid:
            counts["rejected"] = counts["invalid"]
        per_source = {}
        for src in sorted(set(read.read_by_source) | set(written.by_source)):
            sides = written.by_source.get(src, {"train": 0, "test": 0})
            per_source[src] = {"read": read.read_by_source.get(src, 0), **sides}
        report = lengths.to_json()
        manifest_mod.save(stage, _manifest(opts, read, counts, per_source, report, written, stage, wait_input_hashes()))
        timer.mark("manifest")
    return RgPrepareResult(
        opts.out,
        counts,
        per_source,
        report,
        written.preview,
        opts.test_size,
        opts.seed,
        opts.group_by,
        checked.skipped_messages,
    )


def _manifest(
    opts: RgPrepareOptions,
    read: ReadPass,
    counts: dict[str, int],
    per_source: dict[str, Any],
    lengths: dict[str, Any],
    written: _Written,
    stage: Path,
    input_hashes: dict[Path, str],
) -> manifest_mod.Manifest:
    out_rows = {TRAIN: counts["train"], TEST: counts["test"]}
    if opts.skip_invalid:
        out_rows[REJECTED] = counts["invalid"]
    inputs = [
        manifest_mod.file_entry(
            s.path, read.rows_per_input[i], sha256=input_hashes.get(s.path), format=s.format, source_tag=s.tag
        )
        for i, s in enumerate(opts.inputs)
    ]
    for entry, spec in zip(inputs, opts.inputs):
        entry["path"] = spec.display
    return manifest_mod.build_manifest(
        "prepare rg",
        arguments=_arguments(opts),
        inputs=inputs,
        outputs=manifest_mod.output_entries(stage, out_rows, written.hashes),
        counts=counts,
        per_source=per_source,
        split={
            "seed": opts.seed,
            "test_size": opts.test_size.to_json(),
            "group_by": opts.group_by,
            "achieved_test_rows": counts["test"],
            "method": "sha256(seed, group) key; test = the key-ordered prefix of whole groups closest to the target",
        },
        format={"axolotl_type": CONTEXT_QA_V2, "fields": ["id", "source", "group", "context", "question", "answer"]},
        lengths=lengths,
    )


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


def _rule(ts: TestSize) -> str:
    return f"{ts.count}" if ts.count is not None else f"{ts.fraction}"


def format_summary(result: RgPrepareResult) -> str:
    """The end-of-run summary: counts, per-source split, lengths, where the files are, next step."""
    c, out = result.counts, result.out
    ts = result.test_size
    rule = (f"{ts.count}" if ts.count is not None else f"fraction {ts.fraction}") if ts else ""
    lines = [
        f"Prepared RG data ({CONTEXT_QA_V2}) in {out}/",
        f"  read        {_n(c.get('read', 0))} rows",
        f"  invalid     {_n(c.get('invalid', 0))}" + ("  (skipped; see rejected.jsonl)" if "rejected" in c else ""),
        f"  duplicates  {_n(c.get('duplicates', 0))} removed (same question + context + answer)",
        f"  train       {_n(c.get('train', 0))}  {out / TRAIN}",
        f"  test        {_n(c.get('test', 0))}  {out / TEST}  (test size {rule}, seed {result.seed}"
        + (f", grouped by '{result.group_by}'" if result.group_by else "")
        + ")",
    ]
    for src, sc in result.per_source.items():
        lines.append(f"  source      {src}: {_n(sc['read'])} read, {_n(sc['train'])} train, {_n(sc['test'])} test")
    lines.extend("  " + line for line in format_lengths(result.lengths))
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
        blocks.append(
            f"--- example {i} ({ex['split']}, id {ex['id']}, source {ex['source']}) ---\n{ex['prompt']}{mark}"
        )
    legend = (
        "(green = trained on; the rest is masked, train_on_inputs: false)"
        if color
        else f"({TRAINED_START}...{TRAINED_END} = trained on; the rest is masked, train_on_inputs: false)"
    )
    return "\n\n".join([legend, *blocks])
