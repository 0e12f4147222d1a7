"""Model backends by name: ``hf`` (transformers in-process) and ``openai`` (any
OpenAI-compatible endpoint). Backends are imported only when asked for, so listing them
costs nothing and the ``openai`` backend never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

from mixtral_ft.errors import UsageError, suggest

# name -> "module:factory"; each factory takes keyword options and returns a Backend.
_REGISTRY: dict[str, str] = {
    "hf": "mixtral_ft.backends.hf:HFBackend",
    "openai": "mixtral_ft.backends.openai:OpenAIBackend",
}


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def backend_factory(name: str):
    """The class for backend ``name``; an unknown name gives a "Did you mean" error."""
    if name not in _REGISTRY:
        raise UsageError(suggest(name, list(_REGISTRY), what="backend"))
    module, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(name: str, **options: Any):
    """Build backend ``name`` with its options (see each backend's constructor)."""
    return backend_factory(name)(**options)
