"""The runner's record of one pipeline output folder: ``OUT/mixft-run.json``.

One entry per stage (the last attempt): ``status`` (``running``, ``done``, ``failed``,
``interrupted``), the command (``argv``, its SHA-256 ``argv_sha256``), the SHA-256 of every
input when it started (``inputs``: ``[label, path, sha256]``), the ``run_id`` of each stage it
read from (``upstream``), its own ``run_id`` (new each time it runs), the mixft version, times,
exit status and flags the runner added. A ``hashes`` cache keeps the SHA-256 of every input file
by path, size, modification time and inode, so a 90 GB model folder is read once, not at every
run. The file is rewritten atomically after every change (``util.atomic``); ``--status`` and
``--dry-run`` only read it.

``OUT/.mixft-run.lock`` (``util.lock``) is held by the one ``mixft run`` writing ``OUT``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError, format_bytes
from mixtral_ft.util.atomic import atomic_write_text
from mixtral_ft.util.hashing import sha256_file, sha256_json
from mixtral_ft.util.interrupt import shielded
from mixtral_ft.util.provenance import scrub_record

STATE_NAME = "mixft-run.json"
LOCK_TARGET = "mixft-run"  # util.lock locks OUT/.mixft-run.lock
SCHEMA = "mixft.pipeline-state/1"
LARGE = 1 << 30  # files this big are announced before they are hashed


class State:
    """``OUT/mixft-run.json``, read at once; ``save`` rewrites it (never in read-only use)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / STATE_NAME
        self.data: dict[str, Any] = {"schema": SCHEMA, "stages": {}, "hashes": {}}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UsageError(
                    f"{self.path}: not a readable pipeline state file ({e}); move it away to start over"
                ) from None
            if not isinstance(data, dict) or data.get("schema") != SCHEMA:
                raise UsageError(f"{self.path}: not a {SCHEMA} file; move it away to start over")
            data.setdefault("stages", {})
            data.setdefault("hashes", {})
            self.data = data

    def stage(self, name: str) -> dict[str, Any] | None:
        record = self.data["stages"].get(name)
        return record if isinstance(record, dict) else None

    def run_id(self, name: str) -> str | None:
        record = self.stage(name)
        return record.get("run_id") if record and record.get("status") == "done" else None

    def put(self, name: str, record: dict[str, Any]) -> None:
        self.data["stages"][name] = record
        self.save()

    def save(self) -> None:
        hashes = self.data["hashes"]
        for path in [p for p in hashes if not os.path.exists(p)]:
            del hashes[path]
        text = json.dumps(scrub_record(self.data), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        with shielded():  # a Ctrl-C now must not lose the record of the stage that just ended
            atomic_write_text(self.path, text)


class Hasher:
    """SHA-256 of files and folders, through the state's cache (nothing is written here)."""

    def __init__(self, cache: dict[str, Any], log: Callable[[str], None] | None = None):
        self.cache = cache
        self.log = log

    def file(self, path: str) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.cache.get(real)
        if isinstance(hit, list) and hit[:3] == key:
            return str(hit[3])
        if st.st_size >= LARGE and self.log is not None:
            self.log(f"hashing {path} ({format_bytes(st.st_size)}; once: kept in the pipeline's state) ...")
        digest = sha256_file(real)
        self.cache[real] = [*key, digest]
        return digest

    def tree(self, path: str) -> str:
        """A folder's SHA-256: of the sorted ``[relative path, SHA-256]`` of its files, hidden ones
        (locks, staging folders) left out."""

        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(n for n in names if not n.startswith(".")):
                full = os.path.join(root, name)
                files.append([os.path.relpath(full, path), self.file(full)])
        return sha256_json(files)

    def fingerprint(self, path: str) -> str | None:
        """The SHA-256 of a file or folder, None when it does not exist."""
        if os.path.isdir(path):
            return self.tree(path)
        if os.path.exists(path):
            return self.file(path)
        return None
