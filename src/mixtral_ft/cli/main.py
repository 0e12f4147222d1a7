"""Root of the ``mixft`` CLI: wires the command groups and turns ``MixftError`` into one line."""

from __future__ import annotations

import os
import sys

import typer

from mixtral_ft import __version__
from mixtral_ft.cli import (
    config_cmd,
    demo_cmd,
    eval_cmd,
    generate_cmd,
    judge_cmd,
    merge_cmd,
    models_cmd,
    plan_cmd,
    prepare_cmd,
    report_cmd,
    train_cmd,
)

app = typer.Typer(
    name="mixft",
    help=(
        "Fine-tune open LLMs (Mixtral first) with QLoRA through Axolotl for RAG response generation (RG) "
        "and truth-checking (TC), and measure how much they hallucinate.\n\n"
        "Pipeline: prepare rg -> train rg -> generate -> prepare tc -> train tc -> judge -> eval -> report."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(prepare_cmd.app, name="prepare")
app.add_typer(config_cmd.app, name="config")
app.add_typer(train_cmd.app, name="train")
app.add_typer(plan_cmd.app, name="plan")
merge_cmd.register(app)
app.add_typer(models_cmd.app, name="models")
judge_cmd.register(app)
generate_cmd.register(app)
app.add_typer(eval_cmd.app, name="eval")
report_cmd.register(app)
demo_cmd.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mixft {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if debug:
        os.environ["MIXFT_DEBUG"] = "1"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (tests call this directly)."""
    from mixtral_ft.errors import MixftError

    if argv is not None:  # called in-process (tests): manifests record this command, not sys.argv
        from mixtral_ft.util.provenance import set_command_line

        set_command_line(["mixft", *argv])
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="mixft")
    except MixftError as e:
        if os.environ.get("MIXFT_DEBUG") == "1":
            raise
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except Exception as e:  # click usage errors arrive as click exceptions
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
