"""`mixft prepare`: Turn raw Q&A (RG) or labeled responses (TC) into Axolotl-ready train/test files."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.cli._common import ForceOption, OutDirOption, SeedOption, echo, info

app = typer.Typer(help="Turn raw Q&A (RG) or labeled responses (TC) into Axolotl-ready train/test files.", no_args_is_help=True)


def _unescape(text: str) -> str:
    """Let ``--context-separator '\\n---\\n'`` mean real newlines."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


@app.command("rg", no_args_is_help=True)
def rg(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...",
                                       help="Raw Q&A files (.jsonl, .json array, .csv, .parquet); TAG=PATH sets the "
                                            "rows' source (e.g. live=chats.jsonl)."),
    out: Path = OutDirOption,
    question_field: str = typer.Option("question", "--question-field", help="Column holding the question."),
    context_field: str = typer.Option("context", "--context-field",
                                      help="Column holding the context: a string or a list of snippets."),
    answer_field: str = typer.Option("answer", "--answer-field", help="Column holding the reference answer."),
    id_field: str = typer.Option("id", "--id-field", help="Column holding a unique id (optional; made from the "
                                                          "content when absent)."),
    source_field: str = typer.Option("source", "--source-field",
                                     help="Column holding a source tag, used when the input has no TAG= ('' = none)."),
    group_by: str | None = typer.Option(None, "--group-by", help="Keep all rows with the same value of this column "
                                                                 "on one side of the split (e.g. article_id)."),
    test_size: str = typer.Option("0.1", "--test-size", help="Test rows: a count (300) or a fraction (0.125)."),
    seed: int = SeedOption,
    skip_invalid: bool = typer.Option(False, "--skip-invalid",
                                      help="Write the valid rows and list bad ones in rejected.jsonl instead of failing."),
    force: bool = ForceOption,
    context_separator: str = typer.Option("\\n\\n", "--context-separator",
                                          help="Joins a list of context snippets ('\\n' = newline)."),
    number_snippets: bool = typer.Option(False, "--number-snippets", help="Prefix snippets with [1], [2], ..."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Local tokenizer directory for exact token "
                                                                    "lengths (needs transformers)."),
    sequence_len: int = typer.Option(4096, "--sequence-len", help="Axolotl sequence_len to check lengths against."),
    preview: int = typer.Option(0, "--preview", help="Print N formatted examples with the trained part marked."),
    input_format: str | None = typer.Option(None, "--format", help="Input format for all inputs "
                                                                   "(jsonl/json/csv/parquet); default: by extension."),
    max_problems: int = typer.Option(50, "--max-problems", help="Problems listed before the rest are only counted."),
    workers: int = typer.Option(0, "--workers", help="Processes for the read pass (0 = automatic)."),
) -> None:
    """Raw grounded Q&A -> train.jsonl / test.jsonl for Axolotl `type: context_qa.load_v2` + manifest.json.

    INPUT files are .jsonl, .json (an array), .csv or .parquet; TAG=PATH sets the rows' source
    (e.g. live=chats.jsonl). Every problem is listed as file:line: field: message and nothing is
    written (exit 2) unless --skip-invalid. Reference: docs/prepare.md.

    Example: mixft prepare rg synthetic=qa.jsonl live=chats.csv --out runs/rg-data --test-size 300 --group-by article_id
    """
    import sys

    from mixtral_ft.data.prepare_rg import RgFields, RgPrepareOptions, format_preview, format_summary, prepare_rg
    from mixtral_ft.data.readers import parse_input
    from mixtral_ft.data.split import parse_test_size

    opts = RgPrepareOptions(
        inputs=[parse_input(a, input_format) for a in inputs],
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
        preview=max(0, preview),
        max_problems=max(1, max_problems),
        workers=max(0, workers),
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


# `mixft prepare tc` lives in its own module (owned by the TC data engineer).
from mixtral_ft.cli import prepare_tc_cmd  # noqa: E402

prepare_tc_cmd.register(app)
