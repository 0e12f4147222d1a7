"""Option definitions shared by several commands, so a flag has one name and one help text."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import click
import typer

OutDirOption = typer.Option(..., "--out", "-o", help="Output directory (created atomically).")
ForceOption = typer.Option(False, "--force", help="Replace an existing output directory.")
SeedOption = typer.Option(42, "--seed", help="Random seed (recorded in the manifest).")


class SuggestingChoice(click.Choice):
    """A fixed set of values that ``--help`` lists and that refuses a wrong one with the closest
    (``Unknown backend 'hff'. Did you mean 'hf'? Available: hf, openai``)."""

    def __init__(self, choices: Iterable[str], noun: str) -> None:
        super().__init__(tuple(choices), case_sensitive=True)
        self.noun = noun

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = value.value if isinstance(value, Enum) else value
        if value in self.choices:
            return value
        from mixtral_ft.errors import suggest

        self.fail(suggest(str(value), [str(c) for c in self.choices], self.noun), param, ctx)


def enum_choice(enum: type[Enum], noun: str) -> SuggestingChoice:
    """The click type of an option whose values are ``enum``'s (Typer still hands the command a member)."""
    return SuggestingChoice([m.value for m in enum], noun)


class ProfileChoice(SuggestingChoice):
    """The hardware profiles of the configs folder (``profiles/*.yml``), read when a command
    needs them, so ``--help`` lists what ships (or what ``MIXFT_CONFIGS_DIR`` holds) and a
    wrong name is refused with the closest one."""

    def __init__(self) -> None:
        super().__init__((), "profile")

    @property
    def choices(self) -> tuple[str, ...]:
        from mixtral_ft.axolotl_cfg.render import profile_names

        return tuple(profile_names())

    @choices.setter
    def choices(self, _value: Any) -> None:  # click.Choice.__init__ assigns it; the folder decides
        pass


# `train`, `config` and `plan` take the same --profile.
ProfileOption = typer.Option(
    ..., "--profile", click_type=ProfileChoice(), help="Hardware profile (`mixft config list` shows them)."
)

# `prepare rg` and `prepare tc` read, check and split the same way.
SkipInvalidOption = typer.Option(
    False, "--skip-invalid", help="Write the valid rows and list bad ones in rejected.jsonl instead of failing."
)
MaxProblemsOption = typer.Option(50, "--max-problems", min=1, help="Problems listed before the rest are only counted.")
TokenizerOption = typer.Option(
    None,
    "--tokenizer",
    metavar="DIR",
    help="Local tokenizer directory for exact token lengths, as Axolotl builds the rows "
    "(needs transformers); else a 4-characters-per-token estimate.",
)
IdFieldOption = typer.Option(
    "id", "--id-field", help="Column holding a unique id (optional for rg: made from the content when absent)."
)
QuestionFieldOption = typer.Option("question", "--question-field", help="Column holding the question.")
ContextFieldOption = typer.Option(
    "context", "--context-field", help="Column holding the context: a string or a list of snippets."
)
SourceFieldOption = typer.Option(
    "source", "--source-field", help="Column holding a source tag, used when the input has no TAG= ('' = none)."
)


def test_size_option(default: str) -> Any:  # Any, as typer.Option's: it is a parameter default
    """``--test-size``: one rule for both prepare commands (prepare.split), its own default each."""
    return typer.Option(
        default,
        "--test-size",
        help="Test rows: a count (300) or a fraction (0.125 = round(0.125 x rows)); "
        "whole groups, the closest prefix of the seeded order.",
    )


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
