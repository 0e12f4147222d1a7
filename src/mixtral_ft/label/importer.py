"""``mixft label import``: a Label Studio JSON export → gold verdicts (version 1, docs/formats.md §5).

:func:`read_export` checks every task and annotation against the sample and the labeling config (every
problem at once, nothing written) and counts what is not a label; :func:`resolve` turns each item's
annotations into one gold verdict by the ``--resolve`` rule; :func:`import_labels` writes the gold file,
the annotations file and the manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.infer.output import manifest_path_for
from mixtral_ft.label import config as C
from mixtral_ft.label.agreement import Span, Vote, pairwise
from mixtral_ft.label.sample import Sample, context_text, load_sample
from mixtral_ft.tc.verdict import MISTAKE_TYPES, Groundedness, Mistake, Relevance, Verdict
from mixtral_ft.util.atomic import atomic_write_bytes, guard_destination
from mixtral_ft.util.hashing import sha256_file
from mixtral_ft.util.jsonl import write_jsonl_atomic
from mixtral_ft.util.lock import output_lock
from mixtral_ft.util.manifest import Manifest, file_entry

RESOLVE_RULES = ("majority", "first", "strict")
# A sampled row's own label fields are not the human label: the gold row carries only the verdict.
DROPPED_FIELDS = ("verdict", "labels", "hallucinated", "parse_ok", "parse_error", "raw", "score", "judge", "annotation")


@dataclass(frozen=True)
class Annotation:
    """One submitted annotation of one item, as a verdict."""

    item_id: str
    task_id: int
    annotation_id: int
    annotator: str
    annotator_id: int | None
    created_at: str | None
    updated_at: str | None
    lead_time: float | None
    ground_truth: bool
    prediction_id: int | None
    verdict: Verdict
    spans: tuple[Span, ...]

    @property
    def decision(self) -> tuple[bool, bool]:
        return self.verdict.groundedness.mistake, self.verdict.relevance.mistake

    def vote(self) -> Vote:
        return Vote(self.annotator, *self.decision, self.spans)

    def record(self) -> dict[str, Any]:
        return {
            "annotator": self.annotator,
            "annotator_id": self.annotator_id,
            "task_id": self.task_id,
            "annotation_id": self.annotation_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "lead_time_s": self.lead_time,
            "ground_truth": self.ground_truth,
            "prediction_id": self.prediction_id,
        }

    def brief(self) -> dict[str, Any]:
        return {
            "annotator": self.annotator,
            "annotation_id": self.annotation_id,
            "task_id": self.task_id,
            "hallucinated": self.decision[0],
            "irrelevant": self.decision[1],
            "spans": len(self.spans),
        }


@dataclass
class ExportContents:
    """What an export holds for the sample: annotations by item (earliest first) and what is not a label."""

    annotations: dict[str, list[Annotation]] = field(default_factory=dict)
    tasks: int = 0
    cancelled: int = 0
    not_in_sample: list[dict[str, Any]] = field(default_factory=list)
    unlabeled: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    tasks_of_item: dict[str, list[int]] = field(default_factory=dict)


class _Where:
    """``FILE:task ID`` and the problems found there."""

    def __init__(self, name: str, task: Any, problems: list[Problem]):
        self.file = f"{name}:task {task}"
        self.problems = problems

    def add(self, field_: str | None, message: str) -> None:
        self.problems.append(Problem(self.file, None, field_, message))


def _annotator(completed_by: Any, users: dict[int, str]) -> tuple[str, int | None]:
    """(name, user id): the email when the export or the server says it, else ``user N``."""
    if isinstance(completed_by, dict):
        uid = completed_by.get("id") if isinstance(completed_by.get("id"), int) else None
        email = completed_by.get("email")
        return (email if isinstance(email, str) and email else f"user {uid}"), uid
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return users.get(completed_by, f"user {completed_by}"), completed_by
    return "unknown annotator", None


def _texts(value: dict[str, Any]) -> str | None:
    """A text box's value (``{"text": [...]}``), its entries joined by newlines; None when malformed."""
    text = value.get("text")
    if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
        return None
    return "\n".join(text)


def _span(value: dict[str, Any], response: str) -> tuple[int, int] | str:
    """``(start, end)`` of a region in the response, or what is wrong with it."""
    start, end = value.get("start"), value.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        return f"value.start/value.end: expected character offsets, got {start!r} and {end!r}"
    assert isinstance(start, int) and isinstance(end, int)
    if not 0 <= start < end <= len(response):
        return f"span {start}-{end} is outside the response ({len(response)} characters) or empty"
    return start, end


@dataclass
class _Results:
    """The parts of one annotation's results, gathered before the verdict is built."""

    regions: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # region id -> start, end, type
    explanations: dict[str, str] = field(default_factory=dict)  # region id -> text
    choices: dict[str, str] = field(default_factory=dict)  # control -> the one choice
    texts: dict[str, str] = field(default_factory=dict)  # control -> text


def _read_region(name: str, rid: Any, value: dict[str, Any], response: str, parts: _Results) -> str | None:
    """A mistake span (``labels``) or its explanation (the per-region text box)."""
    spot = _span(value, response)
    if isinstance(spot, str):
        return spot
    if not isinstance(rid, str) or not rid:
        return "id: a region needs an id"
    start, end = spot
    if name == C.MISTAKE_EXPLANATION:
        text = _texts(value)
        if text is None:
            return f"value.text {value.get('text')!r}: expected a list of strings"
        parts.explanations[rid] = text
        return None
    labels = value.get("labels")
    if not isinstance(labels, list) or len(labels) != 1 or labels[0] not in MISTAKE_TYPES:
        return f"value.labels {labels!r}: expected one of {', '.join(MISTAKE_TYPES)}"
    if "text" in value and value["text"] != response[start:end]:
        return (
            f"value.text {value['text']!r} is not the response's text at {start}-{end} "
            f"({response[start:end]!r}): the response was changed after it was labeled"
        )
    if rid in parts.regions:
        return f"id {rid!r}: two regions with the same id"
    parts.regions[rid] = (start, end, labels[0])
    return None


def _read_result(r: Any, response: str, parts: _Results) -> str | None:
    """Add one result to ``parts``; return what is wrong with it, or None."""
    if not isinstance(r, dict):
        return "expected an object"
    name, kind, value = r.get("from_name"), r.get("type"), r.get("value")
    if not isinstance(name, str) or name not in C.CONTROLS:
        return (
            f"from_name {name!r} is not a control of mixft's labeling config ({', '.join(C.CONTROLS)}): "
            "the project's labeling config does not match"
        )
    if kind != C.CONTROLS[name] or r.get("to_name") != C.RESPONSE:
        return f"type {kind!r} to_name {r.get('to_name')!r}: expected {C.CONTROLS[name]!r} on {C.RESPONSE!r}"
    if not isinstance(value, dict):
        return "value: expected an object"
    if name in (C.MISTAKES, C.MISTAKE_EXPLANATION):
        return _read_region(name, r.get("id"), value, response, parts)
    if kind == "choices":
        chosen = value.get("choices")
        if not isinstance(chosen, list) or len(chosen) != 1 or chosen[0] not in C.CHOICES[name]:
            return f"value.choices {chosen!r}: expected one of {', '.join(C.CHOICES[name])}"
        if name in parts.choices:
            return "given twice"
        parts.choices[name] = chosen[0]
        return None
    text = _texts(value)
    if text is None:
        return f"value.text {value.get('text')!r}: expected a list of strings"
    if name in parts.texts:
        return "given twice"
    parts.texts[name] = text
    return None


def _verdict(parts: _Results, response: str) -> tuple[Verdict, tuple[Span, ...]] | str:
    """The verdict an annotation's parts give, or what is wrong with them."""
    missing = [n for n in (C.GROUNDEDNESS, C.RELEVANCE) if n not in parts.choices]
    if missing:
        return f"no {' and no '.join(missing)} choice (the labeling config requires both)"
    orphans = sorted(set(parts.explanations) - set(parts.regions))
    if orphans:
        return f"explanation for region(s) {', '.join(orphans)} that carry no mistake label"
    hallucinated = parts.choices[C.GROUNDEDNESS] == C.HALLUCINATED
    if parts.regions and not hallucinated:
        return f"chose {C.CLEAN!r} but labeled {len(parts.regions)} mistake span(s)"
    ordered = sorted(parts.regions.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    mistakes = tuple(Mistake(response[s:e], t, parts.explanations.get(rid, "").strip()) for rid, (s, e, t) in ordered)
    spans = tuple(Span(s, e, t) for _, (s, e, t) in ordered)
    corrected = parts.texts.get(C.CORRECTED, "").strip() or None
    relevance = Relevance(
        parts.choices[C.RELEVANCE] == C.IRRELEVANT, parts.texts.get(C.RELEVANCE_EXPLANATION, "").strip()
    )
    return Verdict(relevance, Groundedness(hallucinated, mistakes), corrected), spans


def _annotation(
    a: Any, item_id: str, task_id: int, response: str, users: dict[int, str], where: _Where
) -> Annotation | None:
    if not isinstance(a, dict) or not isinstance(a.get("id"), int):
        where.add("annotation", "expected an object with an integer 'id'")
        return None
    annotator, uid = _annotator(a.get("completed_by"), users)
    label = f"annotation {a['id']} ({annotator})"
    results = a.get("result")
    if not isinstance(results, list):
        where.add(label, "result: expected a list")
        return None
    parts, ok = _Results(), True
    for k, r in enumerate(results):
        wrong = _read_result(r, response, parts)
        if wrong:
            name = r.get("from_name") if isinstance(r, dict) else None
            where.add(f"{label}: result {k}" + (f" ({name})" if isinstance(name, str) else ""), wrong)
            ok = False
    if not ok:
        return None
    built = _verdict(parts, response)
    if isinstance(built, str):
        where.add(label, built)
        return None
    lead = a.get("lead_time")
    prediction = a.get("parent_prediction")
    return Annotation(
        item_id,
        task_id,
        a["id"],
        annotator,
        uid,
        a.get("created_at") if isinstance(a.get("created_at"), str) else None,
        a.get("updated_at") if isinstance(a.get("updated_at"), str) else None,
        float(lead) if isinstance(lead, int | float) and not isinstance(lead, bool) else None,
        a.get("ground_truth") is True,
        prediction if isinstance(prediction, int) else None,
        *built,
    )


def _check_data(data: Any, sample: Sample, where: _Where) -> str | None:
    """The task's item id when its data is the sample's item; None (and a problem) otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get(C.ITEM_ID), str):
        where.add(
            f"data.{C.ITEM_ID}", "missing: not a task of `mixft label export` (the labeling config does not match)"
        )
        return None
    item_id = data[C.ITEM_ID]
    row = sample.rows.get(item_id)
    if row is None:
        return item_id
    expected = {C.CONTEXT: context_text(row["context"]), C.QUESTION: row["question"], C.RESPONSE: row["response"]}
    for key, value in expected.items():
        if data.get(key) != value:
            where.add(
                f"data.{key}",
                f"differs from the sample's {key} of item {item_id!r}: the task was not exported from this "
                "sample, or its data was edited in Label Studio",
            )
            return None
    return item_id


def _read_task(
    task: Any,
    index: int,
    name: str,
    sample: Sample,
    users: dict[int, str],
    out: ExportContents,
    problems: list[Problem],
) -> None:
    tid = task.get("id") if isinstance(task, dict) else None
    where = _Where(name, tid if isinstance(tid, int) else f"#{index + 1}", problems)
    if not isinstance(task, dict) or not isinstance(tid, int):
        where.add(None, "expected a task object with an integer 'id' (Label Studio's JSON export)")
        return
    before = len(problems)
    item_id = _check_data(task.get("data"), sample, where)
    annotations = task.get("annotations")
    if not isinstance(annotations, list):
        where.add("annotations", "expected a list (export in Label Studio's JSON format, not JSON-MIN or CSV)")
    if item_id is None or len(problems) > before:
        return
    if item_id not in sample.rows:
        out.not_in_sample.append({"task": tid, "item_id": item_id})
        return
    out.tasks_of_item.setdefault(item_id, []).append(tid)
    assert isinstance(annotations, list)
    cancelled = [a for a in annotations if isinstance(a, dict) and a.get("was_cancelled") is True]
    out.cancelled += len(cancelled)
    submitted = [a for a in annotations if not (isinstance(a, dict) and a.get("was_cancelled") is True)]
    if not annotations:
        drafts = task.get("drafts")
        out.unlabeled.append(
            {"task": tid, "item_id": item_id, "drafts": len(drafts) if isinstance(drafts, list) else 0}
        )
    elif not submitted:
        who = sorted({_annotator(a.get("completed_by"), users)[0] for a in cancelled})
        out.skipped.append({"task": tid, "item_id": item_id, "skipped_by": who})
    response = sample.rows[item_id]["response"]
    for a in submitted:
        parsed = _annotation(a, item_id, tid, response, users, where)
        if parsed is not None:
            out.annotations.setdefault(item_id, []).append(parsed)


def read_export(data: bytes, name: str, sample: Sample, users: dict[int, str] | None = None) -> ExportContents:
    """Parse and check a Label Studio JSON export against ``sample``; every problem is one ``InputError``.

    The export is Label Studio's "JSON" format: a list of tasks, each with its ``data`` (what
    ``label export`` wrote) and its ``annotations``, each with ``result`` (one entry per region,
    choice or text box), ``completed_by``, ``created_at`` and ``was_cancelled``. Every task must be
    one of the sample's items, with the sample's context, question and response; every result must
    be a control of mixft's labeling config with a value of the right shape; every span must lie
    inside the response and, when the export carries its text, match it. Anything else is reported
    as ``FILE:task ID: annotation N (ANNOTATOR): result K (CONTROL): what is wrong``, all at once, and
    nothing is written.

    What is not a label is counted and listed, never silently dropped: tasks whose item is not in
    the sample, tasks with no annotation (and whether they hold unsubmitted drafts), tasks whose
    annotations were all skipped (cancelled), sampled items with no task in the export.
    """
    try:
        tasks = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError([Problem(name, None, None, "not valid UTF-8")]) from None
    except json.JSONDecodeError as e:
        raise InputError(
            [Problem(name, None, None, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")]
        ) from None
    if not isinstance(tasks, list):
        raise InputError(
            [
                Problem(
                    name,
                    None,
                    None,
                    f"expected Label Studio's JSON export (a list of tasks), got a JSON {type(tasks).__name__}",
                )
            ]
        )
    out = ExportContents(tasks=len(tasks))
    problems: list[Problem] = []
    for i, task in enumerate(tasks):
        _read_task(task, i, name, sample, users or {}, out, problems)
    if problems:
        raise InputError(problems)
    for anns in out.annotations.values():
        anns.sort(key=lambda a: (a.created_at or "", a.annotation_id))
    return out


def votes(annotations: list[Annotation]) -> list[Annotation]:
    """One vote per annotator: their earliest annotation (``annotations`` are earliest first)."""
    seen: dict[str, Annotation] = {}
    for a in annotations:
        seen.setdefault(a.annotator, a)
    return list(seen.values())


def resolve(annotations: list[Annotation], rule: str) -> tuple[Annotation | None, str]:
    """(the gold annotation or None when the item is left out, how it was decided).

    An annotation gives a verdict: groundedness.mistake from the hallucinated/clean choice, each
    labeled span a mistake (its text read from the response at the span's offsets, its type the
    label, its explanation the span's text box), relevance.mistake from the relevance choice with
    its explanation, and the corrected response (null when empty). Each annotator has one vote per
    item, their earliest annotation of it (later ones are kept in the annotations file, not voted).
    When an item has votes from several annotators, ``--resolve`` decides its gold verdict from the
    decisions (hallucinated or not, relevant or not):

    - ``majority``: the decision most annotators made, through the earliest annotation that made
      it; a tie leaves the item out (listed);
    - ``first``: the earliest annotation;
    - ``strict``: only items where all annotators made the same decisions; the others are left out
      and listed.

    The gold verdict is always one annotation, whole (its spans, explanations and correction), never
    a mix of several. Each gold row records that annotation (``annotation``: annotator, task id,
    annotation id, time) beside the verdict.
    """
    ballot = votes(annotations)
    decisions = Counter(a.decision for a in ballot)
    if len(ballot) == 1:
        return ballot[0], "single"
    if len(decisions) == 1:
        return ballot[0], "agreed"
    if rule == "first":
        return ballot[0], "first"
    if rule == "strict":
        return None, "disagreement (strict)"
    (top, count), (_, runner_up) = decisions.most_common(2)
    if count == runner_up:
        return None, "tie (majority)"
    return next(a for a in ballot if a.decision == top), "majority"


@dataclass(frozen=True)
class ImportConfig:
    sample: Path
    out: Path
    export: Path | None = None  # a Label Studio JSON export file; None with ``server``
    resolve: str = "majority"
    force: bool = False
    server: Any = None  # a ``label.server.ServerExport`` pulled from a running Label Studio


@dataclass
class ImportResult:
    out: Path
    annotations_path: Path
    manifest_path: Path
    summary: dict[str, Any]


def sibling(out: Path, suffix: str) -> Path:
    """``gold.jsonl`` -> ``gold.<suffix>``: the files written beside the gold file."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.{suffix}")


def gold_row(row: dict[str, Any], chosen: Annotation, how: str, ballot: int) -> dict[str, Any]:
    """The sampled row with its human verdict and the annotation it comes from."""
    kept = {k: v for k, v in row.items() if k not in DROPPED_FIELDS}
    return {
        **kept,
        "verdict": chosen.verdict.to_dict(),
        "annotation": {**chosen.record(), "resolved": how, "votes": ballot},
    }


def _disagreement(item_id: str, ballot: list[Annotation], chosen: Annotation | None, how: str) -> dict[str, Any]:
    fields = [f for i, f in enumerate(("hallucinated", "irrelevant")) if len({a.decision[i] for a in ballot}) > 1]
    gold = f"kept annotation {chosen.annotation_id} ({chosen.annotator}): {how}" if chosen else f"left out: {how}"
    return {"id": item_id, "fields": fields, "annotations": [a.brief() for a in ballot], "gold": gold}


def build_gold(contents: ExportContents, sample: Sample, rule: str) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(gold rows in sample order, every annotation as a row, the summary)."""
    if rule not in RESOLVE_RULES:
        raise UsageError(f"--resolve {rule!r}: one of {', '.join(RESOLVE_RULES)}")
    gold, every, disagreements, left_out = [], [], [], []
    how_counts: Counter = Counter()
    for item_id, row in sample.rows.items():
        anns = contents.annotations.get(item_id, [])
        if not anns:
            continue
        chosen, how = resolve(anns, rule)
        ballot = votes(anns)
        how_counts[how] += 1
        if len({a.decision for a in ballot}) > 1:
            disagreements.append(_disagreement(item_id, ballot, chosen, how))
        if chosen is None:
            left_out.append({"id": item_id, "why": how})
        else:
            gold.append(gold_row(row, chosen, how, len(ballot)))
        for a in anns:
            in_ballot = a in ballot
            every.append(
                {
                    "id": item_id,
                    "verdict": a.verdict.to_dict(),
                    "annotation": a.record(),
                    "vote": in_ballot,
                    "gold": a is chosen,
                }
            )
    labeled = {i for i, anns in contents.annotations.items() if anns}
    missing = [i for i in sample.rows if i not in contents.tasks_of_item]
    summary = {
        "sample_items": len(sample.rows),
        "tasks": contents.tasks,
        "annotations": len(every),
        "annotations_cancelled": contents.cancelled,
        "items_labeled": len(labeled),
        "items_with_several_annotators": sum(len(votes(contents.annotations[i])) > 1 for i in labeled),
        "gold": len(gold),
        "gold_hallucinated": sum(r["verdict"]["groundedness"]["mistake"] for r in gold),
        "resolved": dict(sorted(how_counts.items())),
        "left_out": left_out,
        "disagreements": disagreements,
        "agreement": pairwise({i: [a.vote() for a in votes(contents.annotations[i])] for i in labeled}),
        "tasks_not_in_sample": contents.not_in_sample,
        "tasks_unlabeled": contents.unlabeled,
        "tasks_skipped": contents.skipped,
        "items_in_several_tasks": {i: t for i, t in contents.tasks_of_item.items() if len(t) > 1},
        "sample_items_not_in_export": missing,
    }
    return gold, every, summary


def import_labels(cfg: ImportConfig) -> ImportResult:
    """Read, check and resolve the export, then write the gold file, the annotations file and the manifest."""
    sample = load_sample(cfg.sample)
    if cfg.server is not None:
        data, name, users = cfg.server.data, f"{cfg.server.where} (export)", cfg.server.users
    else:
        assert cfg.export is not None
        if not cfg.export.is_file():
            raise UsageError(f"{cfg.export}: export file not found")
        data, name, users = cfg.export.read_bytes(), str(cfg.export), {}
    contents = read_export(data, name, sample, users)
    gold, every, summary = build_gold(contents, sample, cfg.resolve)
    out = cfg.out
    annotations_path, manifest_path = sibling(out, "annotations.jsonl"), manifest_path_for(out)
    raw_path = sibling(out, "label-studio-export.json") if cfg.server is not None else cfg.export
    guard_destination(out, [sample.path, cfg.export], option="--out")
    with output_lock(out, "gold file"):
        if not cfg.force:
            clash = [p for p in (out, annotations_path, manifest_path) if p.exists()]
            if cfg.server is not None and raw_path is not None and raw_path.exists():
                clash.append(raw_path)
            if clash:
                raise UsageError(f"{clash[0]}: already exists; use --force to replace it")
        assert raw_path is not None
        if cfg.server is not None:
            atomic_write_bytes(raw_path, data)
        write_jsonl_atomic(annotations_path, every)
        write_jsonl_atomic(out, gold)
        manifest = Manifest(
            kind="label-import",
            settings={"resolve": cfg.resolve},
            inputs=[
                file_entry(raw_path, role="label-studio-export", sha256=sha256_file(raw_path)),
                file_entry(
                    sample.path, rows=len(sample.rows), sha256=sample.sha256, role="sample", sample=sample.provenance
                ),
            ],
            outputs={p.name: file_entry(p, rows=r) for p, r in ((out, len(gold)), (annotations_path, len(every)))},
            summary=summary,
            extra={"label_studio": cfg.server.identity() if cfg.server is not None else None},
        )
        manifest.write(manifest_path)
    return ImportResult(out, annotations_path, manifest_path, summary)


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.1f}%)" if n else f"{k}/{n}"


def _kappa_text(fig: dict[str, Any]) -> str:
    kappa = fig["kappa"]
    if kappa["value"] is None:
        return f"kappa {kappa['note']}"
    ci = kappa["ci"]
    return f"kappa {kappa['value']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def _pair_text(pair: dict[str, Any]) -> list[str]:
    a, b = pair["annotators"]
    lines = [f"  {a} and {b}, {pair['items']} shared item(s):"]
    for key in ("hallucinated", "irrelevant"):
        fig = pair[key]
        agree = fig["agreement"]
        lines.append(f"    {key}: agree on {_pct(agree['numerator'], agree['denominator'])}, {_kappa_text(fig)}")
    m = pair["mistakes"]
    if m["char_iou"] is None:
        lines.append(f"    mistake spans: {m.get('note', 'none')}")
    else:
        f1 = "n/a" if m["span_f1"] is None else f"{m['span_f1']:.2f}"
        same = "n/a" if m["type_agreement"] is None else f"{m['type_agreement']:.2f}"
        lines.append(
            f"    mistake spans ({m['items_with_spans']} item(s) with spans, {m['spans'][0]} and {m['spans'][1]} spans): "
            f"character overlap (IoU) {m['char_iou']:.2f}, same type {same}, span F1 {f1}"
        )
    return lines


def format_import_summary(s: dict[str, Any], out: Path) -> str:
    """The summary ``label import`` prints: counts, agreement, disagreements, what is not a label."""
    lines = [
        f"{s['gold']} gold verdict(s) -> {out} ({s['gold_hallucinated']} hallucinated, "
        f"{s['gold'] - s['gold_hallucinated']} clean), from {s['annotations']} annotation(s) of "
        f"{s['items_labeled']} of {s['sample_items']} sampled item(s)",
        f"resolved: {', '.join(f'{k} {v}' for k, v in s['resolved'].items()) or 'nothing'}; "
        f"{s['items_with_several_annotators']} item(s) labeled by several annotators",
    ]
    if s["agreement"]:
        lines.append("agreement:")
        for pair in s["agreement"]:
            lines.extend(_pair_text(pair))
    if s["disagreements"]:
        lines.append(f"disagreements ({len(s['disagreements'])}):")
        for d in s["disagreements"]:
            votes_text = "; ".join(
                f"{a['annotator']}: {'hallucinated' if a['hallucinated'] else 'clean'}"
                f"{', irrelevant' if a['irrelevant'] else ''}, {a['spans']} span(s)"
                for a in d["annotations"]
            )
            lines.append(f"  {d['id']!r} ({', '.join(d['fields'])}): {votes_text} -> {d['gold']}")
    for key, what in (
        ("tasks_not_in_sample", "task(s) whose item is not in the sample"),
        ("tasks_unlabeled", "task(s) with no annotation"),
        ("tasks_skipped", "task(s) skipped by every annotator"),
        ("sample_items_not_in_export", "sampled item(s) with no task in the export"),
        ("left_out", "item(s) left out of the gold file"),
    ):
        listed = s[key]
        if listed:
            shown = ", ".join(repr(x if isinstance(x, str) else x.get("item_id", x.get("id"))) for x in listed[:10])
            more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
            lines.append(f"{len(listed)} {what}: {shown}{more}")
    if s["annotations_cancelled"]:
        lines.append(f"{s['annotations_cancelled']} skipped (cancelled) annotation(s) are not labels")
    return "\n".join(lines)
