"""The small family of errors mixft turns into one-line messages with a non-zero exit.

Library code raises these; the CLI prints ``str(error)`` (and a traceback only with
``--debug``). Anything else that escapes is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class MixftError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(MixftError):
    """The command line asks for something impossible (bad option values, clobbering)."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem in one input row: ``file:line: field: what is wrong``."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class InputError(MixftError):
    """Invalid input data: every problem found, one line each, capped."""

    exit_code = 2

    def __init__(self, problems: list[Problem], total: int | None = None, cap: int = 50):
        self.problems = problems
        self.total = len(problems) if total is None else total
        shown = [str(p) for p in problems[:cap]]
        hidden = self.total - len(shown)
        if hidden > 0:
            shown.append(f"... and {hidden} more problem(s)")
        super().__init__("\n".join(shown))


class ConfigError(MixftError):
    """An invalid config: all errors at once, one per line."""

    exit_code = 2

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


class MissingDependencyError(MixftError):
    """An optional dependency is absent; the message carries the install command."""

    exit_code = 3


class PreflightError(MixftError):
    """An environment check before a long run failed; the message says how to fix it."""

    exit_code = 3


class ExternalCommandError(MixftError):
    """A subprocess (Axolotl, accelerate) exited non-zero; exit with its status."""

    def __init__(self, message: str, returncode: int):
        self.exit_code = returncode if 0 < returncode < 256 else 1
        super().__init__(message)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'closest'?`` for the closest of ``choices``, or ``""`` when none is close."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def suggest(name: str, choices: Iterable[str], what: str = "name") -> str:
    """``Unknown profile 'a100'. Did you mean 'a100-80gb'? Available: ...``."""
    ordered = sorted(choices)
    return f"Unknown {what} '{name}'.{did_you_mean(name, ordered)} Available: {', '.join(ordered)}"
