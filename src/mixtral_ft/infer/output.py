"""The append-only, resumable JSONL output of an inference job (:class:`ResumableOutput`), and its
manifest's place.

Each row is appended and fsync'ed before the next result counts as done, so a killed run loses at most
the rows in flight; ``open`` takes the file (its lock, leftovers, ``--force``) and checks an existing
one may be continued; ``resume`` keeps one good row per id made from the input as it is now, and drops
the rest so exactly those ids are done again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TextIO

from mixtral_ft.errors import NoSpaceError, UsageError
from mixtral_ft.util.atomic import guard_destination, remove_leftovers
from mixtral_ft.util.interrupt import shielded
from mixtral_ft.util.jsonl import append_jsonl, dumps_line, read_jsonl, truncate_torn_tail, write_jsonl_atomic
from mixtral_ft.util.lock import OutputLock
from mixtral_ft.util.manifest import read_manifest

INPUT_SHA256 = "input_sha256"  # the key stamped in every output row (infer.rows.row_input_sha256)


def manifest_path_for(out: str | os.PathLike) -> Path:
    """``gens/ft.jsonl`` -> ``gens/ft.jsonl.manifest.json``."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


@dataclass(frozen=True)
class ResumePlan:
    """What ``resume`` found: the input rows still to do, and how many were done, retried
    (an earlier run recorded a failure) or changed (the input row is not what the kept row was
    made from)."""

    pending: list[dict[str, Any]]
    done: int
    retried: int
    changed: int = 0


class ResumableOutput:
    """The output file of one job run. Use as a context manager: ``open`` on entry, ``close`` on exit."""

    def __init__(
        self,
        path: str | os.PathLike,
        settings_sha256: str,
        force: bool = False,
        inputs: Iterable[str | os.PathLike] = (),
    ):
        self.path = Path(path)
        self.manifest_path = manifest_path_for(self.path)
        self.settings_sha256 = settings_sha256
        self.force = force
        self.inputs = list(inputs)  # files the job reads: never the output
        self.previous: dict[str, Any] | None = None  # the manifest of the run that wrote the existing rows
        self.done: set[str] = set()
        self.remaining = 0  # rows still to append in this run (for the space a full disk needs)
        self._fh: TextIO | None = None
        self._lock: OutputLock | None = None

    # ------------------------------------------------------------------ taking the output

    def open(self) -> None:
        """Take the output for this run and check an existing one can be continued.

        This is the one place a run takes its output: it checks the output is none of the inputs
        (``util.atomic.guard_destination``), takes its lock (``util.lock``: a second run on the same
        file refuses, naming this one) before anything is read or removed, removes temporary files of
        killed runs, then ``--force`` removes the old output and manifest; an existing output is
        resumed only if its manifest is there, readable, and was written with the same settings (a
        hash of what shapes the rows: model, adapter, prompt, decoding). The lock is held until
        ``__exit__``.
        """
        guard_destination(self.path, self.inputs)
        if self.path.is_dir():
            raise UsageError(f"--out {self.path}: is a directory; give a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(self.path, "output file")
        try:
            self._lock.acquire()
            self._take()
        except BaseException:
            self._release()
            raise

    def _take(self) -> None:
        """``open``'s work once the lock is held."""
        remove_leftovers(self.path)
        if self.force:
            for p in (self.path, self.manifest_path):
                if p.exists():
                    p.unlink()
        if not (self.path.exists() and self.path.stat().st_size > 0):
            return
        try:
            previous = read_manifest(self.manifest_path)
        except UsageError as e:
            raise UsageError(
                f"{self.path}: cannot be resumed safely: {e}; use --force to start over or choose another --out"
            ) from None
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

    def resume(
        self, inputs: Sequence[dict[str, Any]], digest: Callable[[dict[str, Any]], str] | None = None
    ) -> ResumePlan:
        """Read the existing rows and return the ``inputs`` still to do.

        An existing row counts as done when it records no failure, is the first for its id and,
        when ``digest`` is given, carries ``input_sha256 == digest(its input row)``: a row made
        from an input row that has changed since (or from an unknown one: no stamp) is dropped
        and its id done again. Rows for ids outside ``inputs`` are kept as they are. A torn last
        line from a kill is cut off, and the rows dropped (failures, duplicates, changed inputs) go
        through an atomic rewrite, so the file never holds two rows for one id.
        """
        by_id = {row["id"]: row for row in inputs}
        kept: list[dict[str, Any]] = []
        failed = duplicates = changed = 0
        if self.path.exists():
            truncate_torn_tail(self.path)
            for row in read_jsonl(self.path):
                key = row.get("id")
                if row.get("error") is not None:
                    failed += 1
                elif not isinstance(key, str) or key in self.done:
                    duplicates += 1
                elif digest is not None and key in by_id and row.get(INPUT_SHA256) != digest(by_id[key]):
                    changed += 1
                else:
                    self.done.add(key)
                    kept.append(row)
            if failed or duplicates or changed:
                write_jsonl_atomic(self.path, kept)
        pending = [row for row in inputs if row["id"] not in self.done]
        self.remaining = len(pending)
        return ResumePlan(pending=pending, done=len(inputs) - len(pending), retried=failed, changed=changed)

    # ------------------------------------------------------------------ writing

    def append(self, row: dict[str, Any]) -> int:
        """Append ``row`` durably (written and fsync'ed before this returns); return its bytes."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 (held across appends)
        try:
            size = append_jsonl(self._fh, row)
        except OSError as e:
            if not NoSpaceError.matches(e):
                raise
            self._abandon_handle()

            need = len(dumps_line(row).encode()) * max(1, self.remaining)
            raise NoSpaceError(
                self.path,
                needed=need,
                kept=f"{len(self.done)} complete row(s) kept; the torn last "
                "line is cut when the same command runs again",
            ) from None
        self.remaining = max(0, self.remaining - 1)
        if row.get("error") is None:
            self.done.add(row["id"])
        return size

    def _abandon_handle(self) -> None:
        """Drop the append handle after a failed write without flushing what is left in its buffer."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                os.close(fh.fileno())
            except OSError:
                pass
            try:
                fh.close()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Close the append handle (the run still holds the output until ``__exit__``)."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                self._abandon_handle()
                raise
            self._fh = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        """The end of the run's hold on the output: the handle is closed and the lock released."""
        with shielded():
            try:
                self.close()
            except OSError:
                pass
            finally:
                self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
