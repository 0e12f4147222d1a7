"""Assemble ``mixft report``: read eval results and training runs, write report.md, report.html,
report.json, the PNGs and a manifest into ``--out`` (staged, then renamed).

Results are joined into summary rows by their ``label`` (``--label`` at eval time); every judged
rate is shown with the judge's measured error and the corrected rate, or says why there is none
(docs/evaluation.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mixtral_ft.data.manifest import output_entries
from mixtral_ft.report import sections
from mixtral_ft.report.render import Block, to_html, to_markdown
from mixtral_ft.report.sources import EvalRun, TrainRun, discover
from mixtral_ft.util.atomic import staged_dir
from mixtral_ft.util.manifest import Manifest, file_entry
from mixtral_ft.util.provenance import command_line, environment, now_iso


def build_document(
    evals: list[EvalRun], runs: list[TrainRun], out: Path, note: str | None = None
) -> tuple[list[Block], dict]:
    """Blocks of the report (plots written into ``out``) and a JSON summary; ``note`` (a Markdown
    paragraph) opens it. A section appears when there is something to put in it."""
    by_kind = {kind: [e for e in evals if e.kind == kind] for kind in ("rg", "tc", "pipeline", "compare")}
    names = sections.unique_labels(evals)
    summary = sections.summary_rows(evals)
    blocks: list[Block] = [Block("p", note)] if note else []
    if summary:
        blocks += sections.summary_section(summary)
    if by_kind["rg"]:
        blocks += sections.rg_section(by_kind["rg"], names, out)
    if by_kind["tc"]:
        blocks += sections.tc_section(by_kind["tc"], names, out)
    if by_kind["pipeline"]:
        blocks += sections.pipeline_section(by_kind["pipeline"], names, out)
    if by_kind["compare"]:
        blocks += sections.compare_section(by_kind["compare"], names)
    if runs:
        blocks += sections.training_section(runs, out)
    blocks += sections.sources_section(evals, runs)
    data = {
        "summary": summary,
        "evals": [{"path": str(e.path), "kind": e.kind, "label": e.label} for e in evals],
        "runs": [
            {
                "path": str(r.path),
                "trainer_state": str(r.trainer_state),
                "train_loss": r.train_loss,
                "eval_loss": r.eval_loss,
            }
            for r in runs
        ],
    }
    return blocks, data


def build_report(inputs: list[Path], out: str | os.PathLike, force: bool = False, note: str | None = None) -> dict:
    """Write report.md, report.html, report.json and the PNGs into ``out`` (staged, then renamed).

    ``note`` is a Markdown paragraph printed first (the demo says there what its numbers do not show)."""
    evals, runs = discover(list(inputs))
    with staged_dir(Path(out), force=force, inputs=inputs) as stage:  # never one of the folders it reads
        blocks, data = build_document(evals, runs, stage, note=note)
        markdown = to_markdown(blocks)
        (stage / "report.md").write_text(markdown, encoding="utf-8")
        (stage / "report.html").write_text(to_html(markdown), encoding="utf-8")
        data |= {
            "created": now_iso(),
            "command": command_line(),
            "environment": environment(),
            "files": sorted(p.name for p in stage.iterdir()) + ["report.json"],
        }
        (stage / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _report_manifest(evals, runs, stage, data).write(stage / "manifest.json")
    return data


def _report_manifest(evals, runs, stage: Path, data: dict):
    """The common ``Manifest`` (kind ``report``): every eval result and training run the report
    read (with SHA-256s), and every file it wrote."""
    inputs = [file_entry(Path(e.path) / "results.json", role="eval") for e in evals]
    for r in runs:
        if r.trainer_state:
            inputs.append(file_entry(r.trainer_state, role="trainer_state"))
    files = sorted(p.name for p in stage.iterdir() if p.is_file() and p.name != "manifest.json")
    return Manifest(
        kind="report",
        settings={"inputs": [i["path"] for i in inputs]},
        inputs=inputs,
        outputs=output_entries(stage, dict.fromkeys(files)),
        command=data["command"],
        summary={"evals": len(evals), "runs": len(runs)},
    )
