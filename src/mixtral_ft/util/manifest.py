"""The one provenance record every mixft stage writes beside its outputs: ``Manifest`` (schema
``mixft.manifest/1``; docs/formats.md §8), with ``file_entry`` for its inputs and outputs and
``read_manifest`` to read one back. The common keys: :class:`Manifest`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.util.atomic import atomic_write_text
from mixtral_ft.util.hashing import sha256_file, sha256_json
from mixtral_ft.util.provenance import command_line, environment, now_iso, scrub_record

MANIFEST_SCHEMA = "mixft.manifest/1"
KINDS = (
    "prepare-rg",
    "prepare-tc",
    "generate",
    "judge",
    "train",
    "merge",
    "eval",
    "report",
    "label-sample",
    "label-export",
    "label-import",
)
COMMON_KEYS = (
    "schema",
    "kind",
    "command",
    "started",
    "updated",
    "settings",
    "settings_sha256",
    "inputs",
    "outputs",
    "environment",
    "summary",
)


def file_entry(
    path: str | os.PathLike, rows: int | None = None, sha256: str | None = None, **extra: Any
) -> dict[str, Any]:
    """``{"path", "sha256", "bytes", "rows"?, ...}`` for one file (pass ``sha256`` when already known)."""
    path = Path(path)
    entry: dict[str, Any] = {"path": str(path), "sha256": sha256 or sha256_file(path), "bytes": path.stat().st_size}
    if rows is not None:
        entry["rows"] = rows
    entry.update(extra)
    return entry


def write_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write a JSON record (a manifest's dict, a state file) as indented, key-sorted JSON, atomically,
    with URL credentials and secret-looking URL parameters scrubbed from every string
    (``scrub_record``). Stages write their manifest through ``Manifest.write``."""
    atomic_write_text(path, json.dumps(scrub_record(manifest), indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@dataclass
class Manifest:
    """One stage's provenance. Build it, then ``write`` it (again after each change: the file
    is replaced atomically and ``updated`` moves on).

    Common keys:

    - ``schema``, ``kind`` (``prepare-rg``, ``prepare-tc``, ``generate``, ``judge``, ``train``,
      ``merge``, ``eval``, ``report``, ``label-sample``, ``label-export``, ``label-import``);
    - ``command``: the command line, secrets scrubbed (``provenance.scrub_argv``);
    - ``settings`` and ``settings_sha256``: what decides the outputs (a resumed ``generate`` or
      ``judge`` must match it exactly);
    - ``inputs`` (a list) and ``outputs`` (keyed by file name): ``{"path", "sha256", "bytes",
      "rows"?, ...}`` per file;
    - ``environment``: Python, platform, package versions, mixft git commit;
    - ``started`` (the first run that wrote these outputs; kept across resumes) and ``updated``;
    - ``summary``: what the stage computed (counts, rates), kind-specific, null while running.

    A stage's other facts (a backend's identity, a split's seed, a training run's attempts) sit at
    the top level beside these (``extra``); one of them may never reuse a common key.
    """

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=command_line)
    started: str = field(default_factory=now_iso)
    environment: dict[str, Any] = field(default_factory=environment)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown manifest kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def settings_sha256(self) -> str:
        return sha256_json(self.settings)

    def to_dict(self) -> dict[str, Any]:
        clash = sorted(set(self.extra) & set(COMMON_KEYS))
        if clash:
            raise ValueError(f"manifest extra key(s) {', '.join(clash)} would overwrite common keys")
        return {
            "schema": MANIFEST_SCHEMA,
            "kind": self.kind,
            "command": self.command,
            "started": self.started,
            "updated": now_iso(),
            "settings": self.settings,
            "settings_sha256": self.settings_sha256,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "environment": self.environment,
            "summary": self.summary,
            **self.extra,
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the manifest to ``path`` atomically (indented, sorted keys)."""
        write_manifest(path, self.to_dict())
        return Path(path)


class ManifestError(UsageError):
    """A manifest that exists but cannot be read: the message says why."""


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest at ``path`` as a dict, or None when there is none. One that exists but is
    not a JSON object (a torn or hand-edited file) is a ``ManifestError`` with the parse error,
    never read as missing."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ManifestError(
            f"{path}: corrupt manifest: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: corrupt manifest: cannot read it ({e})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: corrupt manifest: expected a JSON object, got {type(data).__name__}")
    return data
