"""``mixft prepare tc``: labeled responses → Axolotl-ready truth-checker train/test files.

The same passes as ``prepare rg``, on the same pieces (``data.readpass``, ``data.buckets``,
``data.split``, ``data.lengths``, ``data.writepass``), so memory stays flat in the input size:

1. *read* (``TcRules`` in ``data.readpass``): the main inputs (``[TAG=]PATH``; ``--format
   ragtruth`` expands RAGTruth QA lines) and the ``--augment`` files; every row is checked,
   normalized and given one verdict from its label (verdict object, RAGTruth spans, boolean
   ``hallucinated``), then written to the key-ordered bucket of its group. A row without a label
   waits in a hash partition by id for its ``--judgements`` verdict. The judgement files are
   read first, into partitions by id.
2. *join* (``_join_pass``): partition by partition, give waiting rows their judged verdict and
   find duplicate ids (the first row, in input and line order, is kept).
3. *cap* (``_cap_threshold``, only with ``--augment-cap``): one sweep over the groups in key
   order finds the augmentation rows that reach train, and the seeded key below which
   ``--augment-cap`` of them are kept.
4. *write* (``_write_pass``): the groups in key order go to train/test by ``prepare rg``'s rule
   (main rows only); augmentation rows follow their group into train, or are dropped when it is
   in test, or beyond the cap; ``--corrections from-clean`` fills ``corrected_response`` from a
   clean response to the same question (always in the same group); each row gets its ``prompt``
   (configs/prompts/tc_v1.txt) and ``completion`` (the verdict text). Then ``rejected.jsonl``,
   ``summary.json`` and ``manifest.json``; the staged directory replaces ``--out`` only on success.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from mixtral_ft.choices import Corrections, TcInputFormat, values
from mixtral_ft.data.buckets import (
    TARGET_BUCKET_BYTES,
    KeyedBuckets,
    bucket_count,
    bucket_shift,
    iter_sorted_bucket_lines,
    partition_of,
    read_partition,
)
from mixtral_ft.data.lengths import LengthReport, format_lengths
from mixtral_ft.data.normalize import normalize_text
from mixtral_ft.data.readers import decode_item, estimate_size, iter_rows, parse_input, type_name
from mixtral_ft.data.readpass import ChunkResult, ReadPass, ReadTask, choose_workers, read_inputs, rejected_line
from mixtral_ft.data.split import SplitAssigner, TestSize, parse_test_size, split_key
from mixtral_ft.data.validate import (
    DEFAULT_PROBLEM_CAP,
    MISSING,
    FieldSpec,
    ProblemCollector,
    check_id,
    check_key,
    check_text,
    check_text_or_list,
    get_path,
    missing_message,
    row_group,
    row_source,
)
from mixtral_ft.data.writepass import REJECTED, TEST, TRAIN, SplitWriter, iter_groups
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.tc.labels import LABEL_FIELDS, label_verdict
from mixtral_ft.tc.prompt import load_template, render_tc_prompt, template_sha256
from mixtral_ft.tc.verdict import VERDICT_VERSION, Verdict, is_hallucinated, verdict_from_dict, verdict_to_text

RAGTRUTH_FORMAT = TcInputFormat.ragtruth.value
INPUT_FORMATS = values(TcInputFormat)
CORRECTIONS = values(Corrections)
DEFAULT_SEQUENCE_LEN = 8192
DEFAULT_AUGMENT_TAG = "augment"
MAIN, AUGMENT = "main", "augment"
_ROLE_BYTES = {MAIN: b"m", AUGMENT: b"a"}
SUMMARY = "summary.json"
# Fields the output row sets itself; every other input field is copied through.
_OWN_FIELDS = (
    "id",
    "source",
    "model",
    "group",
    "context",
    "question",
    "response",
    "verdict",
    "hallucinated",
    "prompt",
    "completion",
    "corrected_response",
)
_SKIP_HINT = Problem("hint", None, None, "fix the rows or pass --skip-invalid to reject them into rejected.jsonl")


@dataclass(frozen=True)
class TcFields:
    """Input columns (dotted paths allowed) for each canonical TC field."""

    question: str = "question"
    context: str = "context"
    response: str = "response"
    id: str = "id"
    source: str = "source"  # "" = never read a source from the rows


@dataclass(frozen=True)
class PrepareTcOptions:
    """Everything ``prepare tc`` needs; the CLI builds one of these."""

    inputs: tuple[str, ...]
    out: Path
    format: str | None = None  # None: by file extension; or one of INPUT_FORMATS
    augment: tuple[str, ...] = ()
    augment_cap: int | None = None
    judgements: tuple[str, ...] = ()
    corrections: str = "input"
    group_by: str | None = None
    test_size: str = "0.1"
    seed: int = 42
    count_relevance: bool = False
    skip_invalid: bool = False
    force: bool = False
    tokenizer: str | None = None
    sequence_len: int = DEFAULT_SEQUENCE_LEN
    template: Path | None = None
    max_problems: int = DEFAULT_PROBLEM_CAP
    fields: TcFields = field(default_factory=TcFields)
    workers: int = 0  # read-pass processes, 0 = automatic
    bucket_bytes: int = TARGET_BUCKET_BYTES  # size of one external-sort bucket (tests make it small)


@dataclass
class PrepareTcResult:
    out: Path
    summary: dict[str, Any]


# ---------------------------------------------------------------------------- pass 1: read and check


@dataclass(frozen=True)
class TcRules:
    """How the read pass turns raw rows into bucket and partition lines (picklable, for workers).

    A bucket line is ``<key:016x><record hash:16> <task> <line> <n> <role>\\t<row JSON>``: the
    group's split key orders it, ``task line n`` is the row's place (``n``: which response of a
    RAGTruth line), ``role`` ``m`` (main) or ``a`` (augmentation). An ``id`` partition line is
    ``<id JSON>\\t<task> <line> <n> <role>``; a ``pending`` one (a row waiting for a judgement)
    ``<id JSON>\\t<task> <line> <n> <role>\\t<row JSON>\\t<input row JSON>``.
    """

    fields: TcFields
    group_by: str | None
    seed: int
    count_relevance: bool
    roles: tuple[str, ...]  # per input
    ragtruth: bool
    judged: bool  # --judgements given: a row without a label waits for one
    n_buckets: int
    skip_invalid: bool
    n_parts: int = 1
    partition_names: tuple[str, ...] = ("id", "pending")

    def specs(self) -> dict[str, FieldSpec]:
        f = self.fields
        return {
            "question": FieldSpec("question", f.question, "--question-field"),
            "context": FieldSpec("context", f.context, "--context-field"),
            "response": FieldSpec("response", f.response, "--response-field"),
            "id": FieldSpec("id", f.id, "--id-field"),
        }

    def process_chunk(self, task: ReadTask, kind: str, items: list[tuple[int, Any]]) -> ChunkResult:
        from mixtral_ft.tc.ragtruth import expand_ragtruth

        res = ChunkResult(task.index)
        display = task.spec.display
        role = self.roles[task.file_idx]
        for line, item in items:
            decoded = decode_item(display, kind, line, item)
            if decoded.obj is None:
                assert decoded.problem is not None  # a RawRow without obj carries its problem
                res.n_read += 1
                res.n_invalid += 1
                res.problems.append(decoded.problem)
                res.rejected.append(rejected_line(display, line, [decoded.problem], None, decoded.raw))
                continue
            expanded = expand_ragtruth(decoded.obj, display, line) if self.ragtruth else [(decoded.obj, [])]
            for n, (obj, problems) in enumerate(expanded):
                res.n_read += 1
                pending = False
                row = None
                if obj is not None:
                    row, problems, pending = self.check_row(obj, task, line, role)
                if problems:
                    res.n_invalid += 1
                    res.problems.extend(problems)
                    shown = _clean(obj) if obj is not None else decoded.obj  # a RAGTruth line that did not expand
                    res.rejected.append(rejected_line(display, line, problems, shown, None))
                    continue
                assert row is not None  # check_row gives a row when it finds no problem
                res.sources[row["source"]] += 1
                place = b"%d %d %d %s" % (task.index, line, n, _ROLE_BYTES[role])
                id_b = orjson.dumps(row["id"])
                part = partition_of(id_b, self.n_parts)
                if pending:
                    res.partition_line(
                        "pending",
                        part,
                        b"%s\t%s\t%s\t%s\n" % (id_b, place, orjson.dumps(row), orjson.dumps(_clean(obj), default=str)),
                    )
                    continue
                bucket, line_b = self.bucket_line(row, place)
                res.bucket_line(bucket, line_b)
                res.partition_line("id", part, b"%s\t%s\n" % (id_b, place))
        return res

    def bucket_line(self, row: dict[str, Any], place: bytes) -> tuple[int, bytes]:
        """The bucket and the line of a checked row (with its verdict)."""
        payload = orjson.dumps(row)
        # "tc:" keeps TC keys independent of prepare rg's ("g:..."): TC data drawn from RG's test
        # split would otherwise land entirely in the TC test split.
        key = split_key("tc:" + row["group"], self.seed)
        shift = bucket_shift(self.n_buckets)
        tie = hashlib.sha256(payload).hexdigest()[:16].encode()
        return key >> shift, b"%016x%s %s\t%s\n" % (key, tie, place, payload)

    def check_row(
        self, obj: dict[str, Any], task: ReadTask, line: int, role: str
    ) -> tuple[dict[str, Any] | None, list[Problem], bool]:
        """``(row, problems, waits for a judgement)``; the row is JSON-ready, its ``verdict`` a dict."""
        display = task.spec.display
        names = obj.get("_fields") or {}  # RAGTruth: where each field came from
        problems: list[Problem] = []
        specs = self.specs()

        def bad(name: str, message: str) -> None:
            problems.append(Problem(display, line, names.get(name, name), message))

        def text(spec: FieldSpec) -> str | None:
            value = get_path(obj, spec.column)
            if value is MISSING or value is None:
                bad(spec.label, missing_message(spec))
                return None
            value, msg = check_text(value)
            if msg:
                bad(spec.label, msg)
                return None
            assert value is not None  # check_text gives a value or a message
            value = normalize_text(value)
            if not value:
                bad(spec.label, "empty (nothing left after whitespace normalization)")
                return None
            return value

        id_spec = specs["id"]
        raw_id = get_path(obj, id_spec.column)
        row_id, msg = (
            check_id(raw_id) if raw_id is not MISSING and raw_id is not None else (None, missing_message(id_spec))
        )
        if msg:
            bad(id_spec.label, msg)
        c_spec = specs["context"]
        context = get_path(obj, c_spec.column)
        if context is MISSING or context is None:
            bad(c_spec.label, missing_message(c_spec))
            context = None
        else:
            context, msg = check_text_or_list(context)
            if msg:
                bad(c_spec.label, msg)
            elif isinstance(context, str):
                context = normalize_text(context)
                if not context:
                    bad(c_spec.label, "empty (nothing left after whitespace normalization)")
            elif context is not None:  # a list (check_text_or_list gives a value or a message)
                context = [normalize_text(s) for s in context]
                if not any(context):
                    bad(c_spec.label, "every snippet is empty")
        question = text(specs["question"])
        response = text(specs["response"])

        model = obj.get("model")
        if isinstance(model, dict):  # a generations file (§2) carries {"name", "adapter", ...}
            model = model.get("name")
        if model is not None and not isinstance(model, str):
            bad("model", f"expected a string, got {type_name(model)}")
            model = None
        default_source = DEFAULT_AUGMENT_TAG if role == AUGMENT and task.spec.tag is None else task.spec.default_source
        source, msg = row_source(obj, self.fields.source, task.spec.tag, default_source)
        if msg:
            bad(self.fields.source, msg)

        group = None
        if self.group_by is not None:
            group, msg = row_group(obj, self.group_by)
            if msg:
                bad(self.group_by, msg)
        elif obj.get("group") is not None:
            group, msg = check_key(obj["group"])
            if msg:
                bad("group", msg)
        qid = obj.get("question_id")
        if qid is not None:
            qid, msg = check_key(qid)
            if msg:
                bad("question_id", msg)

        verdict = None
        waits = self.judged and row_id is not None and not any(obj.get(f) is not None for f in LABEL_FIELDS)
        if not waits:
            verdict, label_problem = _label(obj, self.count_relevance)
            if label_problem is not None:
                bad(*label_problem)
        corrected = obj.get("corrected_response")
        if corrected is not None and not isinstance(corrected, str):
            bad("corrected_response", f"expected a string or null, got {type_name(corrected)}")
        if problems:
            return None, problems, False
        mapped = {s.column for s in specs.values() if "." not in s.column}
        extra = {k: v for k, v in obj.items() if k not in _OWN_FIELDS and k not in mapped and not k.startswith("_")}
        row = {
            "id": row_id,
            "source": source,
            "model": model,
            "group": group if group is not None else qid if qid is not None else question,
            "question_key": qid if qid is not None else question,
            "context": context,
            "question": question,
            "response": response,
            "verdict": None,
            "corrected": corrected,
            "role": role,
            "extra": extra,
        }
        if verdict is not None:
            row["verdict"] = _with_correction(verdict, corrected).to_dict()
        return row, [], waits


def _label(label_row: dict[str, Any], count_relevance: bool) -> tuple[Verdict | None, tuple[str, str] | None]:
    """``(verdict, None)`` from a row's label, or ``(None, (field, message))`` when it has none or a bad one."""
    try:
        return label_verdict(label_row, count_relevance), None
    except ValueError as e:
        problem = getattr(e, "problem", None)
        if problem is None:
            raise
        return None, (problem.field, problem.message)


def _with_correction(verdict: Verdict, corrected: str | None) -> Verdict:
    if corrected is not None and verdict.corrected_response is None and corrected.strip():
        return replace(verdict, corrected_response=corrected)
    return verdict


def _clean(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if obj is None else {k: v for k, v in obj.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------- the judgements


def _read_judgements(paths: tuple[str, ...], work: Path, n_parts: int) -> list[str]:
    """Write ``mixft judge`` outputs (docs/formats.md §6) to partitions by id; return their file
    names. Every problem in them stops the command (they are our own outputs)."""
    from mixtral_ft.data.buckets import Partitions

    problems = ProblemCollector()
    displays = []
    with Partitions(work, n_parts, prefix="judgement") as parts:
        for file_idx, path in enumerate(paths):
            spec = parse_input(path, "jsonl")
            displays.append(spec.display)
            for raw in iter_rows(spec):
                if raw.obj is None:
                    assert raw.problem is not None  # a RawRow without obj carries its problem
                    problems.add(raw.problem)
                    continue
                key, msg = check_id(raw.obj.get("id"))
                if msg:
                    problems.add(Problem(spec.display, raw.line, "id", msg))
                    continue
                id_b = orjson.dumps(key)
                record = orjson.dumps(
                    [file_idx, raw.line, raw.obj.get("verdict"), raw.obj.get("parse_error") or raw.obj.get("error")]
                )
                parts.add_lines(partition_of(id_b, parts.n_parts), [b"%s\t%s\n" % (id_b, record)])
    problems.raise_if_any()
    return displays


# ---------------------------------------------------------------------------- pass 2: join and duplicate ids


@dataclass
class _Joined:
    dropped: dict[bytes, str]  # place -> why the row is left out (duplicate id)
    late_rejects: list[tuple[int, int, dict[str, Any]]]  # (input, line, rejected.jsonl record)
    n_main: int  # main rows that will be split
    n_augment: int
    judgements_unused: int


def _join_pass(
    read: ReadPass, rules: TcRules, opts: PrepareTcOptions, judgement_files: list[str], n_parts: int
) -> _Joined:
    """Per id partition: verdicts for rows waiting for a judgement, then duplicate ids."""
    work = read.work
    joined = _Joined({}, [], 0, 0, 0)
    judge_problems = ProblemCollector(opts.max_problems)
    row_problems: list[tuple[int, int, Problem]] = []
    with KeyedBuckets(work, rules.n_buckets, prefix="join-bucket") as late:
        for i in range(n_parts):
            judged = _judgements_of_partition(work, i, judgement_files, judge_problems)
            used: set[bytes] = set()
            ids: dict[bytes, list[bytes]] = defaultdict(list)
            for prefix in read.partition_prefixes("id"):
                for id_b, place in read_partition(work, i, prefix):
                    ids[id_b].append(place)
            for prefix in read.partition_prefixes("pending"):
                for id_b, record in read_partition(work, i, prefix):
                    place, row_json, obj_json = record.split(b"\t", 2)
                    row = orjson.loads(row_json)
                    t, ln = _task_line(place)
                    display, abs_line = read.where(t, ln)
                    judgement = judged.get(id_b)
                    if judgement is not None:
                        used.add(id_b)
                    problems = _give_judgement(row, judgement, opts.count_relevance, display, abs_line)
                    if problems:
                        f_idx = read.input_of(t)
                        row_problems.extend((f_idx, abs_line, p) for p in problems)
                        joined.late_rejects.append(
                            (
                                f_idx,
                                abs_line,
                                {
                                    "file": display,
                                    "line": abs_line,
                                    "problems": [str(p) for p in problems],
                                    "row": orjson.loads(obj_json),
                                },
                            )
                        )
                        continue
                    bucket, line_b = rules.bucket_line(row, place)
                    late.add_lines(bucket, [line_b])
                    ids[id_b].append(place)
            joined.judgements_unused += sum(1 for k in judged if k not in used)
            for id_b, places in ids.items():
                located = sorted(
                    (read.input_of(t), read.where(t, ln)[1], p) for p in places for t, ln in [_task_line(p)]
                )
                for _f, _ln, place in located[:1]:
                    joined.n_main += place.endswith(b" m")
                    joined.n_augment += place.endswith(b" a")
                if len(located) < 2:
                    continue
                f0, l0, _ = located[0]
                first = f"{read.inputs[f0].display}:{l0}"
                for f, ln, place in located[1:]:
                    message = f"duplicate id '{orjson.loads(id_b)}' (first at {first})"
                    row_problems.append((f, ln, Problem(read.inputs[f].display, ln, opts.fields.id, message)))
                    joined.dropped[place] = str(Problem(read.inputs[f].display, ln, opts.fields.id, message))
    judge_problems.raise_if_any()  # contradicting judgements: not the rows' fault, never skipped
    row_problems.sort(key=lambda x: (x[0], x[1]))
    read.collector.extend(p for _, _, p in row_problems)
    if read.collector and not opts.skip_invalid:
        err = read.collector.error()
        raise InputError(err.problems + [_SKIP_HINT], total=read.collector.total + 1, cap=opts.max_problems + 1)
    return joined


def _give_judgement(
    row: dict[str, Any],
    judgement: tuple[str, int, Any, str | None] | None,
    count_relevance: bool,
    display: str,
    line: int,
) -> list[Problem]:
    """Set the verdict of a row that waited for ``--judgements``; the problems when it cannot get one."""
    if judgement is None:
        _, no_label = _label({}, count_relevance)  # no judgement either: "no label"
        assert no_label is not None  # an empty row never has a label
        return [Problem(display, line, *no_label)]
    jfile, jline, verdict, error = judgement
    if verdict is None:
        return [
            Problem(
                display,
                line,
                "verdict",
                f"the judgement at {jfile}:{jline} has no parsed verdict ({error or 'parse failed'}); "
                "re-judge it or drop the row",
            )
        ]
    v, label_problem = _label({"verdict": verdict}, count_relevance)
    if label_problem is not None:
        return [Problem(display, line, *label_problem)]
    assert v is not None  # _label gives a verdict or a problem
    row["verdict"] = _with_correction(v, row["corrected"]).to_dict()
    return []


def _judgements_of_partition(
    work: Path, i: int, files: list[str], problems: ProblemCollector
) -> dict[bytes, tuple[str, int, Any, str | None]]:
    """``id → (file, line, verdict, error)`` of one partition; contradicting verdicts are problems."""
    out: dict[bytes, tuple[str, int, Any, str | None]] = {}
    canon: dict[bytes, bytes] = {}
    for id_b, record in read_partition(work, i, "judgement"):
        file_idx, line, verdict, error = orjson.loads(record)
        same = orjson.dumps(verdict, option=orjson.OPT_SORT_KEYS)
        if id_b in out:
            if canon[id_b] != same:
                prev = out[id_b]
                problems.add(
                    Problem(
                        files[file_idx],
                        line,
                        "id",
                        f"'{orjson.loads(id_b)}' was judged differently at {prev[0]}:{prev[1]}",
                    )
                )
            continue
        out[id_b] = (files[file_idx], line, verdict, error)
        canon[id_b] = same
    return out


def _task_line(place: bytes) -> tuple[int, int]:
    t, ln, _n, _role = place.split(b" ")
    return int(t), int(ln)


# ---------------------------------------------------------------------------- passes 3 and 4: in key order


def _groups(read: ReadPass, n_buckets: int, keep: bool):
    """``(members, places)`` per group in key order: each member ``(place, row JSON)``."""
    prefixes = read.bucket_prefixes() + ["join-bucket"]
    for _key, lines in iter_groups(iter_sorted_bucket_lines(read.work, n_buckets, prefixes, keep=keep)):
        members = []
        for line in lines:
            head, payload = line.split(b"\t", 1)
            members.append((head[33:], payload))  # after b"<key:16><tie:16> "
        yield members


def _cap_threshold(
    read: ReadPass, joined: _Joined, opts: PrepareTcOptions, test_size: TestSize, n_buckets: int
) -> bytes | None:
    """The largest ``<aug key:016x><id JSON>`` kept by ``--augment-cap`` (None: keep them all).

    The cap keeps the augmentation rows that reach train with the smallest seeded keys
    ``split_key("aug" + id)``: a choice that does not depend on input order. One sweep writes
    those keys to buckets of their own and counts them; only the bucket the cap falls in is sorted.
    """
    if opts.augment_cap is None:
        return None
    assigner = SplitAssigner(test_size, joined.n_main)
    counts = [0] * n_buckets
    shift = bucket_shift(n_buckets)
    with KeyedBuckets(read.work, n_buckets, prefix="aug") as aug:
        for members in _groups(read, n_buckets, keep=True):
            kept = [(p, r) for p, r in members if p not in joined.dropped]
            n_main = sum(p.endswith(b" m") for p, _ in kept)
            if n_main and assigner.assign(n_main) == "test":
                continue
            for place, payload in kept:
                if place.endswith(b" a"):
                    row_id = orjson.loads(payload)["id"]
                    key = split_key("aug\x1f" + row_id, opts.seed)
                    b = key >> shift
                    counts[b] += 1
                    aug.add_lines(b, [b"%016x%s\n" % (key, orjson.dumps(row_id))])
    if sum(counts) <= opts.augment_cap:
        return None
    before = 0
    for b, n in enumerate(counts):
        if before + n >= opts.augment_cap:
            if opts.augment_cap == 0:
                return b""  # keep none
            lines = sorted((read.work / f"aug-{b:05d}").read_bytes().split(b"\n")[:-1])
            return lines[opts.augment_cap - before - 1]
        before += n
    return None  # pragma: no cover - sum(counts) > cap makes the loop return


@dataclass
class _Tallies:
    """What the summary counts while rows are written (bounded by sources, models, groups per side)."""

    by_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: Counter = field(default_factory=Counter)  # side -> groups with a row there
    hallucinated: Counter = field(default_factory=Counter)  # side -> rows
    mistakes: int = 0
    relevance_mistakes: int = 0
    corrected: int = 0
    filled: int = 0
    dropped_test_group: int = 0
    dropped_cap: int = 0

    def add(self, row: dict[str, Any], verdict: Verdict, side: str, hallucinated: bool) -> None:
        for table, key in ((self.by_source, row["source"]), (self.by_model, row["model"])):
            t = table.setdefault(key or "(none)", {"rows": 0, "train": 0, "test": 0, "hallucinated": 0, "mistakes": 0})
            t["rows"] += 1
            t[side] += 1
            t["hallucinated"] += hallucinated
            t["mistakes"] += len(verdict.groundedness.mistakes)
        self.hallucinated[side] += hallucinated
        self.mistakes += len(verdict.groundedness.mistakes)
        self.relevance_mistakes += verdict.relevance.mistake
        self.corrected += verdict.corrected_response is not None


def _write_pass(
    read: ReadPass,
    joined: _Joined,
    opts: PrepareTcOptions,
    test_size: TestSize,
    n_buckets: int,
    threshold: bytes | None,
    template: str,
    out: SplitWriter,
    lengths: LengthReport,
) -> _Tallies:
    assigner = SplitAssigner(test_size, joined.n_main)
    tallies = _Tallies()
    for members in _groups(read, n_buckets, keep=False):
        rows = []
        for place, payload in members:
            row = orjson.loads(payload)
            if place in joined.dropped:
                t, ln = _task_line(place)
                display, line = read.where(t, ln)
                joined.late_rejects.append(
                    (
                        read.input_of(t),
                        line,
                        {"file": display, "line": line, "problems": [joined.dropped[place]], "row": _public(row)},
                    )
                )
                continue
            rows.append(row)
        n_main = sum(r["role"] == MAIN for r in rows)
        group_side = assigner.assign(n_main) if n_main else "train"
        kept = []
        for r in rows:
            if r["role"] == MAIN:
                r["side"] = group_side
            elif group_side == "test":
                tallies.dropped_test_group += 1
                continue
            elif (
                threshold is not None
                and b"%016x%s" % (split_key("aug\x1f" + r["id"], opts.seed), orjson.dumps(r["id"])) > threshold
            ):
                tallies.dropped_cap += 1
                continue
            else:
                r["side"] = "train"
            r["verdict"] = verdict_from_dict(r["verdict"])
            kept.append(r)
        if opts.corrections == "from-clean":
            tallies.filled += _fill_corrections(kept, opts.count_relevance)
        for side in {r["side"] for r in kept}:
            tallies.groups[side] += 1
        for r in kept:
            row = output_row(r, template, opts.count_relevance)
            out.write(r["side"], json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode())
            lengths.add_text(r["side"], r["id"], row["prompt"], row["completion"])
            tallies.add(r, r["verdict"], r["side"], row["hallucinated"])
    return tallies


def _fill_corrections(rows: list[dict[str, Any]], count_relevance: bool) -> int:
    """``--corrections from-clean`` within one group: a hallucinated row without a correction
    takes a clean response to the same question (main sources first, then by id). Returns how many."""
    clean: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if not is_hallucinated(r["verdict"], count_relevance):
            clean[r["question_key"]].append(r)
    filled = 0
    for r in rows:
        if not is_hallucinated(r["verdict"], count_relevance) or r["verdict"].corrected_response is not None:
            continue
        options = sorted(
            (c for c in clean.get(r["question_key"], []) if c["response"] != r["response"]),
            key=lambda c: (c["role"] != MAIN, c["id"]),
        )
        if options:
            r["verdict"] = replace(r["verdict"], corrected_response=options[0]["response"])
            filled += 1
    return filled


def output_row(r: dict[str, Any], template: str, count_relevance: bool) -> dict[str, Any]:
    """The §4 row: the TC fields, prompt and completion, then the input's extra fields."""
    verdict: Verdict = r["verdict"]
    row = {
        "id": r["id"],
        "source": r["source"],
        "model": r["model"],
        "group": r["group"],
        "context": r["context"],
        "question": r["question"],
        "response": r["response"],
        "verdict": verdict.to_dict(),
        "hallucinated": is_hallucinated(verdict, count_relevance),
        "prompt": render_tc_prompt(r["context"], r["question"], r["response"], template=template),
        "completion": verdict_to_text(verdict),
    }
    row.update((k, v) for k, v in r["extra"].items() if k not in row)
    return row


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A checked row as rejected.jsonl shows it: the TC fields and the extra ones."""
    out = {k: row[k] for k in ("id", "source", "model", "group", "context", "question", "response", "verdict")}
    out.update((k, v) for k, v in row["extra"].items() if k not in out)
    return out


# ---------------------------------------------------------------------------- the whole command


def _check_options(opts: PrepareTcOptions) -> None:
    from mixtral_ft.errors import suggest

    if not opts.inputs:
        raise UsageError("give at least one INPUT file")
    if opts.format is not None and opts.format not in INPUT_FORMATS:
        raise UsageError(suggest(opts.format, INPUT_FORMATS, "input format"))
    if opts.format == RAGTRUTH_FORMAT and opts.fields != TcFields():
        raise UsageError("--format ragtruth reads RAGTruth's own fields; drop the --*-field options")
    if opts.corrections not in CORRECTIONS:
        raise UsageError(suggest(opts.corrections, CORRECTIONS, "--corrections mode"))
    if opts.augment_cap is not None and opts.augment_cap < 0:
        raise UsageError(f"--augment-cap {opts.augment_cap}: must be 0 or more")
    if opts.augment_cap is not None and not opts.augment:
        raise UsageError("--augment-cap needs at least one --augment FILE")
    if opts.sequence_len <= 0:
        raise UsageError(f"--sequence-len {opts.sequence_len}: must be positive")


def prepare_tc(opts: PrepareTcOptions) -> PrepareTcResult:
    """Run the whole ``prepare tc`` pipeline; raise ``MixftError`` on bad input, write nothing then."""
    from mixtral_ft.data.manifest import build_manifest, file_entry, output_entries, save
    from mixtral_ft.util.atomic import check_output_dir, guard_destination, staged_dir

    _check_options(opts)
    test_size = parse_test_size(opts.test_size)
    guard_destination(opts.out, _input_paths(opts))
    check_output_dir(opts.out, opts.force)
    template = load_template(opts.template)
    lengths = LengthReport(opts.sequence_len, opts.tokenizer)  # loads the tokenizer: fails early
    ragtruth = opts.format == RAGTRUTH_FORMAT
    fmt = "jsonl" if ragtruth else opts.format
    specs = [parse_input(a, fmt) for a in opts.inputs] + [parse_input(a, fmt) for a in opts.augment]
    roles = (MAIN,) * len(opts.inputs) + (AUGMENT,) * len(opts.augment)
    est = estimate_size(specs)
    n_buckets = bucket_count(est * 2, opts.bucket_bytes)  # rows grow by their verdicts
    n_parts = max(1, n_buckets // 8)
    rules = TcRules(
        opts.fields,
        opts.group_by,
        opts.seed,
        opts.count_relevance,
        roles,
        ragtruth,
        bool(opts.judgements),
        n_buckets,
        opts.skip_invalid,
        n_parts,
    )

    # peak space: work files plus the output, each about the size of the input and its verdicts
    with staged_dir(opts.out, force=opts.force, inputs=_input_paths(opts), needed=2 * est) as stage:
        work = stage / ".work"
        work.mkdir()
        judgement_files = _read_judgements(opts.judgements, work, n_parts)
        read = read_inputs(rules, specs, work, choose_workers(opts.workers, est), opts.max_problems)
        joined = _join_pass(read, rules, opts, judgement_files, n_parts)
        if joined.n_main == 0:
            raise InputError(
                [
                    Problem(
                        ", ".join(s.display for s, r in zip(specs, roles) if r == MAIN),
                        None,
                        None,
                        "no valid rows in the main inputs",
                    )
                ]
            )
        threshold = _cap_threshold(read, joined, opts, test_size, n_buckets)
        with SplitWriter(stage) as out:
            tallies = _write_pass(read, joined, opts, test_size, n_buckets, threshold, template, out, lengths)
            hashes = out.close()
            rows = dict(out.rows)
        if not rows["train"]:
            raise UsageError(f"--test-size {opts.test_size} leaves no training rows ({joined.n_main} valid main rows)")
        n_rejected = _write_rejected(stage / REJECTED, read, joined)
        shutil.rmtree(work)

        summary = _summary(rows, tallies, joined, opts, n_rejected)
        summary["lengths"] = lengths.to_json()
        (stage / SUMMARY).write_text(
            json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        inputs = [
            file_entry(s.path, role=r, tag=s.tag, format=RAGTRUTH_FORMAT if ragtruth else s.format)
            for s, r in zip(specs, roles)
        ]
        inputs += [file_entry(parse_input(p, "jsonl").path, role="judgements") for p in opts.judgements]
        manifest = build_manifest(
            "prepare tc",
            _options_json(opts),
            inputs,
            output_entries(
                stage, {TRAIN: rows["train"], TEST: rows["test"], REJECTED: n_rejected, SUMMARY: None}, hashes
            ),
            {
                "train": rows["train"],
                "test": rows["test"],
                "rejected": n_rejected,
                "hallucinated": summary["hallucinated"],
                "mistakes": summary["mistakes"],
            },
            seed=opts.seed,
            verdict_version=VERDICT_VERSION,
            prompt_template=str(opts.template) if opts.template else "configs/prompts/tc_v1.txt",
            prompt_sha256=template_sha256(template),
        )
        save(stage, manifest)
    return PrepareTcResult(Path(opts.out), summary)


def _input_paths(opts: PrepareTcOptions) -> list[str | os.PathLike | None]:
    """Every file the command reads, which its ``--out`` may not replace."""
    paths: list[str | os.PathLike | None] = [
        parse_input(a, "jsonl").path for a in [*opts.inputs, *opts.augment, *opts.judgements]
    ]
    return paths + [opts.template, opts.tokenizer]


def _write_rejected(path: Path, read: ReadPass, joined: _Joined) -> int:
    """rejected.jsonl in input and line order: the read pass's, then the join's and the
    duplicates', merged."""
    late = sorted(joined.late_rejects, key=lambda x: (x[0], x[1]))
    n = 0
    with open(path, "wb") as fh:
        for _f, _line, rec in heapq.merge(read.iter_rejected(), late, key=lambda x: (x[0], x[1])):
            fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
            n += 1
    return n


def _share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _summary(
    rows: dict[str, int], t: _Tallies, joined: _Joined, opts: PrepareTcOptions, n_rejected: int
) -> dict[str, Any]:
    kept = rows["train"] + rows["test"]
    hallu = sum(t.hallucinated.values())
    for table in (t.by_source, t.by_model):
        for entry in table.values():
            entry["hallucinated_share"] = _share(entry["hallucinated"], entry["rows"])
    return {
        "rows": kept,
        "train": rows["train"],
        "test": rows["test"],
        "hallucinated": hallu,
        "hallucinated_share": _share(hallu, kept),
        "mistakes": t.mistakes,
        "relevance_mistakes": t.relevance_mistakes,
        "groups": {side: t.groups[side] for side in ("train", "test")},
        "by_source": dict(sorted(t.by_source.items())),
        "by_model": dict(sorted(t.by_model.items())),
        "by_split": {
            side: {
                "rows": rows[side],
                "hallucinated": t.hallucinated[side],
                "hallucinated_share": _share(t.hallucinated[side], rows[side]),
            }
            for side in ("train", "test")
        },
        "invalid_rows": n_rejected,
        "augment": {
            "rows_read": joined.n_augment,
            "dropped_test_group": t.dropped_test_group,
            "dropped_cap": t.dropped_cap,
            "cap": opts.augment_cap,
        },
        "corrections_from_clean": t.filled,
        "corrected_responses": t.corrected,
        "judgements_unused": joined.judgements_unused,
    }


def _options_json(opts: PrepareTcOptions) -> dict[str, Any]:
    out = {}
    for k, v in opts.__dict__.items():
        if k == "bucket_bytes":
            continue
        out[k] = (
            str(v)
            if isinstance(v, Path)
            else list(v)
            if isinstance(v, tuple)
            else vars(v)
            if isinstance(v, TcFields)
            else v
        )
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The table ``prepare tc`` prints: counts and hallucinated share per source and per model."""
    from mixtral_ft.util.fmt import pct

    lines = [
        f"rows {summary['rows']} (train {summary['train']}, test {summary['test']}; "
        f"groups train {summary['groups']['train']}, test {summary['groups']['test']})",
        f"hallucinated {summary['hallucinated']} ({pct(summary['hallucinated_share'])}), "
        f"groundedness mistakes {summary['mistakes']}, relevance mistakes {summary['relevance_mistakes']}",
    ]
    for title, table in (("source", summary["by_source"]), ("model", summary["by_model"])):
        width = max([len(title)] + [len(k) for k in table])
        lines.append("")
        lines.append(f"{title:<{width}}  {'rows':>6} {'train':>6} {'test':>6} {'halluc.':>8} {'share':>7}")
        for name, t in table.items():
            lines.append(
                f"{name:<{width}}  {t['rows']:>6} {t['train']:>6} {t['test']:>6} {t['hallucinated']:>8} "
                f"{pct(t['hallucinated_share']):>7}"
            )
    aug = summary["augment"]
    if aug["rows_read"]:
        lines.append("")
        lines.append(
            f"augment: {aug['rows_read']} read, {aug['dropped_test_group']} dropped (group in test), "
            f"{aug['dropped_cap']} dropped (cap {aug['cap']})"
        )
    extra = []
    if not summary["test"]:
        extra.append("warning: the test split is empty (few groups for --test-size); use a larger fraction or a count")
    if summary["invalid_rows"]:
        extra.append(f"rejected {summary['invalid_rows']} invalid row(s) (rejected.jsonl)")
    if summary["corrections_from_clean"]:
        extra.append(f"corrected_response from a clean response: {summary['corrections_from_clean']}")
    if summary["judgements_unused"]:
        extra.append(f"judgements not matching any row: {summary['judgements_unused']}")
    extra.extend(format_lengths(summary["lengths"]))
    return "\n".join(lines + [""] + extra)
