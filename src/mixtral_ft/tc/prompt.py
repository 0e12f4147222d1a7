"""The truth-checker prompt: one template file, rendered the same way for training rows
(``prompt`` in docs/formats.md §4) and for ``mixft judge`` at inference.

The template holds the placeholders ``{context}``, ``{question}`` and ``{response}`` once
each; everything else (including the JSON example's braces) is literal text. Substitution
is a single pass, so a context that itself contains ``{question}`` is left alone.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from mixtral_ft.data.normalize import normalize_text
from mixtral_ft.data.prompts import join_context
from mixtral_ft.errors import ConfigError
from mixtral_ft.resources import configs_dir
from mixtral_ft.util.hashing import sha256_text

TEMPLATE_NAME = "tc_v1"
PLACEHOLDERS = ("context", "question", "response")
_PLACEHOLDER_RE = re.compile(r"\{(context|question|response)\}")


def default_template_path() -> Path:
    """``prompts/tc_v1.txt`` of the configs folder (shipped, or ``MIXFT_CONFIGS_DIR``)."""
    return configs_dir() / "prompts" / f"{TEMPLATE_NAME}.txt"


def check_template(text: str, where: str = "template") -> str:
    """Raise ``ConfigError`` unless each placeholder occurs exactly once."""
    errors = []
    for name in PLACEHOLDERS:
        n = text.count("{" + name + "}")
        if n != 1:
            errors.append(f"{where}: placeholder {{{name}}} must occur exactly once (found {n})")
    if errors:
        raise ConfigError(errors)
    return text


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> str:
    with open(path, encoding="utf-8", newline="") as fh:
        return check_template(fh.read(), path)


def load_template(path: str | os.PathLike | None = None) -> str:
    """The template text (default: the shipped ``tc_v1``), checked for its placeholders."""
    given = path is not None
    path = Path(path) if path is not None else default_template_path()
    try:
        return _load(str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        hint = ""
        if not given and os.environ.get("MIXFT_CONFIGS_DIR"):
            hint = " (MIXFT_CONFIGS_DIR has no prompts/; `mixft config copy all DIR` copies every shipped file)"
        raise ConfigError(f"{path}: TC prompt template not found{hint}") from None


def template_sha256(template: str | None = None) -> str:
    """SHA-256 of the template text (recorded in manifests and judgements)."""
    return sha256_text(load_template() if template is None else template)


def render_tc_prompt(
    context: str | list[str] | tuple[str, ...],
    question: str,
    response: str,
    template: str | None = None,
) -> str:
    """The full TC prompt; the verdict JSON follows it directly.

    Every field goes through ``prepare rg``'s ``normalize_text`` (idempotent), so a row
    prepared for training and the same row judged later render the same prompt.
    """
    text = load_template() if template is None else template
    for name, value in (("question", question), ("response", response)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    values = {
        "context": join_context(context),
        "question": normalize_text(question),
        "response": normalize_text(response),
    }
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)
