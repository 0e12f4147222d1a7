"""Append-only, resumable JSONL outputs shared by ``mixft generate`` and ``mixft judge``.

- Each row is appended and fsync'ed before the next item is counted as done, so a killed run
  loses at most the rows in flight.
- A re-run reads the file (a torn last line from a kill is cut off first), skips the ids that
  succeeded and retries the ids whose row records a failure (``error`` set): those rows are
  removed first, through an atomic rewrite, so the file never holds two rows for one id.
- The manifest beside the output stores a hash of the settings that shape the rows (model,
  adapter, prompt, generation parameters); resuming with other settings is refused rather than
  mixing two runs in one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.util.jsonl import append_jsonl, read_jsonl_tolerant, truncate_torn_tail, write_jsonl_atomic


def manifest_path_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


class ResumableOutput:
    """The output file of a resumable run. ``done`` holds the ids already written successfully."""

    def __init__(self, path: str | os.PathLike, settings_sha256: str, force: bool = False):
        self.path = Path(path)
        self.manifest_path = manifest_path_for(self.path)
        self.settings_sha256 = settings_sha256
        self.done: set[str] = set()
        self.retrying = 0
        self._fh = None
        if self.path.exists() and self.path.is_dir():
            raise UsageError(f"--out {self.path}: is a directory; give a file path")
        if force:
            for p in (self.path, self.manifest_path):
                if p.exists():
                    p.unlink()
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load_existing()

    def _load_existing(self) -> None:
        previous = self.previous_manifest()
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
        truncate_torn_tail(self.path)
        kept: list[dict[str, Any]] = []
        failed = 0
        for row in read_jsonl_tolerant(self.path):
            key = row.get("id")
            if row.get("error") is None and key not in self.done:
                self.done.add(key)
                kept.append(row)
            else:
                failed += 1
        if failed:
            write_jsonl_atomic(self.path, kept)
        self.retrying = failed

    def previous_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def append(self, row: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", newline="\n")
        append_jsonl(self._fh, row)
        if row.get("error") is None:
            self.done.add(row["id"])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResumableOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
