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

InputsArgument = typer.Argument(
    ...,
    metavar="INPUT...",
    help="Labeled responses, PATH or TAG=PATH (TAG becomes the rows' source, e.g. rg=judged.jsonl "
    "live=live.jsonl). JSONL/JSON/CSV/Parquet by extension, or --format ragtruth.",
)
InputFormatOption = typer.Option(
    None,
    "--format",
    click_type=enum_choice(TcInputFormat, "format"),
    help="Input format for INPUTs and --augment files (ragtruth: RAGTruth QA, one line per "
    "question); default: by extension.",
)
AugmentOption = typer.Option(
    [],
    "--augment",
    metavar="[TAG=]FILE",
    help="Responses from another model, for training only (repeatable; "
    "source TAG, default the rows' own source or 'augment').",
)
AugmentCapOption = typer.Option(
    None, "--augment-cap", min=0, help="Keep at most N augmentation rows (a seeded choice)."
)
JudgementsOption = typer.Option(
    [],
    "--judgements",
    metavar="FILE",
    help="`mixft judge` output: labels joined by id onto rows that carry none (repeatable).",
)
CorrectionsOption = typer.Option(
    Corrections.input,
    "--corrections",
    click_type=enum_choice(Corrections, "corrections source"),
    help="corrected_response: only from the input, or else from a clean response to the same question (from-clean).",
)
ResponseFieldOption = typer.Option("response", "--response-field", help="Column holding the response to check.")
GroupByOption = typer.Option(
    None,
    "--group-by",
    metavar="FIELD",
    help="Field that groups rows for the split (default: 'group', else 'question_id', else the question text).",
)
CountRelevanceOption = typer.Option(
    False,
    "--count-relevance",
    help="Count relevance mistakes as hallucinations too (the 'hallucinated' field and the summary).",
)
SequenceLenOption = typer.Option(8192, "--sequence-len", help="Length limit the report checks against.")
TemplateOption = typer.Option(
    None, "--template", help="TC prompt template (default: the shipped configs/prompts/tc_v1.txt)."
)


def register(prepare: typer.Typer) -> None:
    """Add ``tc`` to the ``prepare`` group."""
    prepare.command("tc", no_args_is_help=True)(prepare_tc_command)


def prepare_tc_command(
    inputs: list[str] = InputsArgument,
    out: Path = OutDirOption,
    input_format: TcInputFormat | None = InputFormatOption,
    augment: list[str] = AugmentOption,
    augment_cap: int | None = AugmentCapOption,
    judgements: list[str] = JudgementsOption,
    corrections: Corrections = CorrectionsOption,
    question_field: str = QuestionFieldOption,
    context_field: str = ContextFieldOption,
    response_field: str = ResponseFieldOption,
    id_field: str = IdFieldOption,
    source_field: str = SourceFieldOption,
    group_by: str | None = GroupByOption,
    test_size: str = test_size_option(TC_DEFAULT_TEST_SIZE),
    seed: int = SeedOption,
    count_relevance: bool = CountRelevanceOption,
    skip_invalid: bool = SkipInvalidOption,
    tokenizer: Path | None = TokenizerOption,
    sequence_len: int = SequenceLenOption,
    template: Path | None = TemplateOption,
    max_problems: int = MaxProblemsOption,
    force: bool = ForceOption,
) -> None:
    """Turn labeled responses into Axolotl-ready truth-checker train/test files.

    Reference: docs/truth-checker.md. Example:
    mixft prepare tc rg=gens/ft.jsonl --judgements labels/ft.jsonl --corrections from-clean --out prepared/tc
    """
    from mixtral_ft.prepare.options import PrepareOptions
    from mixtral_ft.prepare.pipeline import run_prepare
    from mixtral_ft.prepare.readers import parse_input
    from mixtral_ft.prepare.split import parse_test_size
    from mixtral_ft.prepare.tc import TcTask, format_summary, parse_inputs

    fmt = input_format.value if input_format is not None else None
    task = TcTask(
        format=fmt,
        augment=tuple(parse_inputs(augment, fmt)),
        augment_cap=augment_cap,
        judgements=tuple(parse_input(j, "jsonl") for j in judgements),
        corrections=corrections.value,
        count_relevance=count_relevance,
        template=template,
    )
    opts = PrepareOptions(
        inputs=parse_inputs(inputs, fmt),
        out=out,
        fields={
            "question": question_field,
            "context": context_field,
            "response": response_field,
            "id": id_field,
            "source": source_field,
        },
        group_by=group_by,
        test_size=parse_test_size(test_size),
        seed=seed,
        skip_invalid=skip_invalid,
        force=force,
        tokenizer=tokenizer,
        sequence_len=sequence_len,
        max_problems=max_problems,
    )
    result = run_prepare(opts, task)
    echo(format_summary(result))
    info(f"wrote {result.out}/train.jsonl, test.jsonl, rejected.jsonl, summary.json, manifest.json")
