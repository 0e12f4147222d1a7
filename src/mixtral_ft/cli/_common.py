"""Option definitions shared by several commands, so a flag has one name and one help text."""

from __future__ import annotations

from pathlib import Path

import typer

OutDirOption = typer.Option(..., "--out", "-o", help="Output directory (created atomically).")
ForceOption = typer.Option(False, "--force", help="Replace an existing output directory.")
SeedOption = typer.Option(42, "--seed", help="Random seed (recorded in the manifest).")


def echo(message: str = "") -> None:
    """Results go to stdout."""
    typer.echo(message)


def info(message: str = "") -> None:
    """Logs and notes go to stderr."""
    typer.echo(message, err=True)


def existing_file(path: Path, what: str = "file") -> Path:
    from mixtral_ft.errors import UsageError

    if not path.exists():
        raise UsageError(f"{path}: {what} not found")
    return path
