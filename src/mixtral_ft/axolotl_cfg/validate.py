"""Validate a rendered config with Axolotl's own ``validate_config`` (works on CPU, loads no model)."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
from typing import Any

from mixtral_ft.errors import ConfigError, MissingDependencyError

INSTALL_HINT = "pip install 'mixtral-ft[train]' (Axolotl 0.21.0; install torch first)"


def axolotl_available() -> bool:
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

    with _quiet(), hub_offline():
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


@contextlib.contextmanager
def hub_offline():
    """Keep Axolotl's import chain off the Hugging Face Hub in mixft's own process.

    Axolotl imports peft, which imports bitsandbytes; on a CPU with AVX512-BF16, bitsandbytes 0.50.2's
    CPU backend then asks the Hub for a kernel (``bitsandbytes/backends/cpu/ops.py:242-255``, kernels'
    ``get_kernel``, which reads ``huggingface_hub.constants.HF_HUB_OFFLINE`` at the call,
    ``kernels/load.py:155-161``). Validating a config never needs the Hub, so the import runs offline
    (bitsandbytes then logs that it keeps its own CPU kernels); the previous setting is restored for
    whatever runs next, such as the Axolotl process a run launches.
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    saved_env, saved = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
