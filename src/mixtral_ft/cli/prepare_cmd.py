"""`mixft prepare`: Turn raw Q&A (RG) or labeled responses (TC) into Axolotl-ready train/test files.

``prepare rg`` is here, ``prepare tc`` in ``prepare_tc_cmd``; both take their shared options
from ``_common`` and run ``mixtral_ft.prepare.pipeline.run_prepare`` with their task's rules.
"""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from mixtral_ft.choices import InputFormat
from mixtral_ft.cli import prepare_tc_cmd
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

RG_DEFAULT_TEST_SIZE = "0.125"  # the reference report's split: 2,400 rows -> 2,100 / 300


class _TaskFirstGroup(TyperGroup):
    """``mixft prepare qa.jsonl`` (the task forgotten) explains itself instead of "No such command"."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            tasks = " or ".join(self.list_commands(ctx))
            raise click.UsageError(
                f"'{name}' is not a task; prepare needs one ({tasks}) before the inputs:\n"
                f"  mixft prepare rg {name} --out DIR   (raw grounded Q&A, for the response generator)\n"
                f"  mixft prepare tc {name} --out DIR   (labeled responses, for the truth-checker)",
                ctx,
            )
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_TaskFirstGroup,
    no_args_is_help=True,
    help="Turn raw Q&A (rg) or labeled responses (tc) into Axolotl-ready train/test files: "
    "mixft prepare rg|tc INPUT... --out DIR.",
)


def register(root: typer.Typer) -> None:
    """Add the ``prepare`` group (``rg`` and ``tc``) to the root app."""
    prepare_tc_cmd.register(app)
    root.add_typer(app, name="prepare")


def _unescape(text: str) -> str:
    """Let ``--context-separator '\\n---\\n'`` mean real newlines."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


AnswerFieldOption = typer.Option("answer", "--answer-field", help="Column holding the reference answer.")
GroupByOption = typer.Option(
    None,
    "--group-by",
    help="Keep all rows with the same value of this column on one side of the split (e.g. article_id).",
)
ContextSeparatorOption = typer.Option(
    "\\n\\n", "--context-separator", help="Joins a list of context snippets ('\\n' = newline)."
)
NumberSnippetsOption = typer.Option(False, "--number-snippets", help="Prefix snippets with [1], [2], ...")
SequenceLenOption = typer.Option(4096, "--sequence-len", help="Axolotl sequence_len to check lengths against.")
PreviewOption = typer.Option(0, "--preview", min=0, help="Print N formatted examples with the trained part marked.")
InputFormatOption = typer.Option(
    None,
    "--format",
    click_type=enum_choice(InputFormat, "format"),
    help="Input format for all inputs; default: by extension.",
)
WorkersOption = typer.Option(0, "--workers", min=0, help="Processes for the read pass (0 = automatic).")


@app.command("rg", no_args_is_help=True)
def rg(
    inputs: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="Raw Q&A files (.jsonl, .json array, .csv, .parquet); TAG=PATH sets the "
        "rows' source (e.g. live=chats.jsonl).",
    ),
    out: Path = OutDirOption,
    question_field: str = QuestionFieldOption,
    context_field: str = ContextFieldOption,
    answer_field: str = AnswerFieldOption,
    id_field: str = IdFieldOption,
    source_field: str = SourceFieldOption,
    group_by: str | None = GroupByOption,
    test_size: str = test_size_option(RG_DEFAULT_TEST_SIZE),
    seed: int = SeedOption,
    skip_invalid: bool = SkipInvalidOption,
    force: bool = ForceOption,
    context_separator: str = ContextSeparatorOption,
    number_snippets: bool = NumberSnippetsOption,
    tokenizer: Path | None = TokenizerOption,
    sequence_len: int = SequenceLenOption,
    preview: int = PreviewOption,
    input_format: InputFormat | None = InputFormatOption,
    max_problems: int = MaxProblemsOption,
    workers: int = WorkersOption,
) -> None:
    """Raw grounded Q&A -> train.jsonl / test.jsonl for Axolotl `type: context_qa.load_v2` + manifest.json.

    INPUT files are .jsonl, .json (an array), .csv or .parquet; TAG=PATH sets the rows' source
    (e.g. live=chats.jsonl). Every problem is listed as file:line: field: message and nothing is
    written (exit 2) unless --skip-invalid. The default test size, 0.125, splits the reference
    report's 2,400 rows into 2,100 / 300. Reference: docs/prepare.md.

    Example: mixft prepare rg synthetic=qa.jsonl live=chats.csv --out runs/rg-data --test-size 300 --group-by article_id
    """
    import sys

    from mixtral_ft.prepare.options import PrepareOptions
    from mixtral_ft.prepare.pipeline import run_prepare
    from mixtral_ft.prepare.readers import parse_input
    from mixtral_ft.prepare.rg import RgTask, format_summary
    from mixtral_ft.prepare.split import parse_test_size
    from mixtral_ft.prepare.summary import format_preview

    fmt = input_format.value if input_format is not None else None
    opts = PrepareOptions(
        inputs=[parse_input(a, fmt) for a in inputs],
        out=out,
        fields={
            "question": question_field,
            "context": context_field,
            "answer": answer_field,
            "id": id_field,
            "source": source_field,
        },
        group_by=group_by or None,
        test_size=parse_test_size(test_size),
        seed=seed,
        skip_invalid=skip_invalid,
        force=force,
        tokenizer=tokenizer,
        sequence_len=sequence_len,
        preview=preview,
        max_problems=max_problems,
        workers=workers,
    )
    result = run_prepare(opts, RgTask(_unescape(context_separator), number_snippets))
    _skipped(result.counts.get("invalid", 0), result.skipped, out / "rejected.jsonl")
    if result.preview:
        echo(format_preview(result.preview, color=sys.stdout.isatty()))
        echo()
    echo(format_summary(result))


def _skipped(n: int, problems: list[str], rejected: Path) -> None:
    """On stderr: how many rows --skip-invalid left out, and the first reasons."""
    if not problems:
        return
    info(f"skipped {n} invalid row(s) (--skip-invalid); reasons in {rejected}:")
    for line in problems[:10]:
        info(f"  {line}")
    if n > 10:
        info(f"  ... see {rejected} for all")
