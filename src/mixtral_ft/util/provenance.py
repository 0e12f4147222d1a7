"""What goes into every manifest: versions, git commit, command line, time."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mixtral_ft.util.atomic import atomic_write_text

# Packages whose versions change numbers mixft prints. Missing ones are recorded as null.
TRACKED_PACKAGES = (
    "mixtral-ft",
    "axolotl",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "tokenizers",
    "trl",
    "pyarrow",
)


def package_versions(names: tuple[str, ...] | list[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions read from package metadata (never imports the package)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the mixft checkout (or ``path``), with ``-dirty`` if it has local changes."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "mixft_git_commit": git_commit(),
    }


_ARGV: list[str] | None = None


def set_command_line(argv: list[str]) -> None:
    """Record the command being run when it is not ``sys.argv`` (``mixft.cli.main.main(argv)``)."""
    global _ARGV
    _ARGV = list(argv)


def command_line() -> list[str]:
    """The mixft command as typed (for manifests)."""
    if _ARGV is not None:
        return list(_ARGV)
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def write_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
