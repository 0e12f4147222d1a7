"""Validate a rendered config with Axolotl's own ``validate_config`` (works on CPU, loads no model)."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any

from mixtral_ft.errors import ConfigError, MissingDependencyError

INSTALL_HINT = "pip install 'mixtral-ft[train]' (Axolotl 0.21.0; install torch first)"


def axolotl_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("axolotl") is not None


def _format_pydantic(err) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("function-after", "function-before"))
        msg = e.get("msg", "invalid value")
        if e.get("type") not in ("value_error", "assertion_error") and "input" in e:
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def validate_with_axolotl(values: dict[str, Any], required: bool = False) -> bool:
    """Run ``axolotl.utils.config.validate_config``; raise ``ConfigError`` with every error.

    Returns False (and checks nothing) when Axolotl is not installed, unless ``required``.
    """
    if not axolotl_available():
        if required:
            raise MissingDependencyError(f"Axolotl is not installed; {INSTALL_HINT}")
        return False
    from pydantic import ValidationError

    with _quiet():
        from axolotl.utils.config import validate_config
        from axolotl.utils.dict import DictDefault

        try:
            validate_config(DictDefault(copy.deepcopy(values)))
        except ValidationError as e:
            raise ConfigError(
                ["Axolotl rejected the config:"] + [f"  {line}" for line in _format_pydantic(e)]
            ) from None
        except (ValueError, TypeError, NotImplementedError, DeprecationWarning) as e:
            raise ConfigError(f"Axolotl rejected the config: {e}") from None
    return True


@contextlib.contextmanager
def _quiet():
    """Axolotl logs warnings and prints banners while validating; keep them off the user's terminal."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        logging.disable(previous)
