"""Command groups imported only when they are used.

The root group knows its commands from a table (name, module, one-line summary). ``mixft --help``
lists that table without importing any command module; a module is imported, and its
``register(app)`` run, the first time its command is parsed, run or asked for ``--help``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, NamedTuple

import click
import typer
import typer.main
from typer.core import TyperGroup


class Entry(NamedTuple):
    """One top-level command: ``register(app)`` of the module named ``module`` adds it as ``name``."""

    name: str
    module: str
    summary: str  # the line `mixft --help` shows beside the name


# click >= 8.4 suggests the closest command name itself (click.exceptions.NoSuchCommand); Typer's
# own suggestion on top of it said "Did you mean 'generate'?" twice.
TYPER_SUGGESTS_COMMANDS = not hasattr(click.exceptions, "NoSuchCommand")

# module name -> the Typer its register() filled: once per process, as register() is not idempotent.
_REGISTERED: dict[str, typer.Typer] = {}


def registered(module: str) -> typer.Typer:
    """A Typer holding what ``register`` of the module named ``module`` adds (imported on first use)."""
    if module not in _REGISTERED:
        # Plain click help: Typer's rich help imports rich's tables and markdown (typer/core.py,
        # TyperGroup.format_help: rich only when rich_markup_mode is not None).
        holder = typer.Typer(rich_markup_mode=None, add_completion=False, suggest_commands=TYPER_SUGGESTS_COMMANDS)
        importlib.import_module(module).register(holder)
        _REGISTERED[module] = holder
    return _REGISTERED[module]


def load(entry: Entry) -> click.Command:
    """The click command of ``entry``, built the way Typer builds a nested group or command."""
    command = typer.main.get_group(registered(entry.module)).commands[entry.name]
    command.short_help = command.short_help or entry.summary  # one line, the same loaded or not
    return command


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's ``commands``: every name of the table is known; a command is built when it is
    looked up (``commands[name]``, ``commands.get(name)``). Listing names loads nothing."""

    def __init__(self, entries: Iterable[Entry], loaded: dict[str, click.Command] | None = None) -> None:
        self._entries = {e.name: e for e in entries}
        self._loaded: dict[str, click.Command] = dict(loaded or {})

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            self._loaded[name] = load(self._entries[name])  # KeyError for an unknown name, as a dict
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if self._entries.pop(name, None) is None:
            del self._loaded[name]
        else:
            self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:  # Mapping's would load the command
        return name in self._entries or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from (n for n in self._loaded if n not in self._entries)

    def __len__(self) -> int:
        return len(self._entries) + sum(1 for n in self._loaded if n not in self._entries)

    def summary(self, name: str) -> str:
        entry = self._entries.get(name)
        return entry.summary if entry is not None else self[name].get_short_help_str(limit=200)


class LazyGroup(TyperGroup):
    """A Typer group whose commands are ``entries`` (a subclass sets them), listed in their order."""

    entries: tuple[Entry, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(self.entries, loaded=dict(self.commands))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section of ``--help`` from the table (click's would import every module)."""
        commands = self.commands
        assert isinstance(commands, LazyCommands)
        rows = [(name, commands.summary(name)) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
