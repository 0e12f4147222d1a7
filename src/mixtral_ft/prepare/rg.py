"""The rules of ``mixft prepare rg``: raw grounded Q&A -> Axolotl ``context_qa.load_v2`` rows
(``{"id", "source", "group", "context", "question", "answer"}``): the fields, the groups, the duplicate
check and the rows written (:class:`RgTask`), and how the read pass keys each row (:class:`RgRows`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson

from mixtral_ft.data.lengths import format_lengths
from mixtral_ft.data.manifest import MANIFEST_NAME
from mixtral_ft.data.normalize import DEFAULT_SNIPPET_SEPARATOR, content_key, join_snippets
from mixtral_ft.data.prompts import CONTEXT_QA_V2, context_qa_v2_prompt, context_qa_v2_response
from mixtral_ft.prepare.buckets import Keyed, Layout, Place, find_duplicates, partition_of
from mixtral_ft.prepare.fields import FieldSpec, RowCheck, resolve_fields
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import Finished, Report, file_entries
from mixtral_ft.prepare.readers import InputSpec, decode_item
from mixtral_ft.prepare.readpass import ChunkResult, ReadPass, ReadTask
from mixtral_ft.prepare.split import TestSize, split_key
from mixtral_ft.prepare.summary import PrepareResult, Tally
from mixtral_ft.prepare.writepass import TEST, TRAIN, Checked, OutRow

FIELDS = (
    FieldSpec("question", "question", "--question-field"),
    FieldSpec("context", "context", "--context-field"),
    FieldSpec("answer", "answer", "--answer-field"),
    FieldSpec("id", "id", "--id-field", required=False),
    FieldSpec("source", "source", "--source-field", required=False),  # "" = never read a source from the rows
)
# len(context_qa_v2_prompt(c, q)) + len(context_qa_v2_response(a)) - len(c + q + a)
_TEMPLATE_CHARS = len(context_qa_v2_prompt("", "")) + len(context_qa_v2_response(""))


@dataclass(frozen=True)
class RgTask:
    """``prepare rg``: its own settings, and its rules for the pipeline (``pipeline.Task``).

    - *fields*: ``question``, ``context`` (a string or a list of snippets, joined by
      ``--context-separator``, optionally numbered) and ``answer``; ``id`` optional (else
      ``rg-`` + the content key); a null field is a value of the wrong type;
    - *groups*: the ``--group-by`` value, else the row's own content (each row its own group);
    - *check*: exact duplicates (same question + context + answer) are removed, keeping the
      smallest record hash so the choice does not depend on input order; every row sharing an id
      with another is a problem (with ``--skip-invalid`` all of them are rejected);
    - *write*: each row as it was keyed (its bucket payload); lengths as Axolotl builds the prompt
      ``Context: ...\\nQuestion: ...\\n`` and the response ``Answer: ...``.
    """

    context_separator: str = DEFAULT_SNIPPET_SEPARATOR
    number_snippets: bool = False

    name: ClassVar[str] = "rg"
    fields: ClassVar[tuple[FieldSpec, ...]] = FIELDS
    default_test_size: ClassVar[TestSize] = TestSize(fraction=0.125)  # the reference split: 2,400 -> 2,100 / 300
    default_sequence_len: ClassVar[int] = 4096
    rows_grow: ClassVar[int] = 1
    always_rejected: ClassVar[bool] = False

    def check(self, opts: PrepareOptions) -> None:
        resolve_fields(FIELDS, opts.fields)

    def inputs(self, opts: PrepareOptions) -> list[InputSpec]:
        return list(opts.inputs)

    def other_paths(self, opts: PrepareOptions) -> list:
        return []

    def begin(self, opts: PrepareOptions, work: Path, layout: Layout) -> RgRows:
        return RgRows(
            resolve_fields(FIELDS, opts.fields),
            opts.group_by,
            opts.seed,
            self.context_separator,
            self.number_snippets,
            layout,
            opts.skip_invalid,
        )

    def check_pass(self, read: ReadPass, opts: PrepareOptions, layout: Layout) -> Checked:
        """Exact duplicates, then duplicate ids among the rows kept."""
        dropped = _exact_duplicates(read, layout)
        checked = Checked(0, left_out=dict.fromkeys(dropped))  # counted, not listed
        id_label = resolve_fields(FIELDS, opts.fields)["id"].label
        for key, places in find_duplicates(read.work, layout.n_parts, read.partition_prefixes("id")):
            kept = set(places) - dropped
            if len(kept) < 2:
                continue
            row_id = orjson.loads(key)
            located = sorted((read.locate(Place.parse(p)), p) for p in kept)
            first = located[0][0]
            for where, _place in located[1:]:
                checked.problems.append(
                    where.problem(id_label, f"duplicate id '{row_id}' (also at {first.file}:{first.line})")
                )
            for where, place in located:  # which one is right is unknowable: all are left out
                checked.left_out[place] = f"{where.file}:{where.line}: {id_label}: duplicate id '{row_id}'"
        invalid = read.counts["invalid"] + len(checked.left_out) - len(dropped)
        checked.counts = {"invalid": invalid, "duplicates": len(dropped)}
        checked.n_split = read.counts["read"] - invalid - len(dropped)
        return checked

    def writer(self, read: ReadPass, checked: Checked, opts: PrepareOptions, layout: Layout, needs_text: bool):
        return _RgWriter(needs_text)

    def tally(self) -> Tally:
        return Tally(("source",))

    def rejected_row(self, payload: bytes) -> Any:
        return orjson.loads(payload)

    def dumps(self, record: Any) -> bytes:
        return orjson.dumps(record)

    def finish(self, run: Finished) -> Report:
        opts, read, written = run.opts, run.read, run.written
        counts = {
            "read": read.counts["read"],
            "invalid": run.checked.counts["invalid"],
            "duplicates": run.checked.counts["duplicates"],
            "train": written.rows["train"],
            "test": written.rows["test"],
        }
        if opts.skip_invalid:
            counts["rejected"] = counts["invalid"]
        written_by_source = written.tally.table("source")
        per_source = {}
        for src in sorted(set(read.read_by_source) | set(written_by_source)):
            sides = written_by_source.get(src, {"train": 0, "test": 0})
            per_source[src] = {"read": read.read_by_source.get(src, 0), "train": sides["train"], "test": sides["test"]}
        split = {
            "seed": opts.seed,
            "test_size": opts.split_size.to_json(),
            "group_by": opts.group_by,
            "achieved_test_rows": counts["test"],
            "method": "sha256(seed, group) key; test = the key-ordered prefix of whole groups closest to the target",
        }
        fmt = {"axolotl_type": CONTEXT_QA_V2, "fields": ["id", "source", "group", "context", "question", "answer"]}
        inputs = file_entries(
            opts.inputs,
            run.input_hashes,
            lambda i, s: {"rows": read.rows_per_input[i], "format": s.format, "source_tag": s.tag},
        )
        return Report(
            self.settings(opts),
            inputs,
            counts,
            summary={"per_source": per_source},
            extra={"per_source": per_source, "split": split, "format": fmt, "lengths": run.lengths},
        )

    def settings(self, opts: PrepareOptions) -> dict[str, Any]:
        """The manifest's ``settings``: every option that decides the output."""
        return {
            "inputs": [{"path": s.display, "format": s.format, "tag": s.tag} for s in opts.inputs],
            "out": str(opts.out),
            "fields": {name: spec.column for name, spec in resolve_fields(FIELDS, opts.fields).items()},
            "group_by": opts.group_by,
            "test_size": opts.split_size.to_json(),
            "seed": opts.seed,
            "skip_invalid": opts.skip_invalid,
            "context_separator": self.context_separator,
            "number_snippets": self.number_snippets,
            "tokenizer": str(opts.tokenizer) if opts.tokenizer else None,
            "sequence_len": opts.sequence_len,
        }


@dataclass(frozen=True)
class RgRows:
    """How the read pass turns raw RG rows into bucket and partition lines (picklable, for workers).

    A bucket line is a ``Keyed`` row: its group's split key, its record hash (the tie-break, and
    which of exact duplicates is kept), its place, ``meta`` = ``<chars> <source JSON>`` (its
    prompt + response length and its source, for the tallies without decoding it) and the
    output row. Partition ``content`` holds ``<content key>\\t<record hash> <place>``, ``id``
    holds ``<id JSON>\\t<place>``.
    """

    fields: dict[str, FieldSpec]
    group_by: str | None
    seed: int
    separator: str
    numbered: bool
    layout: Layout
    skip_invalid: bool
    partition_names: tuple[str, ...] = ("content", "id")

    def process_chunk(self, task: ReadTask, kind: str, items: list[tuple[int, Any]]) -> ChunkResult:
        """Check, normalize and key every row of one chunk (pure: safe in a worker process)."""
        res = ChunkResult(task.index)
        display = task.spec.display
        for line, item in items:
            res.n_read += 1
            decoded = decode_item(display, kind, line, item)
            if decoded.obj is None:
                assert decoded.problem is not None  # a RawRow without obj carries its problem
                res.sources[task.spec.default_source] += 1
                res.reject(display, line, [decoded.problem], None, decoded.raw)
                continue
            self._row(res, task, line, decoded.obj)
        return res

    def _row(self, res: ChunkResult, task: ReadTask, line: int, obj: dict[str, Any]) -> None:
        f = self.fields
        check = RowCheck(obj, task.spec.display, line)
        texts = check.texts((f["question"], f["context"], f["answer"]), snippets="context")
        row_id = check.id(f["id"])
        group = check.group(self.group_by) if self.group_by else None
        source = check.source(f["source"].column, task.spec.tag, task.spec.default_source)
        res.sources[source] += 1
        if check.problems:
            res.reject(task.spec.display, line, check.problems, obj)
            return
        question, answer, context = texts["question"], texts["answer"], texts["context"]
        if isinstance(context, list):
            context = join_snippets(context, self.separator, self.numbered, normalized=True)
        ckey = content_key(question, context, answer)
        if row_id is None:
            row_id = "rg-" + ckey[:16]
        dumps = orjson.dumps
        payload = dumps(
            {"id": row_id, "source": source, "group": group, "context": context, "question": question, "answer": answer}
        )
        # tie-break / representative key: the whole record, hashed from its small parts
        rep = hashlib.sha256(dumps((ckey, row_id, source, group))).hexdigest()[:16].encode()
        # a row without problems has a group exactly when --group-by is given
        key = split_key(("g:" + group) if group is not None else ("c:" + ckey), self.seed)
        chars = len(context) + len(question) + len(answer) + _TEMPLATE_CHARS
        place = Place.at(task.index, line)
        meta = b"%d %s" % (chars, dumps(source))
        res.bucket_line(self.layout.bucket_of(key), Keyed.line(key, rep, place, meta, payload))
        ckey_b = ckey.encode()
        n_parts = self.layout.n_parts
        res.partition_line("content", partition_of(ckey_b, n_parts), b"%s\t%s %s\n" % (ckey_b, rep, place))
        id_b = dumps(row_id)
        res.partition_line("id", partition_of(id_b, n_parts), b"%s\t%s\n" % (id_b, place))


def _exact_duplicates(read: ReadPass, layout: Layout) -> set[bytes]:
    """Places of the exact duplicates to drop: of each set, all but the smallest record hash
    (the choice does not depend on input order)."""
    dropped: set[bytes] = set()
    for _key, records in find_duplicates(read.work, layout.n_parts, read.partition_prefixes("content")):
        ranked = sorted((rep, Place.parse(place), place) for rep, place in (r.split(b" ", 1) for r in records))
        dropped.update(place for _rep, _where, place in ranked[1:])
    return dropped


class _RgWriter:
    """RG rows are written as they were keyed; their source and length come from ``meta``."""

    def __init__(self, needs_text: bool):
        self.needs_text = needs_text
        self._sources: dict[bytes, str] = {}

    def split_rows(self, members: list[Keyed]) -> int:
        return len(members)

    def rows(self, members: list[Keyed], side: str) -> list[OutRow]:
        out = []
        sources = self._sources
        for m in members:
            n_chars, source_json = m.meta.split(b" ", 1)
            source = sources.get(source_json)
            if source is None:
                source = sources[source_json] = orjson.loads(source_json)
            if self.needs_text:
                row = orjson.loads(m.payload)
                prompt = context_qa_v2_prompt(row["context"], row["question"])
                response = context_qa_v2_response(row["answer"])
                out.append(OutRow(m.payload, (source,), (), row["id"], prompt, response, int(n_chars)))
            else:
                out.append(OutRow(m.payload, (source,), (), None, None, None, int(n_chars)))
        return out


# ---------------------------------------------------------------- what the CLI prints
def _n(x: int) -> str:
    return f"{x:,}"


def format_summary(result: PrepareResult) -> str:
    """The end-of-run summary: counts, per-source split, lengths, where the files are, next step."""
    c, out, ts = result.counts, result.out, result.test_size
    rule = f"{ts.count}" if ts.count is not None else f"fraction {ts.fraction}"
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
    for src, sc in result.summary["per_source"].items():
        lines.append(f"  source      {src}: {_n(sc['read'])} read, {_n(sc['train'])} train, {_n(sc['test'])} test")
    lines.extend("  " + line for line in format_lengths(result.lengths))
    lines.append(f"  manifest    {out / MANIFEST_NAME}")
    lines.append("")
    lines.append(f"Next: mixft train rg --data {out} --profile PROFILE")
    return "\n".join(lines)
