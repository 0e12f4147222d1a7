"""The sections of ``mixft report``, one function each: blocks of the document, plots into ``out``.

Paragraphs are Markdown written here; what comes from the results (labels, notes, interval
captions) goes through ``md_literal`` or into table cells, which ``to_markdown`` escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixtral_ft.eval.render import (
    ci_level,
    correction_text,
    est_text,
    intervals_sentence,
    pct,
    signed_points,
)
from mixtral_ft.report import plots
from mixtral_ft.report.render import Block, md_literal
from mixtral_ft.report.sources import EvalRun, TrainRun

Names = dict[int, str]  # id(EvalRun) -> the row name shown for it


def unique_labels(evals: list[EvalRun]) -> Names:
    """A row name per eval result; a label used twice for one kind gets its dir name added."""
    seen: dict[tuple[str, str], int] = {}
    for e in evals:
        seen[(e.kind, e.label)] = seen.get((e.kind, e.label), 0) + 1
    return {id(e): (e.label if seen[(e.kind, e.label)] == 1 else f"{e.label} [{e.path.name}]") for e in evals}


def summary_rows(evals: list[EvalRun]) -> list[dict[str, Any]]:
    """One row per label: hallucination rate, TC accuracy, net hallucination at the rejection rate."""
    names = unique_labels(evals)
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


def _intervals(estimates: list[tuple[str, dict | None]]) -> str:
    """The caption of the interval methods stored in ``estimates``, as literal Markdown text."""
    return md_literal(intervals_sentence(estimates))


def _metric_estimates(evals: list[EvalRun], keys: tuple[str, ...]) -> list[tuple[str, dict | None]]:
    return [(k, e.results["metrics"].get(k)) for e in evals for k in keys]


def _methods_title(what: str, estimates: Sequence[dict | None]) -> str:
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


def _judge_error(ce: dict | None) -> list[str]:
    """The judge's measured sensitivity and specificity, or that they were not measured."""
    return [est_text(ce["sensitivity"]), est_text(ce["specificity"])] if ce else ["not measured"] * 2


def summary_section(summary: list[dict[str, Any]]) -> list[Block]:
    """The reference report's table: one row per label, from eval rg, tc and pipeline."""
    shown: list[tuple[str, dict | None]] = []
    for r in summary:
        shown += [
            ("hallucination rate", r.get("hallucination_rate")),
            ("corrected hallucination rate", r.get("hallucination_rate_corrected")),
            ("TC accuracy", r.get("tc_accuracy")),
            ("net hallucination rate", r.get("net_hallucination_rate")),
        ]
    rows = []
    for r in summary:
        rg = "hallucination_rate" in r
        rows.append(
            [
                r["model"],
                est_text(r.get("hallucination_rate")) if rg else "—",
                correction_text(r.get("hallucination_rate_corrected"), r.get("checker_eval")) if rg else "—",
                est_text(r.get("tc_accuracy")) if "tc_accuracy" in r else "—",
                (
                    f"{est_text(r['net_hallucination_rate'])} at {pct(r['rejection_rate']['value'])} rejection"
                    if "net_hallucination_rate" in r
                    else "—"
                ),
            ]
        )
    headers = [
        "Model",
        "Hallucination rate (as judged)",
        "Corrected for the judge's error",
        "TC accuracy",
        "Net hallucination rate (at rejection rate)",
    ]
    return [
        Block("h2", "Summary"),
        Block(
            "p",
            "Hallucination rate from `mixft eval rg`: the share of responses the judge flagged; "
            "beside it the rate corrected for the judge's own error, measured on gold by "
            "`mixft eval tc` (`--checker-eval`). TC accuracy from `mixft eval tc`; net "
            "hallucination rate (hallucinated and accepted, over all responses) at the rejection "
            "rate of `mixft eval pipeline`. " + _intervals(shown),
        ),
        Block("table", headers=headers, rows=rows),
    ]


def _rate_bars(rg: list[EvalRun], names: Names) -> tuple[list[tuple[str, float, float, float]], list[dict]]:
    """Bars of the hallucination-rate plot (as judged, corrected, and per model when there are
    several) and the estimates they show."""
    bars, shown = [], []
    for e in rg:
        m = e.results["metrics"]
        for name, est in (
            (names[id(e)], m["hallucination_rate"]),
            (f"{names[id(e)]} (corrected)", m.get("hallucination_rate_corrected")),
        ):
            row = _ci_row(name, est) if est else None
            if row:
                bars.append(row)
                shown.append(est)
        models = e.results.get("breakdown", {}).get("model", [])
        if len(models) > 1:
            for r in models:
                sub = _ci_row(f"{names[id(e)]} / {r['model']}", r["hallucination_rate"])
                if sub:
                    bars.append(sub)
                    shown.append(r["hallucination_rate"])
    return bars, shown


def rg_section(rg: list[EvalRun], names: Names, out: Path) -> list[Block]:
    """Each judged rate beside the judge's measured error and the corrected rate; the plot."""
    blocks = [Block("h2", "Hallucination rates")]
    bars, shown = _rate_bars(rg, names)
    if bars:
        title = _methods_title("Hallucination rate", shown)
        plots.rates_with_errors(bars, title, "hallucination rate (%)", out / "hallucination_rates.png")
        blocks.append(Block("img", "hallucination_rates.png"))
    blocks.append(
        Block(
            "p",
            "As judged: the share of parsed responses the judge flagged. Judge sensitivity "
            "and specificity: measured on gold by the `eval tc` given with `--checker-eval`, "
            "over the judge's parsed verdicts. Corrected: Rogan-Gladen, with an interval that "
            "carries the uncertainty of all three. "
            + _intervals(_metric_estimates(rg, ("hallucination_rate", "hallucination_rate_corrected"))),
        )
    )
    rows = []
    for e in rg:
        ce = e.results.get("checker_eval")
        m = e.results["metrics"]
        counts = e.results["counts"]
        rows.append(
            [names[id(e)], counts["items"], counts["unparsed"], est_text(m["hallucination_rate"])]
            + _judge_error(ce)
            + [correction_text(m.get("hallucination_rate_corrected"), ce)]
        )
    headers = [
        "result",
        "items",
        "unparsed",
        "hallucination rate (as judged)",
        "judge sensitivity",
        "judge specificity",
        "corrected for the judge's error",
    ]
    blocks.append(Block("table", headers=headers, rows=rows))
    return blocks


TC_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "parse_failure_rate")


def tc_section(tc: list[EvalRun], names: Names, out: Path) -> list[Block]:
    """The truth-checkers' accuracy and its companions; the accuracy plot."""
    blocks = [Block("h2", "Truth-checker")]
    accuracies = [e.results["metrics"]["accuracy"] for e in tc]
    bars = [r for r in (_ci_row(names[id(e)], e.results["metrics"]["accuracy"]) for e in tc) if r]
    if bars:
        title = _methods_title("Truth-checker accuracy", accuracies)
        plots.rates_with_errors(bars, title, "accuracy (%)", out / "tc_accuracy.png")
        blocks.append(Block("img", "tc_accuracy.png"))
    blocks.append(Block("p", _intervals(_metric_estimates(tc, TC_KEYS))))
    headers = [
        "checker",
        "items",
        "accuracy",
        "precision",
        "recall (sensitivity)",
        "specificity",
        "F1",
        "parse failures",
    ]
    rows = [
        [names[id(e)], e.results["counts"]["items"]] + [est_text(e.results["metrics"].get(k)) for k in TC_KEYS]
        for e in tc
    ]
    blocks.append(Block("table", headers=headers, rows=rows))
    return blocks


PIPELINE_KEYS = (
    "base_hallucination_rate",
    "rejection_rate",
    "net_hallucination_rate_all",
    "net_hallucination_rate_accepted",
)


def pipeline_section(pipes: list[EvalRun], names: Names, out: Path) -> list[Block]:
    """What rejecting the flagged responses leaves; the risk-coverage curves."""
    blocks = [
        Block("h2", "Pipeline: rejecting what the checker flags"),
        Block(
            "p",
            "Hallucinated: from gold labels, so no correction applies. "
            + _intervals(_metric_estimates(pipes, PIPELINE_KEYS)),
        ),
        Block(
            "table",
            headers=["checker", "items", "base rate", "rejection rate", "net (all responses)", "net (accepted)"],
            rows=[
                [names[id(e)], e.results["counts"]["items"]]
                + [est_text(e.results["metrics"][k]) for k in PIPELINE_KEYS]
                for e in pipes
            ],
        ),
    ]
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
    return blocks


def compare_section(comps: list[EvalRun], names: Names) -> list[Block]:
    """Paired comparisons: both rates, the difference and McNemar's p; then the judged ones corrected."""
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
    keys = ("difference_b_minus_a", "accuracy_a", "accuracy_b", "hallucination_rate_a", "hallucination_rate_b")
    blocks = [
        Block("h2", "Paired comparisons"),
        Block("p", _intervals(_metric_estimates(comps, keys))),
        Block("table", headers=["comparison", "outcome", "items", "A", "B", "B - A [CI]", "McNemar p"], rows=rows),
    ]
    judged = [e for e in comps if e.results["outcome"] == "hallucination_rate"]
    if judged:
        blocks += _compare_corrected(judged, names)
    return blocks


def _compare_corrected(judged: list[EvalRun], names: Names) -> list[Block]:
    """The judged comparisons' rates and difference corrected for the judge's error."""
    rows = []
    for e in judged:
        m, ce = e.results["metrics"], e.results.get("checker_eval")
        rows.append(
            [names[id(e)]]
            + _judge_error(ce)
            + [
                correction_text(m.get("hallucination_rate_corrected_a"), ce, with_judge=False),
                correction_text(m.get("hallucination_rate_corrected_b"), ce, with_judge=False),
                signed_points(m["difference_b_minus_a_corrected"]) if ce else correction_text(None, None),
            ]
        )
    keys = ("hallucination_rate_corrected_a", "hallucination_rate_corrected_b", "difference_b_minus_a_corrected")
    headers = ["comparison", "judge sensitivity", "judge specificity", "A corrected", "B corrected", "B - A corrected"]
    return [
        Block(
            "p",
            "Judged hallucination rates corrected for the judge's error (`--checker-eval`). "
            + _intervals(_metric_estimates(judged, keys)),
        ),
        Block("table", headers=headers, rows=rows),
    ]


def training_section(runs: list[TrainRun], out: Path) -> list[Block]:
    """Final losses of each training run; the loss curves."""
    blocks = [Block("h2", "Training")]
    with_loss = [(r.label, r.train_loss, r.eval_loss) for r in runs if r.train_loss or r.eval_loss]
    if with_loss:
        plots.loss_curves(with_loss, out / "loss_curves.png")
        blocks.append(Block("img", "loss_curves.png"))
    rows = [
        [
            r.label,
            max([s for s, _ in r.train_loss + r.eval_loss], default=0),
            f"{r.train_loss[-1][1]:.4f}" if r.train_loss else "—",
            f"{r.eval_loss[-1][1]:.4f}" if r.eval_loss else "—",
            str(r.trainer_state),
        ]
        for r in runs
    ]
    blocks.append(
        Block("table", headers=["run", "steps", "final train loss", "final eval loss", "trainer_state"], rows=rows)
    )
    return blocks


def sources_section(evals: list[EvalRun], runs: list[TrainRun]) -> list[Block]:
    """Every input the report read."""
    rows = [[str(e.path), f"eval {e.kind}", e.label] for e in evals]
    rows += [[str(r.path), "training run", r.label] for r in runs]
    return [Block("h2", "Sources"), Block("table", headers=["input", "kind", "label"], rows=rows)]
