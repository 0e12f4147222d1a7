"""`mixft eval`: Hallucination rates, truth-checker accuracy and pipeline figures with intervals."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.choices import GroupField, IntervalMethod, Unparsed
from mixtral_ft.cli._common import enum_choice

app = typer.Typer(
    help="Hallucination rates, truth-checker accuracy and pipeline figures with intervals.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add the ``eval`` group to the root app."""
    root.add_typer(app, name="eval")


_OUT = typer.Option(None, "--out", "-o", help="Write results.json and report.md to this directory (atomically).")
_FORCE = typer.Option(False, "--force", help="Replace an existing --out directory.")
_COUNT_RELEVANCE = typer.Option(
    False, "--count-relevance", help="Count relevance mistakes as hallucinations too (default: groundedness only)."
)
_INTERVAL = typer.Option(
    IntervalMethod.wilson,
    "--interval",
    click_type=enum_choice(IntervalMethod, "interval method"),
    help="Interval method for proportions.",
)
_LABEL = typer.Option(None, "--label", help="Name for this result in reports (default: model/judge name or file name).")
_CHECKER_EVAL = typer.Option(
    None,
    "--checker-eval",
    help="An `mixft eval tc --out` dir of the same judge (model, adapter, prompt): also "
    "report the hallucination rate corrected for the judge's measured sensitivity and specificity.",
)


def _checker(path: Path | None):
    if path is None:
        return None
    from mixtral_ft.eval.correction import CheckerEval

    return CheckerEval.load(path)


def _finish(result, out: Path | None, force: bool) -> None:
    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.eval.render import text_table

    if out is not None:
        from mixtral_ft.eval.result import write_result

        write_result(result, out, force=force)
    echo(f"{result.kind}: {result.label}")
    echo(text_table(result.summary))
    if out is not None:
        info(f"wrote {out / 'results.json'} and {out / 'report.md'}")


@app.command("rg")
def rg(
    verdicts: Path = typer.Option(
        ...,
        "--verdicts",
        help="Per-item verdicts (mixft judge output, or rows with 'verdict' / 'hallucinated' / 'labels').",
    ),
    by: list[GroupField] | None = typer.Option(
        None,
        "--by",
        click_type=enum_choice(GroupField, "field"),
        help="Break down by this field (repeatable; default: both where present).",
    ),
    checker_eval: Path | None = _CHECKER_EVAL,
    out: Path | None = _OUT,
    force: bool = _FORCE,
    count_relevance: bool = _COUNT_RELEVANCE,
    interval: IntervalMethod = _INTERVAL,
    label: str | None = _LABEL,
) -> None:
    """Hallucination rate of a response generator, with a 95% interval and breakdowns."""
    from mixtral_ft.eval.items import load_items
    from mixtral_ft.eval.rg import evaluate_rg

    checker = _checker(checker_eval)
    items = load_items(verdicts, count_relevance, role="verdicts")
    _finish(
        evaluate_rg(
            items,
            by=[b.value for b in by] if by else None,
            count_relevance=count_relevance,
            method=interval.value,
            label=label,
            checker=checker,
        ),
        out,
        force,
    )


@app.command("tc")
def tc(
    pred: Path = typer.Option(..., "--pred", help="The checker's per-item judgements (mixft judge output)."),
    gold: Path = typer.Option(..., "--gold", help="Gold labels over the same ids (e.g. prepare tc test.jsonl)."),
    out: Path | None = _OUT,
    force: bool = _FORCE,
    count_relevance: bool = _COUNT_RELEVANCE,
    interval: IntervalMethod = _INTERVAL,
    label: str | None = _LABEL,
) -> None:
    """Truth-checker accuracy, precision/recall/F1, balanced accuracy and confusion matrix."""
    from mixtral_ft.eval.items import load_items
    from mixtral_ft.eval.tc import evaluate_tc

    g = load_items(gold, count_relevance, role="gold")
    p = load_items(pred, count_relevance, role="predictions")
    _finish(evaluate_tc(p, g, count_relevance=count_relevance, method=interval.value, label=label), out, force)


@app.command("pipeline")
def pipeline(
    gold: Path = typer.Option(..., "--gold", help="Which responses really are hallucinated (per-item file)."),
    checker: Path = typer.Option(..., "--checker", help="The checker's judgements over the same ids."),
    unparsed: Unparsed = typer.Option(
        Unparsed.reject,
        "--unparsed",
        click_type=enum_choice(Unparsed, "policy"),
        help="What the pipeline does when the checker's output did not parse.",
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Reject when score >= this, instead of using the checker's verdicts."
    ),
    out: Path | None = _OUT,
    force: bool = _FORCE,
    count_relevance: bool = _COUNT_RELEVANCE,
    interval: IntervalMethod = _INTERVAL,
    label: str | None = _LABEL,
) -> None:
    """Rejection rate and net hallucination rate when flagged responses are rejected."""
    from mixtral_ft.eval.items import load_items
    from mixtral_ft.eval.pipeline import evaluate_pipeline

    g = load_items(gold, count_relevance, role="gold")
    c = load_items(checker, count_relevance, role="checker")
    _finish(
        evaluate_pipeline(
            g,
            c,
            unparsed=unparsed.value,
            threshold=threshold,
            count_relevance=count_relevance,
            method=interval.value,
            label=label,
        ),
        out,
        force,
    )


@app.command("compare")
def compare(
    a: Path = typer.Argument(..., help="Per-item file A (e.g. verdicts on the raw model's responses)."),
    b: Path = typer.Argument(..., help="Per-item file B over the same ids (e.g. the fine-tuned model's)."),
    gold: Path | None = typer.Option(
        None, "--gold", help="Compare two checkers' accuracy against these labels instead of two hallucination rates."
    ),
    checker_eval: Path | None = _CHECKER_EVAL,
    out: Path | None = _OUT,
    force: bool = _FORCE,
    count_relevance: bool = _COUNT_RELEVANCE,
    interval: IntervalMethod = _INTERVAL,
    label: str | None = _LABEL,
    name_a: str | None = typer.Option(None, "--name-a", help="Name of A in the results (default: A's file name)."),
    name_b: str | None = typer.Option(None, "--name-b", help="Name of B in the results (default: B's file name)."),
) -> None:
    """Paired comparison of two systems on the same items: difference, 95% interval, McNemar p."""
    from mixtral_ft.eval.compare import evaluate_compare
    from mixtral_ft.eval.items import load_items

    checker = _checker(checker_eval)
    fa = load_items(a, count_relevance, role="A")
    fb = load_items(b, count_relevance, role="B")
    fg = load_items(gold, count_relevance, role="gold") if gold is not None else None
    _finish(
        evaluate_compare(
            fa,
            fb,
            fg,
            count_relevance=count_relevance,
            method=interval.value,
            label=label,
            names=(name_a or fa.path.stem, name_b or fb.path.stem),
            checker=checker,
        ),
        out,
        force,
    )
