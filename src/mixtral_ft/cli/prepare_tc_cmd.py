"""`mixft prepare tc`: labeled responses → truth-checker train/test files (docs/truth-checker.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.cli._common import ForceOption, OutDirOption, SeedOption, echo, info


def register(app: typer.Typer) -> None:
    """Add ``tc`` to the ``prepare`` group."""
    app.command("tc", no_args_is_help=True)(prepare_tc_command)


def prepare_tc_command(
    inputs: list[str] = typer.Argument(
        ..., metavar="INPUT...",
        help="Labeled responses, PATH or TAG=PATH (TAG becomes the rows' source, e.g. rg=judged.jsonl "
             "live=live.jsonl). JSONL/JSON/CSV/Parquet by extension, or --format ragtruth.",
    ),
    out: Path = OutDirOption,
    format: str = typer.Option(None, "--format", help="Input format for INPUTs and --augment files: "
                               "jsonl, json, csv, parquet, or ragtruth (RAGTruth QA, one line per question)."),
    augment: list[str] = typer.Option([], "--augment", metavar="[TAG=]FILE",
                                      help="Responses from another model, for training only (repeatable; "
                                           "source TAG, default the rows' own source or 'augment')."),
    augment_cap: int = typer.Option(None, "--augment-cap", min=0, help="Keep at most N augmentation rows "
                                    "(a seeded choice)."),
    judgements: list[str] = typer.Option([], "--judgements", metavar="FILE",
                                         help="`mixft judge` output: labels joined by id onto rows that "
                                              "carry none (repeatable)."),
    corrections: str = typer.Option("input", "--corrections", help="corrected_response: 'input' (only "
                                    "from the input) or 'from-clean' (else a clean response to the same question)."),
    group_by: str = typer.Option(None, "--group-by", metavar="FIELD", help="Field that groups rows for the split "
                                 "(default: 'group', else 'question_id', else the question text)."),
    test_size: str = typer.Option("0.1", "--test-size", help="Test rows: a fraction (0.1) or a count (300) "
                                  "of main-input rows, whole groups only."),
    seed: int = SeedOption,
    count_relevance: bool = typer.Option(False, "--count-relevance", help="Count relevance mistakes as "
                                         "hallucinations too (the 'hallucinated' field and the summary)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Reject invalid rows into rejected.jsonl "
                                      "instead of stopping."),
    tokenizer: str = typer.Option(None, "--tokenizer", metavar="DIR", help="Local tokenizer directory for an "
                                  "exact token-length report (else a 4-characters-per-token estimate)."),
    sequence_len: int = typer.Option(8192, "--sequence-len", help="Length limit the report checks against."),
    template: Path = typer.Option(None, "--template", help="TC prompt template (default configs/prompts/tc_v1.txt)."),
    force: bool = ForceOption,
) -> None:
    """Turn labeled responses into Axolotl-ready truth-checker train/test files."""
    from mixtral_ft.tc.prepare_tc import PrepareTcOptions, format_summary, prepare_tc

    opts = PrepareTcOptions(
        inputs=tuple(inputs), out=out, format=format, augment=tuple(augment), augment_cap=augment_cap,
        judgements=tuple(judgements), corrections=corrections, group_by=group_by, test_size=test_size,
        seed=seed, count_relevance=count_relevance, skip_invalid=skip_invalid, force=force,
        tokenizer=tokenizer, sequence_len=sequence_len, template=template,
    )
    result = prepare_tc(opts)
    echo(format_summary(result.summary))
    info(f"wrote {result.out}/train.jsonl, test.jsonl, rejected.jsonl, summary.json, manifest.json")
