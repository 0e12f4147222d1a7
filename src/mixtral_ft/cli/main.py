"""Root of the ``mixft`` CLI: wires the command groups and turns ``MixftError`` into one line."""

from __future__ import annotations

import contextlib
import os
import sys

import typer
from typer.core import TyperGroup

from mixtral_ft import __version__
from mixtral_ft.cli import (
    config_cmd,
    demo_cmd,
    eval_cmd,
    generate_cmd,
    judge_cmd,
    label_cmd,
    merge_cmd,
    models_cmd,
    plan_cmd,
    prepare_cmd,
    report_cmd,
    run_cmd,
    train_cmd,
)

# The order of the pipeline, which `mixft --help` lists the commands in (others follow).
PIPELINE_ORDER = (
    "prepare",
    "config",
    "plan",
    "train",
    "merge",
    "models",
    "generate",
    "judge",
    "eval",
    "report",
    "run",
    "demo",
)


class _PipelineOrder(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE_ORDER.index(n) if n in PIPELINE_ORDER else len(PIPELINE_ORDER))


app = typer.Typer(
    cls=_PipelineOrder,
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

# One style for every module: `register(app)` adds its command, or its group of commands, to the root.
for _module in (
    prepare_cmd,
    config_cmd,
    train_cmd,
    plan_cmd,
    merge_cmd,
    models_cmd,
    generate_cmd,
    judge_cmd,
    eval_cmd,
    report_cmd,
    run_cmd,
    demo_cmd,
    label_cmd,
):
    _module.register(app)


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
    """Run the CLI; return the exit code (tests call this directly).

    Exit codes: 0 success; 1 a failure (a child process, failed items); 2 bad input or usage;
    3 the environment (a missing dependency, a preflight check, no space left on a device);
    75 the output is in use by another mixft process; 128 + N stopped by signal N
    (130 Ctrl-C/SIGINT, 143 SIGTERM, 129 SIGHUP), after one line saying what was kept.
    """
    from mixtral_ft.util.interrupt import Interrupted, handle_signals, shielded

    if argv is not None:  # called in-process (tests): manifests record this command, not sys.argv
        from mixtral_ft.util.provenance import set_command_line

        set_command_line(["mixft", *argv])
    with handle_signals():
        try:
            return _run(argv)
        except Interrupted as e:
            with shielded():
                return _interrupted(e.signal_name, e.exit_code, e.kept)


_INTERRUPTED = False  # set when the last main() ended by a signal (entrypoint then exits at once)


def _interrupted(name: str, code: int, kept: str | None) -> int:
    global _INTERRUPTED
    _INTERRUPTED = True
    typer.echo(f"interrupted ({name}): {kept or 'nothing was written'}", err=True)
    return code


def _run(argv: list[str] | None) -> int:
    from mixtral_ft.errors import MixftError, NoSpaceError

    global _INTERRUPTED
    _INTERRUPTED = False
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
    except KeyboardInterrupt:  # SIGINT where the handler is not installed (another thread)
        return _interrupted("SIGINT", 130, None)
    except OSError as e:
        if NoSpaceError.matches(e) and os.environ.get("MIXFT_DEBUG") != "1":
            err = NoSpaceError.from_oserror(e)
            typer.echo(f"error: {err}", err=True)
            return err.exit_code
        raise
    except Exception as e:  # click usage errors arrive as click exceptions
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    # Outside standalone mode click *returns* the code of an Exit (Typer turns a KeyboardInterrupt
    # into Exit(130)): dropping it made an interrupted command exit 0.
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def entrypoint() -> None:
    code = main()
    if _INTERRUPTED:
        # Cleanup has run; do not wait for worker threads still blocked on the network
        # (an endpoint request in flight) before the process ends.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entrypoint()
