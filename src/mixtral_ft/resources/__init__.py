"""Files shipped inside the package, found through ``importlib.resources``.

- ``verdict.schema.json``: the JSON Schema of a TC verdict;
- ``configs/``: the repository's top-level ``configs/`` (base configs, hardware profiles,
  DeepSpeed files, the TC prompt);
- ``data/``: the bundled sample data of the repository's top-level ``data/`` (the JSONL files
  and their README; ``data/kb/`` stays in the repository);
- ``pipelines/``: the repository's top-level ``pipelines/`` (``mixft run`` files: ``report.yml``,
  ``demo-cpu.yml``, ``rg-only.yml``).

In the repository ``configs``, ``data`` and ``pipelines`` here are symbolic links to the top-level folders, so
there is one copy of every file; building a wheel (setuptools follows the links) puts real
files in their place. Either way the lookup below is the same, which is what makes a wheel
install work like a checkout. ``MIXFT_CONFIGS_DIR`` replaces the shipped configs with a folder
of the user's (``mixft config copy all DIR`` starts one).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CONFIGS_ENV = "MIXFT_CONFIGS_DIR"


def _shipped(name: str) -> Path:
    """The on-disk path of a shipped folder (a wheel is always unpacked on disk by pip)."""
    traversable = resources.files(__name__).joinpath(name)
    if not isinstance(traversable, Path):
        raise RuntimeError(
            f"mixtral_ft is installed in a form without files on disk ({traversable!r}); install the wheel with pip"
        )
    return traversable.resolve()


def configs_dir() -> Path:
    """The configs folder: ``$MIXFT_CONFIGS_DIR`` when set, else the shipped ``configs/``."""
    env = os.environ.get(CONFIGS_ENV)
    if env:
        return Path(env).resolve()
    return _shipped("configs")


def shipped_configs_dir() -> Path:
    """The shipped ``configs/``, whatever ``MIXFT_CONFIGS_DIR`` says (``mixft config copy``)."""
    return _shipped("configs")


def data_dir() -> Path:
    """The bundled sample data (``sample_qa.jsonl``, ``sample_tc_responses.jsonl``, ...)."""
    return _shipped("data")


def pipelines_dir() -> Path:
    """The shipped ``mixft run`` pipelines (``report.yml``, ``demo-cpu.yml``, ``rg-only.yml``)."""
    return _shipped("pipelines")
