"""Content hashes for manifests and stable keys."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    return sha256_text(canonical_json(obj))


def sha256_tree(path: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file below ``path`` (relative POSIX paths), sorted."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def adapter_sha256(adapter: str | os.PathLike | None) -> str | None:
    """SHA-256 of a PEFT adapter's weights (``adapter_model.safetensors``, else ``.bin``); None
    without an adapter or weights. The one identity of an adapter in rows and manifests."""
    if not adapter:
        return None
    weights = sorted(Path(adapter).glob("adapter_model.*"))
    return sha256_file(weights[0]) if weights else None
