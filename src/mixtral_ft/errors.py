"""The small family of errors mixft turns into one-line messages with a non-zero exit.

Library code raises these; the CLI prints ``str(error)`` (and a traceback only with
``--debug``). Anything else that escapes is a bug.
"""

from __future__ import annotations

import difflib
import errno
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


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


class LockedError(MixftError):
    """Another process holds the output or run directory this command would write."""

    exit_code = 75  # EX_TEMPFAIL: try again once the other run has finished


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units, one decimal)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def free_space(path: str | os.PathLike) -> tuple[Path, int] | None:
    """``(nearest existing folder, free bytes)`` for ``path``'s filesystem, or None if unknown."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        probe = probe.parent
    try:
        return probe, shutil.disk_usage(probe).free
    except OSError:
        return None


class NoSpaceError(MixftError):
    """A write failed because its filesystem is full (ENOSPC) or the quota is spent (EDQUOT).

    One line: the path, the free space there, the space needed when the writer can tell, and
    what was kept (``nothing`` for the atomic writers: their temporary files are removed)."""

    exit_code = 3
    ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

    def __init__(
        self, path: str | os.PathLike, needed: int | None = None, at_least: bool = False, kept: str | None = None
    ):
        self.path = Path(path)
        self.needed = needed
        where = free_space(path)
        free = f"{format_bytes(where[1])} free in {where[0]}" if where else "free space unknown"
        if needed:
            free += f", it needs {'more than' if at_least else 'about'} {format_bytes(needed)}"
        else:
            free += ", it needs more than that"
        super().__init__(
            f"no space left on device writing {path}: {free}; free some space or choose another "
            f"location ({kept or 'nothing half-written was kept'})"
        )

    @classmethod
    def matches(cls, error: BaseException) -> bool:
        return isinstance(error, OSError) and error.errno in cls.ERRNOS

    @classmethod
    def from_oserror(
        cls, error: OSError, path: str | os.PathLike | None = None, needed: int | None = None, kept: str | None = None
    ) -> NoSpaceError:
        return cls(path or error.filename or "an output", needed, kept=kept)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'closest'?`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def suggest(name: str, choices: Iterable[str], what: str = "name") -> str:
    """``Unknown profile 'a100'. Did you mean 'a100-80gb'? Available: ...``."""
    ordered = sorted(choices)
    return f"Unknown {what} '{name}'.{did_you_mean(name, ordered)} Available: {', '.join(ordered)}"
