"""`mixft prepare`: Turn raw Q&A (RG) or labeled responses (TC) into Axolotl-ready train/test files.

``prepare rg`` is here, ``prepare tc`` in ``prepare_tc_cmd``; both take their shared options
from ``_common``.
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
    answer_field: str = typer.Option("answer", "--answer-field", help="Column holding the reference answer."),
    id_field: str = IdFieldOption,
    source_field: str = SourceFieldOption,
    group_by: str | None = typer.Option(
        None,
        "--group-by",
        help="Keep all rows with the same value of this column on one side of the split (e.g. article_id).",
    ),
    test_size: str = test_size_option(RG_DEFAULT_TEST_SIZE),
    seed: int = SeedOption,
    skip_invalid: bool = SkipInvalidOption,
    force: bool = ForceOption,
    context_separator: str = typer.Option(
        "\\n\\n", "--context-separator", help="Joins a list of context snippets ('\\n' = newline)."
    ),
    number_snippets: bool = typer.Option(False, "--number-snippets", help="Prefix snippets with [1], [2], ..."),
    tokenizer: Path | None = TokenizerOption,
    sequence_len: int = typer.Option(4096, "--sequence-len", help="Axolotl sequence_len to check lengths against."),
    preview: int = typer.Option(0, "--preview", min=0, help="Print N formatted examples with the trained part marked."),
    input_format: InputFormat | None = typer.Option(
        None,
        "--format",
        click_type=enum_choice(InputFormat, "format"),
        help="Input format for all inputs; default: by extension.",
    ),
    max_problems: int = MaxProblemsOption,
    workers: int = typer.Option(0, "--workers", min=0, help="Processes for the read pass (0 = automatic)."),
) -> None:
    """Raw grounded Q&A -> train.jsonl / test.jsonl for Axolotl `type: context_qa.load_v2` + manifest.json.

    INPUT files are .jsonl, .json (an array), .csv or .parquet; TAG=PATH sets the rows' source
    (e.g. live=chats.jsonl). Every problem is listed as file:line: field: message and nothing is
    written (exit 2) unless --skip-invalid. The default test size, 0.125, splits the reference
    report's 2,400 rows into 2,100 / 300. Reference: docs/prepare.md.

    Example: mixft prepare rg synthetic=qa.jsonl live=chats.csv --out runs/rg-data --test-size 300 --group-by article_id
    """
    import sys

    from mixtral_ft.data.prepare_rg import RgFields, RgPrepareOptions, format_preview, format_summary, prepare_rg
    from mixtral_ft.data.readers import parse_input
    from mixtral_ft.data.split import parse_test_size

    fmt = input_format.value if input_format is not None else None
    opts = RgPrepareOptions(
        inputs=[parse_input(a, fmt) for a in inputs],
        out=out,
        fields=RgFields(question_field, context_field, answer_field, id_field, source_field),
        group_by=group_by or None,
        test_size=parse_test_size(test_size),
        seed=seed,
        skip_invalid=skip_invalid,
        force=force,
        context_separator=_unescape(context_separator),
        number_snippets=number_snippets,
        tokenizer=tokenizer,
        sequence_len=sequence_len,
        preview=preview,
        max_problems=max_problems,
        workers=workers,
    )
    result = prepare_rg(opts)
    if result.skipped_problems:
        n = result.counts.get("invalid", 0)
        info(f"skipped {n} invalid row(s) (--skip-invalid); reasons in {out / 'rejected.jsonl'}:")
        for line in result.skipped_problems[:10]:
            info(f"  {line}")
        if n > 10:
            info(f"  ... see {out / 'rejected.jsonl'} for all")
    if result.preview:
        echo(format_preview(result.preview, color=sys.stdout.isatty()))
        echo()
    echo(format_summary(result))
