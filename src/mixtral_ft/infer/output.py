"""The append-only, resumable JSONL output of an inference job, and its manifest's place.

- Each row is appended and fsync'ed before the next result is counted as done, so a killed
  run loses at most the rows in flight.
- ``open`` takes the file for this run: ``--force`` removes the old output and manifest; an
  existing output is resumed only if its manifest is there, readable, and was written with the
  same settings (a hash of what shapes the rows: model, adapter, prompt, decoding).
- ``resume`` reads what is there: a torn last line from a kill is cut off, one successful row
  per id is kept, and the rows that record a failure (``error`` set) are dropped through an
  atomic rewrite, so their ids are retried and the file never holds two rows for one id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from mixtral_ft.errors import UsageError


def manifest_path_for(out: str | os.PathLike) -> Path:
    """``gens/ft.jsonl`` -> ``gens/ft.jsonl.manifest.json``."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


@dataclass(frozen=True)
class ResumePlan:
    """What ``resume`` found: the input rows still to do, and how many were done or retried."""

    pending: list[dict[str, Any]]
    done: int
    retried: int


class ResumableOutput:
    """The output file of one job run. Use as a context manager: ``open`` on entry, ``close`` on exit."""

    def __init__(self, path: str | os.PathLike, settings_sha256: str, force: bool = False):
        self.path = Path(path)
        self.manifest_path = manifest_path_for(self.path)
        self.settings_sha256 = settings_sha256
        self.force = force
        self.previous: dict[str, Any] | None = None  # the manifest of the run that wrote the existing rows
        self.done: set[str] = set()
        self._fh = None

    # ------------------------------------------------------------------ taking the output

    def open(self) -> None:
        """Take the output for this run and check an existing one can be continued.

        This is the one place a run takes its output: an exclusive lock on it belongs here,
        before anything is read or removed.
        """
        from mixtral_ft.util.manifest import read_manifest

        if self.path.is_dir():
            raise UsageError(f"--out {self.path}: is a directory; give a file path")
        if self.force:
            for p in (self.path, self.manifest_path):
                if p.exists():
                    p.unlink()
        if not (self.path.exists() and self.path.stat().st_size > 0):
            return
        try:
            previous = read_manifest(self.manifest_path)
        except UsageError as e:
            raise UsageError(f"{self.path}: cannot be resumed safely: {e}; use --force to start over or choose "
                             "another --out") from None
        if previous is None:
            raise UsageError(
                f"{self.path}: exists but {self.manifest_path.name} is missing, so it cannot be resumed safely; "
                "use --force to start over or choose another --out"
            )
        if previous.get("settings_sha256") != self.settings_sha256:
            raise UsageError(
                f"{self.path}: was written with different settings (model, adapter, prompt or generation "
                "parameters); use --force to start over or choose another --out"
            )
        self.previous = previous

    def resume(self, inputs: Sequence[dict[str, Any]]) -> ResumePlan:
        """Read the existing rows and return the ``inputs`` still to do.

        An existing row counts as done when it records no failure and is the first for its id.
        The loop below is where that is decided, so a check of each kept row against its input
        row (``inputs`` by id) belongs there too.
        """
        from mixtral_ft.util.jsonl import read_jsonl, truncate_torn_tail, write_jsonl_atomic

        kept: list[dict[str, Any]] = []
        failed = duplicates = 0
        if self.path.exists():
            truncate_torn_tail(self.path)
            for row in read_jsonl(self.path):
                key = row.get("id")
                if row.get("error") is not None:
                    failed += 1
                elif not isinstance(key, str) or key in self.done:
                    duplicates += 1
                else:
                    self.done.add(key)
                    kept.append(row)
            if failed or duplicates:
                write_jsonl_atomic(self.path, kept)
        pending = [row for row in inputs if row["id"] not in self.done]
        return ResumePlan(pending=pending, done=len(inputs) - len(pending), retried=failed)

    # ------------------------------------------------------------------ writing

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` durably (written and fsync'ed before this returns)."""
        from mixtral_ft.util.jsonl import append_jsonl

        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 (held across appends)
        append_jsonl(self._fh, row)
        if row.get("error") is None:
            self.done.add(row["id"])

    def close(self) -> None:
        """Close the append handle (the run still holds the output until ``__exit__``)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        """The end of the run's hold on the output (a lock taken in ``open`` is released here)."""
        self.close()
