"""`mixft label`: human gold labels through Label Studio: sample, export tasks, import annotations."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from mixtral_ft.cli._common import ForceOption, OutDirOption, SeedOption, enum_choice

app = typer.Typer(
    help="Human gold labels through Label Studio: sample responses, export labeling tasks, import the "
    "annotations as verdicts with annotator agreement (docs/labeling.md).",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    """Add the ``label`` group to the root app."""
    root.add_typer(app, name="label")


class Resolve(StrEnum):
    """How ``label import`` decides an item labeled by several annotators (``label.importer.RESOLVE_RULES``)."""

    majority = "majority"
    first = "first"
    strict = "strict"


_URL = typer.Option(None, "--url", help="A running Label Studio (e.g. http://127.0.0.1:8080); needs the [label] extra.")
_KEY_ENV = typer.Option(
    "LABEL_STUDIO_API_KEY",
    "--api-key-env",
    help="With --url: environment variable holding a Label Studio access token (never written anywhere).",
)


@app.command("sample")
def sample_command(
    responses: Path = typer.Argument(..., metavar="RESPONSES", help="Responses to sample from (docs/formats.md §3)."),
    out: Path = OutDirOption,
    n: int | None = typer.Option(None, "--n", min=1, help="Sample size (at most the number of responses)."),
    target_width: float | None = typer.Option(
        None,
        "--target-width",
        metavar="POINTS",
        help="Instead of --n: the size whose judge-corrected rate interval is about this many points wide.",
    ),
    checker_eval: Path | None = typer.Option(
        None,
        "--checker-eval",
        help="With --target-width: an `eval tc --out` dir giving the judge's sensitivity and specificity.",
    ),
    sensitivity: float | None = typer.Option(
        None, "--sensitivity", help="With --target-width: the judge's sensitivity."
    ),
    specificity: float | None = typer.Option(
        None, "--specificity", help="With --target-width: the judge's specificity."
    ),
    expected_rate: float = typer.Option(
        0.05, "--expected-rate", help="With --target-width: the hallucination rate you expect (0.05 = 5%)."
    ),
    judged: int | None = typer.Option(
        None, "--judged", min=1, help="With --target-width: responses the judge will rate (default: all of RESPONSES)."
    ),
    seed: int = SeedOption,
    force: bool = ForceOption,
) -> None:
    """Draw a seeded simple random sample of responses to label (records the seed and the population's SHA-256)."""
    from mixtral_ft.cli._common import echo, existing_file, info
    from mixtral_ft.label.sample import SampleConfig, draw_sample

    existing_file(responses, "responses file")
    target = None
    if target_width is not None:
        if n is not None:
            from mixtral_ft.errors import UsageError

            raise UsageError("give --n or --target-width, not both")
        target = _target(responses, target_width, checker_eval, sensitivity, specificity, expected_rate, judged, seed)
        n = target.n
        info(
            f"gold-set size for a {target_width:g}-point interval: {target.n} (simulated mean width "
            f"{100 * target.mean_width:.1f} points, not identifiable in {100 * target.not_identifiable:.1f}% of "
            f"{target.repeats} simulated data sets; {target.responses} judged responses alone allow "
            f"{100 * target.floor_width:.1f} points)"
        )
    result = draw_sample(SampleConfig(responses, out, n, seed, force, target.to_dict() if target else None))
    echo(
        f"sampled {result.n} of {result.population} response(s) (seed {result.seed}) -> {out / 'sample.jsonl'}; "
        f"population sha256 {result.population_sha256[:16]}…"
    )


def _target(responses, width, checker_eval, sensitivity, specificity, rate, judged, seed):
    from mixtral_ft.errors import UsageError
    from mixtral_ft.label.sample import read_population
    from mixtral_ft.label.size import gold_size_for_width

    if checker_eval is not None:
        if sensitivity is not None or specificity is not None:
            raise UsageError("give --checker-eval or --sensitivity/--specificity, not both")
        from mixtral_ft.eval.correction import CheckerEval

        checker = CheckerEval.load(checker_eval)
        if not checker.positives or not checker.negatives:
            raise UsageError(f"--checker-eval {checker_eval}: {checker.unidentifiable_reason()}")
        sensitivity, specificity = checker.tp / checker.positives, checker.tn / checker.negatives
    if sensitivity is None or specificity is None:
        raise UsageError(
            "--target-width needs the judge's error: --checker-eval DIR, or --sensitivity and --specificity"
        )
    population = len(read_population(responses))
    return gold_size_for_width(
        width / 100,
        sensitivity=sensitivity,
        specificity=specificity,
        rate=rate,
        responses=judged or population,
        limit=population,
        seed=seed,
    )


@app.command("export")
def export_command(
    sample: Path = typer.Argument(..., metavar="SAMPLE", help="A `label sample --out` folder (or a responses file)."),
    out: Path = OutDirOption,
    predictions: Path | None = typer.Option(
        None,
        "--predictions",
        metavar="VERDICTS",
        help="`mixft judge` output: each task carries its verdict as a pre-annotation.",
    ),
    url: str | None = _URL,
    api_key_env: str = _KEY_ENV,
    title: str | None = typer.Option(
        None, "--title", help="With --url: the project's title (default: the --out folder's name)."
    ),
    force: bool = ForceOption,
) -> None:
    """Write a Label Studio labeling config and tasks (config.xml, tasks.json); with --url, create the project too."""
    from mixtral_ft.cli._common import echo
    from mixtral_ft.label.export import ExportConfig, export_tasks, format_export_summary
    from mixtral_ft.label.server import Server

    server = Server(url, api_key_env) if url else None
    echo(format_export_summary(export_tasks(ExportConfig(sample, out, predictions, force, server, title))))


@app.command("import")
def import_command(
    export: Path | None = typer.Argument(
        None, metavar="EXPORT.json", help="Label Studio's JSON export of the project (or --url and --project)."
    ),
    sample: Path = typer.Option(..., "--sample", help="The `label sample --out` folder the tasks were made from."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Gold verdicts (JSONL); FILE.annotations.jsonl and FILE.manifest.json beside it."
    ),
    resolve: Resolve = typer.Option(
        Resolve.majority,
        "--resolve",
        click_type=enum_choice(Resolve, "rule"),
        help="Items labeled by several annotators: majority (ties left out), first, or strict (disagreements left out).",
    ),
    url: str | None = _URL,
    project: int | None = typer.Option(None, "--project", help="With --url: the project's id."),
    api_key_env: str = _KEY_ENV,
    force: bool = typer.Option(False, "--force", help="Replace an existing gold file."),
) -> None:
    """Turn Label Studio's export into gold verdicts (version 1), with agreement between annotators."""
    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.errors import UsageError
    from mixtral_ft.label.importer import ImportConfig, format_import_summary, import_labels

    if (export is None) == (url is None):
        raise UsageError("give the export file, or --url with --project, not both")
    pulled = None
    if url is not None:
        if project is None:
            raise UsageError("--url needs --project (the project's id)")
        from mixtral_ft.label.server import Server, pull

        pulled = pull(Server(url, api_key_env), project)
    result = import_labels(ImportConfig(sample, out, export, resolve.value, force, pulled))
    echo(format_import_summary(result.summary, result.out))
    info(f"wrote {result.out}, {result.annotations_path.name} and {result.manifest_path.name}")
