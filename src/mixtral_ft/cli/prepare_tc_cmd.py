"""`mixft prepare tc`: labeled responses → truth-checker train/test files (docs/truth-checker.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.choices import Corrections, TcInputFormat
from mixtral_ft.cli._common import (
    ContextFieldOption,
    ForceOption,
    IdFieldOption,
    MaxProblemsOption,
    OutDirOption,
    QuestionFieldOption,
    SeedOption,
    SkipInvalidOption,
    SourceFieldOption,
    TokenizerOption,
    echo,
    enum_choice,
    info,
    test_size_option,
)

TC_DEFAULT_TEST_SIZE = "0.1"


def register(prepare: typer.Typer) -> None:
    """Add ``tc`` to the ``prepare`` group."""
    prepare.command("tc", no_args_is_help=True)(prepare_tc_command)


def prepare_tc_command(
    inputs: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="Labeled responses, PATH or TAG=PATH (TAG becomes the rows' source, e.g. rg=judged.jsonl "
        "live=live.jsonl). JSONL/JSON/CSV/Parquet by extension, or --format ragtruth.",
    ),
    out: Path = OutDirOption,
    input_format: TcInputFormat | None = typer.Option(
        None,
        "--format",
        click_type=enum_choice(TcInputFormat, "format"),
        help="Input format for INPUTs and --augment files (ragtruth: RAGTruth QA, one line per "
        "question); default: by extension.",
    ),
    augment: list[str] = typer.Option(
        [],
        "--augment",
        metavar="[TAG=]FILE",
        help="Responses from another model, for training only (repeatable; "
        "source TAG, default the rows' own source or 'augment').",
    ),
    augment_cap: int | None = typer.Option(
        None, "--augment-cap", min=0, help="Keep at most N augmentation rows (a seeded choice)."
    ),
    judgements: list[str] = typer.Option(
        [],
        "--judgements",
        metavar="FILE",
        help="`mixft judge` output: labels joined by id onto rows that carry none (repeatable).",
    ),
    corrections: Corrections = typer.Option(
        Corrections.input,
        "--corrections",
        click_type=enum_choice(Corrections, "corrections source"),
        help="corrected_response: only from the input, or else from a clean "
        "response to the same question (from-clean).",
    ),
    question_field: str = QuestionFieldOption,
    context_field: str = ContextFieldOption,
    response_field: str = typer.Option("response", "--response-field", help="Column holding the response to check."),
    id_field: str = IdFieldOption,
    source_field: str = SourceFieldOption,
    group_by: str | None = typer.Option(
        None,
        "--group-by",
        metavar="FIELD",
        help="Field that groups rows for the split (default: 'group', else 'question_id', else the question text).",
    ),
    test_size: str = test_size_option(TC_DEFAULT_TEST_SIZE),
    seed: int = SeedOption,
    count_relevance: bool = typer.Option(
        False,
        "--count-relevance",
        help="Count relevance mistakes as hallucinations too (the 'hallucinated' field and the summary).",
    ),
    skip_invalid: bool = SkipInvalidOption,
    tokenizer: Path | None = TokenizerOption,
    sequence_len: int = typer.Option(8192, "--sequence-len", help="Length limit the report checks against."),
    template: Path | None = typer.Option(
        None, "--template", help="TC prompt template (default: the shipped configs/prompts/tc_v1.txt)."
    ),
    max_problems: int = MaxProblemsOption,
    force: bool = ForceOption,
) -> None:
    """Turn labeled responses into Axolotl-ready truth-checker train/test files.

    Reference: docs/truth-checker.md. Example:
    mixft prepare tc rg=gens/ft.jsonl --judgements labels/ft.jsonl --corrections from-clean --out prepared/tc
    """
    from mixtral_ft.tc.prepare_tc import PrepareTcOptions, TcFields, format_summary, prepare_tc

    opts = PrepareTcOptions(
        inputs=tuple(inputs),
        out=out,
        format=input_format.value if input_format is not None else None,
        augment=tuple(augment),
        augment_cap=augment_cap,
        judgements=tuple(judgements),
        corrections=corrections.value,
        group_by=group_by,
        test_size=test_size,
        seed=seed,
        count_relevance=count_relevance,
        skip_invalid=skip_invalid,
        force=force,
        tokenizer=str(tokenizer) if tokenizer is not None else None,
        sequence_len=sequence_len,
        template=template,
        max_problems=max_problems,
        fields=TcFields(question_field, context_field, response_field, id_field, source_field),
    )
    result = prepare_tc(opts)
    echo(format_summary(result.summary))
    info(f"wrote {result.out}/train.jsonl, test.jsonl, rejected.jsonl, summary.json, manifest.json")
