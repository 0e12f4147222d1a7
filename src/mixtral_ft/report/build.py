"""Assemble ``mixft report``: one document rendered to Markdown and HTML, plots as PNGs.

The summary table has the reference report's columns: model, hallucination rate (``eval rg``),
truth-checker accuracy (``eval tc``), and net hallucination rate at the checker's rejection
rate (``eval pipeline``). Results are joined into rows by their ``label`` (``--label`` at eval
time), so label the RG, TC and pipeline evaluations of one system alike.

Every judged rate (``eval rg``, ``eval compare`` without gold) is shown with the judge's measured
sensitivity and specificity and the rate corrected for them (``--checker-eval``), or says why
there is no correction: not identifiable (with the reason), or no checker eval given. Captions
and plot titles name the interval methods stored in the results, never a fixed text.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.eval.render import (
    ci_level,
    correction_text,
    est_text,
    intervals_sentence,
    markdown_table,
    pct,
    signed_points,
)
from mixtral_ft.report import plots
from mixtral_ft.report.sources import EvalRun, TrainRun, discover


@dataclass
class Block:
    kind: str  # h2 | p | table | img
    text: str = ""
    headers: list[str] | None = None
    rows: list[list[Any]] | None = None


def _unique_labels(evals: list[EvalRun]) -> dict[int, str]:
    """A row name per eval result; a label used twice for one kind gets its dir name added."""
    seen: dict[tuple[str, str], int] = {}
    for e in evals:
        seen[(e.kind, e.label)] = seen.get((e.kind, e.label), 0) + 1
    return {id(e): (e.label if seen[(e.kind, e.label)] == 1 else f"{e.label} [{e.path.name}]") for e in evals}


def summary_rows(evals: list[EvalRun]) -> list[dict[str, Any]]:
    """One row per label: hallucination rate, TC accuracy, net hallucination at the rejection rate."""
    names = _unique_labels(evals)
    rows: dict[str, dict[str, Any]] = {}
    for e in evals:
        if e.kind not in ("rg", "tc", "pipeline"):
            continue
        row = rows.setdefault(names[id(e)], {"model": names[id(e)]})
        m = e.results["metrics"]
        if e.kind == "rg":
            row["hallucination_rate"] = m["hallucination_rate"]
            row["hallucination_rate_corrected"] = m.get("hallucination_rate_corrected")
            row["checker_eval"] = e.results.get("checker_eval")
        elif e.kind == "tc":
            row["tc_accuracy"] = m["accuracy"]
        else:
            row["rejection_rate"] = m["rejection_rate"]
            row["net_hallucination_rate"] = m["net_hallucination_rate_all"]
            row["net_hallucination_rate_accepted"] = m["net_hallucination_rate_accepted"]
    return list(rows.values())


def _methods_title(what: str, estimates: list[dict | None]) -> str:
    """A plot title naming the interval methods actually stored: ``Hallucination rate (95% intervals: wilson)``."""
    methods: list[str] = []
    levels: set[str] = set()
    for est in estimates:
        ci = (est or {}).get("ci")
        if ci:
            levels.add(ci_level(ci["confidence"]))
            if ci["method"] not in methods:
                methods.append(ci["method"])
    return f"{what} ({', '.join(sorted(levels))} intervals: {', '.join(methods)})" if methods else what


def _ci_row(name: str, est: dict) -> tuple[str, float, float, float] | None:
    if not est or est.get("value") is None or not est.get("ci"):
        return None
    return (name, est["value"], est["ci"]["low"], est["ci"]["high"])


def build_document(
    evals: list[EvalRun], runs: list[TrainRun], out: Path, note: str | None = None
) -> tuple[list[Block], dict]:
    """Blocks of the report (plots written into ``out``) and a JSON summary; ``note`` opens it."""
    blocks: list[Block] = [Block("p", note)] if note else []
    names = _unique_labels(evals)
    summary = summary_rows(evals)
    if summary:
        shown: list[tuple[str, dict | None]] = []
        for r in summary:
            shown += [
                ("hallucination rate", r.get("hallucination_rate")),
                ("corrected hallucination rate", r.get("hallucination_rate_corrected")),
                ("TC accuracy", r.get("tc_accuracy")),
                ("net hallucination rate", r.get("net_hallucination_rate")),
            ]
        blocks.append(Block("h2", "Summary"))
        blocks.append(
            Block(
                "p",
                "Hallucination rate from `mixft eval rg`: the share of responses the judge flagged; "
                "beside it the rate corrected for the judge's own error, measured on gold by "
                "`mixft eval tc` (`--checker-eval`). TC accuracy from `mixft eval tc`; net "
                "hallucination rate (hallucinated and accepted, over all responses) at the rejection "
                "rate of `mixft eval pipeline`. " + intervals_sentence(shown),
            )
        )
        blocks.append(
            Block(
                "table",
                headers=[
                    "Model",
                    "Hallucination rate (as judged)",
                    "Corrected for the judge's error",
                    "TC accuracy",
                    "Net hallucination rate (at rejection rate)",
                ],
                rows=[
                    [
                        r["model"],
                        est_text(r.get("hallucination_rate")) if "hallucination_rate" in r else "—",
                        correction_text(r.get("hallucination_rate_corrected"), r.get("checker_eval"))
                        if "hallucination_rate" in r
                        else "—",
                        est_text(r.get("tc_accuracy")) if "tc_accuracy" in r else "—",
                        (
                            f"{est_text(r['net_hallucination_rate'])} at {pct(r['rejection_rate']['value'])} rejection"
                            if "net_hallucination_rate" in r
                            else "—"
                        ),
                    ]
                    for r in summary
                ],
            )
        )

    rg = [e for e in evals if e.kind == "rg"]
    if rg:
        bars, shown_estimates = [], []
        for e in rg:
            m = e.results["metrics"]
            for name, est in (
                (names[id(e)], m["hallucination_rate"]),
                (f"{names[id(e)]} (corrected)", m.get("hallucination_rate_corrected")),
            ):
                row = _ci_row(name, est) if est else None
                if row:
                    bars.append(row)
                    shown_estimates.append(est)
            models = e.results.get("breakdown", {}).get("model", [])
            if len(models) > 1:
                for r in models:
                    sub = _ci_row(f"{names[id(e)]} / {r['model']}", r["hallucination_rate"])
                    if sub:
                        bars.append(sub)
                        shown_estimates.append(r["hallucination_rate"])
        blocks.append(Block("h2", "Hallucination rates"))
        if bars:
            plots.rates_with_errors(
                bars,
                _methods_title("Hallucination rate", shown_estimates),
                "hallucination rate (%)",
                out / "hallucination_rates.png",
            )
            blocks.append(Block("img", "hallucination_rates.png"))
        blocks.append(
            Block(
                "p",
                "As judged: the share of parsed responses the judge flagged. Judge sensitivity "
                "and specificity: measured on gold by the `eval tc` given with `--checker-eval`, "
                "over the judge's parsed verdicts. Corrected: Rogan-Gladen, with an interval that "
                "carries the uncertainty of all three. "
                + intervals_sentence(
                    [
                        (k, e.results["metrics"].get(k))
                        for e in rg
                        for k in ("hallucination_rate", "hallucination_rate_corrected")
                    ]
                ),
            )
        )
        rows = []
        for e in rg:
            ce = e.results.get("checker_eval")
            rows.append(
                [
                    names[id(e)],
                    e.results["counts"]["items"],
                    e.results["counts"]["unparsed"],
                    est_text(e.results["metrics"]["hallucination_rate"]),
                    est_text(ce["sensitivity"]) if ce else "not measured",
                    est_text(ce["specificity"]) if ce else "not measured",
                    correction_text(e.results["metrics"].get("hallucination_rate_corrected"), ce),
                ]
            )
        blocks.append(
            Block(
                "table",
                headers=[
                    "result",
                    "items",
                    "unparsed",
                    "hallucination rate (as judged)",
                    "judge sensitivity",
                    "judge specificity",
                    "corrected for the judge's error",
                ],
                rows=rows,
            )
        )

    tc = [e for e in evals if e.kind == "tc"]
    if tc:
        blocks.append(Block("h2", "Truth-checker"))
        accuracies = [e.results["metrics"]["accuracy"] for e in tc]
        bars = [r for r in (_ci_row(names[id(e)], e.results["metrics"]["accuracy"]) for e in tc) if r]
        if bars:
            plots.rates_with_errors(
                bars, _methods_title("Truth-checker accuracy", accuracies), "accuracy (%)", out / "tc_accuracy.png"
            )
            blocks.append(Block("img", "tc_accuracy.png"))
        keys = ("accuracy", "precision", "recall", "specificity", "f1", "parse_failure_rate")
        blocks.append(Block("p", intervals_sentence([(k, e.results["metrics"].get(k)) for e in tc for k in keys])))
        blocks.append(
            Block(
                "table",
                headers=[
                    "checker",
                    "items",
                    "accuracy",
                    "precision",
                    "recall (sensitivity)",
                    "specificity",
                    "F1",
                    "parse failures",
                ],
                rows=[
                    [names[id(e)], e.results["counts"]["items"]] + [est_text(e.results["metrics"].get(k)) for k in keys]
                    for e in tc
                ],
            )
        )

    pipes = [e for e in evals if e.kind == "pipeline"]
    if pipes:
        blocks.append(Block("h2", "Pipeline: rejecting what the checker flags"))
        blocks.append(
            Block(
                "p",
                "Hallucinated: from gold labels, so no correction applies. "
                + intervals_sentence(
                    [
                        (k, e.results["metrics"].get(k))
                        for e in pipes
                        for k in (
                            "base_hallucination_rate",
                            "rejection_rate",
                            "net_hallucination_rate_all",
                            "net_hallucination_rate_accepted",
                        )
                    ]
                ),
            )
        )
        blocks.append(
            Block(
                "table",
                headers=["checker", "items", "base rate", "rejection rate", "net (all responses)", "net (accepted)"],
                rows=[
                    [names[id(e)], e.results["counts"]["items"]]
                    + [
                        est_text(e.results["metrics"][k])
                        for k in (
                            "base_hallucination_rate",
                            "rejection_rate",
                            "net_hallucination_rate_all",
                            "net_hallucination_rate_accepted",
                        )
                    ]
                    for e in pipes
                ],
            )
        )
        curves = [
            (
                names[id(e)],
                e.results["risk_coverage"],
                (
                    e.results["metrics"]["rejection_rate"]["value"],
                    e.results["metrics"]["net_hallucination_rate_all"]["value"],
                ),
            )
            for e in pipes
            if e.results.get("risk_coverage")
        ]
        if curves:
            plots.risk_coverage_curve(curves, out / "risk_coverage.png")
            blocks.append(Block("img", "risk_coverage.png"))

    comps = [e for e in evals if e.kind == "compare"]
    if comps:
        blocks.append(Block("h2", "Paired comparisons"))
        rows = []
        for e in comps:
            r, m = e.results, e.results["metrics"]
            o = r["outcome"]
            rows.append(
                [
                    names[id(e)],
                    o.replace("_", " "),
                    r["counts"]["items"],
                    est_text(m[f"{o}_a"]),
                    est_text(m[f"{o}_b"]),
                    signed_points(m["difference_b_minus_a"]),
                    f"{r['mcnemar']['p_value_exact']:.3g}" if r.get("mcnemar") else "n/a",
                ]
            )
        blocks.append(
            Block(
                "p",
                intervals_sentence(
                    [
                        (k, e.results["metrics"].get(k))
                        for e in comps
                        for k in (
                            "difference_b_minus_a",
                            "accuracy_a",
                            "accuracy_b",
                            "hallucination_rate_a",
                            "hallucination_rate_b",
                        )
                    ]
                ),
            )
        )
        blocks.append(
            Block("table", headers=["comparison", "outcome", "items", "A", "B", "B - A [CI]", "McNemar p"], rows=rows)
        )
        judged = [e for e in comps if e.results["outcome"] == "hallucination_rate"]
        if judged:
            rows = []
            for e in judged:
                m, ce = e.results["metrics"], e.results.get("checker_eval")
                rows.append(
                    [
                        names[id(e)],
                        est_text(ce["sensitivity"]) if ce else "not measured",
                        est_text(ce["specificity"]) if ce else "not measured",
                        correction_text(m.get("hallucination_rate_corrected_a"), ce, with_judge=False),
                        correction_text(m.get("hallucination_rate_corrected_b"), ce, with_judge=False),
                        signed_points(m["difference_b_minus_a_corrected"]) if ce else correction_text(None, None),
                    ]
                )
            blocks.append(
                Block(
                    "p",
                    "Judged hallucination rates corrected for the judge's error (`--checker-eval`). "
                    + intervals_sentence(
                        [
                            (k, e.results["metrics"].get(k))
                            for e in judged
                            for k in (
                                "hallucination_rate_corrected_a",
                                "hallucination_rate_corrected_b",
                                "difference_b_minus_a_corrected",
                            )
                        ]
                    ),
                )
            )
            blocks.append(
                Block(
                    "table",
                    headers=[
                        "comparison",
                        "judge sensitivity",
                        "judge specificity",
                        "A corrected",
                        "B corrected",
                        "B - A corrected",
                    ],
                    rows=rows,
                )
            )

    if runs:
        with_loss = [(r.label, r.train_loss, r.eval_loss) for r in runs if r.train_loss or r.eval_loss]
        blocks.append(Block("h2", "Training"))
        if with_loss:
            plots.loss_curves(with_loss, out / "loss_curves.png")
            blocks.append(Block("img", "loss_curves.png"))
        blocks.append(
            Block(
                "table",
                headers=["run", "steps", "final train loss", "final eval loss", "trainer_state"],
                rows=[
                    [
                        r.label,
                        max([s for s, _ in r.train_loss + r.eval_loss], default=0),
                        f"{r.train_loss[-1][1]:.4f}" if r.train_loss else "—",
                        f"{r.eval_loss[-1][1]:.4f}" if r.eval_loss else "—",
                        str(r.trainer_state),
                    ]
                    for r in runs
                ],
            )
        )

    blocks.append(Block("h2", "Sources"))
    blocks.append(
        Block(
            "table",
            headers=["input", "kind", "label"],
            rows=(
                [[str(e.path), f"eval {e.kind}", e.label] for e in evals]
                + [[str(r.path), "training run", r.label] for r in runs]
            ),
        )
    )
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


TITLE = "mixft report"


def to_markdown(blocks: list[Block]) -> str:
    parts = [f"# {TITLE}"]
    for b in blocks:
        if b.kind == "h2":
            parts.append(f"## {b.text}")
        elif b.kind == "p":
            parts.append(b.text)
        elif b.kind == "img":
            parts.append(f"![{b.text}]({b.text})")
        elif b.kind == "table":
            parts.append(markdown_table(b.headers or [], b.rows or []))
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[Block]) -> str:
    esc = html.escape
    body = [f"<h1>{esc(TITLE)}</h1>"]
    for b in blocks:
        if b.kind == "h2":
            body.append(f"<h2>{esc(b.text)}</h2>")
        elif b.kind == "p":
            body.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "img":
            body.append(f'<p><img src="{esc(b.text)}" alt="{esc(b.text)}"></p>')
        elif b.kind == "table":
            head = "".join(f"<th>{esc(str(h))}</th>" for h in b.headers or [])
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r) + "</tr>" for r in b.rows or [])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:left}th{background:#f3f3f3}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(TITLE)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def build_report(inputs: list[Path], out: str | os.PathLike, force: bool = False, note: str | None = None) -> dict:
    """Write report.md, report.html, report.json and the PNGs into ``out`` (staged, then renamed).

    ``note`` is a paragraph printed first (the demo says there what its numbers do not show)."""
    from mixtral_ft.util.atomic import staged_dir
    from mixtral_ft.util.provenance import command_line, environment, now_iso

    evals, runs = discover(list(inputs))
    with staged_dir(Path(out), force=force, inputs=inputs) as stage:  # never one of the folders it reads
        blocks, data = build_document(evals, runs, stage, note=note)
        (stage / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
        (stage / "report.html").write_text(to_html(blocks), encoding="utf-8")
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
    from mixtral_ft.data.manifest import output_entries
    from mixtral_ft.util.manifest import Manifest, file_entry

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
