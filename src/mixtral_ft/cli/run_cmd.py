"""`mixft run`: a pipeline of mixft commands, resumable, one runner per output folder (docs/pipelines.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""
    app.command("run", no_args_is_help=True)(run_command)


def parse_vars(items: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}``; the value is text (never parsed as YAML)."""
    from mixtral_ft.errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--var {item!r}: expected NAME=VALUE (for example --var base_model=models/Mixtral)")
        out[key.strip()] = value
    return out


# How the runner starts each stage: this Python, the `mixft` executable's entry point (cli/__main__.py).
MIXFT_COMMAND = (sys.executable, "-m", "mixtral_ft.cli")


def check_argv(argv: list[str]) -> str | None:
    """What the command's own parser says about ``argv`` (``prepare rg ...``), or None when it
    parses; called while `mixft run` (or `mixft demo`) runs, under the root command's context."""
    import click

    node: click.Command = click.get_current_context().find_root().command
    ctx = click.Context(node, info_name="mixft")
    args = list(argv)
    while isinstance(node, click.Group):
        sub = node.get_command(ctx, args[0]) if args else None
        if sub is None:
            return f"no command `{' '.join(argv[:2])}`"
        node, args = sub, args[1:]
        ctx = click.Context(node, info_name=node.name, parent=ctx)
    try:
        node.make_context(node.name, args, parent=ctx.parent, resilient_parsing=False)
    except click.exceptions.Exit:
        return None
    except click.ClickException as e:
        return e.format_message()
    return None


def run_command(
    pipeline: str = typer.Argument(
        ..., metavar="PIPELINE", help="A pipeline file, or a shipped one by name (report, demo-cpu, rg-only)."
    ),
    var: list[str] = typer.Option(
        [], "--var", metavar="NAME=VALUE", help="Set a variable of the pipeline (repeatable)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder of every stage (the `out` variable)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print every resolved command and why it would run; write nothing."
    ),
    status: bool = typer.Option(
        False, "--status", help="Each stage's state: done, stale (and why), pending, failed, running. Reads only."
    ),
    plan: bool = typer.Option(
        False, "--plan", help="Run `mixft plan` for every train, generate and judge stage: peak memory, hours, totals."
    ),
    skip_plan_check: bool = typer.Option(
        False, "--skip-plan-check", help="Start even when a stage's plan says it does not fit the GPU."
    ),
    start: str | None = typer.Option(None, "--from", metavar="STAGE", help="Start at this stage."),
    until: str | None = typer.Option(None, "--until", metavar="STAGE", help="Stop after this stage."),
    only: list[str] = typer.Option([], "--only", metavar="STAGE", help="Run only this stage (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Run the chosen stages again even when they are up to date."),
) -> None:
    """Run a pipeline file's stages in order: up-to-date stages are skipped, stopped ones continue,
    a failed stage stops the run with its own message and exit status (docs/pipelines.md)."""
    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.errors import UsageError
    from mixtral_ft.pipeline import runner, show

    if sum((dry_run, status, plan)) > 1:
        raise UsageError("--dry-run, --status and --plan: give one")
    req = runner.RunRequest(
        pipeline=pipeline,
        mixft=MIXFT_COMMAND,
        vars=parse_vars(var),
        out=str(out) if out is not None else None,
        start=start,
        until=until,
        only=tuple(only),
        force=force,
        skip_plan_check=skip_plan_check,
        check_argv=check_argv,
        log=info,
        echo=echo,
    )
    if dry_run:
        return show.dry_run(req)
    if status:
        return show.status(req)
    if plan:
        return show.plan(req)
    result = runner.run(req)
    echo(
        f"pipeline {result.pipeline.file.name}: {len(result.ran)} stage(s) ran, {len(result.skipped)} up to date, "
        f"in {runner.duration(result.wall_s)}; everything is in {result.pipeline.out}/"
    )
