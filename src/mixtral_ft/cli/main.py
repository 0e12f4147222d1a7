"""Root of the ``mixft`` CLI: wires the command groups and turns ``MixftError`` into one line."""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from mixtral_ft import __version__
from mixtral_ft.cli._lazy import TYPER_SUGGESTS_COMMANDS, Entry, LazyGroup

# The top-level commands in pipeline order, the order `mixft --help` lists them in: the name, the
# module whose `register(app)` adds it, and the line `mixft --help` shows.
# A module is imported only when its command runs (or shows its own --help), so adding a command
# group is one line here.
COMMANDS = (
    Entry("prepare", "mixtral_ft.cli.prepare_cmd", "Raw Q&A (rg) or labeled responses (tc) into train/test splits."),
    Entry("config", "mixtral_ft.cli.config_cmd", "Render, show, list and copy Axolotl configs."),
    Entry("plan", "mixtral_ft.cli.plan_cmd", "Peak GPU memory and hours of a run, before a GPU-hour is spent."),
    Entry("train", "mixtral_ft.cli.train_cmd", "Launch Axolotl training runs for the RG or TC model."),
    Entry("merge", "mixtral_ft.cli.merge_cmd", "Merge a run's LoRA adapter into its base model, shard by shard."),
    Entry("models", "mixtral_ft.cli.models_cmd", "Build or convert local models (tiny Mixtral, SmolLM2) offline."),
    Entry("generate", "mixtral_ft.cli.generate_cmd", "Generate one response per test row with the RG model."),
    Entry("judge", "mixtral_ft.cli.judge_cmd", "Truth-check each response with the TC model."),
    Entry("label", "mixtral_ft.cli.label_cmd", "Human gold labels through Label Studio: sample, export, import."),
    Entry("eval", "mixtral_ft.cli.eval_cmd", "Hallucination rates, truth-checker accuracy, pipeline figures."),
    Entry("report", "mixtral_ft.cli.report_cmd", "Markdown + HTML report with plots of eval and training runs."),
    Entry("run", "mixtral_ft.cli.run_cmd", "Run a pipeline file of stages; skips what is done, resumes."),
    Entry("demo", "mixtral_ft.cli.demo_cmd", "Run the whole pipeline on the bundled sample data, on a CPU."),
)


class _Root(LazyGroup):
    entries = COMMANDS


app = typer.Typer(
    cls=_Root,
    name="mixft",
    help=(
        "Fine-tune open LLMs (Mixtral first) with QLoRA through Axolotl for RAG response generation (RG) "
        "and truth-checking (TC), and measure how much they hallucinate.\n\n"
        "Pipeline: prepare rg -> train rg -> generate -> prepare tc -> train tc -> judge -> eval -> report."
    ),
    no_args_is_help=True,
    # Plain click help: Typer's rich help (typer/core.py, TyperGroup.format_help, used unless
    # rich_markup_mode is None) imports rich's tables and markdown, ~0.1 s of start-up on a 2-core
    # machine. The command modules' groups are built the same way (_lazy).
    rich_markup_mode=None,
    suggest_commands=TYPER_SUGGESTS_COMMANDS,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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

        if isinstance(e, click.exceptions.NoArgsIsHelpError):
            # a command given no arguments shows its help on stdout, as --help does (exit 2)
            typer.echo(e.format_message())
            return e.exit_code
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
