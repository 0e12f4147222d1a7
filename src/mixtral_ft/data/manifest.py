"""The ``manifest.json`` a prepare command writes beside its outputs: a
``mixtral_ft.util.manifest.Manifest`` of kind ``prepare-rg`` / ``prepare-tc``.

It records everything needed to reproduce and verify the outputs: each input's path, format,
source tag, SHA-256 and row count; each output's SHA-256 and row count; the counts (its
``summary``); the seed and all arguments (its ``settings``); the command line; package
versions and the mixft git commit.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixtral_ft.util.hashing import sha256_file
from mixtral_ft.util.manifest import Manifest, file_entry

__all__ = [
    "MANIFEST_NAME",
    "HashingWriter",
    "build_manifest",
    "file_entry",
    "hash_files_in_background",
    "output_entries",
    "save",
]

MANIFEST_NAME = "manifest.json"


def build_manifest(
    command: str,
    arguments: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: dict[str, dict[str, Any]],
    counts: dict[str, Any],
    **extra: Any,
) -> Manifest:
    """The manifest of ``command`` (``"prepare rg"`` / ``"prepare tc"``): ``arguments`` are its
    settings, ``counts`` its summary, ``outputs`` maps file names (relative to the output dir)
    to entries; ``extra`` keys (split, lengths, prompt hash...) sit beside the common ones."""
    return Manifest(
        kind=command.replace(" ", "-"), settings=arguments, inputs=inputs, outputs=outputs, summary=counts, extra=extra
    )


def output_entries(
    directory: Path, rows: Mapping[str, int | None], hashes: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Entries for the files named in ``rows`` inside ``directory`` (paths relative to it);
    ``hashes`` gives SHA-256s computed while writing, so big files are not read again."""
    out = {}
    for name, n in rows.items():
        entry = file_entry(Path(directory) / name, n, sha256=(hashes or {}).get(name))
        entry["path"] = name
        out[name] = entry
    return out


class HashingWriter:
    """A binary file writer that computes the SHA-256 of what it writes, in large blocks
    (hashlib releases the GIL on big updates)."""

    def __init__(self, path: Path, block: int = 1 << 20):
        self._fh = open(path, "wb")
        self._hash = hashlib.sha256()
        self._parts: list[bytes] = []
        self._size = 0
        self._block = block

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self._block:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._parts)
        self._hash.update(data)
        self._fh.write(data)
        self._parts.clear()
        self._size = 0

    def close(self) -> str:
        """Flush, close and return the hex SHA-256."""
        if not self._fh.closed:
            self._flush()
            self._fh.close()
        return self._hash.hexdigest()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._fh.closed:
            self._fh.close()


def hash_files_in_background(paths: list[Path]):
    """Start hashing ``paths`` in a thread (overlapping other work); call the returned function
    to wait for ``{path: sha256}`` (missing files are skipped)."""
    result: dict[Path, str] = {}

    def run() -> None:
        for p in paths:
            if Path(p).is_file():
                result[p] = sha256_file(p)

    thread = threading.Thread(target=run, name="mixft-hash-inputs", daemon=True)
    thread.start()

    def wait() -> dict[Path, str]:
        thread.join()
        return result

    return wait


def save(directory: Path, manifest: Manifest) -> Path:
    return manifest.write(Path(directory) / MANIFEST_NAME)
