"""The rules of ``mixft prepare tc``: labeled responses -> truth-checker rows (docs/truth-checker.md):
the TC fields, ``verdict``, ``hallucinated``, ``prompt`` (configs/prompts/tc_v1.txt) and ``completion``
(the verdict text), then the input's other fields. The inputs, fields, labels, groups, checks and
writes: :class:`TcTask`; the read pass's keys: :class:`TcRows`; the check pass's join: ``_Join``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import orjson

from mixtral_ft.choices import Corrections, TcInputFormat, values
from mixtral_ft.data.lengths import format_lengths
from mixtral_ft.errors import Problem, UsageError, suggest
from mixtral_ft.prepare.buckets import Keyed, KeyedBuckets, Layout, Place, partition_of, read_partition
from mixtral_ft.prepare.fields import FieldSpec, ProblemCollector, RowCheck, resolve_fields
from mixtral_ft.prepare.judgements import Judgement, judgements_of_partition, read_judgements
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import Finished, Report, file_entries
from mixtral_ft.prepare.readers import InputSpec, decode_item, parse_input, type_name
from mixtral_ft.prepare.readpass import ChunkResult, ReadPass, ReadTask, Rejected, RowProblem
from mixtral_ft.prepare.split import SplitAssigner, TestSize, split_key
from mixtral_ft.prepare.summary import PrepareResult, Tally, share
from mixtral_ft.prepare.writepass import Checked, OutRow, read_groups
from mixtral_ft.tc.labels import LABEL_FIELDS, LabelError, label_verdict
from mixtral_ft.tc.prompt import load_template, render_tc_prompt, template_sha256
from mixtral_ft.tc.ragtruth import Expanded, expand_ragtruth
from mixtral_ft.tc.verdict import VERDICT_VERSION, Verdict, is_hallucinated, verdict_from_dict, verdict_to_text
from mixtral_ft.util.fmt import pct

RAGTRUTH_FORMAT = TcInputFormat.ragtruth.value
INPUT_FORMATS = values(TcInputFormat)
CORRECTIONS = values(Corrections)
DEFAULT_SEQUENCE_LEN = 8192
DEFAULT_AUGMENT_TAG = "augment"
MAIN, AUGMENT = "main", "augment"
_ROLE_BYTES = {MAIN: b"m", AUGMENT: b"a"}
SUMMARY = "summary.json"
JOIN_BUCKETS = "join-bucket"  # rows that got their verdict from a judgement
FIELDS = (
    FieldSpec("question", "question", "--question-field"),
    FieldSpec("context", "context", "--context-field"),
    FieldSpec("response", "response", "--response-field"),
    FieldSpec("id", "id", "--id-field"),
    FieldSpec("source", "source", "--source-field", required=False),  # "" = never read a source from the rows
)
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
_COUNTS = ("hallucinated", "mistakes", "relevance_mistakes", "corrected")  # per output row, in the tally


def parse_inputs(args: list[str] | tuple[str, ...], format: str | None = None) -> list[InputSpec]:
    """``[TAG=]PATH`` arguments read as ``format`` (None: by extension; RAGTruth files are JSONL)."""
    if format is not None and format not in INPUT_FORMATS:
        raise UsageError(suggest(format, INPUT_FORMATS, "input format"))
    return [parse_input(a, "jsonl" if format == RAGTRUTH_FORMAT else format) for a in args]


class TcTask:
    """``prepare tc``: its own settings, and its rules for the pipeline (``pipeline.Task``).

    ``format`` is the ``--format`` given (None: by extension); ``ragtruth`` expands RAGTruth QA
    lines. The prompt template is loaded here, so a bad one fails before any work.

    - *inputs*: the main inputs (``--format ragtruth`` expands each RAGTruth QA line into its
      responses) and the ``--augment`` files (training only);
    - *fields*: ``context`` (a string or a list of snippets, kept as a list), ``question``,
      ``response`` and ``id`` are required, a null counts as missing (``mixft generate`` writes a
      null response for a row it could not generate);
    - *labels* (``tc.labels``): a verdict object, RAGTruth spans or ``hallucinated``; with
      ``--judgements`` a row without one waits for the judgement of its id (``prepare.judgements``);
    - *groups*: ``--group-by``, else ``group``, else ``question_id``, else the question;
    - *check*: judgements joined, duplicate ids (the first in input and line order is kept);
    - *write*: a group's main rows follow the split; its augmentation rows go to train, or are
      dropped when it is in test or beyond ``--augment-cap`` (a seeded choice);
      ``--corrections from-clean`` fills ``corrected_response`` from a clean response to the same
      question; then ``summary.json``.
    """

    name: ClassVar[str] = "tc"
    fields: ClassVar[tuple[FieldSpec, ...]] = FIELDS
    default_test_size: ClassVar[TestSize] = TestSize(fraction=0.1)
    default_sequence_len: ClassVar[int] = DEFAULT_SEQUENCE_LEN
    rows_grow: ClassVar[int] = 2  # rows grow by their verdicts
    always_rejected: ClassVar[bool] = True

    def __init__(
        self,
        format: str | None = None,
        augment: tuple[InputSpec, ...] = (),
        augment_cap: int | None = None,
        judgements: tuple[InputSpec, ...] = (),
        corrections: str = "input",
        count_relevance: bool = False,
        template: Path | None = None,
    ):
        self.format = format
        self.augment = tuple(augment)
        self.augment_cap = augment_cap
        self.judgements = tuple(judgements)
        self.corrections = corrections
        self.count_relevance = count_relevance
        self.template_path = template
        self.template = load_template(template)

    @property
    def ragtruth(self) -> bool:
        return self.format == RAGTRUTH_FORMAT

    def check(self, opts: PrepareOptions) -> None:
        if self.format is not None and self.format not in INPUT_FORMATS:
            raise UsageError(suggest(self.format, INPUT_FORMATS, "input format"))
        fields = resolve_fields(FIELDS, opts.fields)
        if self.ragtruth and any(fields[s.name].column != s.column for s in FIELDS):
            raise UsageError("--format ragtruth reads RAGTruth's own fields; drop the --*-field options")
        if self.corrections not in CORRECTIONS:
            raise UsageError(suggest(self.corrections, CORRECTIONS, "--corrections mode"))
        if self.augment_cap is not None and self.augment_cap < 0:
            raise UsageError(f"--augment-cap {self.augment_cap}: must be 0 or more")
        if self.augment_cap is not None and not self.augment:
            raise UsageError("--augment-cap needs at least one --augment FILE")

    def inputs(self, opts: PrepareOptions) -> list[InputSpec]:
        return [*opts.inputs, *self.augment]

    def other_paths(self, opts: PrepareOptions) -> list:
        return [*(s.path for s in self.judgements), self.template_path]

    def begin(self, opts: PrepareOptions, work: Path, layout: Layout) -> TcRows:
        """Read the judgements into partitions by id (a problem in them stops the run at once),
        then the read pass's rules."""
        read_judgements(self.judgements, work, layout.n_parts)
        return self._rows(opts, layout)

    def _rows(self, opts: PrepareOptions, layout: Layout) -> TcRows:
        roles = (MAIN,) * len(opts.inputs) + (AUGMENT,) * len(self.augment)
        return TcRows(
            resolve_fields(FIELDS, opts.fields),
            opts.group_by,
            opts.seed,
            self.count_relevance,
            roles,
            self.ragtruth,
            bool(self.judgements),
            layout,
            opts.skip_invalid,
        )

    def check_pass(self, read: ReadPass, opts: PrepareOptions, layout: Layout) -> Checked:
        """Rows waiting for ``--judgements`` get theirs; of rows sharing an id the first is kept."""
        join = _Join(read, self._rows(opts, layout), [s.display for s in self.judgements], opts.max_problems)
        with KeyedBuckets(read.work, layout.n_buckets, prefix=JOIN_BUCKETS) as joined:
            for i in range(layout.n_parts):
                join.partition(i, joined)
        join.judge_problems.raise_if_any()  # contradicting judgements: not the rows' fault, never skipped
        return join.checked

    def writer(self, read: ReadPass, checked: Checked, opts: PrepareOptions, layout: Layout, needs_text: bool):
        threshold = None if self.augment_cap is None else _cap_threshold(read, checked, opts, layout, self.augment_cap)
        return TcWriter(self, opts.seed, threshold)

    def tally(self) -> Tally:
        return Tally(("source", "model"), _COUNTS)

    def rejected_row(self, payload: bytes) -> Any:
        """A checked row as rejected.jsonl shows it: the TC fields and the extra ones."""
        row = orjson.loads(payload)
        out = {k: row[k] for k in ("id", "source", "model", "group", "context", "question", "response", "verdict")}
        out.update((k, v) for k, v in row["extra"].items() if k not in out)
        return out

    def dumps(self, record: Any) -> bytes:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()

    def finish(self, run: Finished) -> Report:
        """``summary.json`` and the manifest's parts."""
        summary = _summary(run, self.augment_cap)
        (run.stage / SUMMARY).write_text(
            json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        rows = run.written.rows
        counts = {
            "train": rows["train"],
            "test": rows["test"],
            "rejected": run.n_rejected,
            "hallucinated": summary["hallucinated"],
            "mistakes": summary["mistakes"],
        }
        roles = [MAIN] * len(run.opts.inputs) + [AUGMENT] * len(self.augment)
        fmt = RAGTRUTH_FORMAT if self.ragtruth else None
        inputs = file_entries(
            self.inputs(run.opts),
            run.input_hashes,
            lambda i, s: {"role": roles[i], "tag": s.tag, "format": fmt or s.format},
        )
        inputs += file_entries(self.judgements, {}, lambda i, s: {"role": "judgements"})
        extra = {
            "seed": run.opts.seed,
            "verdict_version": VERDICT_VERSION,
            "prompt_template": str(self.template_path) if self.template_path else "configs/prompts/tc_v1.txt",
            "prompt_sha256": template_sha256(self.template),
        }
        return Report(self.settings(run.opts), inputs, counts, summary, {SUMMARY: None}, extra)

    def settings(self, opts: PrepareOptions) -> dict[str, Any]:
        """The manifest's ``settings``: every option, as given."""
        return {
            "inputs": [s.arg for s in opts.inputs],
            "out": str(opts.out),
            "format": self.format,
            "augment": [s.arg for s in self.augment],
            "augment_cap": self.augment_cap,
            "judgements": [s.arg for s in self.judgements],
            "corrections": self.corrections,
            "group_by": opts.group_by,
            "test_size": opts.split_size.text,
            "seed": opts.seed,
            "count_relevance": self.count_relevance,
            "skip_invalid": opts.skip_invalid,
            "force": opts.force,
            "tokenizer": str(opts.tokenizer) if opts.tokenizer is not None else None,
            "sequence_len": opts.sequence_len,
            "template": str(self.template_path) if self.template_path else None,
            "max_problems": opts.max_problems,
            "fields": {name: spec.column for name, spec in resolve_fields(FIELDS, opts.fields).items()},
            "workers": opts.workers,
        }


# ---------------------------------------------------------------------------- the read pass


@dataclass(frozen=True)
class TcRows:
    """How the read pass turns TC rows into bucket and partition lines (picklable, for workers).

    A bucket line is a ``Keyed`` row: its group's split key, the hash of its row JSON (the
    tie-break), its place (``n``: which response of a RAGTruth line), ``meta`` ``m`` (main) or
    ``a`` (augmentation), and the row JSON (``verdict`` a dict). An ``id`` partition line is
    ``<id JSON>\\t<place>``; a ``pending`` one (a row waiting for a judgement)
    ``<id JSON>\\t<place>\\t<row JSON>\\t<input row JSON>``.
    """

    fields: dict[str, FieldSpec]
    group_by: str | None
    seed: int
    count_relevance: bool
    roles: tuple[str, ...]  # per input
    ragtruth: bool
    judged: bool  # --judgements given: a row without a label waits for one
    layout: Layout
    skip_invalid: bool
    partition_names: tuple[str, ...] = ("id", "pending")

    def process_chunk(self, task: ReadTask, kind: str, items: list[tuple[int, Any]]) -> ChunkResult:
        res = ChunkResult(task.index)
        display = task.spec.display
        role = self.roles[task.file_idx]
        for line, item in items:
            decoded = decode_item(display, kind, line, item)
            if decoded.obj is None:
                assert decoded.problem is not None  # a RawRow without obj carries its problem
                res.n_read += 1
                res.reject(display, line, [decoded.problem], None, decoded.raw)
                continue
            expanded = expand_ragtruth(decoded.obj, display, line) if self.ragtruth else [Expanded(decoded.obj, [])]
            for n, (obj, problems) in enumerate(expanded):
                res.n_read += 1
                if obj is None:  # a RAGTruth line that did not expand
                    res.reject(display, line, problems, decoded.obj)
                    continue
                self._row(res, task, line, n, obj, role)
        return res

    def _row(self, res: ChunkResult, task: ReadTask, line: int, n: int, obj: dict[str, Any], role: str) -> None:
        """One row (``n``: which response of its line) to its bucket, or to wait for its judgement."""
        row, problems, waits = self.check_row(obj, task, line, role)
        if row is None:
            res.reject(task.spec.display, line, problems, _clean(obj))
            return
        place_b = Place.at(task.index, line, n)
        id_b = orjson.dumps(row["id"])
        part = partition_of(id_b, self.layout.n_parts)
        if waits:
            input_json = orjson.dumps(_clean(obj), default=str)
            res.partition_line("pending", part, b"%s\t%s\t%s\t%s\n" % (id_b, place_b, orjson.dumps(row), input_json))
            return
        res.bucket_line(*self.bucket_line(row, place_b))
        res.partition_line("id", part, b"%s\t%s\n" % (id_b, place_b))

    def bucket_line(self, row: dict[str, Any], place: bytes) -> tuple[int, bytes]:
        """The bucket and the line of a checked row (with its verdict)."""
        payload = orjson.dumps(row)
        # "tc:" keeps TC keys independent of prepare rg's ("g:..."): TC data drawn from RG's test
        # split would otherwise land entirely in the TC test split.
        key = split_key("tc:" + row["group"], self.seed)
        tie = hashlib.sha256(payload).hexdigest()[:16].encode()
        return self.layout.bucket_of(key), Keyed.line(key, tie, place, _ROLE_BYTES[row["role"]], payload)

    def check_row(
        self, obj: dict[str, Any], task: ReadTask, line: int, role: str
    ) -> tuple[dict[str, Any] | None, list[Problem], bool]:
        """``(row, problems, waits for a judgement)``; the row is JSON-ready, its ``verdict`` a dict."""
        f = self.fields
        check = RowCheck(obj, task.spec.display, line, null_is_missing=True, names=obj.get("_fields"))
        row_id = check.id(f["id"])
        texts = check.texts((f["context"], f["question"], f["response"]), snippets="context")
        model = _model(check, obj.get("model"))
        default_source = DEFAULT_AUGMENT_TAG if role == AUGMENT and task.spec.tag is None else task.spec.default_source
        source = check.source(f["source"].column, task.spec.tag, default_source)
        group = check.group(self.group_by) if self.group_by is not None else _key(check, obj, "group")
        qid = _key(check, obj, "question_id")
        waits = self.judged and row_id is not None and not any(obj.get(k) is not None for k in LABEL_FIELDS)
        verdict = None if waits else _label(check, obj, self.count_relevance)
        corrected = obj.get("corrected_response")
        if corrected is not None and not isinstance(corrected, str):
            check.bad("corrected_response", f"expected a string or null, got {type_name(corrected)}")
        if check.problems:
            return None, check.problems, False
        question = texts["question"]
        mapped = {s.column for s in (f["question"], f["context"], f["response"], f["id"]) if "." not in s.column}
        extra = {k: v for k, v in obj.items() if k not in _OWN_FIELDS and k not in mapped and not k.startswith("_")}
        row = {
            "id": row_id,
            "source": source,
            "model": model,
            "group": group if group is not None else qid if qid is not None else question,
            "question_key": qid if qid is not None else question,
            "context": texts["context"],
            "question": question,
            "response": texts["response"],
            "verdict": None,
            "corrected": corrected,
            "role": role,
            "extra": extra,
        }
        if verdict is not None:
            row["verdict"] = with_correction(verdict, corrected).to_dict()
        return row, [], waits


def _model(check: RowCheck, model: Any) -> str | None:
    """The row's model name (a generations file carries ``{"name", "adapter", ...}``)."""
    if isinstance(model, dict):
        model = model.get("name")
    if model is not None and not isinstance(model, str):
        check.bad("model", f"expected a string, got {type_name(model)}")
        return None
    return model


def _key(check: RowCheck, obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    return None if value is None else check.key(field, value)


def _label(check: RowCheck, obj: dict[str, Any], count_relevance: bool) -> Verdict | None:
    """The verdict of the row's label, or None with the problem noted."""
    try:
        return label_verdict(obj, count_relevance)
    except LabelError as e:
        check.bad(e.field, e.message)
        return None


def with_correction(verdict: Verdict, corrected: str | None) -> Verdict:
    """``verdict`` with the row's own ``corrected_response`` when the verdict has none."""
    if corrected is not None and verdict.corrected_response is None and corrected.strip():
        return replace(verdict, corrected_response=corrected)
    return verdict


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------- the check: judgements and ids


class _Join:
    """The check pass, one id partition at a time: rows waiting for a judgement get theirs (and
    go to buckets of their own), then duplicate ids (the first row, in input and line order, is
    kept). Judgement problems are gathered apart: they are never the rows' fault."""

    def __init__(self, read: ReadPass, rows: TcRows, judgement_files: list[str], max_problems: int):
        self.read, self.rows, self.judgement_files = read, rows, judgement_files
        self.checked = Checked(0, bucket_prefixes=[JOIN_BUCKETS], counts={"augment": 0, "judgements_unused": 0})
        self.judge_problems = ProblemCollector(max_problems)

    def partition(self, i: int, joined: KeyedBuckets) -> None:
        read = self.read
        judged = judgements_of_partition(read.work, i, self.judgement_files, self.judge_problems)
        used: set[bytes] = set()
        ids: dict[bytes, list[bytes]] = defaultdict(list)
        for prefix in read.partition_prefixes("id"):
            for id_b, place in read_partition(read.work, i, prefix):
                ids[id_b].append(place)
        for prefix in read.partition_prefixes("pending"):
            for id_b, record in read_partition(read.work, i, prefix):
                judgement = judged.get(id_b)
                if judgement is not None:
                    used.add(id_b)
                judged_place = self._judged_row(record, judgement, joined)
                if judged_place is not None:
                    ids[id_b].append(judged_place)
        self.checked.counts["judgements_unused"] += sum(1 for k in judged if k not in used)
        for id_b, places in ids.items():
            self._one_per_id(id_b, places)

    def _judged_row(self, record: bytes, judgement: Judgement | None, joined: KeyedBuckets) -> bytes | None:
        """A waiting row with its judgement's verdict, to ``joined``; its place, or None (rejected)."""
        place, row_json, obj_json = record.split(b"\t", 2)
        row = orjson.loads(row_json)
        where = self.read.locate(Place.parse(place))
        problems = _give_judgement(row, judgement, self.rows.count_relevance, where.file, where.line)
        if problems:
            self.checked.problems.extend(RowProblem(where.input, where.line, p) for p in problems)
            record_out = {"file": where.file, "line": where.line, "problems": [str(p) for p in problems]}
            self.checked.rejected.append(
                Rejected(where.input, where.line, {**record_out, "row": orjson.loads(obj_json)})
            )
            return None
        joined.add_lines(*_one(self.rows.bucket_line(row, place)))
        return place

    def _one_per_id(self, id_b: bytes, places: list[bytes]) -> None:
        """Count the row kept for this id; the others are problems, left out."""
        read, checked = self.read, self.checked
        located = sorted((read.locate(Place.parse(p)), p) for p in places)
        first = located[0][0]
        if self.rows.roles[first.input] == MAIN:
            checked.n_split += 1
        else:
            checked.counts["augment"] += 1
        id_label = self.rows.fields["id"].label
        for where, place in located[1:]:
            found = where.problem(id_label, f"duplicate id '{orjson.loads(id_b)}' (first at {first.file}:{first.line})")
            checked.problems.append(found)
            checked.left_out[place] = str(found.problem)


def _one(bucket_line: tuple[int, bytes]) -> tuple[int, list[bytes]]:
    bucket, line = bucket_line
    return bucket, [line]


def _give_judgement(
    row: dict[str, Any], judgement: Judgement | None, count_relevance: bool, display: str, line: int
) -> list[Problem]:
    """Set the verdict of a row that waited for ``--judgements``; the problems when it cannot get one."""
    check = RowCheck({}, display, line)
    if judgement is None:
        _label(check, {}, count_relevance)  # no judgement either: "no label"
        return check.problems
    if judgement.verdict is None:
        message = (
            f"the judgement at {judgement.where} has no parsed verdict ({judgement.error or 'parse failed'}); "
            "re-judge it or drop the row"
        )
        return [Problem(display, line, "verdict", message)]
    verdict = _label(check, {"verdict": judgement.verdict}, count_relevance)
    if verdict is None:
        return check.problems
    row["verdict"] = with_correction(verdict, row["corrected"]).to_dict()
    return []


# ---------------------------------------------------------------------------- the write pass


def _cap_threshold(read: ReadPass, checked: Checked, opts: PrepareOptions, layout: Layout, cap: int) -> bytes | None:
    """The largest ``<aug key:016x><id JSON>`` kept by ``--augment-cap`` (None: keep them all).

    The cap keeps the augmentation rows that reach train with the smallest seeded keys
    ``split_key("aug" + id)``: a choice that does not depend on input order. One sweep over the
    groups writes those keys to buckets of their own and counts them; only the bucket the cap
    falls in is sorted.
    """
    assigner = SplitAssigner(opts.split_size, checked.n_split)
    counts = [0] * layout.n_buckets
    with KeyedBuckets(read.work, layout.n_buckets, prefix="aug") as aug:
        for group in read_groups(read, layout, checked.bucket_prefixes, keep=True):
            kept = [m for m in group if m.place not in checked.left_out]
            n_main = sum(m.meta == b"m" for m in kept)
            if n_main and assigner.assign(n_main) == "test":
                continue
            for m in kept:
                if m.meta == b"a":
                    row_id = orjson.loads(m.payload)["id"]
                    key = split_key("aug\x1f" + row_id, opts.seed)
                    b = layout.bucket_of(key)
                    counts[b] += 1
                    aug.add_lines(b, [b"%016x%s\n" % (key, orjson.dumps(row_id))])
    if sum(counts) <= cap:
        return None
    before = 0
    for b, n in enumerate(counts):
        if before + n >= cap:
            if cap == 0:
                return b""  # keep none
            lines = sorted((read.work / f"aug-{b:05d}").read_bytes().split(b"\n")[:-1])
            return lines[cap - before - 1]
        before += n
    return None  # pragma: no cover - sum(counts) > cap makes the loop return


class TcWriter:
    """A group's rows: main rows on its side; augmentation rows to train, unless the group is in
    test or they are beyond the cap; ``--corrections from-clean``; then the output rows."""

    def __init__(self, task: TcTask, seed: int, threshold: bytes | None):
        self.task, self.seed, self.threshold = task, seed, threshold
        self.dropped_test_group = 0
        self.dropped_cap = 0
        self.filled = 0

    def split_rows(self, members: list[Keyed]) -> int:
        return sum(m.meta == b"m" for m in members)

    def rows(self, members: list[Keyed], side: str) -> list[OutRow]:
        kept = []
        for m in members:
            r = orjson.loads(m.payload)
            if r["role"] == AUGMENT and side == "test":
                self.dropped_test_group += 1
                continue
            if r["role"] == AUGMENT and self._over_cap(r["id"]):
                self.dropped_cap += 1
                continue
            r["verdict"] = verdict_from_dict(r["verdict"])
            kept.append(r)
        count_relevance = self.task.count_relevance
        if self.task.corrections == "from-clean":
            self.filled += _fill_corrections(kept, count_relevance)
        return [self._out(r, count_relevance) for r in kept]

    def _over_cap(self, row_id: str) -> bool:
        if self.threshold is None:
            return False
        return b"%016x%s" % (split_key("aug\x1f" + row_id, self.seed), orjson.dumps(row_id)) > self.threshold

    def _out(self, r: dict[str, Any], count_relevance: bool) -> OutRow:
        row = output_row(r, self.task.template, count_relevance)
        verdict: Verdict = r["verdict"]
        line = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
        keys = (r["source"] or "(none)", r["model"] or "(none)")
        counts = (
            int(row["hallucinated"]),
            len(verdict.groundedness.mistakes),
            int(verdict.relevance.mistake),
            int(verdict.corrected_response is not None),
        )
        prompt, completion = row["prompt"], row["completion"]
        return OutRow(line, keys, counts, r["id"], prompt, completion, len(prompt) + len(completion))


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


# ---------------------------------------------------------------------------- the summary


def _summary(run: Finished, augment_cap: int | None) -> dict[str, Any]:
    """What ``summary.json`` holds: counts and hallucinated shares per source, model and split."""
    rows, tally, writer = run.written.rows, run.written.tally, run.writer
    assert isinstance(writer, TcWriter)
    kept = rows["train"] + rows["test"]
    totals = tally.totals()
    tables = {}
    for name in ("source", "model"):
        table: dict[str, dict[str, Any]] = tally.table(name, ("hallucinated", "mistakes"))
        for entry in table.values():
            entry["hallucinated_share"] = share(entry["hallucinated"], entry["rows"])
        tables[name] = dict(sorted(table.items()))
    by_split = {}
    for side in ("train", "test"):
        hallucinated = tally.totals(side)["hallucinated"]
        by_split[side] = {
            "rows": rows[side],
            "hallucinated": hallucinated,
            "hallucinated_share": share(hallucinated, rows[side]),
        }
    return {
        "rows": kept,
        "train": rows["train"],
        "test": rows["test"],
        "hallucinated": totals["hallucinated"],
        "hallucinated_share": share(totals["hallucinated"], kept),
        "mistakes": totals["mistakes"],
        "relevance_mistakes": totals["relevance_mistakes"],
        "groups": {side: tally.groups[side] for side in ("train", "test")},
        "by_source": tables["source"],
        "by_model": tables["model"],
        "by_split": by_split,
        "invalid_rows": run.n_rejected,
        "augment": {
            "rows_read": run.checked.counts["augment"],
            "dropped_test_group": writer.dropped_test_group,
            "dropped_cap": writer.dropped_cap,
            "cap": augment_cap,
        },
        "corrections_from_clean": writer.filled,
        "corrected_responses": totals["corrected"],
        "judgements_unused": run.checked.counts["judgements_unused"],
        "lengths": run.lengths,
    }


def format_summary(result: PrepareResult) -> str:
    """The table ``prepare tc`` prints: counts and hallucinated share per source and per model."""
    summary = result.summary
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
    return "\n".join(lines + [""] + _notes(summary))


def _notes(summary: dict[str, Any]) -> list[str]:
    notes = []
    if not summary["test"]:
        notes.append("warning: the test split is empty (few groups for --test-size); use a larger fraction or a count")
    if summary["invalid_rows"]:
        notes.append(f"rejected {summary['invalid_rows']} invalid row(s) (rejected.jsonl)")
    if summary["corrections_from_clean"]:
        notes.append(f"corrected_response from a clean response: {summary['corrections_from_clean']}")
    if summary["judgements_unused"]:
        notes.append(f"judgements not matching any row: {summary['judgements_unused']}")
    notes.extend(format_lengths(summary["lengths"]))
    return notes
