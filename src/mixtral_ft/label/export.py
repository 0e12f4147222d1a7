"""``mixft label export``: a sample → Label Studio's labeling config and tasks (its import format), with a
judge's verdicts as pre-annotations so the annotator corrects them instead of starting blank; with
``--url``, the same pushed to a running Label Studio (:func:`export_tasks`, :func:`build_task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.label import config as C
from mixtral_ft.label.sample import Sample, context_text, dumps, load_sample
from mixtral_ft.label.server import push
from mixtral_ft.tc.verdict import Mistake, Verdict, VerdictError, verdict_from_dict
from mixtral_ft.util.atomic import atomic_write_text, staged_dir
from mixtral_ft.util.ids import id_problem
from mixtral_ft.util.jsonl import iter_jsonl
from mixtral_ft.util.manifest import Manifest, file_entry

CONFIG_FILE, TASKS_FILE, MANIFEST_FILE = "config.xml", "tasks.json", "manifest.json"


@dataclass(frozen=True)
class ExportConfig:
    sample: Path
    out: Path
    predictions: Path | None = None
    force: bool = False
    server: Any = None  # a ``label.server.Server``: also create a project there with the config and tasks
    title: str | None = None  # the project's title (default: the output folder's name)


@dataclass(frozen=True)
class Judgement:
    """One judge row for a sampled item: its verdict, or why it has none."""

    verdict: Verdict | None
    why_none: str | None  # "unparsed" | "failed"
    score: float | None
    judge: dict[str, Any] | None


@dataclass
class ExportSummary:
    tasks: int = 0
    with_predictions: int = 0
    without_prediction: dict[str, int] = field(default_factory=lambda: {"no judgement": 0, "unparsed": 0, "failed": 0})
    spans_located: int = 0
    unlocated: list[dict[str, str]] = field(default_factory=list)
    judgements_not_in_sample: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "with_predictions": self.with_predictions,
            "without_prediction": self.without_prediction,
            "spans_located": self.spans_located,
            "spans_unlocated": len(self.unlocated),
            "unlocated": self.unlocated,
            "judgements_not_in_sample": self.judgements_not_in_sample,
        }


def read_judgements(path: Path, ids: set[str]) -> tuple[dict[str, Judgement], int]:
    """The judge rows for ``ids`` (and how many rows are for other ids); every bad row is an ``InputError``."""
    if not path.is_file():
        raise UsageError(f"{path}: --predictions file not found")
    name = str(path)
    found: dict[str, Judgement] = {}
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    others = 0
    for line, row in iter_jsonl(path):
        rid = row.get("id")
        bad = id_problem(rid)
        if bad or not isinstance(rid, str):
            problems.append(Problem(name, line, "id", bad or "not a string"))
            continue
        if rid in seen:
            problems.append(Problem(name, line, "id", f"duplicate id {rid!r} (first on line {seen[rid]})"))
            continue
        seen[rid] = line
        if rid not in ids:
            others += 1
            continue
        score = row.get("score")
        score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
        judge = row.get("judge") if isinstance(row.get("judge"), dict) else None
        if row.get("error") is not None:
            found[rid] = Judgement(None, "failed", score, judge)
        elif row.get("parse_ok") is False or row.get("verdict") is None:
            found[rid] = Judgement(None, "unparsed", score, judge)
        else:
            try:
                found[rid] = Judgement(verdict_from_dict(row["verdict"]), None, score, judge)
            except VerdictError as e:
                problems.append(Problem(name, line, "verdict", str(e)))
    if problems:
        raise InputError(problems)
    return found, others


def locate_mistakes(
    response: str, mistakes: tuple[Mistake, ...]
) -> tuple[list[tuple[int, int, Mistake]], list[Mistake]]:
    """(regions ``(start, end, mistake)``, mistakes whose text is not in ``response``). A text that
    occurs several times takes the first occurrence not yet used by an earlier mistake."""
    used: set[tuple[int, int]] = set()
    regions, missing = [], []
    for m in mistakes:
        spot = None
        for text in dict.fromkeys((m.text, m.text.strip())):
            if not text:
                continue
            start = response.find(text)
            while start != -1 and (start, start + len(text)) in used:
                start = response.find(text, start + 1)
            if start != -1:
                spot = (start, start + len(text))
                break
        if spot is None:
            missing.append(m)
        else:
            used.add(spot)
            regions.append((spot[0], spot[1], m))
    return regions, missing


def _result(rid: str, name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"id": rid, "from_name": name, "to_name": C.RESPONSE, "type": C.CONTROLS[name], "value": value}


def prediction_result(verdict: Verdict, regions: list[tuple[int, int, Mistake]], response: str) -> list[dict[str, Any]]:
    """The verdict as Label Studio results of mixft's labeling config (what the editor writes)."""
    out = []
    for k, (start, end, m) in enumerate(sorted(regions, key=lambda r: (r[0], r[1]))):
        rid = f"judge-{k}"
        span = {"start": start, "end": end}
        out.append(_result(rid, C.MISTAKES, {**span, "text": response[start:end], "labels": [m.type]}))
        if m.explanation:
            out.append(_result(rid, C.MISTAKE_EXPLANATION, {**span, "text": [m.explanation]}))
    grounded = C.HALLUCINATED if verdict.groundedness.mistake else C.CLEAN
    out.append(_result("judge-groundedness", C.GROUNDEDNESS, {"choices": [grounded]}))
    relevant = C.IRRELEVANT if verdict.relevance.mistake else C.RELEVANT
    out.append(_result("judge-relevance", C.RELEVANCE, {"choices": [relevant]}))
    if verdict.relevance.explanation:
        out.append(
            _result("judge-relevance-explanation", C.RELEVANCE_EXPLANATION, {"text": [verdict.relevance.explanation]})
        )
    if verdict.corrected_response:
        out.append(_result("judge-corrected", C.CORRECTED, {"text": [verdict.corrected_response]}))
    return out


def _judge_name(judge: dict[str, Any] | None) -> str:
    if not judge:
        return "judge"
    name = str(judge.get("model") or "judge")
    adapter = judge.get("adapter")
    return f"{name}+{Path(str(adapter)).name}" if adapter else name


def _notes(verdict: Verdict, missing: list[Mistake]) -> str:
    if missing:
        return "\n".join(f"“{m.text}” ({m.type}) is not in the response. {m.explanation}".strip() for m in missing)
    if verdict.groundedness.mistake and not verdict.groundedness.mistakes:
        return "The judge found the response hallucinated without naming a span."
    return "Every span the judge named is marked in the response."


def build_task(
    item_id: str, row: dict[str, Any], judgement: Judgement | None, summary: ExportSummary, notes: bool
) -> dict[str, Any]:
    """One Label Studio task; updates ``summary`` (predictions made, spans located and not).

    ``DIR/config.xml`` is the labeling config (``label.config``); ``DIR/tasks.json`` a JSON list of
    tasks, one per sampled response: ``{"data": {"item_id", "context", "question", "response"}}``
    (the context's snippets joined by a blank line). With ``--predictions`` (``mixft judge`` output,
    docs/formats.md §6), each task whose response the judge verdict parsed for also carries
    ``"predictions": [{"model_version", "score"?, "result"}]``: the judge's verdict as Label Studio
    results, so the annotator corrects it instead of starting blank.

    The judge names a mistake by its text; the region needs offsets. Each mistake's text is looked
    for in the response (exactly, then without surrounding spaces), left to right, one region per
    occurrence found. A mistake whose text is not in the response is *reported*: counted and listed
    in the summary and the manifest, and shown to the annotator in the task's ``judge_notes``.
    """
    response = row["response"]
    data = {
        C.ITEM_ID: item_id,
        C.CONTEXT: context_text(row["context"]),
        C.QUESTION: row["question"],
        C.RESPONSE: response,
    }
    task: dict[str, Any] = {"data": data}
    if not notes:
        return task
    if judgement is None or judgement.verdict is None:
        summary.without_prediction["no judgement" if judgement is None else str(judgement.why_none)] += 1
        data[C.JUDGE_NOTES] = "No verdict from the judge for this response."
        return task
    verdict = judgement.verdict
    regions, missing = locate_mistakes(response, verdict.groundedness.mistakes)
    summary.spans_located += len(regions)
    summary.unlocated.extend({"id": item_id, "text": m.text, "type": m.type} for m in missing)
    data[C.JUDGE_NOTES] = _notes(verdict, missing)
    prediction: dict[str, Any] = {
        "model_version": _judge_name(judgement.judge),
        "result": prediction_result(verdict, regions, response),
    }
    if judgement.score is not None:
        prediction["score"] = judgement.score
    task["predictions"] = [prediction]
    summary.with_predictions += 1
    return task


def build_tasks(sample: Sample, predictions: Path | None) -> tuple[list[dict[str, Any]], ExportSummary]:
    summary = ExportSummary()
    judgements: dict[str, Judgement] = {}
    if predictions is not None:
        judgements, summary.judgements_not_in_sample = read_judgements(predictions, set(sample.rows))
    tasks = [
        build_task(item_id, row, judgements.get(item_id), summary, predictions is not None)
        for item_id, row in sample.rows.items()
    ]
    summary.tasks = len(tasks)
    return tasks, summary


@dataclass
class ExportResult:
    out: Path
    config_xml: str
    tasks: list[dict[str, Any]]
    summary: ExportSummary
    project: dict[str, Any] | None = None  # what ``server.push`` created


def export_tasks(cfg: ExportConfig) -> ExportResult:
    """Write ``config.xml``, ``tasks.json`` and ``manifest.json`` to ``cfg.out`` atomically; with a
    server, create the project there too (before the folder is renamed into place, so a refused
    push leaves nothing written)."""
    sample = load_sample(cfg.sample)
    tasks, summary = build_tasks(sample, cfg.predictions)
    xml = C.labeling_config(judge_notes=cfg.predictions is not None)
    inputs = [
        file_entry(sample.path, rows=len(sample.rows), sha256=sample.sha256, role="sample", sample=sample.provenance)
    ]
    if cfg.predictions is not None:
        inputs.append(file_entry(cfg.predictions, role="predictions"))
    manifest = Manifest(
        kind="label-export",
        settings={"config_version": C.CONFIG_VERSION, "predictions": cfg.predictions is not None},
        inputs=inputs,
        summary=summary.to_dict(),
    )
    project = None
    with staged_dir(cfg.out, force=cfg.force, inputs=[sample.path, cfg.predictions]) as stage:
        atomic_write_text(stage / CONFIG_FILE, xml)
        atomic_write_text(stage / TASKS_FILE, dumps(tasks))
        manifest.outputs = {
            name: {**file_entry(stage / name, rows=rows), "path": str(cfg.out / name)}
            for name, rows in ((CONFIG_FILE, None), (TASKS_FILE, len(tasks)))
        }
        if cfg.server is not None:
            project = push(cfg.server, cfg.title or cfg.out.name, xml, tasks)
            manifest.extra["label_studio"] = {**cfg.server.identity(), **project}
        manifest.write(stage / MANIFEST_FILE)
    return ExportResult(cfg.out, xml, tasks, summary, project)


def format_export_summary(result: ExportResult) -> str:
    s = result.summary
    lines = [f"{s.tasks} task(s) -> {result.out / TASKS_FILE}, labeling config -> {result.out / CONFIG_FILE}"]
    if s.with_predictions or any(s.without_prediction.values()):
        missing = ", ".join(f"{v} {k}" for k, v in s.without_prediction.items() if v)
        lines.append(
            f"pre-annotations: {s.with_predictions} task(s) carry the judge's verdict"
            + (f" ({missing}: no pre-annotation)" if missing else "")
            + f"; {s.spans_located} span(s) located, {len(s.unlocated)} not found in the response"
        )
        for u in s.unlocated[:10]:
            lines.append(f"  not found in {u['id']!r}: {u['text']!r} ({u['type']})")
        if len(s.unlocated) > 10:
            lines.append(f"  ... and {len(s.unlocated) - 10} more (all in {result.out / MANIFEST_FILE})")
    if s.judgements_not_in_sample:
        lines.append(f"{s.judgements_not_in_sample} judgement(s) are for responses not in the sample (not used)")
    if result.project:
        p = result.project
        lines.append(f"Label Studio: project {p['project']} with {p['tasks']} task(s): {p['project_url']}")
    return "\n".join(lines)
